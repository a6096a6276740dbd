//! The TCP side of the server: TLS (ALPN `h2` and `http/1.1`) with the same certificate
//! as QUIC, HTTP/1.1 and HTTP/2 by hyper, and on them WebSocket opening handshakes
//! (RFC 6455 Upgrade, RFC 8441 extended CONNECT) that become QMux sessions or plain
//! WebSockets. Requests go through the same routes, origin policy and limits as
//! WebTransport requests over HTTP/3.

mod activity;
mod forwarded;
pub(crate) mod session_request;

use std::{
    convert::Infallible,
    net::SocketAddr,
    sync::{Arc, Mutex, Weak},
    time::Duration,
};

use bytes::Bytes;
use hyper::{body::Incoming, Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::{net::TcpListener, sync::watch};
use tokio_tungstenite::{tungstenite::protocol::WebSocketConfig, WebSocketStream};
use tracing::debug;

use self::{
    activity::{Activity, Expired, TrackedBody, WatchedIo},
    session_request::{Answer, TcpRequest},
};
use crate::{
    origin,
    qmux::{self, Offer},
    request::{RequestHead, SessionRequest},
    service::{check_declared_length, Body, HttpService, Progress},
    shared::{Allowance, ConnSlot, ServerShared},
    transport::Transport,
    ws::handshake,
};

/// The longest WebSocket frame header: 2 bytes, an 8-byte length, a 4-byte mask.
const MAX_FRAME_HEADER: usize = 14;

/// What one TCP connection's requests share.
pub(crate) struct TcpConn {
    pub(crate) server: Arc<ServerShared>,
    /// Counted against the connection limits for as long as anything uses the socket,
    /// an upgraded WebSocket included.
    _slot: ConnSlot,
    pub(crate) remote: SocketAddr,
    pub(crate) tls: bool,
    /// The peer is a trusted proxy on the plain side: its forwarding headers are believed.
    trusted_proxy: bool,
    refusals: Mutex<Allowance>,
    shutdown: watch::Sender<bool>,
    activity: Arc<Activity>,
}

impl TcpConn {
    /// What the proxy in front reported, if the peer is a trusted one.
    fn forwarded(&self, headers: &[(String, String)]) -> forwarded::Forwarded {
        if !self.trusted_proxy {
            return forwarded::Forwarded::default();
        }
        forwarded::read(
            headers.iter().map(|(k, v)| (k.as_str(), v.as_str())),
            |ip| self.server.is_trusted_proxy(ip),
        )
    }

    /// The client's address: the peer's, or from a trusted proxy the address its headers
    /// name (port unknown: 0).
    fn client_addr(&self, forwarded: &forwarded::Forwarded) -> SocketAddr {
        forwarded
            .client
            .map_or(self.remote, |ip| SocketAddr::new(ip, 0))
    }

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
        // Every connection from a trusted proxy comes from the proxy's address: the
        // per-address limits apply to the client address it reports instead (see
        // `client_addr`). Any other peer is a client, on either side.
        let trusted_proxy = tls.is_none() && server.is_trusted_proxy(remote.ip());
        let admitted = if trusted_proxy {
            server.admit_proxied(remote)
        } else {
            server.admit_addr(remote)
        };
        let slot = match admitted {
            Ok(slot) => slot,
            Err(why) => {
                server.counters.connection_refused(remote, why);
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(serve(
            stream,
            remote,
            trusted_proxy,
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
    trusted_proxy: bool,
    tls: Option<tokio_rustls::TlsAcceptor>,
    server: Arc<ServerShared>,
    slot: ConnSlot,
    mut closing: watch::Receiver<bool>,
) {
    let deadline = server.limits.request_timeout;
    let (shutdown, mut shutdown_rx) = watch::channel(false);
    let activity = Activity::new();
    let conn = Arc::new(TcpConn {
        _slot: slot,
        refusals: Mutex::new(Allowance::new(server.limits.max_refused_requests)),
        server: server.clone(),
        remote,
        tls: tls.is_some(),
        trusted_proxy,
        shutdown,
        activity: activity.clone(),
    });
    let limits = &server.limits;
    let (sessionless, write_timeout) = (limits.sessionless_timeout, limits.write_timeout);
    let service = hyper::service::service_fn(move |req| handle(conn.clone(), req));
    // The same settings for a connection whose version ALPN chose (hyper's own builders)
    // and one whose first bytes tell (hyper-util's, for the plain side behind a proxy).
    macro_rules! http1_settings {
        ($b:expr) => {
            $b.timer(TokioTimer::new())
                .header_read_timeout(deadline)
                .max_buf_size(64 * 1024)
                .keep_alive(true)
        };
    }
    macro_rules! http2_settings {
        ($b:expr) => {
            $b.timer(TokioTimer::new())
                .enable_connect_protocol()
                .max_concurrent_streams(server.limits.max_http2_streams)
                .max_header_list_size(16 * 1024)
                .max_pending_accept_reset_streams(Some(50))
                .max_local_error_reset_streams(Some(256))
                .keep_alive_interval(server.keep_alive)
                .keep_alive_timeout(server.idle_timeout.unwrap_or(Duration::from_secs(20)))
        };
    }
    macro_rules! run {
        ($io:expr, |$conn_io:ident| $serve:expr) => {{
            // The deadline to the first request head runs from the end of the TLS handshake.
            activity.restart();
            let $conn_io = TokioIo::new(WatchedIo::new($io, activity.clone()));
            let conn = $serve;
            tokio::pin!(conn);
            tokio::select! {
                r = conn.as_mut() => { if let Err(e) = r { debug!(%remote, "HTTP connection: {e}") } return }
                _ = closing.wait_for(|c| *c) => {}
                _ = shutdown_rx.wait_for(|c| *c) => {}
                why = activity.expired(deadline, sessionless, write_timeout) => {
                    debug!(%remote, ?why, "closing the TCP connection");
                    if why != Expired::Idle {
                        // Nothing owed to a client that never asked or stopped reading.
                        return;
                    }
                }
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
                    server.counters.handshake_failed(remote, &e);
                    return;
                }
                Err(_) => {
                    server
                        .counters
                        .handshake_failed(remote, &"TLS handshake timed out");
                    return;
                }
            };
            // ALPN decides the version (RFC 7301): sniffing the first bytes instead would
            // read garbage sent after agreeing on h2 as an HTTP/1.1 request and answer it.
            if tls.get_ref().1.alpn_protocol() == Some(b"h2") {
                let mut h2 = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
                http2_settings!(h2);
                run!(tls, |io| h2.serve_connection(io, service))
            } else {
                let mut h1 = hyper::server::conn::http1::Builder::new();
                // A head larger than the buffer bound can still arrive in one read and
                // parse whole: the head's own bound closes that gap (431).
                http1_settings!(h1).max_header_size(64 * 1024);
                run!(tls, |io| h1.serve_connection(io, service).with_upgrades())
            }
        }
        None => {
            let mut auto = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            http1_settings!(auto.http1());
            http2_settings!(auto.http2());
            run!(stream, |io| auto
                .serve_connection_with_upgrades(io, service))
        }
    }
}

fn text(status: u16, body: &'static str) -> Response<Body> {
    crate::service::status_response(status, body)
}

fn header_list(req: &Request<Incoming>) -> Vec<(String, String)> {
    req.headers()
        .iter()
        .filter_map(|(k, v)| Some((k.as_str().to_owned(), v.to_str().ok()?.to_owned())))
        .collect()
}

/// A WebSocket opening handshake as any HTTP server sees it: from this server's TCP side, or
/// from another HTTP server the application runs (see [`Server::websocket_handshake`]).
///
/// [`Server::websocket_handshake`]: crate::Server::websocket_handshake
#[derive(Clone, Debug)]
pub struct Handshake {
    /// The request method (`GET` for HTTP/1.1, `CONNECT` for HTTP/2).
    pub method: String,
    /// Whether the request came over HTTP/2 (RFC 8441) rather than HTTP/1.1 (RFC 6455).
    pub http2: bool,
    /// HTTP/2's `:protocol` pseudo-header (`websocket`).
    pub protocol: Option<String>,
    /// The path and query.
    pub path: String,
    /// The host the client asked for (`Host`, or `:authority`).
    pub authority: String,
    /// Every header, names lowercase.
    pub headers: Vec<(String, String)>,
    /// The client's address.
    pub remote_addr: SocketAddr,
    /// Whether the connection is encrypted (end to end, or up to a TLS-terminating proxy).
    pub secure: bool,
}

/// What to answer a handshake with.
pub enum HandshakeOutcome {
    /// Answer with this status, headers and plain-text body, and keep the connection as
    /// HTTP (a refusal, or a request that is not a WebSocket handshake).
    Respond {
        /// The status.
        status: u16,
        /// Response headers.
        headers: Vec<(String, String)>,
        /// The body (the reason for a refusal).
        body: &'static str,
    },
    /// The application accepted: answer with this status (101 for HTTP/1.1, 200 for
    /// HTTP/2) and headers, then hand the connection's byte stream (or its messages) to
    /// [`UpgradedWebSocket`].
    Upgrade {
        /// The status.
        status: u16,
        /// Response headers (`Sec-WebSocket-Accept`, `Sec-WebSocket-Protocol`, ...).
        headers: Vec<(String, String)>,
        /// Runs the session once the socket is there.
        socket: UpgradedWebSocket,
    },
}

impl std::fmt::Debug for HandshakeOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Respond { status, .. } => {
                f.debug_struct("Respond").field("status", status).finish()
            }
            Self::Upgrade { status, .. } => {
                f.debug_struct("Upgrade").field("status", status).finish()
            }
        }
    }
}

/// An accepted WebSocket waiting for its socket: the QMux session or plain WebSocket the
/// application already holds runs once [`run`](Self::run) (a byte stream) or
/// [`run_messages`](Self::run_messages) (whole messages, for hosts such as ASGI servers that
/// frame WebSocket messages themselves) is called. Dropping it ends that session as lost.
pub struct UpgradedWebSocket {
    start: Option<session_request::Start>,
    config: WebSocketConfig,
    timing: crate::ws::Timing,
    hold: Option<Arc<TcpConn>>,
    /// permessage-deflate, when this (plain) WebSocket agreed to it.
    deflate: Option<crate::ws::deflate::DeflateParams>,
}

impl Drop for UpgradedWebSocket {
    fn drop(&mut self) {
        if let Some(start) = self.start.take() {
            start.fail("the socket was never handed over".into());
        }
    }
}

/// One WebSocket message, for hosts that frame messages themselves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HostMessage {
    /// A text message.
    Text(String),
    /// A binary message.
    Binary(Bytes),
    /// A close frame: code and reason.
    Close(u16, String),
}

impl UpgradedWebSocket {
    /// Runs the session over the upgraded byte stream until it ends.
    pub async fn run<T>(mut self, io: T)
    where
        T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let Some(start) = self.start.take() else {
            return;
        };
        let _hold = self.hold.take();
        let role = tokio_tungstenite::tungstenite::protocol::Role::Server;
        match self.deflate {
            Some(params) => {
                let (codec, io) = crate::ws::deflate::Codec::with_reader(params, io);
                let socket = WebSocketStream::from_raw_socket(io, role, Some(self.config)).await;
                let (sink, stream) = futures_util::StreamExt::split(socket);
                start.run(sink, stream, self.timing, Some(codec)).await;
            }
            None => {
                let socket = WebSocketStream::from_raw_socket(io, role, Some(self.config)).await;
                let (sink, stream) = futures_util::StreamExt::split(socket);
                start.run(sink, stream, self.timing, None).await;
            }
        }
    }

    /// Runs the session over whole messages: what the host receives goes into the
    /// returned sender, what the session sends comes out of the returned receiver (a
    /// `Close` last). Both are bounded, so a slow side slows the other.
    pub fn run_messages(
        mut self,
    ) -> (
        tokio::sync::mpsc::Sender<HostMessage>,
        tokio::sync::mpsc::Receiver<HostMessage>,
    ) {
        use tokio_tungstenite::tungstenite::{protocol::CloseFrame, Message};
        let (in_tx, in_rx) = tokio::sync::mpsc::channel::<HostMessage>(16);
        let (out_tx, out_rx) = tokio::sync::mpsc::channel::<HostMessage>(16);
        let Some(start) = self.start.take() else {
            return (in_tx, out_rx);
        };
        let stream = futures_util::stream::unfold(in_rx, |mut rx| async move {
            let m = match rx.recv().await? {
                HostMessage::Text(t) => Message::Text(t.into()),
                HostMessage::Binary(b) => Message::Binary(b),
                HostMessage::Close(code, reason) => Message::Close(Some(CloseFrame {
                    code: code.into(),
                    reason: reason.into(),
                })),
            };
            Some((Ok(m), rx))
        });
        let sink = futures_util::sink::unfold(out_tx, |tx, m: Message| async move {
            let m = match m {
                Message::Text(t) => HostMessage::Text(t.as_str().to_owned()),
                Message::Binary(b) => HostMessage::Binary(b),
                Message::Close(f) => HostMessage::Close(
                    f.as_ref().map_or(1000, |f| u16::from(f.code)),
                    f.map(|f| f.reason.as_str().to_owned()).unwrap_or_default(),
                ),
                // Pings and pongs are the host's business.
                _ => return Ok(tx),
            };
            tx.send(m)
                .await
                .map_err(|_| tokio_tungstenite::tungstenite::Error::ConnectionClosed)?;
            Ok(tx)
        });
        let timing = self.timing;
        let hold = self.hold.take();
        tokio::spawn(async move {
            let _hold = hold;
            start
                .run(Box::pin(sink), Box::pin(stream), timing, None)
                .await;
        });
        (in_tx, out_rx)
    }
}

/// Checks a WebSocket handshake, routes it like any session request, and waits for the
/// application's answer.
pub(crate) async fn handshake(
    server: &Arc<ServerShared>,
    conn: Option<Arc<TcpConn>>,
    h: Handshake,
) -> HandshakeOutcome {
    let mut path = h.path.clone();
    let attempt = crate::request::take_attempt(&mut path);
    let remote = h.remote_addr;
    let refused = |conn: &Option<Arc<TcpConn>>, status: u16| {
        server.refused(status, &path, remote);
        if let Some(c) = conn {
            c.note_refusal();
        }
    };
    let respond = |status: u16, body: &'static str| HandshakeOutcome::Respond {
        status,
        headers: Vec::new(),
        body,
    };
    if !handshake::is_websocket_request(&h.method, h.protocol.as_deref(), &h.headers) {
        refused(&conn, 404);
        return respond(404, "not found\n");
    }
    let upgrade = match handshake::check(h.http2, &h.method, h.protocol.as_deref(), &h.headers) {
        Ok(u) => u,
        Err(rejection) => {
            refused(&conn, rejection.status);
            return HandshakeOutcome::Respond {
                status: rejection.status,
                headers: vec![("sec-websocket-version".into(), "13".into())],
                body: rejection.reason,
            };
        }
    };
    let origin_header = h
        .headers
        .iter()
        .find(|(k, _)| k == "origin")
        .map(|(_, v)| v.clone());
    let offer = Offer::parse(&upgrade.protocols);
    // The connector's QMux attempt hears a refusal in-band: a browser shows a page neither
    // the status nor the headers of a refused WebSocket handshake.
    let in_band = offer
        .as_ref()
        .filter(|_| attempt.is_some())
        .and_then(|o| o.answer(None));
    let http2 = h.http2;
    let refuse = |status: u16, headers: Vec<(String, String)>| match &in_band {
        Some(token) => refused_in_band(
            server,
            http2,
            upgrade.key.as_deref(),
            token,
            status,
            &headers,
            conn.clone(),
        ),
        None => HandshakeOutcome::Respond {
            status,
            headers,
            body: "",
        },
    };
    let transport = if offer.is_some() {
        Transport::Qmux
    } else {
        Transport::WebSocket
    };
    if let Some(status) = server
        .admission(&h.authority, origin_header.as_deref())
        .await
    {
        refused(&conn, status);
        return refuse(status, Vec::new());
    }
    // An earlier attempt of the same connect() was refused: the same answer, without
    // asking the application again.
    if let Some(earlier) = attempt
        .as_deref()
        .filter(|_| in_band.is_some())
        .and_then(|id| server.recall_refusal(id))
    {
        refused(&conn, earlier.status);
        return refuse(earlier.status, earlier.headers);
    }
    let Some(ip) = server.reserve_ip_session(h.remote_addr.ip()) else {
        refused(&conn, 429);
        return refuse(429, Vec::new());
    };
    let no_masking = h.secure && upgrade.extensions.iter().any(|e| e == "no-masking");
    // permessage-deflate only on this server's own TCP side: a host that frames messages
    // itself (an ASGI server, say) would not know it had been agreed.
    let deflate_offers: Vec<String> =
        if conn.is_some() && server.websocket_compression != crate::WebSocketCompression::Off {
            h.headers
                .iter()
                .filter(|(k, _)| k == "sec-websocket-extensions")
                .map(|(_, v)| v.clone())
                .collect()
        } else {
            Vec::new()
        };
    let subprotocols = match &offer {
        Some(o) => o.app_protocols(),
        None => upgrade.protocols.clone(),
    };
    let (tx, rx) = tokio::sync::oneshot::channel();
    let request = SessionRequest {
        head: RequestHead {
            id: server.next_session_id(),
            path,
            attempt: attempt.clone(),
            authority: h.authority,
            origin: origin_header,
            headers: h.headers,
            protocols: subprotocols,
            remote: h.remote_addr,
            version: if h.http2 {
                http::Version::HTTP_2
            } else {
                http::Version::HTTP_11
            },
            transport,
        },
        inner: Box::new(TcpRequest {
            server: server.clone(),
            conn: conn.clone(),
            answer: Some(tx),
            offer,
            ip: Some(ip),
        }),
    };
    if let Err((request, status)) = server.dispatch(request) {
        request.reject_in_background(status);
    }
    let answer = rx.await.unwrap_or(Answer::Reject(503, Vec::new()));
    let (protocol_header, extra, start) = match answer {
        Answer::Reject(status, headers) => return refuse(status, headers),
        Answer::Accept {
            protocol_header,
            headers,
            start,
        } => (protocol_header, headers, start),
    };
    let mut headers = upgrade_headers(h.http2, upgrade.key.as_deref());
    if let Some(p) = protocol_header {
        headers.push(("sec-websocket-protocol".to_owned(), p));
    }
    let deflate = match &start {
        session_request::Start::WebSocket { .. } => {
            let offers: Vec<&str> = deflate_offers.iter().map(String::as_str).collect();
            crate::ws::deflate::negotiate(server.websocket_compression, &offers)
        }
        _ => None,
    };
    // One Sec-WebSocket-Extensions header: some clients refuse two.
    let extensions: Vec<&str> = [
        no_masking.then_some("no-masking"),
        deflate.as_ref().map(|(_, answer)| answer.as_str()),
    ]
    .into_iter()
    .flatten()
    .collect();
    if !extensions.is_empty() {
        headers.push(("sec-websocket-extensions".to_owned(), extensions.join(", ")));
    }
    headers.extend(extra);
    let max_message = match &start {
        session_request::Start::Qmux { .. } => qmux::MAX_RECORD as usize + 64,
        session_request::Start::WebSocket { .. } => server.limits.max_message_size,
        session_request::Start::Refuse { .. } => 4096,
    };
    // tungstenite zero-fills its read buffer up front: its 128 KiB default was most of an
    // idle WebSocket's memory, and 16 KiB costs no throughput (it grows for larger frames).
    // Its write buffer must take a whole frame of the largest message, header included, on
    // top of what is already buffered, or a message near the limit fails to send.
    let config = WebSocketConfig::default()
        .read_buffer_size(16 * 1024)
        .max_message_size(Some(max_message))
        .max_frame_size(Some(max_message))
        .write_buffer_size(64 * 1024)
        // Deflate can grow an incompressible message by a few bytes per 16 KiB block.
        .max_write_buffer_size(
            (64 * 1024 + MAX_FRAME_HEADER)
                .saturating_add(max_message)
                .saturating_add(max_message / 64),
        )
        .accept_unmasked_frames(no_masking);
    HandshakeOutcome::Upgrade {
        status: if h.http2 { 200 } else { 101 },
        headers,
        socket: UpgradedWebSocket {
            start: Some(start),
            config,
            timing: crate::ws::Timing {
                keep_alive: server.keep_alive,
                idle: server.idle_timeout,
                write: server.limits.write_timeout,
                params: server.limits.response_timeout,
            },
            hold: conn,
            deflate: deflate.map(|(params, _)| params),
        },
    }
}

/// The headers every accepted WebSocket upgrade answers with: on HTTP/1.1 `Upgrade`,
/// `Connection` and the `Sec-WebSocket-Accept` for the client's key (RFC 6455 §4.2.2);
/// none on HTTP/2, where the 200 says it (RFC 8441).
fn upgrade_headers(http2: bool, key: Option<&str>) -> Vec<(String, String)> {
    let mut out = Vec::new();
    if !http2 {
        out.push(("upgrade".to_owned(), "websocket".to_owned()));
        out.push(("connection".to_owned(), "Upgrade".to_owned()));
        if let Some(key) = key {
            out.push((
                "sec-websocket-accept".to_owned(),
                handshake::accept_key(key),
            ));
        }
    }
    out
}

/// A refusal told over the WebSocket itself, for the browser connector's QMux attempt: the
/// upgrade succeeds and the WebSocket closes at once with code 4000 + the status (4401 for
/// 401) and, as the reason, the refusal's headers as a JSON list of pairs (as many as fit
/// the 123 bytes a reason may have).
fn refused_in_band(
    server: &Arc<ServerShared>,
    http2: bool,
    key: Option<&str>,
    token: &str,
    status: u16,
    headers: &[(String, String)],
    hold: Option<Arc<TcpConn>>,
) -> HandshakeOutcome {
    let mut out = upgrade_headers(http2, key);
    out.push(("sec-websocket-protocol".to_owned(), token.to_owned()));
    HandshakeOutcome::Upgrade {
        status: if http2 { 200 } else { 101 },
        headers: out,
        socket: UpgradedWebSocket {
            start: Some(session_request::Start::Refuse {
                code: 4000 + status,
                reason: refusal_reason(headers),
            }),
            config: WebSocketConfig::default()
                .read_buffer_size(4096)
                .max_message_size(Some(4096))
                .max_frame_size(Some(4096)),
            timing: crate::ws::Timing {
                keep_alive: None,
                idle: None,
                write: server.limits.write_timeout,
                params: server.limits.response_timeout,
            },
            hold,
            deflate: None,
        },
    }
}

/// `[["name","value"],...]`, with as many pairs as fit a WebSocket close reason.
fn refusal_reason(headers: &[(String, String)]) -> String {
    fn quoted(s: &str) -> String {
        let mut out = String::with_capacity(s.len() + 2);
        out.push('"');
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
    let mut reason = String::from("[");
    for (name, value) in headers {
        let pair = format!("[{},{}]", quoted(name), quoted(value));
        let sep = if reason.len() > 1 { 1 } else { 0 };
        if reason.len() + sep + pair.len() + 1 > 123 {
            break;
        }
        if sep == 1 {
            reason.push(',');
        }
        reason.push_str(&pair);
    }
    reason.push(']');
    reason
}

/// The request target in absolute form, as HTTP/2 and HTTP/3 give it, so a handler reads
/// scheme and authority from `uri()` on every version.
fn absolute_uri(uri: &hyper::Uri, scheme: &str, authority: &str) -> Option<hyper::Uri> {
    if uri.scheme().is_some() || authority.is_empty() {
        return None;
    }
    hyper::Uri::builder()
        .scheme(scheme)
        .authority(authority)
        .path_and_query(uri.path_and_query().map_or("/", |p| p.as_str()))
        .build()
        .ok()
}

/// An ordinary request over HTTP/1.1 or HTTP/2, answered by the application's handler.
async fn exchange(
    conn: &Arc<TcpConn>,
    service: HttpService,
    req: Request<Incoming>,
    headers: &[(String, String)],
) -> Response<Body> {
    let server = &conn.server;
    let limits = &server.limits;
    let authority = match req.uri().authority() {
        Some(a) => a.as_str(),
        None => headers
            .iter()
            .find(|(k, _)| k == "host")
            .map_or("", |(_, v)| v.as_str()),
    };
    let host = headers
        .iter()
        .find(|(k, _)| k == "host")
        .map(|(_, v)| v.as_str());
    // RFC 9113 §8.3.1: an HTTP/2 request whose `host` disagrees with `:authority` is
    // malformed.
    let h2_mismatch = req.version() == hyper::Version::HTTP_2
        && req.uri().authority().is_some()
        && host.is_some_and(|h| !h.eq_ignore_ascii_case(authority));
    let mut response = if h2_mismatch {
        text(400, "host and :authority disagree\n")
    } else if !origin::authority_allowed(authority, |h| server.is_own_host(h)) {
        text(421, "misdirected request\n")
    } else if let Some(too_large) = check_declared_length(req.headers(), limits.max_request_body) {
        too_large
    } else {
        let forwarded = conn.forwarded(headers);
        let remote = conn.client_addr(&forwarded);
        let scheme = if conn.tls || forwarded.https == Some(true) {
            "https"
        } else {
            "http"
        };
        let progress = Progress::new();
        let absolute = absolute_uri(req.uri(), scheme, authority);
        let mut req = req.map(|b| {
            Body::guarded(
                b,
                limits.max_request_body,
                limits.request_timeout,
                progress.clone(),
            )
        });
        if let Some(uri) = absolute {
            *req.uri_mut() = uri;
        } else if let Some(target) = req.uri().authority().map(|a| a.as_str().to_owned()) {
            // RFC 9112 §3.2.2: with a request target in absolute form, its authority wins
            // and a different `Host` is ignored: the application sees the target's.
            if let Ok(v) = hyper::header::HeaderValue::from_str(&target) {
                req.headers_mut().insert(hyper::header::HOST, v);
            }
        }
        req.extensions_mut().insert::<SocketAddr>(remote);
        server.counters.http_request();
        service
            .respond(
                req,
                limits.handler_timeout,
                progress,
                &server.running_requests,
            )
            .await
    };
    if conn.tls && !response.headers().contains_key(hyper::header::ALT_SVC) {
        if let Some(alt) = server
            .alt_svc()
            .and_then(|v| hyper::header::HeaderValue::from_str(&v).ok())
        {
            response.headers_mut().insert(hyper::header::ALT_SVC, alt);
        }
    }
    response
}

async fn handle(
    conn: Arc<TcpConn>,
    req: Request<Incoming>,
) -> Result<Response<TrackedBody>, Infallible> {
    let busy = conn.activity.busy();
    let response = respond(conn, req).await;
    Ok(response.map(|body| TrackedBody::new(body, busy)))
}

async fn respond(conn: Arc<TcpConn>, mut req: Request<Incoming>) -> Response<Body> {
    let server = conn.server.clone();
    let http2 = req.version() == hyper::Version::HTTP_2;
    let headers = header_list(&req);
    let protocol = req
        .extensions()
        .get::<hyper::ext::Protocol>()
        .map(|p| p.as_str().to_owned());
    if let Some(service) = server.http_service() {
        if !crate::ws::handshake::is_websocket_request(
            req.method().as_str(),
            protocol.as_deref(),
            &headers,
        ) {
            return exchange(&conn, service, req, &headers).await;
        }
    }
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
    let remote_addr = conn.client_addr(&conn.forwarded(&headers));
    let h = Handshake {
        method: req.method().as_str().to_owned(),
        http2,
        protocol,
        path,
        authority,
        headers,
        remote_addr,
        secure: conn.tls,
    };
    let on_upgrade = hyper::upgrade::on(&mut req);
    let activity = conn.activity.clone();
    let outcome = handshake(&server, Some(conn), h).await;
    let (status, headers, body, socket) = match outcome {
        HandshakeOutcome::Respond {
            status,
            headers,
            body,
        } => (status, headers, body, None),
        HandshakeOutcome::Upgrade {
            status,
            headers,
            socket,
        } => (status, headers, "", Some(socket)),
    };
    let mut response = text(status, body);
    for (k, v) in headers {
        if let (Ok(k), Ok(v)) = (
            hyper::header::HeaderName::from_bytes(k.as_bytes()),
            hyper::header::HeaderValue::from_str(&v),
        ) {
            response.headers_mut().append(k, v);
        }
    }
    if let Some(socket) = socket {
        // The connection stays busy while the socket runs (an HTTP/2 connection carrying
        // WebSockets is not idle).
        let socket_busy = activity.busy();
        tokio::spawn(async move {
            let _busy = socket_busy;
            match on_upgrade.await {
                Ok(upgraded) => socket.run(TokioIo::new(upgraded)).await,
                Err(e) => {
                    let mut socket = socket;
                    if let Some(start) = socket.start.take() {
                        start.fail(format!("upgrade failed: {e}"));
                    }
                }
            }
        });
    }
    response
}
