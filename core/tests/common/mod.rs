//! Shared helpers: a server on 127.0.0.1:0, an independent client (web-transport-quinn),
//! and a bare HTTP/3 client for wire-level checks.
#![allow(dead_code)]

use std::{net::SocketAddr, sync::Arc, time::Duration};

use bytes::{Buf, BufMut, BytesMut};
use ferrovia::{Certificate, Server, ServerConfig};
use web_transport_quinn::proto::{ConnectRequest, VarInt};

pub const TIMEOUT: Duration = Duration::from_secs(60);

pub struct TestServer {
    pub server: Server,
    pub addr: SocketAddr,
    pub cert: Certificate,
}

pub fn start_with(configure: impl FnOnce(&mut ServerConfig)) -> TestServer {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let cert = Certificate::self_signed(&["localhost", "127.0.0.1"]).expect("certificate");
    let mut config = ServerConfig::new("127.0.0.1:0".parse().unwrap(), cert.clone());
    configure(&mut config);
    let server = Server::bind(config).expect("bind");
    let addr = server.local_addr().unwrap();
    TestServer { server, addr, cert }
}

pub fn start() -> TestServer {
    start_with(|_| {})
}

impl TestServer {
    pub fn url(&self, path: &str) -> url::Url {
        url::Url::parse(&format!("https://localhost:{}{}", self.addr.port(), path)).unwrap()
    }

    pub fn client(&self) -> web_transport_quinn::Client {
        web_transport_quinn::ClientBuilder::new()
            .with_server_certificate_hashes(vec![self.cert.sha256().to_vec()])
            .expect("client")
    }

    /// Connects with the independent client; the server side is accepted by the caller.
    pub async fn connect(&self, path: &str) -> web_transport_quinn::Session {
        tokio::time::timeout(TIMEOUT, self.client().connect(self.url(path)))
            .await
            .expect("connect timed out")
            .expect("connect")
    }

    pub async fn connect_request(
        &self,
        request: ConnectRequest,
    ) -> Result<web_transport_quinn::Session, web_transport_quinn::ClientError> {
        tokio::time::timeout(TIMEOUT, self.client().connect(request))
            .await
            .expect("connect timed out")
    }

    /// Accepts the next request and session on the server side.
    pub async fn accept(&self) -> ferrovia::Session {
        let request = tokio::time::timeout(TIMEOUT, self.server.accept())
            .await
            .expect("accept timed out")
            .expect("server closed");
        request.accept().await.expect("accept")
    }

    /// One client session and its server side.
    pub async fn pair(&self, path: &str) -> (web_transport_quinn::Session, ferrovia::Session) {
        let (client, server) = tokio::join!(self.connect(path), self.accept());
        (client, server)
    }
}

/// The HTTP status of a failed CONNECT, as the independent client reports it.
pub fn rejected_status(err: &web_transport_quinn::ClientError) -> Option<u16> {
    use web_transport_quinn::{proto::ConnectError as P, ClientError, ConnectError};
    match err {
        ClientError::HttpError(ConnectError::ErrorStatus(s)) => Some(s.as_u16()),
        ClientError::HttpError(ConnectError::ProtoError(P::WrongStatus(Some(s)))) => {
            Some(s.as_u16())
        }
        ClientError::HttpError(ConnectError::ProtoError(P::ErrorStatus(s))) => Some(s.as_u16()),
        _ => None,
    }
}

/// Deterministic pseudo-random bytes.
pub fn data(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

pub fn sha256(data: &[u8]) -> Vec<u8> {
    ring::digest::digest(&ring::digest::SHA256, data)
        .as_ref()
        .to_vec()
}

// ---- A bare HTTP/3 client for what the independent client cannot do ----

#[derive(Debug)]
struct HashVerifier(Vec<Vec<u8>>);

impl rustls::client::danger::ServerCertVerifier for HashVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &rustls::pki_types::CertificateDer<'_>,
        _: &[rustls::pki_types::CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        if self.0.contains(&sha256(end_entity.as_ref())) {
            Ok(rustls::client::danger::ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General("certificate hash mismatch".into()))
        }
    }
    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::General("TLS 1.2 not used".into()))
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &rustls::crypto::ring::default_provider().signature_verification_algorithms,
        )
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        rustls::crypto::ring::default_provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// A QUIC client configuration with ALPN h3 that trusts a server whose certificate has one
/// of `hashes` (SHA-256), as `serverCertificateHashes` does: for a client that needs its
/// own endpoint (one that rebinds its socket, say).
pub fn client_config_trusting(hashes: Vec<Vec<u8>>) -> quinn::ClientConfig {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(HashVerifier(hashes)))
        .with_no_client_auth();
    tls.alpn_protocols = vec![b"h3".to_vec()];
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls).unwrap();
    quinn::ClientConfig::new(Arc::new(crypto))
}

/// A QUIC connection with ALPN h3 and datagrams, verifying the server by certificate hash.
pub async fn raw_connection(server: &TestServer) -> quinn::Connection {
    raw_connection_with(server, |_| {})
        .await
        .expect("raw connect")
}

/// Like [`raw_connection`], with the client's transport tuned (a hostile client, say);
/// the error is the server's refusal, if any.
pub async fn raw_connection_with(
    server: &TestServer,
    tune: impl FnOnce(&mut quinn::TransportConfig),
) -> Result<quinn::Connection, quinn::ConnectionError> {
    raw_connection_to(server, server.addr, tune).await
}

/// Like [`raw_connection_with`], to `addr` (a relay in front of `server`, say).
pub async fn raw_connection_to(
    server: &TestServer,
    addr: SocketAddr,
    tune: impl FnOnce(&mut quinn::TransportConfig),
) -> Result<quinn::Connection, quinn::ConnectionError> {
    let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    let mut transport = quinn::TransportConfig::default();
    tune(&mut transport);
    let mut config = client_config_trusting(vec![server.cert.sha256().to_vec()]);
    config.transport_config(Arc::new(transport));
    endpoint.set_default_client_config(config);
    endpoint.connect(addr, "localhost").unwrap().await
}

/// The HTTP/3 error code a connection was closed with by the server.
pub async fn closed_with(conn: &quinn::Connection) -> u64 {
    match tokio::time::timeout(TIMEOUT, conn.closed()).await {
        Ok(quinn::ConnectionError::ApplicationClosed(c)) => c.error_code.into_inner(),
        other => panic!("expected an application close, got {other:?}"),
    }
}

/// A DATA frame carrying one capsule.
pub fn capsule_frame(typ: u64, body: &[u8]) -> Vec<u8> {
    let mut capsule = Vec::new();
    varint(typ, &mut capsule);
    varint(body.len() as u64, &mut capsule);
    capsule.extend_from_slice(body);
    let mut frame = Vec::new();
    varint(0x00, &mut frame);
    varint(capsule.len() as u64, &mut frame);
    frame.extend_from_slice(&capsule);
    frame
}

pub fn varint(v: u64, out: &mut impl BufMut) {
    VarInt::from_u64(v).unwrap().encode(out);
}

/// Opens our control stream with a draft-02 style SETTINGS frame.
pub async fn raw_settings(conn: &quinn::Connection) -> quinn::SendStream {
    raw_settings_with(conn, &[(0x08u64, 1u64), (0x33, 1), (0x2b603742, 1)]).await
}

/// Opens our control stream with a SETTINGS frame holding exactly these pairs.
pub async fn raw_settings_with(
    conn: &quinn::Connection,
    pairs: &[(u64, u64)],
) -> quinn::SendStream {
    let mut payload = BytesMut::new();
    for &(k, v) in pairs {
        varint(k, &mut payload);
        varint(v, &mut payload);
    }
    let mut buf = BytesMut::new();
    varint(0x00, &mut buf);
    varint(0x04, &mut buf);
    varint(payload.len() as u64, &mut buf);
    buf.put_slice(&payload);
    let mut s = conn.open_uni().await.unwrap();
    s.write_all(&buf).await.unwrap();
    s
}

/// Encodes a HEADERS frame with literal field lines (no Huffman), built by hand so the
/// test does not share the server's encoder.
pub fn headers_frame(fields: &[(&str, &str)]) -> Vec<u8> {
    let mut block = vec![0u8, 0u8]; // Required Insert Count 0, Base 0
    for (name, value) in fields {
        // Literal Field Line With Literal Name: 001N H(0) + 3-bit prefix length.
        prefix_int(&mut block, 0x20, 3, name.len() as u64);
        block.extend_from_slice(name.as_bytes());
        prefix_int(&mut block, 0x00, 7, value.len() as u64);
        block.extend_from_slice(value.as_bytes());
    }
    let mut frame = Vec::new();
    varint(0x01, &mut frame);
    varint(block.len() as u64, &mut frame);
    frame.extend_from_slice(&block);
    frame
}

fn prefix_int(out: &mut Vec<u8>, flags: u8, bits: u8, mut v: u64) {
    let max = (1u64 << bits) - 1;
    if v < max {
        out.push(flags | v as u8);
        return;
    }
    out.push(flags | max as u8);
    v -= max;
    while v >= 128 {
        out.push((v % 128) as u8 | 0x80);
        v /= 128;
    }
    out.push(v as u8);
}

/// Sends an extended CONNECT on a new bidi stream and returns the response status.
pub async fn raw_connect(
    conn: &quinn::Connection,
    authority: &str,
    path: &str,
    extra: &[(&str, &str)],
) -> (quinn::SendStream, quinn::RecvStream, u16) {
    let mut fields = vec![
        (":method", "CONNECT"),
        (":protocol", "webtransport"),
        (":scheme", "https"),
        (":authority", authority),
        (":path", path),
    ];
    fields.extend_from_slice(extra);
    raw_request(conn, &fields).await
}

/// Sends any request's HEADERS on a new bidi stream and returns the response status.
pub async fn raw_request(
    conn: &quinn::Connection,
    fields: &[(&str, &str)],
) -> (quinn::SendStream, quinn::RecvStream, u16) {
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    send.write_all(&headers_frame(fields)).await.unwrap();
    let status = read_status(&mut recv).await;
    (send, recv, status)
}

/// Reads a response HEADERS frame and returns `:status`, decoded with the static table.
pub async fn read_status(recv: &mut quinn::RecvStream) -> u16 {
    let typ = read_varint(recv).await;
    assert_eq!(typ, 0x01, "expected HEADERS");
    let len = read_varint(recv).await;
    let mut block = vec![0u8; len as usize];
    recv.read_exact(&mut block).await.unwrap();
    let fields = ferrovia::wire::qpack::decode_field_section(&block, 1 << 16).unwrap();
    fields
        .iter()
        .find(|(k, _)| k == ":status")
        .map(|(_, v)| v.parse().unwrap())
        .expect(":status")
}

pub async fn read_varint(recv: &mut quinn::RecvStream) -> u64 {
    let mut first = [0u8; 1];
    recv.read_exact(&mut first).await.unwrap();
    let len = 1usize << (first[0] >> 6);
    let mut buf = vec![first[0] & 0x3f];
    buf.resize(len, 0);
    recv.read_exact(&mut buf[1..]).await.unwrap();
    let mut b = &buf[..];
    let mut v = 0u64;
    while b.has_remaining() {
        v = (v << 8) | u64::from(b.get_u8());
    }
    v
}

// ---- The TCP side: TLS by certificate hash, WebSockets over HTTP/1.1 and HTTP/2 ----

pub type TlsStream = tokio_rustls::client::TlsStream<tokio::net::TcpStream>;

/// A TLS connection to the server's TCP side with these ALPN protocols.
pub async fn tls_connect(server: &TestServer, alpn: &[&str]) -> TlsStream {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(HashVerifier(vec![server
            .cert
            .sha256()
            .to_vec()])))
        .with_no_client_auth();
    tls.alpn_protocols = alpn.iter().map(|a| a.as_bytes().to_vec()).collect();
    let tcp = tokio::net::TcpStream::connect(server.tcp_addr())
        .await
        .expect("TCP connect");
    tokio_rustls::TlsConnector::from(Arc::new(tls))
        .connect(
            rustls::pki_types::ServerName::try_from("localhost").unwrap(),
            tcp,
        )
        .await
        .expect("TLS handshake")
}

impl TestServer {
    pub fn tcp_addr(&self) -> SocketAddr {
        self.server.tcp_local_addr().expect("the TCP side listens")
    }
}

pub type Ws<S> = tokio_tungstenite::WebSocketStream<S>;

/// Opens a WebSocket over HTTP/1.1 (RFC 6455) offering `protocols`; the handshake
/// response comes back too (an error response is an `Err` with its status).
pub async fn ws_h1(
    server: &TestServer,
    path: &str,
    protocols: &[&str],
    extra: &[(&str, &str)],
) -> Result<(Ws<TlsStream>, Option<String>), u16> {
    use tokio_tungstenite::tungstenite::{client::IntoClientRequest, Error};
    let tls = tls_connect(server, &["http/1.1"]).await;
    let url = format!("wss://localhost:{}{}", server.addr.port(), path);
    let mut request = url.into_client_request().unwrap();
    if !protocols.is_empty() {
        request.headers_mut().insert(
            "sec-websocket-protocol",
            protocols.join(", ").parse().unwrap(),
        );
    }
    for (k, v) in extra {
        request.headers_mut().insert(
            http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            v.parse().unwrap(),
        );
    }
    match tokio_tungstenite::client_async(request, tls).await {
        Ok((ws, response)) => {
            let chosen = response
                .headers()
                .get("sec-websocket-protocol")
                .map(|v| v.to_str().unwrap().to_owned());
            Ok((ws, chosen))
        }
        Err(Error::Http(response)) => Err(response.status().as_u16()),
        Err(e) => panic!("handshake failed: {e}"),
    }
}

/// An h2 stream pair as a byte stream, for a WebSocket over HTTP/2 (RFC 8441).
#[derive(Debug)]
pub struct H2Io {
    send: h2::SendStream<bytes::Bytes>,
    recv: h2::RecvStream,
    leftover: bytes::Bytes,
}

impl tokio::io::AsyncRead for H2Io {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        use std::task::Poll;
        if self.leftover.is_empty() {
            match self.recv.poll_data(cx) {
                Poll::Ready(Some(Ok(data))) => {
                    let _ = self.recv.flow_control().release_capacity(data.len());
                    self.leftover = data;
                }
                Poll::Ready(Some(Err(e))) => {
                    return Poll::Ready(Err(std::io::Error::other(e)));
                }
                Poll::Ready(None) => return Poll::Ready(Ok(())),
                Poll::Pending => return Poll::Pending,
            }
        }
        let n = self.leftover.len().min(buf.remaining());
        let chunk = self.leftover.split_to(n);
        buf.put_slice(&chunk);
        Poll::Ready(Ok(()))
    }
}

impl tokio::io::AsyncWrite for H2Io {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        use std::task::Poll;
        self.send.reserve_capacity(buf.len());
        match self.send.poll_capacity(cx) {
            Poll::Ready(Some(Ok(n))) => {
                let n = n.min(buf.len());
                self.send
                    .send_data(bytes::Bytes::copy_from_slice(&buf[..n]), false)
                    .map_err(std::io::Error::other)?;
                Poll::Ready(Ok(n))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Err(std::io::Error::other(e))),
            Poll::Ready(None) => Poll::Ready(Err(std::io::ErrorKind::BrokenPipe.into())),
            Poll::Pending => Poll::Pending,
        }
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let _ = self.send.send_data(bytes::Bytes::new(), true);
        std::task::Poll::Ready(Ok(()))
    }
}

/// Opens a WebSocket over HTTP/2 with an extended CONNECT (RFC 8441); the server must
/// have advertised SETTINGS_ENABLE_CONNECT_PROTOCOL for the h2 client to send it.
pub async fn ws_h2(
    server: &TestServer,
    path: &str,
    protocols: &[&str],
) -> Result<(Ws<H2Io>, Option<String>), u16> {
    let tls = tls_connect(server, &["h2"]).await;
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (client, connection) = h2::client::handshake(tls).await.expect("h2 handshake");
    tokio::spawn(async move {
        let _ = connection.await;
    });
    let mut client = client.ready().await.expect("h2 ready");
    let mut request = http::Request::builder()
        .method("CONNECT")
        .uri(format!("https://localhost:{}{}", server.addr.port(), path))
        .header("sec-websocket-version", "13");
    if !protocols.is_empty() {
        request = request.header("sec-websocket-protocol", protocols.join(", "));
    }
    let mut request = request.body(()).unwrap();
    request
        .extensions_mut()
        .insert(h2::ext::Protocol::from_static("websocket"));
    let (response, send) = client
        .send_request(request, false)
        .expect("extended CONNECT");
    let response = response.await.expect("response");
    if response.status() != 200 {
        return Err(response.status().as_u16());
    }
    let chosen = response
        .headers()
        .get("sec-websocket-protocol")
        .map(|v| v.to_str().unwrap().to_owned());
    let io = H2Io {
        send,
        recv: response.into_body(),
        leftover: bytes::Bytes::new(),
    };
    let ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
        io,
        tokio_tungstenite::tungstenite::protocol::Role::Client,
        None,
    )
    .await;
    Ok((ws, chosen))
}

/// Reads (and discards) until the server closes the connection; panics if it is still open
/// after `within`.
pub async fn wait_closed_by_server(
    io: &mut (impl tokio::io::AsyncRead + Unpin),
    within: Duration,
    what: &str,
) {
    use tokio::io::AsyncReadExt;
    let mut b = vec![0u8; 64 * 1024];
    let r = tokio::time::timeout(within, async {
        loop {
            match io.read(&mut b).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(r.is_ok(), "{what}: still open after {within:?}");
}
