//! The listening endpoint: accepts QUIC connections, routes session requests by path and
//! shuts down gracefully.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Mutex, Weak,
    },
    time::Duration,
};

use bytes::Bytes;
use tokio::sync::{mpsc, Notify};
use tracing::debug;

use crate::{
    certificate::{Certificate, CertificateResolver},
    config::{CongestionController, Limits, OriginPolicy, ServerConfig},
    connection,
    error::ServerError,
    request::SessionRequest,
    session::SessionShared,
    settings,
};

/// State shared by the server handle, its accept loop and its connections.
pub(crate) struct ServerShared {
    pub(crate) endpoint: quinn::Endpoint,
    pub(crate) limits: Limits,
    pub(crate) origin_policy: OriginPolicy,
    pub(crate) settings_bytes: Bytes,
    pub(crate) runtime: tokio::runtime::Handle,
    resolver: Arc<CertificateResolver>,
    routes: Mutex<HashMap<String, mpsc::Sender<SessionRequest>>>,
    fallback_tx: Mutex<Option<mpsc::Sender<SessionRequest>>>,
    fallback_rx: tokio::sync::Mutex<mpsc::Receiver<SessionRequest>>,
    fallback_enabled: AtomicBool,
    closing: AtomicBool,
    sessions: Mutex<HashMap<u64, Weak<SessionShared>>>,
    next_key: AtomicU64,
    sessions_changed: Notify,
}

impl ServerShared {
    pub(crate) fn is_closing(&self) -> bool {
        self.closing.load(Ordering::Acquire)
    }

    fn sessions(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Weak<SessionShared>>> {
        self.sessions.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn reserve_session(self: &Arc<Self>) -> Option<SessionSlot> {
        let mut map = self.sessions();
        if map.len() >= self.limits.max_sessions {
            return None;
        }
        let key = self.next_key.fetch_add(1, Ordering::Relaxed);
        map.insert(key, Weak::new());
        Some(SessionSlot {
            server: self.clone(),
            key,
        })
    }

    /// Queues a request for its route; on failure, gives it back with the status to answer.
    #[allow(clippy::result_large_err)] // the request goes straight back to be rejected
    pub(crate) fn dispatch(&self, request: SessionRequest) -> Result<(), (SessionRequest, u16)> {
        let path = request.path().split('?').next().unwrap_or("/").to_owned();
        let tx = {
            let routes = self.routes.lock().unwrap_or_else(|e| e.into_inner());
            routes.get(&path).cloned()
        };
        let tx = match tx {
            Some(tx) => tx,
            None if self.fallback_enabled.load(Ordering::Acquire) => {
                match self
                    .fallback_tx
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .clone()
                {
                    Some(tx) => tx,
                    None => return Err((request, 503)),
                }
            }
            None => return Err((request, 404)),
        };
        tx.try_send(request).map_err(|e| match e {
            mpsc::error::TrySendError::Full(r) => (r, 503),
            mpsc::error::TrySendError::Closed(r) => (r, 404),
        })
    }
}

/// A server-wide session slot, released when the session ends.
pub(crate) struct SessionSlot {
    server: Arc<ServerShared>,
    key: u64,
}

impl SessionSlot {
    pub(crate) fn register(&self, session: &Arc<SessionShared>) {
        self.server
            .sessions()
            .insert(self.key, Arc::downgrade(session));
    }
}

impl Drop for SessionSlot {
    fn drop(&mut self) {
        self.server.sessions().remove(&self.key);
        self.server.sessions_changed.notify_waiters();
    }
}

/// Closes the endpoint when the last [`Server`] clone is dropped.
struct ServerHandle {
    shared: Arc<ServerShared>,
}

impl Drop for ServerHandle {
    fn drop(&mut self) {
        self.shared.closing.store(true, Ordering::Release);
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

fn transport_config(config: &ServerConfig) -> Result<quinn::TransportConfig, ServerError> {
    let l = &config.limits;
    let mut t = quinn::TransportConfig::default();
    t.max_concurrent_bidi_streams(l.max_bidi_streams.into())
        .max_concurrent_uni_streams(l.max_uni_streams.saturating_add(3).into())
        .stream_receive_window(l.stream_receive_window.into())
        .receive_window(l.connection_receive_window.into())
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
        let resolver = Arc::new(CertificateResolver::new(config.certificate.clone()));
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut tls = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| ServerError::InvalidConfig(e.to_string()))?
            .with_no_client_auth()
            .with_cert_resolver(resolver.clone());
        tls.alpn_protocols = vec![b"h3".to_vec()];
        let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls)
            .map_err(|e| ServerError::InvalidConfig(e.to_string()))?;
        let mut server_config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
        server_config.transport_config(Arc::new(transport_config(&config)?));

        let socket =
            std::net::UdpSocket::bind(config.bind).map_err(|source| ServerError::Bind {
                addr: config.bind,
                source,
            })?;
        let endpoint = {
            let _guard = runtime.enter();
            quinn::Endpoint::new(
                quinn::EndpointConfig::default(),
                Some(server_config),
                socket,
                Arc::new(quinn::TokioRuntime),
            )
            .map_err(|source| ServerError::Bind {
                addr: config.bind,
                source,
            })?
        };

        let mut settings_bytes = Vec::new();
        settings::encode_control_stream(
            &settings::server_settings(config.limits.max_sessions_per_connection),
            &mut settings_bytes,
        );
        let (fallback_tx, fallback_rx) = mpsc::channel(config.limits.request_queue.max(1));
        let shared = Arc::new(ServerShared {
            endpoint: endpoint.clone(),
            limits: config.limits.clone(),
            origin_policy: config.origin_policy.clone(),
            settings_bytes: Bytes::from(settings_bytes),
            runtime: runtime.clone(),
            resolver,
            routes: Mutex::new(HashMap::new()),
            fallback_tx: Mutex::new(Some(fallback_tx)),
            fallback_rx: tokio::sync::Mutex::new(fallback_rx),
            fallback_enabled: AtomicBool::new(false),
            closing: AtomicBool::new(false),
            sessions: Mutex::new(HashMap::new()),
            next_key: AtomicU64::new(0),
            sessions_changed: Notify::new(),
        });
        let weak = Arc::downgrade(&shared);
        runtime.spawn(async move {
            while let Some(incoming) = endpoint.accept().await {
                let Some(shared) = weak.upgrade() else { break };
                if shared.is_closing() {
                    incoming.refuse();
                    continue;
                }
                tokio::spawn(connection::run(incoming, shared));
            }
        });
        Ok(Self {
            handle: Arc::new(ServerHandle { shared }),
        })
    }

    fn shared(&self) -> &Arc<ServerShared> {
        &self.handle.shared
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
        self.shared().fallback_enabled.store(true, Ordering::Release);
    }

    /// The next session request for a path that has no [`Route`]. Until this (or
    /// [`queue_unrouted`](Self::queue_unrouted)) is first called, such requests are
    /// answered with 404. `None` once the server is closing.
    pub async fn accept(&self) -> Option<SessionRequest> {
        let shared = self.shared();
        shared.fallback_enabled.store(true, Ordering::Release);
        shared.fallback_rx.lock().await.recv().await
    }

    /// Claims every request whose path (without query) is exactly `path`. Dropping the
    /// route releases the path; requests for it then get 404.
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
        let mut routes = shared.routes.lock().unwrap_or_else(|e| e.into_inner());
        if routes.get(path).is_some_and(|tx| !tx.is_closed()) {
            return Err(ServerError::RouteTaken(path.to_owned()));
        }
        let (tx, rx) = mpsc::channel(shared.limits.request_queue.max(1));
        routes.insert(path.to_owned(), tx);
        Ok(Route {
            path: path.to_owned(),
            rx: tokio::sync::Mutex::new(rx),
            server: Arc::downgrade(shared),
        })
    }

    /// The certificate new connections get.
    pub fn certificate(&self) -> Certificate {
        self.shared().resolver.get()
    }

    /// Replaces the certificate; connections made from now on get the new one, existing
    /// ones keep theirs.
    pub fn set_certificate(&self, certificate: Certificate) {
        self.shared().resolver.set(certificate);
    }

    /// Sessions open right now.
    pub fn session_count(&self) -> usize {
        self.shared().sessions().len()
    }

    /// Shuts down gracefully: stops accepting connections and sessions, asks every session
    /// to drain, waits up to `grace` for them to end, then closes what is left.
    pub async fn close(&self, grace: Duration) {
        let shared = self.shared();
        shared.closing.store(true, Ordering::Release);
        shared
            .routes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        shared
            .fallback_tx
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        shared.fallback_rx.lock().await.close();
        let live = |shared: &ServerShared| -> Vec<Arc<SessionShared>> {
            shared
                .sessions()
                .values()
                .filter_map(Weak::upgrade)
                .collect()
        };
        for s in live(shared) {
            s.command(crate::session::Command::Drain);
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
        let remaining = live(shared);
        debug!(remaining = remaining.len(), "closing server");
        let closed_some = !remaining.is_empty();
        for s in remaining {
            s.close(0, "server shutting down");
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
        shared.endpoint.close(0x100u32.into(), b"server closed");
        let _ = tokio::time::timeout(Duration::from_secs(2), shared.endpoint.wait_idle()).await;
    }
}

/// Requests for one path, from [`Server::route`].
pub struct Route {
    path: String,
    rx: tokio::sync::Mutex<mpsc::Receiver<SessionRequest>>,
    server: Weak<ServerShared>,
}

impl std::fmt::Debug for Route {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Route").field("path", &self.path).finish()
    }
}

impl Route {
    /// The path this route claims.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The next request for this path; `None` once the server is closing.
    pub async fn accept(&self) -> Option<SessionRequest> {
        self.rx.lock().await.recv().await
    }
}

impl Drop for Route {
    fn drop(&mut self) {
        if let Some(server) = self.server.upgrade() {
            // Closing our receiver first tells our sender apart from a newer route's.
            self.rx.get_mut().close();
            let mut routes = server.routes.lock().unwrap_or_else(|e| e.into_inner());
            if routes.get(&self.path).is_some_and(|tx| tx.is_closed()) {
                routes.remove(&self.path);
            }
        }
    }
}
