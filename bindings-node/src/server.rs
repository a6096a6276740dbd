//! `listen()`, the server and its routes.

use std::{
    net::{IpAddr, SocketAddr},
    sync::{Arc, Mutex},
    time::Duration,
};

use ferrovia::{
    Certificate, CongestionController, Limits, OriginPolicy, Route, Server, ServerConfig, TcpListen,
};
use napi::bindgen_prelude::Buffer;
use napi_derive::napi;
use tokio::sync::watch;

use crate::{error, request::NativeRequest};

/// Resource limits; every field is optional and defaults to the core's value.
#[napi(object)]
#[derive(Default)]
pub struct NativeLimits {
    /// Sessions open at once across the server.
    pub max_sessions: Option<u32>,
    /// Sessions one QUIC connection may carry.
    pub max_sessions_per_connection: Option<u32>,
    /// Concurrent bidirectional streams the client may open per connection.
    pub max_bidi_streams: Option<u32>,
    /// Concurrent unidirectional streams the client may open per connection.
    pub max_uni_streams: Option<u32>,
    /// Receive window per stream, in bytes.
    pub stream_receive_window: Option<u32>,
    /// Receive window per connection, in bytes.
    pub connection_receive_window: Option<u32>,
    /// Send window per connection, in bytes.
    pub send_window: Option<f64>,
    /// Incoming datagrams queued per session before the oldest are dropped.
    pub datagram_queue: Option<u32>,
    /// Streams held for a session that does not exist yet.
    pub max_buffered_streams: Option<u32>,
    /// Datagrams held for a session that does not exist yet.
    pub max_buffered_datagrams: Option<u32>,
    /// Session requests queued per path before new ones get 503.
    pub request_queue: Option<u32>,
    /// Sessions, open or waiting, per IP address.
    pub max_sessions_per_ip: Option<u32>,
    /// QUIC connections held at once.
    pub max_connections: Option<u32>,
    /// QUIC connections per IP address.
    pub max_connections_per_ip: Option<u32>,
    /// Connections above which new clients must pass a Retry.
    pub retry_threshold: Option<u32>,
    /// Bytes of received datagrams queued per session.
    pub datagram_queue_bytes: Option<u32>,
    /// Refused requests a connection may make in a burst.
    pub max_refused_requests: Option<u32>,
    /// Milliseconds to send a stream header or request headers.
    pub request_timeout: Option<u32>,
    /// Milliseconds a client may withhold credit for a response or capsule.
    pub response_timeout: Option<u32>,
    /// Milliseconds a connection without sessions stays open.
    pub sessionless_timeout: Option<u32>,
    /// The largest ordinary HTTP request body, in bytes.
    pub max_request_body: Option<f64>,
    /// Milliseconds the `fetch` handler has to answer.
    pub handler_timeout: Option<u32>,
    /// The largest plain WebSocket message, in bytes.
    pub max_message_size: Option<f64>,
    /// Milliseconds a write toward a TCP-side client may take.
    pub write_timeout: Option<u32>,
    /// Ordinary HTTP requests handled at once.
    pub max_concurrent_requests: Option<u32>,
}

/// Options of [`listen`], already checked by the facade.
#[napi(object)]
pub struct NativeListenOptions {
    /// Address to bind, e.g. `::` or `127.0.0.1`.
    pub host: String,
    /// UDP port; 0 picks a free one.
    pub port: u32,
    /// PEM certificate chain (with `key_pem`).
    pub cert_pem: Option<String>,
    /// PEM private key (with `cert_pem`).
    pub key_pem: Option<String>,
    /// Path of a PEM certificate chain (with `key_file`).
    pub cert_file: Option<String>,
    /// Path of a PEM private key (with `cert_file`).
    pub key_file: Option<String>,
    /// Names for a generated self-signed certificate (used when no PEM is given).
    pub names: Option<Vec<String>>,
    /// `same-host` (default), `any`, or `list` (then `allowed_origins`).
    pub origin_policy: Option<String>,
    /// Origins allowed when `origin_policy` is `list`.
    pub allowed_origins: Option<Vec<String>>,
    /// Idle timeout in milliseconds; 0 disables it.
    pub idle_timeout_ms: Option<f64>,
    /// Keep-alive interval in milliseconds; 0 disables it.
    pub keep_alive_ms: Option<f64>,
    /// `cubic` (default), `newreno` or `bbr`.
    pub congestion_controller: Option<String>,
    /// permessage-deflate on plain WebSockets: `deflate` or `deflate-no-context` (off
    /// when absent).
    pub web_socket_compression: Option<String>,
    /// Resource limits.
    pub limits: Option<NativeLimits>,
    /// The TCP side: `same-port` (default), `tls` (at `tcp_host`/`tcp_port`),
    /// `plain-behind-tls-proxy` (at `tcp_host`/`tcp_port`) or `off`.
    pub tcp: Option<String>,
    /// Host of the TCP side when it is not on the UDP address.
    pub tcp_host: Option<String>,
    /// Port of the TCP side when it is not on the UDP address.
    pub tcp_port: Option<u32>,
    /// Peers of the plain TCP side whose forwarding headers are believed (addresses or
    /// CIDR ranges); loopback when absent.
    pub trusted_proxies: Option<Vec<String>>,
    /// `SO_REUSEPORT` on the UDP socket and the TCP listener.
    pub reuse_port: Option<bool>,
    /// QUIC-LB connection IDs.
    pub connection_ids: Option<crate::fleet::NativeConnectionIds>,
    /// The secret the fleet's stateless-reset and token keys are derived from.
    pub fleet_secret: Option<Buffer>,
    /// The sockets of a `runWorkers()` worker.
    pub worker: Option<crate::fleet::NativeWorker>,
}

fn certificate(o: &NativeListenOptions) -> napi::Result<Certificate> {
    let cert = match (&o.cert_pem, &o.key_pem, &o.cert_file, &o.key_file) {
        (Some(c), Some(k), None, None) => Certificate::from_pem(c.as_bytes(), k.as_bytes()),
        (None, None, Some(c), Some(k)) => Certificate::from_pem_files(c, k),
        (None, None, None, None) => {
            let default = ["localhost", "127.0.0.1", "::1"].map(String::from).to_vec();
            Certificate::self_signed(o.names.as_deref().unwrap_or(&default))
        }
        _ => {
            return Err(error::invalid(
                "give either cert and key, or certFile and keyFile",
            ))
        }
    };
    cert.map_err(|e| error::from_server(e.into()))
}

fn limits(l: Option<NativeLimits>) -> Limits {
    let mut out = Limits::default();
    let Some(l) = l else { return out };
    let set = |dst: &mut usize, v: Option<u32>| {
        if let Some(v) = v {
            *dst = v as usize;
        }
    };
    set(&mut out.max_sessions, l.max_sessions);
    set(&mut out.datagram_queue, l.datagram_queue);
    set(&mut out.max_buffered_streams, l.max_buffered_streams);
    set(&mut out.max_buffered_datagrams, l.max_buffered_datagrams);
    set(&mut out.request_queue, l.request_queue);
    set(&mut out.max_sessions_per_ip, l.max_sessions_per_ip);
    set(&mut out.max_connections, l.max_connections);
    set(&mut out.max_connections_per_ip, l.max_connections_per_ip);
    set(&mut out.retry_threshold, l.retry_threshold);
    set(&mut out.datagram_queue_bytes, l.datagram_queue_bytes);
    if let Some(v) = l.max_refused_requests {
        out.max_refused_requests = v;
    }
    let ms = |v: u32| Duration::from_millis(u64::from(v));
    if let Some(v) = l.request_timeout {
        out.request_timeout = ms(v);
    }
    if let Some(v) = l.response_timeout {
        out.response_timeout = ms(v);
    }
    if let Some(v) = l.handler_timeout {
        out.handler_timeout = ms(v);
    }
    if let Some(v) = l.max_request_body {
        out.max_request_body = v as u64;
    }
    if let Some(v) = l.sessionless_timeout {
        out.sessionless_timeout = ms(v);
    }
    if let Some(v) = l.write_timeout {
        out.write_timeout = ms(v);
    }
    if let Some(v) = l.max_message_size {
        out.max_message_size = v as usize;
    }
    if let Some(v) = l.max_concurrent_requests {
        out.max_concurrent_requests = v as usize;
    }
    if let Some(v) = l.max_sessions_per_connection {
        out.max_sessions_per_connection = v;
    }
    if let Some(v) = l.max_bidi_streams {
        out.max_bidi_streams = v;
    }
    if let Some(v) = l.max_uni_streams {
        out.max_uni_streams = v;
    }
    if let Some(v) = l.stream_receive_window {
        out.stream_receive_window = v;
    }
    if let Some(v) = l.connection_receive_window {
        out.connection_receive_window = v;
    }
    if let Some(v) = l.send_window {
        out.send_window = v as u64;
    }
    out
}

fn millis(v: Option<f64>, default: Option<Duration>) -> Option<Duration> {
    match v {
        None => default,
        Some(ms) if ms <= 0.0 => None,
        Some(ms) => Some(Duration::from_secs_f64(ms / 1000.0)),
    }
}

fn config(o: NativeListenOptions) -> napi::Result<ServerConfig> {
    let ip: IpAddr = o
        .host
        .parse()
        .map_err(|_| error::invalid(format!("host {:?} is not an IP address", o.host)))?;
    let port = u16::try_from(o.port).map_err(|_| error::invalid("port must be 0..65535"))?;
    let mut config = ServerConfig::new(SocketAddr::new(ip, port), certificate(&o)?);
    if o.cert_pem.is_none() && o.cert_file.is_none() {
        // A self-signed certificate is renewed before its 13 days run out.
        let default = ["localhost", "127.0.0.1", "::1"].map(String::from).to_vec();
        config.self_signed_renewal = Some(ferrovia::SelfSignedRenewal::new(
            o.names.as_deref().unwrap_or(&default),
        ));
    }
    config.origin_policy = match o.origin_policy.as_deref() {
        None | Some("same-host") => OriginPolicy::SameHost,
        Some("any") => OriginPolicy::Any,
        Some("list") => OriginPolicy::AllowList(o.allowed_origins.unwrap_or_default()),
        Some(other) => return Err(error::invalid(format!("unknown origin policy {other:?}"))),
    };
    config.idle_timeout = millis(o.idle_timeout_ms, config.idle_timeout);
    config.keep_alive = millis(o.keep_alive_ms, config.keep_alive);
    config.congestion_controller = match o.congestion_controller.as_deref() {
        None | Some("cubic") => CongestionController::Cubic,
        Some("newreno") => CongestionController::NewReno,
        Some("bbr") => CongestionController::Bbr,
        Some(other) => {
            return Err(error::invalid(format!(
                "unknown congestion controller {other:?}"
            )))
        }
    };
    if let Some(name) = o.web_socket_compression.as_deref() {
        config.websocket_compression = ferrovia::WebSocketCompression::from_name(name)
            .ok_or_else(|| error::invalid(format!("unknown WebSocket compression {name:?}")))?;
    }
    config.limits = limits(o.limits);
    let tcp_addr = || -> napi::Result<SocketAddr> {
        let host = o.tcp_host.as_deref().unwrap_or(&o.host);
        let ip: IpAddr = host
            .parse()
            .map_err(|_| error::invalid(format!("tcp host {host:?} is not an IP address")))?;
        let port = u16::try_from(o.tcp_port.unwrap_or(0))
            .map_err(|_| error::invalid("tcp port must be 0..65535"))?;
        Ok(SocketAddr::new(ip, port))
    };
    config.tcp = match o.tcp.as_deref() {
        None | Some("same-port") => TcpListen::SamePort,
        Some("off") => TcpListen::Off,
        Some("tls") => TcpListen::At(tcp_addr()?),
        Some("plain-behind-tls-proxy") => TcpListen::PlainBehindTlsProxy(tcp_addr()?),
        Some(other) => return Err(error::invalid(format!("unknown tcp mode {other:?}"))),
    };
    if let Some(ranges) = &o.trusted_proxies {
        config.trusted_proxies = ranges
            .iter()
            .map(|r| {
                r.parse()
                    .map_err(|e: ferrovia::InvalidIpRange| error::invalid(e.to_string()))
            })
            .collect::<napi::Result<_>>()?;
    }
    crate::fleet::apply(
        &mut config,
        o.reuse_port,
        o.connection_ids.as_ref(),
        o.fleet_secret.as_deref(),
        o.worker.as_ref(),
    )?;
    Ok(config)
}

/// Binds a WebTransport server. Resolves once the UDP socket is bound.
#[napi]
pub async fn listen(options: NativeListenOptions) -> napi::Result<NativeServer> {
    let server = Server::bind(config(options)?).map_err(error::from_server)?;
    let addr = server.local_addr().map_err(error::from_server)?;
    Ok(NativeServer {
        server: Arc::new(server),
        addr,
    })
}

/// A bound server.
#[napi]
pub struct NativeServer {
    server: Arc<Server>,
    addr: SocketAddr,
}

#[napi]
impl NativeServer {
    /// The bound UDP port.
    #[napi(getter, catch_unwind)]
    pub fn port(&self) -> u32 {
        u32::from(self.addr.port())
    }

    /// The bound IP address.
    #[napi(getter, catch_unwind)]
    pub fn host(&self) -> String {
        self.addr.ip().to_string()
    }

    /// SHA-256 of the current certificate (DER), for `serverCertificateHashes`.
    #[napi(getter, catch_unwind)]
    pub fn certificate_sha256(&self) -> Buffer {
        self.server.certificate().sha256().to_vec().into()
    }

    /// SHA-256 of the current certificate and, while a renewal announces it, of the next.
    #[napi(getter, catch_unwind)]
    pub fn certificate_hashes(&self) -> Vec<Buffer> {
        self.server
            .certificate_hashes()
            .into_iter()
            .map(|h| h.to_vec().into())
            .collect()
    }

    /// The hashes pages may pass as `serverCertificateHashes` (none for a CA's certificate).
    #[napi(getter, catch_unwind)]
    pub fn browser_certificate_hashes(&self) -> Vec<Buffer> {
        self.server
            .browser_certificate_hashes()
            .into_iter()
            .map(|h| h.to_vec().into())
            .collect()
    }

    /// The connector module with this server's `serverCertificateHashes` export appended.
    #[napi(catch_unwind)]
    pub fn client_module(&self, connector: String) -> String {
        self.server.client_module(&connector)
    }

    /// Base64 SHA-256 of the certificate's SubjectPublicKeyInfo (Chrome's SPKI flag).
    #[napi(getter, catch_unwind)]
    pub fn certificate_spki(&self) -> String {
        self.server.certificate().spki_sha256_base64()
    }

    /// The certificate chain as PEM.
    #[napi(getter, catch_unwind)]
    pub fn certificate_pem(&self) -> String {
        self.server.certificate().chain_pem()
    }

    /// Sessions open right now (WebSockets included).
    #[napi(getter, catch_unwind)]
    pub fn session_count(&self) -> u32 {
        self.server.session_count() as u32
    }

    /// Connections open right now (QUIC and TCP).
    #[napi(getter, catch_unwind)]
    pub fn connection_count(&self) -> u32 {
        self.server.connection_count() as u32
    }

    /// The server's counters.
    #[napi(catch_unwind)]
    pub fn stats(&self) -> NativeServerStats {
        let s = self.server.stats();
        NativeServerStats {
            connections: s.connections as f64,
            sessions: s.sessions as f64,
            connections_accepted: s.connections_accepted as f64,
            connections_refused: s.connections_refused as f64,
            handshakes_failed: s.handshakes_failed as f64,
            sessions_accepted: s.sessions_accepted as f64,
            sessions_failed_to_start: s.sessions_failed_to_start as f64,
            http_requests: s.http_requests as f64,
            requests_refused: s
                .requests_refused
                .iter()
                .map(|(status, count)| vec![f64::from(*status), *count as f64])
                .collect(),
            prometheus: s.to_prometheus(),
        }
    }

    /// The TCP port of the WebSocket and QMux side, if it listens.
    #[napi(getter, catch_unwind)]
    pub fn tcp_port(&self) -> Option<u32> {
        self.server.tcp_local_addr().map(|a| u32::from(a.port()))
    }

    /// Replaces the certificate for new connections (PEM strings).
    #[napi(catch_unwind)]
    pub fn set_certificate(&self, cert_pem: String, key_pem: String) -> napi::Result<()> {
        let cert = Certificate::from_pem(cert_pem.as_bytes(), key_pem.as_bytes())
            .map_err(|e| error::from_server(e.into()))?;
        self.server.set_certificate(cert);
        Ok(())
    }

    /// Queues requests for paths without a route from now on (instead of 404) until
    /// `accept()` takes them.
    #[napi(catch_unwind)]
    pub fn queue_unrouted(&self) {
        self.server.queue_unrouted();
    }

    /// The next request for a path without a route; `null` once the server closes.
    #[napi]
    pub async fn accept(&self) -> Option<NativeRequest> {
        self.server.accept().await.map(NativeRequest::new)
    }

    /// Claims the requests for `path`; with `web_sockets`, plain WebSocket requests too.
    #[napi(catch_unwind)]
    pub fn route(&self, path: String, web_sockets: Option<bool>) -> napi::Result<NativeRoute> {
        let route = self.server.route(&path).map_err(error::from_server)?;
        if web_sockets == Some(true) {
            route.allow_websockets();
        }
        let (closed, _) = watch::channel(false);
        Ok(NativeRoute {
            path,
            route: Mutex::new(Some(Arc::new(route))),
            closed,
        })
    }

    /// A WebSocket handshake another HTTP server received; resolves with what to answer
    /// (and, to upgrade, the pipe to connect the socket to).
    #[napi]
    pub async fn websocket_handshake(
        &self,
        handshake: crate::upgrade::NativeHandshake,
    ) -> napi::Result<NativeHandshakeResult> {
        let (outcome, pipe) = crate::upgrade::handshake(&self.server, handshake).await?;
        Ok(NativeHandshakeResult {
            outcome: Some(outcome),
            pipe: Mutex::new(pipe),
        })
    }

    /// Sends every ordinary HTTP request (not a session or WebSocket request) to the
    /// returned inbox, from now on, calling `wake` when requests are waiting; past
    /// `capacity` waiting, more get 503.
    #[napi(catch_unwind)]
    pub fn enable_http(
        &self,
        capacity: u32,
        wake: crate::exchange::Wake,
    ) -> crate::exchange::NativeHttpInbox {
        let (service, inbox) = crate::exchange::NativeHttpInbox::pair(capacity as usize, wake);
        self.server.set_http_handler(Some(service));
        inbox
    }

    /// Refuses new sessions (503) and asks open ones to drain; they go on until they end.
    #[napi(catch_unwind)]
    pub fn drain(&self) {
        self.server.drain();
    }

    /// Whether `drain()` was called.
    #[napi(getter, catch_unwind)]
    pub fn draining(&self) -> bool {
        self.server.is_draining()
    }

    /// Resolves once no session is open.
    #[napi]
    pub async fn drained(&self) {
        self.server.drained().await;
    }

    /// Graceful shutdown: drain sessions, wait up to `grace_ms`, then close the rest.
    #[napi]
    pub async fn close(&self, grace_ms: f64) {
        let grace = Duration::from_secs_f64(grace_ms.max(0.0) / 1000.0);
        self.server.close(grace).await;
    }
}

/// The answer to an external handshake and, to upgrade, its pipe.
#[napi]
pub struct NativeHandshakeResult {
    outcome: Option<crate::upgrade::NativeHandshakeOutcome>,
    pipe: Mutex<Option<crate::upgrade::NativeSocketPipe>>,
}

#[napi]
impl NativeHandshakeResult {
    /// Status, headers, body, and whether to upgrade.
    #[napi(getter, catch_unwind)]
    pub fn outcome(&self) -> Option<crate::upgrade::NativeHandshakeOutcome> {
        self.outcome
            .as_ref()
            .map(|o| crate::upgrade::NativeHandshakeOutcome {
                status: o.status,
                headers: o
                    .headers
                    .iter()
                    .map(|h| crate::request::NativeHeader {
                        name: h.name.clone(),
                        value: h.value.clone(),
                    })
                    .collect(),
                body: o.body.clone(),
                upgrade: o.upgrade,
            })
    }

    /// The pipe for an upgrade (once).
    #[napi(catch_unwind)]
    pub fn take_pipe(&self) -> Option<crate::upgrade::NativeSocketPipe> {
        self.pipe.lock().ok().and_then(|mut p| p.take())
    }
}

/// The requests for one path.
#[napi]
pub struct NativeRoute {
    path: String,
    route: Mutex<Option<Arc<Route>>>,
    closed: watch::Sender<bool>,
}

#[napi]
impl NativeRoute {
    /// The path this route claims.
    #[napi(getter, catch_unwind)]
    pub fn path(&self) -> String {
        self.path.clone()
    }

    /// The next request; `null` once the route or the server is closed.
    #[napi]
    pub async fn accept(&self) -> Option<NativeRequest> {
        let route = self.route.lock().ok()?.clone()?;
        let mut closed = self.closed.subscribe();
        tokio::select! {
            r = route.accept() => r.map(NativeRequest::new),
            _ = closed.wait_for(|c| *c) => None,
        }
    }

    /// Releases the path: pending `accept()` calls resolve `null`, new requests get 404.
    #[napi(catch_unwind)]
    pub fn close(&self) {
        if let Ok(mut r) = self.route.lock() {
            r.take();
        }
        self.closed.send_replace(true);
    }
}

/// A generated certificate and key.
#[napi(object)]
pub struct NativeCertificate {
    /// The certificate as PEM.
    pub cert_pem: String,
    /// The private key as PEM (PKCS#8).
    pub key_pem: String,
    /// SHA-256 of the DER certificate.
    pub sha256: Buffer,
    /// Base64 SHA-256 of the SubjectPublicKeyInfo.
    pub spki_sha256: String,
}

/// Generates a self-signed ECDSA P-256 certificate for `names`, valid for browsers'
/// `serverCertificateHashes` (at most 14 days).
#[napi(catch_unwind)]
pub fn self_signed_certificate(names: Vec<String>) -> napi::Result<NativeCertificate> {
    let cert = Certificate::self_signed(&names).map_err(|e| error::from_server(e.into()))?;
    Ok(NativeCertificate {
        cert_pem: cert.chain_pem(),
        key_pem: cert.key_pem().to_owned(),
        sha256: cert.sha256().to_vec().into(),
        spki_sha256: cert.spki_sha256_base64(),
    })
}

/// A snapshot of a server's counters (see `ferrovia::ServerStats`).
#[napi(object)]
pub struct NativeServerStats {
    /// Connections open now.
    pub connections: f64,
    /// Sessions open now.
    pub sessions: f64,
    /// Connections admitted since the start.
    pub connections_accepted: f64,
    /// Connection attempts refused.
    pub connections_refused: f64,
    /// Handshakes that failed.
    pub handshakes_failed: f64,
    /// Sessions accepted since the start.
    pub sessions_accepted: f64,
    /// Accepted sessions that ended before they started.
    pub sessions_failed_to_start: f64,
    /// Ordinary HTTP requests that reached the handler.
    pub http_requests: f64,
    /// `[status, count]` pairs of requests the server refused itself.
    pub requests_refused: Vec<Vec<f64>>,
    /// The same snapshot as Prometheus text.
    pub prometheus: String,
}
