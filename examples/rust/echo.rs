//! An echo server for trying Ferrovia from a browser, and the server the browser tests use.
//!
//! `cargo run -p ferrovia --example echo -- --port 4433`
//!
//! It prints JSON lines on stdout: first `{"event":"listening",...}` with the port and the
//! certificate hash for `serverCertificateHashes`, then one line per session event.
//!
//! Paths: `/echo` echoes bidi streams, uni streams (on a new uni stream) and datagrams;
//! `/open` opens a uni and a bidi stream toward the client; `/close?code=N&reason=R`
//! closes the session after 300 ms; `/reject?status=S` rejects; `/reset?code=N` resets
//! and stops every incoming bidi stream. Any other path gets 404. These serve WebTransport
//! over HTTP/3 and QMux over a WebSocket alike.
//!
//! `/ws` takes plain WebSockets on the same port (TCP, TLS): it echoes every message, and
//! with `?close=CODE&reason=R` closes after the first one.
//!
//! `--cert FILE --key FILE` serves a certificate from PEM files instead of a fresh
//! self-signed one. `--workers N` serves the port from N endpoints in one process, a
//! `SO_REUSEPORT` group steered by connection ID (`ferrovia::fleet::ReusePortGroup`), so
//! QUIC work spreads over N cores.

use std::{net::SocketAddr, time::Duration};

use ferrovia::{Certificate, Server, ServerConfig, Session, StreamError, WebSocket};

mod util;

use util::{emit, json_str, query_param};

async fn echo(session: Session) {
    let bi = {
        let session = session.clone();
        async move {
            while let Ok((mut send, mut recv)) = session.accept_bi().await {
                tokio::spawn(async move {
                    loop {
                        match recv.read_chunk(64 * 1024).await {
                            Ok(Some(chunk)) => {
                                if send.write_chunk(chunk).await.is_err() {
                                    break;
                                }
                            }
                            Ok(None) => {
                                let _ = send.finish();
                                break;
                            }
                            Err(StreamError::Reset { code }) => {
                                emit(format!(r#"{{"event":"stream-reset","code":{code}}}"#));
                                let _ = send.reset(code);
                                break;
                            }
                            Err(_) => break,
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
                    match recv.read_to_end(64 << 20).await {
                        Ok(data) => {
                            if let Ok(mut send) = session.open_uni().await {
                                let _ = send.write_all(&data).await;
                                let _ = send.finish();
                            }
                        }
                        Err(StreamError::Reset { code }) => {
                            emit(format!(r#"{{"event":"stream-reset","code":{code}}}"#));
                        }
                        Err(_) => {}
                    }
                });
            }
        }
    };
    let datagrams = {
        let session = session.clone();
        async move {
            while let Ok(d) = session.recv_datagram().await {
                let _ = session.send_datagram(&d).await;
            }
        }
    };
    tokio::join!(bi, uni, datagrams);
}

async fn open(session: Session) {
    if let Ok(mut uni) = session.open_uni().await {
        let _ = uni.write_all(b"hello uni").await;
        let _ = uni.finish();
    }
    if let Ok((mut send, mut recv)) = session.open_bi().await {
        let _ = send.write_all(b"hello bidi").await;
        let _ = send.finish();
        if let Ok(reply) = recv.read_to_end(1 << 20).await {
            let text = String::from_utf8_lossy(&reply).into_owned();
            emit(format!(
                r#"{{"event":"bidi-reply","data":{}}}"#,
                json_str(&text)
            ));
        }
    }
    session.closed().await;
}

async fn reset(session: Session, code: u32) {
    while let Ok((mut send, mut recv)) = session.accept_bi().await {
        tokio::spawn(async move {
            // Refuse the stream once the client has said something on it, as a server
            // reading a request would: a reset that overtakes the page's first write makes
            // Chromium report that write's failure without the code.
            let mut first = [0u8; 1];
            let _ = tokio::time::timeout(Duration::from_secs(2), recv.read(&mut first)).await;
            let _ = send.reset(code);
            let _ = recv.stop(code.wrapping_add(1));
        });
    }
}

/// Echoes a plain WebSocket's messages; closes after the first with `?close=CODE`.
async fn websocket(ws: WebSocket, close: Option<(u16, String)>) {
    while let Ok(Some(message)) = ws.recv().await {
        if ws.send(message).await.is_err() {
            break;
        }
        if let Some((code, reason)) = &close {
            let _ = ws.close(*code, reason);
        }
    }
}

fn version(v: http::Version) -> &'static str {
    match v {
        http::Version::HTTP_3 => "HTTP/3",
        http::Version::HTTP_2 => "HTTP/2",
        _ => "HTTP/1.1",
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut port = 4433u16;
    // "::" listens on IPv6 and IPv4 at once: Chromium sends `localhost` to ::1, Firefox
    // to 127.0.0.1.
    let mut host = "::".to_string();
    let (mut cert_file, mut key_file) = (None, None);
    let mut workers = 1usize;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--port" => port = args.next().ok_or("--port needs a value")?.parse()?,
            "--host" => host = args.next().ok_or("--host needs a value")?,
            "--cert" => cert_file = Some(args.next().ok_or("--cert needs a value")?),
            "--key" => key_file = Some(args.next().ok_or("--key needs a value")?),
            "--workers" => workers = args.next().ok_or("--workers needs a value")?.parse()?,
            other => return Err(format!("unknown argument {other:?}").into()),
        }
    }
    let cert = match (cert_file, key_file) {
        (Some(c), Some(k)) => Certificate::from_pem_files(c, k)?,
        (None, None) => Certificate::self_signed(&["localhost", "127.0.0.1", "::1"])?,
        _ => return Err("give --cert and --key together".into()),
    };
    let ip: std::net::IpAddr = host.trim_matches(|c| c == '[' || c == ']').parse()?;
    let addr = SocketAddr::new(ip, port);
    let mut servers = Vec::new();
    if workers > 1 {
        let group = ferrovia::fleet::ReusePortGroup::bind(addr, workers, true)?;
        for i in 0..workers {
            let mut config = ServerConfig::new(addr, cert.clone());
            // Browsers offer permessage-deflate on every WebSocket; /ws compresses.
            config.websocket_compression = ferrovia::WebSocketCompression::Deflate;
            group.configure(i, &mut config)?;
            servers.push(Server::bind(config)?);
        }
    } else {
        let mut config = ServerConfig::new(addr, cert.clone());
        config.websocket_compression = ferrovia::WebSocketCompression::Deflate;
        servers.push(Server::bind(config)?);
    }
    for server in &servers {
        // Hold requests for accept() from now on, so none arriving before the loop below
        // first polls it gets 404.
        server.queue_unrouted();
    }
    emit(format!(
        r#"{{"event":"listening","port":{},"certificateHash":"{}","spki":"{}"}}"#,
        servers[0].local_addr()?.port(),
        cert.sha256_hex(),
        cert.spki_sha256_base64()
    ));
    let mut tasks = tokio::task::JoinSet::new();
    for server in servers {
        tasks.spawn(serve(server));
    }
    while let Some(done) = tasks.join_next().await {
        done??;
    }
    Ok(())
}

/// Serves one endpoint: WebSockets on `/ws`, sessions on the other paths.
async fn serve(server: Server) -> Result<(), ferrovia::ServerError> {
    let sockets = server.route("/ws")?;
    sockets.allow_websockets();
    tokio::spawn(async move {
        while let Some(request) = sockets.accept().await {
            let path = request.path().to_owned();
            let http = version(request.http_version());
            let origin = request
                .origin()
                .map(json_str)
                .unwrap_or_else(|| "null".into());
            let Ok(ws) = request.accept_websocket().await else {
                continue;
            };
            emit(format!(
                r#"{{"event":"websocket","path":{},"http":"{http}","origin":{origin}}}"#,
                json_str(&path)
            ));
            let close = query_param(&path, "close")
                .and_then(|c| c.parse().ok())
                .map(|c| (c, query_param(&path, "reason").unwrap_or_default()));
            tokio::spawn(async move {
                let watcher = ws.clone();
                let (info, ()) = tokio::join!(watcher.closed(), websocket(ws, close));
                emit(format!(
                    r#"{{"event":"websocket-closed","path":{},"code":{},"reason":{},"remote":{}}}"#,
                    json_str(&path),
                    info.code,
                    json_str(&info.reason),
                    info.initiator == ferrovia::CloseInitiator::Remote
                ));
            });
        }
    });
    while let Some(request) = server.accept().await {
        let path = request.path().to_owned();
        let route = path.split('?').next().unwrap_or("/").to_owned();
        if !matches!(
            route.as_str(),
            "/echo" | "/open" | "/close" | "/reject" | "/reset"
        ) {
            let _ = request.reject(404).await;
            continue;
        }
        if route == "/reject" {
            let status = query_param(&path, "status")
                .and_then(|s| s.parse().ok())
                .unwrap_or(403);
            let _ = request.reject(status).await;
            continue;
        }
        let origin = request
            .origin()
            .map(json_str)
            .unwrap_or_else(|| "null".into());
        let protocol = request.subprotocols().first().cloned();
        let session = match request.accept_with(protocol.as_deref(), &[]).await {
            Ok(s) => s,
            Err(e) => {
                eprintln!("accept failed: {e}");
                continue;
            }
        };
        emit(format!(
            r#"{{"event":"session","path":{},"origin":{},"protocol":{},"transport":"{}"}}"#,
            json_str(&path),
            origin,
            protocol
                .as_deref()
                .map(json_str)
                .unwrap_or_else(|| "null".into()),
            session.transport().as_str()
        ));
        tokio::spawn(async move {
            let watcher = session.clone();
            let work = async {
                match route.as_str() {
                    "/echo" => echo(session).await,
                    "/open" => open(session).await,
                    "/close" => {
                        tokio::time::sleep(Duration::from_millis(300)).await;
                        let code = query_param(&path, "code").and_then(|c| c.parse().ok());
                        let reason = query_param(&path, "reason").unwrap_or_default();
                        session.close(code.unwrap_or(0), &reason);
                    }
                    _ => {
                        let code = query_param(&path, "code").and_then(|c| c.parse().ok());
                        reset(session, code.unwrap_or(1)).await
                    }
                }
            };
            let (info, ()) = tokio::join!(watcher.closed(), work);
            emit(format!(
                r#"{{"event":"closed","path":{},"code":{},"reason":{},"remote":{}}}"#,
                json_str(watcher.path()),
                info.code,
                json_str(&info.reason),
                info.initiator == ferrovia::CloseInitiator::Remote
            ));
        });
    }
    Ok(())
}
