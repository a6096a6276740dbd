//! A QMux echo server built on the `qmux` crate instead of Ferrovia: an independent peer
//! for the browser connector's interop test (tests/browser/qmux-peer.test.mjs).
//!
//! `cargo run -p ferrovia --example qmux_peer_echo -- --port 0`
//!
//! It takes WebSockets over TLS (HTTP/1.1) on every path and hands each to
//! `qmux::ws::Server`, which negotiates `qmux-02.chat.v1` or a bare QMux version. Each
//! session echoes bidi streams, answers each uni stream with one of its own carrying the
//! same bytes, and echoes datagrams.
//!
//! JSON lines on stdout, like the echo example: first
//! `{"event":"listening","port":P,"certificateHash":HEX,"spki":B64}`, then per session
//! `{"event":"session","protocol":...}`, `{"event":"stream-reset","code":N}` and
//! `{"event":"closed","code":N,"reason":R,"clean":BOOL}` (clean: the peer closed with an
//! application code, QMux's CONNECTION_CLOSE 0x1d).

use std::{net::SocketAddr, sync::Arc};

use ferrovia::Certificate;
use rustls_pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use web_transport_trait::{Error as _, RecvStream as _, SendStream as _, Session as _};

/// The application protocol this peer offers besides bare QMux.
const PROTOCOL: &str = "chat.v1";

fn json_str(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn emit(line: String) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

async fn echo(session: qmux::Session) {
    let bi = {
        let session = session.clone();
        async move {
            while let Ok((mut send, mut recv)) = session.accept_bi().await {
                tokio::spawn(async move {
                    loop {
                        match recv.read_chunk(64 * 1024).await {
                            Ok(Some(chunk)) => {
                                if send.write_all(&chunk).await.is_err() {
                                    break;
                                }
                            }
                            Ok(None) => {
                                let _ = send.finish();
                                break;
                            }
                            Err(e) => {
                                if let Some(code) = e.stream_error() {
                                    emit(format!(r#"{{"event":"stream-reset","code":{code}}}"#));
                                    send.reset(code);
                                }
                                break;
                            }
                        }
                    }
                });
            }
        }
    };
    let uni = {
        let session = session.clone();
        async move {
            while let Ok(mut recv) = session.accept_uni().await {
                let session = session.clone();
                tokio::spawn(async move {
                    match recv.read_all().await {
                        Ok(data) => {
                            if let Ok(mut send) = session.open_uni().await {
                                let _ = send.write_all(&data).await;
                                let _ = send.finish();
                            }
                        }
                        Err(e) => {
                            if let Some(code) = e.stream_error() {
                                emit(format!(r#"{{"event":"stream-reset","code":{code}}}"#));
                            }
                        }
                    }
                });
            }
        }
    };
    let datagrams = {
        let session = session.clone();
        async move {
            while let Ok(d) = session.recv_datagram().await {
                let _ = session.send_datagram(d);
            }
        }
    };
    tokio::join!(bi, uni, datagrams);
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut port = 0u16;
    let mut host = "::".to_string();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--port" => port = args.next().ok_or("--port needs a value")?.parse()?,
            "--host" => host = args.next().ok_or("--host needs a value")?,
            other => return Err(format!("unknown argument {other:?}").into()),
        }
    }
    let cert = Certificate::self_signed(&["localhost", "127.0.0.1", "::1"])?;
    let key = PrivateKeyDer::from_pem_slice(cert.key_pem().as_bytes())?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(vec![CertificateDer::from(cert.der().to_vec())], key)?;
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    let acceptor = TlsAcceptor::from(Arc::new(tls));

    // "::" takes IPv6 and IPv4 alike: Chromium reaches `localhost` over ::1, Firefox over
    // 127.0.0.1.
    let ip: std::net::IpAddr = host.trim_matches(|c| c == '[' || c == ']').parse()?;
    let listener = TcpListener::bind(SocketAddr::new(ip, port)).await?;
    emit(format!(
        r#"{{"event":"listening","port":{},"certificateHash":"{}","spki":"{}"}}"#,
        listener.local_addr()?.port(),
        cert.sha256_hex(),
        cert.spki_sha256_base64()
    ));

    let server = qmux::ws::Server::new().with_protocol(PROTOCOL, &[qmux::Version::QMux02]);
    loop {
        let (tcp, _) = listener.accept().await?;
        let (acceptor, server) = (acceptor.clone(), server.clone());
        tokio::spawn(async move {
            let tls = match acceptor.accept(tcp).await {
                Ok(tls) => tls,
                Err(e) => return eprintln!("TLS handshake failed: {e}"),
            };
            let session = match server.accept(tls).await {
                Ok(s) => s,
                Err(e) => return eprintln!("QMux handshake failed: {e}"),
            };
            emit(format!(
                r#"{{"event":"session","protocol":{}}}"#,
                session
                    .protocol()
                    .map(json_str)
                    .unwrap_or_else(|| "null".into())
            ));
            let watcher = session.clone();
            let closed = async {
                let err = watcher.closed().await;
                match err.session_error() {
                    Some((code, reason)) => emit(format!(
                        r#"{{"event":"closed","code":{code},"reason":{},"clean":true}}"#,
                        json_str(&reason)
                    )),
                    None => emit(format!(
                        r#"{{"event":"closed","code":null,"reason":{},"clean":false}}"#,
                        json_str(&err.to_string())
                    )),
                }
            };
            tokio::join!(closed, echo(session));
        });
    }
}
