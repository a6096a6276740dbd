//! The listening endpoint: accepts QUIC connections within the configured bounds, routes
//! session requests by path and shuts down gracefully.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
        Arc, Mutex, Weak,
    },
    time::Duration,
};

use bytes::Bytes;
use tokio::sync::{watch, Notify};
use tracing::{debug, info, warn};

use crate::{
    certificate::{Certificate, CertificateResolver},
    config::{CongestionController, ServerConfig, TcpListen},
    error::ServerError,
    h3::{connection, settings},
    request::SessionRequest,
    shared::{lock, Admission, RequestQueue, ServerShared},
    tcp::{Handshake, HandshakeOutcome},
};

/// Closes the endpoint when the last [`Server`] clone is dropped.
struct ServerHandle {
    shared: Arc<ServerShared>,
}

impl Drop for ServerHandle {
    fn drop(&mut self) {
        self.shared.closing.store(true, Ordering::Release);
        self.shared.closing_tx.send_replace(true);
        self.shared
            .endpoint
            .close(0x100u32.into(), b"server dropped");
    }
}

/// A WebTransport server listening on one UDP socket.
///
/// Cheap to clone; the endpoint closes when the last clone is dropped or after
/// [`Server::close`].
#[derive(Clone)]
pub struct Server {
    handle: Arc<ServerHandle>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("local_addr", &self.local_addr().ok())
            .finish_non_exhaustive()
    }
}

/// Before a connection has a session it may not make the server hold more than this.
pub(crate) const PRE_SESSION_RECEIVE_WINDOW: u32 = 256 * 1024;

fn transport_config(config: &ServerConfig) -> Result<quinn::TransportConfig, ServerError> {
    let l = &config.limits;
    let mut t = quinn::TransportConfig::default();
    t.max_concurrent_bidi_streams(l.max_bidi_streams.into())
        .max_concurrent_uni_streams(l.max_uni_streams.saturating_add(3).into())
        .stream_receive_window(l.stream_receive_window.into())
        .receive_window(
            l.connection_receive_window
                .min(PRE_SESSION_RECEIVE_WINDOW)
                .into(),
        )
        .send_window(l.send_window)
        .keep_alive_interval(config.keep_alive)
        .datagram_receive_buffer_size(Some(1 << 20))
        .datagram_send_buffer_size(1 << 20);
    let idle = config
        .idle_timeout
        .map(quinn::IdleTimeout::try_from)
        .transpose()
        .map_err(|e| ServerError::InvalidConfig(format!("idle_timeout: {e}")))?;
    t.max_idle_timeout(idle);
    match config.congestion_controller {
        CongestionController::Cubic => {
            t.congestion_controller_factory(Arc::new(quinn::congestion::CubicConfig::default()))
        }
        CongestionController::NewReno => {
            t.congestion_controller_factory(Arc::new(quinn::congestion::NewRenoConfig::default()))
        }
        CongestionController::Bbr => {
            t.congestion_controller_factory(Arc::new(quinn::congestion::BbrConfig::default()))
        }
    };
    Ok(t)
}

impl Server {
    /// Binds the UDP socket and starts accepting connections. Must be called from within a
    /// tokio runtime; the server's tasks run on that runtime.
    pub fn bind(config: ServerConfig) -> Result<Self, ServerError> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| ServerError::NoRuntime)?;
        config.validate().map_err(ServerError::InvalidConfig)?;
        let first = match &config.self_signed_renewal {
            Some(r) => Certificate::self_signed_for(&r.names, r.validity)
                .map_err(|e| ServerError::InvalidConfig(e.to_string()))?,
            None => config.certificate.clone(),
        };
        let resolver = Arc::new(CertificateResolver::new(first));
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut tls = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| ServerError::InvalidConfig(e.to_string()))?
            .with_no_client_auth()
            .with_cert_resolver(resolver.clone());
        tls.alpn_protocols = vec![b"h3".to_vec()];
        let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls)
            .map_err(|e| ServerError::InvalidConfig(e.to_string()))?;
        let mut server_config = match &config.fleet_keys {
            Some(keys) => quinn::ServerConfig::new(Arc::new(crypto), keys.token_key()),
            None => quinn::ServerConfig::with_crypto(Arc::new(crypto)),
        };
        server_config.transport_config(Arc::new(transport_config(&config)?));

        let (socket, tcp) = bind_sockets(&config)?;
        let connection_ids = match config.steering {
            Some(steering) => {
                // A socket handed in was placed by whoever opened it; one bound here must
                // prove it joined the group at its index.
                crate::fleet::prepare_steering(&socket, steering, config.udp_socket.is_none())?;
                Some(steering.connection_ids(config.connection_ids.as_ref())?)
            }
            None => config.connection_ids.clone(),
        };
        let endpoint = {
            let _guard = runtime.enter();
            quinn::Endpoint::new(
                {
                    let mut endpoint_config = match &config.fleet_keys {
                        Some(keys) => keys.endpoint_config(),
                        None => quinn::EndpointConfig::default(),
                    };
                    if let Some(lb) = &connection_ids {
                        endpoint_config.cid_generator(lb.generator_factory());
                    }
                    endpoint_config
                },
                Some(server_config),
                socket,
                Arc::new(quinn::TokioRuntime),
            )
            .map_err(|source| ServerError::Bind {
                addr: config.bind,
                source,
            })?
        };

        let tcp_listener = match tcp {
            Some((listener, tls)) => {
                let _guard = runtime.enter();
                listener
                    .set_nonblocking(true)
                    .and_then(|()| tokio::net::TcpListener::from_std(listener))
                    .map(|l| Some((l, tls)))
                    .map_err(|source| ServerError::BindTcp {
                        addr: config.bind,
                        source,
                    })?
            }
            None => None,
        };
        let tcp_addr = tcp_listener.as_ref().and_then(|(l, _)| l.local_addr().ok());
        let (closing_tx, closing_rx) = watch::channel(false);

        let mut settings_bytes = Vec::new();
        settings::encode_control_stream(&settings::server_settings(), &mut settings_bytes);
        let shared = Arc::new(ServerShared {
            keep_alive: config.keep_alive,
            websocket_compression: config.websocket_compression,
            idle_timeout: config.idle_timeout,
            closing_tx,
            tcp_addr,
            endpoint: endpoint.clone(),
            limits: config.limits.clone(),
            origin_policy: config.origin_policy.clone(),
            trusted_proxies: config.trusted_proxies.clone(),
            refusals: Mutex::default(),
            running_requests: Arc::new(tokio::sync::Semaphore::new(
                config.limits.max_concurrent_requests,
            )),
            server_names: config.server_names.clone(),
            settings_bytes: Bytes::from(settings_bytes),
            runtime: runtime.clone(),
            resolver,
            routes: Mutex::new(HashMap::new()),
            fallback: RequestQueue::new(config.limits.request_queue),
            fallback_enabled: AtomicBool::new(false),
            unclaimed_websockets: Mutex::new(None),
            closing: AtomicBool::new(false),
            sessions: Mutex::new(HashMap::new()),
            next_key: AtomicU64::new(0),
            sessions_changed: Notify::new(),
            connections: AtomicUsize::new(0),
            per_ip: Mutex::new(HashMap::new()),
            http: std::sync::RwLock::new(config.http.clone()),
            counters: Default::default(),
            renewing: AtomicBool::new(config.self_signed_renewal.is_some()),
            tcp_task: Mutex::new(None),
            draining: AtomicBool::new(false),
            winding_down: watch::channel(false).0,
        });
        if let Some(renewal) = config.self_signed_renewal.clone() {
            runtime.spawn(renew_self_signed(
                Arc::downgrade(&shared),
                renewal,
                shared.closing_tx.subscribe(),
            ));
        }
        if let Some((listener, tls)) = tcp_listener {
            let acceptor = if tls {
                Some(tls_acceptor(shared.resolver.clone())?)
            } else {
                None
            };
            let task = runtime.spawn(crate::tcp::listen(
                listener,
                acceptor,
                Arc::downgrade(&shared),
                closing_rx,
            ));
            *lock(&shared.tcp_task) = Some(task);
        }
        let weak = Arc::downgrade(&shared);
        runtime.spawn(async move {
            while let Some(incoming) = endpoint.accept().await {
                let Some(shared) = weak.upgrade() else { break };
                match shared.admit(&incoming) {
                    Admission::Accept(slot) => {
                        tokio::spawn(connection::run(incoming, shared, slot));
                    }
                    Admission::Retry => {
                        if let Err(e) = incoming.retry() {
                            e.into_incoming().refuse();
                        }
                    }
                    Admission::Refuse(why) => {
                        shared
                            .counters
                            .connection_refused(incoming.remote_address(), why);
                        incoming.refuse();
                    }
                }
            }
        });
        Ok(Self {
            handle: Arc::new(ServerHandle { shared }),
        })
    }

    fn shared(&self) -> &Arc<ServerShared> {
        &self.handle.shared
    }

    /// Takes a WebSocket handshake that another HTTP server received (the application's
    /// Express, Fastify, hyper, or ASGI server on its own port), so that QMux sessions and
    /// plain WebSockets can ride it: the request goes through the same checks, routes and
    /// limits as one on this server's own TCP side, and resolves once the application has
    /// answered it. The caller sends the response it gets back and, on
    /// [`HandshakeOutcome::Upgrade`], hands the upgraded connection to the session.
    pub async fn websocket_handshake(&self, handshake: Handshake) -> HandshakeOutcome {
        crate::tcp::handshake(self.shared(), None, handshake).await
    }

    /// Sets (or with `None` removes) the handler for ordinary HTTP requests; requests
    /// already being answered keep the handler they started with.
    pub fn set_http_handler(&self, service: Option<crate::HttpService>) {
        *self
            .shared()
            .http
            .write()
            .unwrap_or_else(|e| e.into_inner()) = service;
    }

    /// The bound TCP address of the WebSocket and QMux side, if it listens (with the same
    /// port as UDP unless configured otherwise).
    pub fn tcp_local_addr(&self) -> Option<SocketAddr> {
        self.shared().tcp_addr
    }

    /// The bound UDP address (with the real port when bound to port 0).
    pub fn local_addr(&self) -> Result<SocketAddr, ServerError> {
        self.shared()
            .endpoint
            .local_addr()
            .map_err(|source| ServerError::Bind {
                addr: SocketAddr::from(([0, 0, 0, 0], 0)),
                source,
            })
    }

    /// From now on, requests for paths without a [`Route`] wait in the queue that
    /// [`accept`](Self::accept) drains instead of getting 404. `accept` does this itself
    /// when first polled; call it earlier when the first poll may come later than the
    /// first request (a language binding whose accept runs on another thread, say).
    pub fn queue_unrouted(&self) {
        self.shared()
            .fallback_enabled
            .store(true, Ordering::Release);
    }

    /// The next session request for a path that has no [`Route`]. Until this (or
    /// [`queue_unrouted`](Self::queue_unrouted)) is first called, such requests are
    /// answered with 404. `None` once the server is closing.
    ///
    /// Requests whose client gave up while they waited (reset the CONNECT stream, closed
    /// the connection) never come out of here.
    pub async fn accept(&self) -> Option<SessionRequest> {
        let shared = self.shared();
        shared.fallback_enabled.store(true, Ordering::Release);
        shared.fallback.pop().await
    }

    /// Claims every request whose path (without query) is exactly `path`. Dropping the
    /// route releases the path; requests for it then get 404.
    ///
    /// ```no_run
    /// # async fn run(server: ferrovia::Server) -> Result<(), ferrovia::ServerError> {
    /// let chat = server.route("/chat")?;
    /// tokio::spawn(async move {
    ///     while let Some(request) = chat.accept().await {
    ///         if let Ok(session) = request.accept().await {
    ///             tokio::spawn(async move { session.closed().await });
    ///         }
    ///     }
    /// });
    /// # Ok(()) }
    /// ```
    pub fn route(&self, path: &str) -> Result<Route, ServerError> {
        let shared = self.shared();
        if shared.is_closing() {
            return Err(ServerError::Closed);
        }
        if !path.starts_with('/') {
            return Err(ServerError::InvalidConfig(format!(
                "route path {path:?} must start with '/'"
            )));
        }
        let mut routes = lock(&shared.routes);
        if routes.get(path).is_some_and(|q| !q.is_closed()) {
            return Err(ServerError::RouteTaken(path.to_owned()));
        }
        let queue = RequestQueue::new(shared.limits.request_queue);
        routes.insert(path.to_owned(), queue.clone());
        Ok(Route {
            path: path.to_owned(),
            queue,
            server: Arc::downgrade(shared),
            claim: Claim::Path,
        })
    }

    /// Claims plain WebSocket requests (RFC 6455 or RFC 8441, no QMux subprotocol) for
    /// every path that no [`Route`] claims, which otherwise get 404: for an application
    /// that answers WebSockets by path itself, as an ASGI application's `websocket` scope
    /// does. They pass the same origin policy and limits as any session request and are
    /// accepted with [`SessionRequest::accept_websocket`]. Dropping the route gives the
    /// 404s back. Fails with [`ServerError::RouteTaken`] while another such route exists.
    pub fn unclaimed_websockets(&self) -> Result<Route, ServerError> {
        let shared = self.shared();
        if shared.is_closing() {
            return Err(ServerError::Closed);
        }
        let mut slot = lock(&shared.unclaimed_websockets);
        if slot.as_ref().is_some_and(|q| !q.is_closed()) {
            return Err(ServerError::RouteTaken(
                "unclaimed WebSocket paths".to_owned(),
            ));
        }
        let queue = RequestQueue::new(shared.limits.request_queue);
        queue.websockets.store(true, Ordering::Release);
        *slot = Some(queue.clone());
        Ok(Route {
            path: String::new(),
            queue,
            server: Arc::downgrade(shared),
            claim: Claim::UnclaimedWebSockets,
        })
    }

    /// The certificate new connections get.
    pub fn certificate(&self) -> Certificate {
        self.shared().resolver.get()
    }

    /// Replaces the certificate; connections made from now on get the new one, existing
    /// ones keep theirs. It also ends a [`SelfSignedRenewal`](crate::SelfSignedRenewal):
    /// the certificate set here stays until the next call.
    pub fn set_certificate(&self, certificate: Certificate) {
        let shared = self.shared();
        shared.renewing.store(false, Ordering::Release);
        shared.resolver.set(certificate);
    }

    /// The SHA-256 hashes for a browser's `serverCertificateHashes`: the current
    /// certificate's, and during a [`SelfSignedRenewal`](crate::SelfSignedRenewal)'s
    /// overlap also the next one's, so a page given the list keeps connecting after the
    /// switch.
    pub fn certificate_hashes(&self) -> Vec<[u8; 32]> {
        let resolver = &self.shared().resolver;
        std::iter::once(resolver.get())
            .chain(resolver.next())
            .map(|c| c.sha256())
            .collect()
    }

    /// The hashes a page may pass as `serverCertificateHashes`: those of
    /// [`certificate_hashes`](Self::certificate_hashes) whose certificate browsers accept
    /// by hash (valid for 14 days or less; see [`Certificate::accepted_by_hash`]). Empty
    /// for a certificate from a CA, which pages trust without hashes.
    pub fn browser_certificate_hashes(&self) -> Vec<[u8; 32]> {
        let resolver = &self.shared().resolver;
        std::iter::once(resolver.get())
            .chain(resolver.next())
            .filter(Certificate::accepted_by_hash)
            .map(|c| c.sha256())
            .collect()
    }

    /// The browser connector's module (`connector`, the text of `ferrovia/client`) with
    /// one more export, `serverCertificateHashes`: this server's
    /// [`browser_certificate_hashes`](Self::browser_certificate_hashes) in the shape
    /// `new WebTransport(url, { serverCertificateHashes })` takes (an empty list for a CA's
    /// certificate). The bindings serve it to pages, so a page needs no hash of its own.
    pub fn client_module(&self, connector: &str) -> String {
        let hashes: Vec<String> = self
            .browser_certificate_hashes()
            .iter()
            .map(|h| {
                let bytes: Vec<String> = h.iter().map(u8::to_string).collect();
                format!(
                    "{{ algorithm: 'sha-256', value: new Uint8Array([{}]) }}",
                    bytes.join(",")
                )
            })
            .collect();
        format!(
            "{connector}\n// Added by the server that served this file: its certificate's hashes, for\n// native WebTransport (empty when the certificate comes from a CA).\nexport const serverCertificateHashes = [{}];\n",
            hashes.join(", ")
        )
    }

    /// Sessions open right now. A session no longer counts once its
    /// [`closed`](crate::Session::closed) has resolved.
    pub fn session_count(&self) -> usize {
        self.shared().sessions().len()
    }

    /// QUIC connections open right now (with or without sessions).
    pub fn connection_count(&self) -> usize {
        self.shared().connections.load(Ordering::Acquire)
    }

    /// The server's counters: connections and sessions open now, and totals of what it
    /// admitted, refused and answered itself (with the status of each refusal). Each
    /// refusal is also a `tracing` event at INFO with its reason, path and client.
    /// [`ServerStats::to_prometheus`] formats them for a `/metrics` route.
    pub fn stats(&self) -> crate::ServerStats {
        let shared = self.shared();
        shared.counters.snapshot(
            shared.connections.load(Ordering::Acquire),
            shared.sessions().len(),
        )
    }

    /// Starts a drain, as before a deploy: new session and WebSocket requests get 503 from
    /// now on, every open WebTransport and QMux session is asked to drain (the
    /// DRAIN_WEBTRANSPORT_SESSION capsule, or QMux's equivalent), and open sessions and
    /// WebSockets go on until they end. The socket stays bound and ordinary HTTP requests
    /// are still answered. [`drained`](Self::drained) waits for the last session;
    /// [`close`](Self::close) ends what is left.
    ///
    /// HTTP/3 connections also get GOAWAY once they carry no session, so their next
    /// requests go to a new connection (another fleet member, behind a load balancer).
    ///
    /// A deploy's SIGTERM, with 30 seconds for sessions to finish:
    ///
    /// ```no_run
    /// # async fn run(server: ferrovia::Server) {
    /// use std::time::Duration;
    /// use tokio::signal::unix::{signal, SignalKind};
    ///
    /// signal(SignalKind::terminate()).unwrap().recv().await;
    /// server.drain();
    /// let _ = tokio::time::timeout(Duration::from_secs(30), server.drained()).await;
    /// server.close(Duration::from_secs(1)).await;
    /// # }
    /// ```
    pub fn drain(&self) {
        let shared = self.shared();
        if shared.draining.swap(true, Ordering::AcqRel) {
            return;
        }
        shared.winding_down.send_replace(true);
        let (sessions, sockets) = shared.live();
        info!(
            sessions = sessions.len(),
            websockets = sockets.len(),
            "draining"
        );
        for s in sessions {
            s.command(crate::session::Command::Drain);
        }
    }

    /// Whether [`drain`](Self::drain) was called.
    pub fn is_draining(&self) -> bool {
        self.shared().draining.load(Ordering::Acquire)
    }

    /// Resolves once no session or WebSocket is open (at once if none is).
    pub async fn drained(&self) {
        let shared = self.shared();
        loop {
            let changed = shared.sessions_changed.notified();
            if shared.sessions().is_empty() {
                return;
            }
            changed.await;
        }
    }

    /// Shuts down gracefully: stops accepting connections and sessions, asks every session
    /// to drain, waits up to `grace` for them to end, then closes what is left.
    pub async fn close(&self, grace: Duration) {
        let shared = self.shared();
        shared.closing.store(true, Ordering::Release);
        let routes: Vec<_> = lock(&shared.routes).drain().map(|(_, q)| q).collect();
        for q in routes {
            q.close();
        }
        shared.fallback.close();
        if let Some(q) = lock(&shared.unclaimed_websockets).take() {
            q.close();
        }
        shared.closing_tx.send_replace(true);
        shared.winding_down.send_replace(true);
        let (sessions, sockets) = shared.live();
        for s in sessions {
            s.command(crate::session::Command::Drain);
        }
        // A WebSocket has no drain: it is told the server is going away (1001).
        for w in sockets {
            w.close(1001, "server shutting down");
        }
        let deadline = tokio::time::Instant::now() + grace;
        loop {
            let changed = shared.sessions_changed.notified();
            if shared.sessions().is_empty() {
                break;
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                break;
            }
        }
        let (remaining, sockets) = shared.live();
        debug!(remaining = remaining.len(), "closing server");
        let closed_some = !remaining.is_empty();
        for s in remaining {
            s.close(0, "server shutting down");
        }
        for w in sockets {
            w.close(1001, "server shutting down");
        }
        // Let the close capsules reach the clients before the connections go: each session
        // ends once its client answers the capsule (or after 2 s), and a connection closed
        // earlier would be all a busy client gets to see.
        if !shared.sessions().is_empty() {
            let _ = tokio::time::timeout(Duration::from_millis(2500), async {
                while !shared.sessions().is_empty() {
                    shared.sessions_changed.notified().await;
                }
            })
            .await;
        }
        if closed_some {
            // A browser that answered the capsule may still be passing the close up to the
            // page; a connection close arriving meanwhile turns it into "connection lost".
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
        // The handler goes with the server: a queue fed by it (HttpService::queue) ends
        // once the requests in progress are answered.
        *shared.http.write().unwrap_or_else(|e| e.into_inner()) = None;
        shared.endpoint.close(0x100u32.into(), b"server closed");
        let _ = tokio::time::timeout(Duration::from_secs(2), shared.endpoint.wait_idle()).await;
        if shared.connections.load(Ordering::Acquire) > 0 {
            warn!("connections still open after close");
        }
        // quinn keeps its socket until every handle to the endpoint is gone, and in Node or
        // Python that is when a garbage collector decides. Moving the closed endpoint to a
        // throwaway loopback socket frees the port now, so it can be bound again at once,
        // as net.Server and asyncio servers allow.
        let loopback: SocketAddr = match shared.endpoint.local_addr() {
            Ok(a) if a.is_ipv6() => (std::net::Ipv6Addr::LOCALHOST, 0).into(),
            _ => (std::net::Ipv4Addr::LOCALHOST, 0).into(),
        };
        // Twice: quinn keeps the previous socket of a rebind to drain packets in flight.
        for _ in 0..2 {
            if let Ok(socket) = std::net::UdpSocket::bind(loopback) {
                let _ = shared.endpoint.rebind(socket);
            }
        }
        let tcp = lock(&shared.tcp_task).take();
        if let Some(task) = tcp {
            let _ = tokio::time::timeout(Duration::from_secs(2), task).await;
        }
    }
}

/// Makes the next self-signed certificate `overlap` before the switch and switches
/// `overlap` before the current one expires, until the server closes or the application
/// sets a certificate of its own.
async fn renew_self_signed(
    server: Weak<ServerShared>,
    renewal: crate::SelfSignedRenewal,
    mut closing: watch::Receiver<bool>,
) {
    let mut issued = tokio::time::Instant::now();
    loop {
        let announce_at = issued + renewal.validity - renewal.overlap * 2;
        let switch_at = issued + renewal.validity - renewal.overlap;
        let Some(shared) = still_renewing(announce_at, &mut closing, &server).await else {
            return;
        };
        let next_issued = tokio::time::Instant::now();
        let next = match Certificate::self_signed_for(&renewal.names, renewal.validity) {
            Ok(c) => c,
            Err(e) => {
                warn!("could not make the next self-signed certificate: {e}; retrying in a minute");
                drop(shared);
                let retry = tokio::time::Instant::now() + Duration::from_secs(60);
                if still_renewing(retry, &mut closing, &server).await.is_none() {
                    return;
                }
                continue;
            }
        };
        info!(
            sha256 = next.sha256_hex(),
            "next self-signed certificate announced"
        );
        shared.resolver.announce(next.clone());
        drop(shared);
        let Some(shared) = still_renewing(switch_at, &mut closing, &server).await else {
            return;
        };
        info!(
            sha256 = next.sha256_hex(),
            "self-signed certificate renewed"
        );
        shared.resolver.set(next);
        issued = next_issued;
    }
}

/// Sleeps until `until`; then the server, if it is still open and its certificate is
/// still the renewal's to manage (the application has not set one of its own).
async fn still_renewing(
    until: tokio::time::Instant,
    closing: &mut watch::Receiver<bool>,
    server: &Weak<ServerShared>,
) -> Option<Arc<ServerShared>> {
    tokio::select! {
        () = tokio::time::sleep_until(until) => {}
        _ = closing.wait_for(|c| *c) => return None,
    }
    let shared = server.upgrade()?;
    shared.renewing.load(Ordering::Acquire).then_some(shared)
}

/// Requests for one path, from [`Server::route`], or plain WebSocket requests for every
/// unclaimed path, from [`Server::unclaimed_websockets`].
pub struct Route {
    path: String,
    queue: Arc<RequestQueue>,
    server: Weak<ServerShared>,
    claim: Claim,
}

/// What a [`Route`] holds, to give back when it drops.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Claim {
    Path,
    UnclaimedWebSockets,
}

impl std::fmt::Debug for Route {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Route").field("path", &self.path).finish()
    }
}

impl Route {
    /// The path this route claims (empty for [`Server::unclaimed_websockets`]).
    pub fn path(&self) -> &str {
        &self.path
    }

    /// Also takes plain WebSocket requests (no QMux subprotocol) for this path, to be
    /// accepted with [`SessionRequest::accept_websocket`]. Without it they get 400.
    pub fn allow_websockets(&self) {
        self.queue.websockets.store(true, Ordering::Release);
    }

    /// The next request for this path; `None` once the server is closing. Requests whose
    /// client gave up while they waited never come out of here.
    pub async fn accept(&self) -> Option<SessionRequest> {
        self.queue.pop().await
    }
}

impl Drop for Route {
    fn drop(&mut self) {
        if let Some(server) = self.server.upgrade() {
            match self.claim {
                Claim::Path => {
                    let mut routes = lock(&server.routes);
                    if routes
                        .get(&self.path)
                        .is_some_and(|q| Arc::ptr_eq(q, &self.queue))
                    {
                        routes.remove(&self.path);
                    }
                }
                Claim::UnclaimedWebSockets => {
                    let mut slot = lock(&server.unclaimed_websockets);
                    if slot.as_ref().is_some_and(|q| Arc::ptr_eq(q, &self.queue)) {
                        *slot = None;
                    }
                }
            }
        }
        self.queue.close();
    }
}

/// Binds the UDP socket and, unless turned off, the TCP listener: on the same port number
/// by default (for port 0, one that is free on both).
fn bind_sockets(
    config: &ServerConfig,
) -> Result<(std::net::UdpSocket, Option<(std::net::TcpListener, bool)>), ServerError> {
    if config.udp_socket.is_some() || config.tcp_listener.is_some() {
        return inherited_sockets(config);
    }
    let reuse_port = config.reuse_port;
    let udp = |addr: SocketAddr| {
        crate::fleet::bind_udp(addr, reuse_port)
            .map_err(|source| ServerError::Bind { addr, source })
    };
    let tcp = |addr: SocketAddr| {
        crate::fleet::bind_tcp(addr, reuse_port)
            .map_err(|source| ServerError::BindTcp { addr, source })
    };
    match &config.tcp {
        TcpListen::Off => Ok((udp(config.bind)?, None)),
        TcpListen::At(addr) => Ok((udp(config.bind)?, Some((tcp(*addr)?, true)))),
        TcpListen::PlainBehindTlsProxy(addr) => Ok((udp(config.bind)?, Some((tcp(*addr)?, false)))),
        TcpListen::SamePort if config.bind.port() != 0 => {
            let u = udp(config.bind)?;
            Ok((u, Some((tcp(config.bind)?, true))))
        }
        TcpListen::SamePort => {
            // Port 0: take a free UDP port, then the same number on TCP; try again if
            // another program holds that TCP port.
            let mut last = None;
            for _ in 0..32 {
                let u = udp(config.bind)?;
                let port = u.local_addr().map_err(|source| ServerError::Bind {
                    addr: config.bind,
                    source,
                })?;
                match tcp(port) {
                    Ok(t) => return Ok((u, Some((t, true)))),
                    Err(e) => last = Some(e),
                }
            }
            Err(last.unwrap_or(ServerError::InvalidConfig("no free port".into())))
        }
    }
}

/// The sockets of [`ServerConfig::udp_socket`] and [`ServerConfig::tcp_listener`] (as
/// duplicates, so that whoever handed them in keeps them), binding what is missing.
fn inherited_sockets(
    config: &ServerConfig,
) -> Result<(std::net::UdpSocket, Option<(std::net::TcpListener, bool)>), ServerError> {
    let udp = match &config.udp_socket {
        Some(socket) => socket.try_clone(),
        None => crate::fleet::bind_udp(config.bind, config.reuse_port),
    }
    .map_err(|source| ServerError::Bind {
        addr: config.bind,
        source,
    })?;
    let tls = !matches!(config.tcp, TcpListen::PlainBehindTlsProxy(_));
    let tcp_addr = match &config.tcp {
        TcpListen::Off => return Ok((udp, None)),
        TcpListen::At(addr) | TcpListen::PlainBehindTlsProxy(addr) => *addr,
        TcpListen::SamePort => udp.local_addr().map_err(|source| ServerError::Bind {
            addr: config.bind,
            source,
        })?,
    };
    let tcp = match &config.tcp_listener {
        Some(listener) => listener.try_clone(),
        None => crate::fleet::bind_tcp(tcp_addr, config.reuse_port),
    }
    .map_err(|source| ServerError::BindTcp {
        addr: tcp_addr,
        source,
    })?;
    Ok((udp, Some((tcp, tls))))
}

/// TLS for the TCP side: the same certificate (and rotation) as QUIC; HTTP/2 preferred.
fn tls_acceptor(
    resolver: Arc<CertificateResolver>,
) -> Result<tokio_rustls::TlsAcceptor, ServerError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| ServerError::InvalidConfig(e.to_string()))?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(tls)))
}
