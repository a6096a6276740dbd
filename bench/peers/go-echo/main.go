// WebTransport echo server on webtransport-go, a peer for the Ferrovia benchmarks.
//
//	go build -o target/bench-peers/go-echo ./bench/peers/go-echo
//	go-echo --port 0 --host 127.0.0.1
//
// Same contract as every server in the suite: the first stdout line is
// {"event":"listening","port":P,"certificateHash":HEX}; on /echo it echoes bidirectional
// streams, unidirectional streams (on a new unidirectional stream) and datagrams.
// quic-go's transport settings stay at their defaults, as a user would run it.
package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/json"
	"flag"
	"io"
	"log"
	"math/big"
	"net"
	"net/http"
	"os"
	"strconv"
	"time"

	"github.com/quic-go/quic-go/http3"
	"github.com/quic-go/webtransport-go"
)

// selfSigned makes an ECDSA P-256 certificate valid for 10 days, as
// serverCertificateHashes requires.
func selfSigned() (tls.Certificate, []byte) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		log.Fatal(err)
	}
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: "localhost"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(10 * 24 * time.Hour),
		DNSNames:     []string{"localhost"},
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1"), net.ParseIP("::1")},
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		log.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, der
}

func echo(sess *webtransport.Session) {
	ctx := sess.Context()
	go func() {
		for {
			str, err := sess.AcceptStream(ctx)
			if err != nil {
				return
			}
			go func() {
				io.Copy(str, str)
				str.Close()
			}()
		}
	}()
	go func() {
		for {
			recv, err := sess.AcceptUniStream(ctx)
			if err != nil {
				return
			}
			go func() {
				data, err := io.ReadAll(io.LimitReader(recv, 64<<20))
				if err != nil {
					return
				}
				send, err := sess.OpenUniStreamSync(ctx)
				if err != nil {
					return
				}
				send.Write(data)
				send.Close()
			}()
		}
	}()
	for {
		d, err := sess.ReceiveDatagram(ctx)
		if err != nil {
			return
		}
		sess.SendDatagram(d)
	}
}

func main() {
	port := flag.Int("port", 4433, "UDP port (0 picks one)")
	host := flag.String("host", "127.0.0.1", "address to bind")
	flag.Parse()

	cert, der := selfSigned()
	conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.ParseIP(*host), Port: *port})
	if err != nil {
		log.Fatal(err)
	}
	mux := http.NewServeMux()
	h3 := &http3.Server{
		TLSConfig: &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{http3.NextProtoH3}},
		Handler:   mux,
	}
	server := &webtransport.Server{
		H3:          h3,
		CheckOrigin: func(*http.Request) bool { return true },
	}
	mux.HandleFunc("/echo", func(w http.ResponseWriter, r *http.Request) {
		sess, err := server.Upgrade(w, r)
		if err != nil {
			w.WriteHeader(http.StatusInternalServerError)
			return
		}
		echo(sess)
	})
	hash := sha256.Sum256(der)
	line, _ := json.Marshal(map[string]any{
		"event":           "listening",
		"port":            conn.LocalAddr().(*net.UDPAddr).Port,
		"certificateHash": hex.EncodeToString(hash[:]),
	})
	os.Stdout.Write(append(line, '\n'))
	if err := server.Serve(conn); err != nil && err != context.Canceled {
		log.Fatal("serve: " + err.Error() + " " + strconv.Itoa(*port))
	}
}
