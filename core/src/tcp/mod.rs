//! The TCP side of the server: TLS (ALPN `h2` and `http/1.1`) with the same certificate
//! as QUIC, HTTP/1.1 and HTTP/2 by hyper, and on them WebSocket opening handshakes
//! (RFC 6455 Upgrade, RFC 8441 extended CONNECT) that become QMux sessions or plain
//! WebSockets. Requests go through the same routes, origin policy and limits as
//! WebTransport requests over HTTP/3.

pub(crate) mod request;

use std::{
    convert::Infallible,
    net::SocketAddr,
    sync::{Arc, Mutex, Weak},
    time::Duration,
};

use bytes::Bytes;
use http_body_util::Full;
use hyper::{body::Incoming, Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::{net::TcpListener, sync::watch};
use tokio_tungstenite::{tungstenite::protocol::WebSocketConfig, WebSocketStream};
use tracing::debug;

use self::request::{Answer, TcpRequest};
use crate::{
    origin,
    qmux::{self, Offer},
    request::{Inner, RequestHead, SessionRequest},
    server::{Allowance, ConnSlot, ServerShared},
    session::Transport,
    ws::{self, handshake},
};

/// What one TCP connection's requests share.
pub(crate) struct TcpConn {
    pub(crate) server: Arc<ServerShared>,
    /// Counted against the connection limits for as long as anything uses the socket,
    /// an upgraded WebSocket included.
    _slot: ConnSlot,
    pub(crate) remote: SocketAddr,
    pub(crate) tls: bool,
    refusals: Mutex<Allowance>,
    shutdown: watch::Sender<bool>,
}

impl TcpConn {
    /// Counts a refused or abandoned request; a connection that spends its allowance is
    /// shut down (GOAWAY on HTTP/2, closed after the response on HTTP/1.1).
    pub(crate) fn note_refusal(&self) {
        let exhausted = !self
            .refusals
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .spend();
        if exhausted {
            debug!(remote = %self.remote, "too many refused requests; closing");
            self.shutdown.send_replace(true);
        }
    }
}

/// Accepts TCP connections until the server closes.
pub(crate) async fn listen(
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    server: Weak<ServerShared>,
    mut closing: watch::Receiver<bool>,
) {
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = closing.wait_for(|c| *c) => return,
        };
        let (stream, remote) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of descriptors and the like: back off rather than spin.
                debug!("TCP accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Some(server) = server.upgrade() else {
            return;
        };
        let slot = match server.admit_addr(remote) {
            Ok(slot) => slot,
            Err(why) => {
                debug!(%remote, why, "TCP connection refused");
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(serve(
            stream,
            remote,
            tls.clone(),
            server,
            slot,
            closing.clone(),
        ));
    }
}

async fn serve(
    stream: tokio::net::TcpStream,
    remote: SocketAddr,
    tls: Option<tokio_rustls::TlsAcceptor>,
    server: Arc<ServerShared>,
    slot: ConnSlot,
    mut closing: watch::Receiver<bool>,
) {
    let deadline = server.limits.request_timeout;
    let (shutdown, mut shutdown_rx) = watch::channel(false);
    let conn = Arc::new(TcpConn {
        _slot: slot,
        refusals: Mutex::new(Allowance::new(server.limits.max_refused_requests)),
        server: server.clone(),
        remote,
        tls: tls.is_some(),
        shutdown,
    });
    let service = hyper::service::service_fn(move |req| handle(conn.clone(), req));
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(deadline)
        .max_buf_size(64 * 1024)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .enable_connect_protocol()
        .max_concurrent_streams(server.limits.max_http2_streams)
        .max_header_list_size(16 * 1024)
        .max_pending_accept_reset_streams(Some(50))
        .max_local_error_reset_streams(Some(256))
        .keep_alive_interval(server.keep_alive)
        .keep_alive_timeout(server.idle_timeout.unwrap_or(Duration::from_secs(20)));
    macro_rules! run {
        ($io:expr) => {{
            let conn = builder.serve_connection_with_upgrades(TokioIo::new($io), service);
            tokio::pin!(conn);
            tokio::select! {
                r = conn.as_mut() => { if let Err(e) = r { debug!(%remote, "HTTP connection: {e}") } return }
                _ = closing.wait_for(|c| *c) => {}
                _ = shutdown_rx.wait_for(|c| *c) => {}
            }
            // GOAWAY on HTTP/2; on HTTP/1.1 the connection ends after the current request.
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(Duration::from_secs(10), conn).await;
        }};
    }
    match tls {
        Some(acceptor) => {
            let tls = match tokio::time::timeout(deadline, acceptor.accept(stream)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    debug!(%remote, "TLS handshake failed: {e}");
                    return;
                }
                Err(_) => {
                    debug!(%remote, "TLS handshake timed out");
                    return;
                }
            };
            run!(tls)
        }
        None => run!(stream),
    }
}

fn text(status: u16, body: &'static str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
    if !body.is_empty() {
        r.headers_mut().insert(
            hyper::header::CONTENT_TYPE,
            hyper::header::HeaderValue::from_static("text/plain; charset=utf-8"),
        );
    }
    r
}

fn header_list(req: &Request<Incoming>) -> Vec<(String, String)> {
    req.headers()
        .iter()
        .filter_map(|(k, v)| Some((k.as_str().to_owned(), v.to_str().ok()?.to_owned())))
        .collect()
}

async fn handle(
    conn: Arc<TcpConn>,
    mut req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let server = conn.server.clone();
    let http2 = req.version() == hyper::Version::HTTP_2;
    let headers = header_list(&req);
    let protocol = req
        .extensions()
        .get::<hyper::ext::Protocol>()
        .map(|p| p.as_str().to_owned());
    let method = req.method().as_str().to_owned();
    if !handshake::is_websocket_request(&method, protocol.as_deref(), &headers) {
        conn.note_refusal();
        return Ok(text(404, "not found\n"));
    }
    let upgrade = match handshake::check(http2, &method, protocol.as_deref(), &headers) {
        Ok(u) => u,
        Err(rejection) => {
            conn.note_refusal();
            let mut r = text(rejection.status, rejection.reason);
            r.headers_mut().insert(
                "sec-websocket-version",
                hyper::header::HeaderValue::from_static("13"),
            );
            return Ok(r);
        }
    };
    let path = req
        .uri()
        .path_and_query()
        .map_or("/".to_owned(), |p| p.as_str().to_owned());
    let authority = if http2 {
        req.uri().authority().map(|a| a.as_str().to_owned())
    } else {
        headers
            .iter()
            .find(|(k, _)| k == "host")
            .map(|(_, v)| v.clone())
    }
    .unwrap_or_default();
    let origin_header = headers
        .iter()
        .find(|(k, _)| k == "origin")
        .map(|(_, v)| v.clone());
    let offer = Offer::parse(&upgrade.protocols);
    let transport = if offer.is_some() {
        Transport::Qmux
    } else {
        Transport::WebSocket
    };
    let authority_ok = origin::authority_allowed(&authority, |h| server.is_own_host(h));
    let origin_ok = authority_ok
        && server
            .origin_policy
            .decide(
                origin_header.as_deref(),
                &authority,
                |h| server.is_own_host(h),
                server.limits.request_timeout,
            )
            .await;
    let status = if server.is_closing() {
        Some(503)
    } else if !authority_ok {
        Some(421)
    } else if !origin_ok {
        Some(403)
    } else {
        None
    };
    if let Some(status) = status {
        conn.note_refusal();
        return Ok(text(status, ""));
    }
    let Some(ip) = server.reserve_ip_session(conn.remote.ip()) else {
        conn.note_refusal();
        return Ok(text(429, ""));
    };
    let no_masking = conn.tls && upgrade.extensions.iter().any(|e| e == "no-masking");
    let subprotocols = match &offer {
        Some(o) => o.app_protocols(),
        None => upgrade.protocols.clone(),
    };
    let (tx, rx) = tokio::sync::oneshot::channel();
    let on_upgrade = hyper::upgrade::on(&mut req);
    let request = SessionRequest {
        head: RequestHead {
            id: server.next_session_id(),
            path,
            authority,
            origin: origin_header,
            headers,
            protocols: subprotocols,
            remote: conn.remote,
            version: if http2 {
                http::Version::HTTP_2
            } else {
                http::Version::HTTP_11
            },
            transport,
        },
        ip: Some(ip),
        inner: Inner::Tcp(TcpRequest {
            conn: conn.clone(),
            answer: Some(tx),
            offer,
        }),
    };
    if let Err((request, status)) = server.dispatch(request) {
        request.reject_in_background(status);
    }
    let answer = rx.await.unwrap_or(Answer::Reject(503));
    let (protocol_header, extra, start) = match answer {
        Answer::Reject(status) => return Ok(text(status, "")),
        Answer::Accept {
            protocol_header,
            headers,
            start,
        } => (protocol_header, headers, start),
    };
    let mut response = text(if http2 { 200 } else { 101 }, "");
    let h = response.headers_mut();
    if !http2 {
        h.insert(
            hyper::header::UPGRADE,
            hyper::header::HeaderValue::from_static("websocket"),
        );
        h.insert(
            hyper::header::CONNECTION,
            hyper::header::HeaderValue::from_static("Upgrade"),
        );
        if let Some(key) = &upgrade.key {
            if let Ok(v) = hyper::header::HeaderValue::from_str(&handshake::accept_key(key)) {
                h.insert("sec-websocket-accept", v);
            }
        }
    }
    if let Some(p) = protocol_header.and_then(|p| hyper::header::HeaderValue::from_str(&p).ok()) {
        h.insert("sec-websocket-protocol", p);
    }
    if no_masking {
        h.insert(
            "sec-websocket-extensions",
            hyper::header::HeaderValue::from_static("no-masking"),
        );
    }
    for (k, v) in extra {
        if let (Ok(k), Ok(v)) = (
            hyper::header::HeaderName::from_bytes(k.as_bytes()),
            hyper::header::HeaderValue::from_str(&v),
        ) {
            h.append(k, v);
        }
    }
    let limits = &server.limits;
    let max_message = match &start {
        request::Start::Qmux { .. } => qmux::MAX_RECORD as usize + 64,
        request::Start::WebSocket { .. } => limits.max_message_size,
    };
    let config = WebSocketConfig::default()
        .max_message_size(Some(max_message))
        .max_frame_size(Some(max_message))
        .write_buffer_size(64 * 1024)
        .max_write_buffer_size(1024 * 1024)
        .accept_unmasked_frames(no_masking);
    let timing = qmux::Timing {
        keep_alive: server.keep_alive,
        idle: server.idle_timeout,
    };
    let hold = conn.clone();
    tokio::spawn(async move {
        let _conn = hold;
        let upgraded = match on_upgrade.await {
            Ok(u) => u,
            Err(e) => {
                start.fail(format!("upgrade failed: {e}"));
                return;
            }
        };
        let socket = WebSocketStream::from_raw_socket(
            TokioIo::new(upgraded),
            tokio_tungstenite::tungstenite::protocol::Role::Server,
            Some(config),
        )
        .await;
        match start {
            request::Start::Qmux { shared, session } => {
                qmux::drive(shared, session, socket, timing).await
            }
            request::Start::WebSocket { pending } => {
                ws::drive(pending, socket, timing.keep_alive, timing.idle).await
            }
        }
    });
    Ok(response)
}
