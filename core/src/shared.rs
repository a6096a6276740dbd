//! What the server and its transports share: admission (connection and per-address
//! limits, session slots, the token bucket for refusals), the session registry, route
//! queues and dispatch, refusals remembered for the connector, counters and the shutdown
//! state. The transports (HTTP/3, TCP) and the request layer build on this; the
//! [`Server`](crate::Server) handle in `server.rs` builds on all of them.

use std::{
    collections::{HashMap, VecDeque},
    net::{IpAddr, SocketAddr},
    sync::{
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
        Arc, Mutex, Weak,
    },
    time::Duration,
};

use crate::{
    certificate::CertificateResolver,
    config::Limits,
    origin::{self, OriginPolicy},
    request::SessionRequest,
    session::SessionShared,
    ws::WsShared,
};
use bytes::Bytes;
use tokio::sync::{watch, Notify};

/// A token bucket: `burst` units at once, refilled by one per second. Counts the
/// requests a connection has refused.
pub(crate) struct Allowance {
    pub(crate) tokens: f64,
    pub(crate) burst: f64,
    pub(crate) last: tokio::time::Instant,
}

impl Allowance {
    pub(crate) fn new(burst: u32) -> Self {
        Self {
            tokens: f64::from(burst),
            burst: f64::from(burst),
            last: tokio::time::Instant::now(),
        }
    }

    /// Spends one token; false when none is left.
    pub(crate) fn spend(&mut self) -> bool {
        let now = tokio::time::Instant::now();
        let refill = now.duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + refill).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// A live session of either kind, as the server tracks it for counts and shutdown.
pub(crate) enum Live {
    /// Slot taken, session not registered yet.
    Reserved,
    Session(Weak<SessionShared>),
    WebSocket(Weak<WsShared>),
}

/// The key per-address limits count by: the address for IPv4 (and IPv4-mapped IPv6), the
/// /64 prefix for IPv6, since one host commonly holds a whole /64.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct IpKey(u128);

impl IpKey {
    pub(crate) fn of(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(v4) => Self(u128::from(u32::from(v4))),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Self(u128::from(u32::from(v4))),
                None => Self((u128::from(v6) >> 64 << 64) | 1),
            },
        }
    }
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// State shared by the server handle, its accept loop and its connections.
pub(crate) struct ServerShared {
    pub(crate) endpoint: quinn::Endpoint,
    pub(crate) limits: Limits,
    pub(crate) origin_policy: OriginPolicy,
    /// Refusals of connector-tagged requests, replayed to the same `connect()`'s next
    /// attempt.
    pub(crate) refusals: Mutex<crate::request::Refusals>,
    /// Slots for ordinary HTTP requests being handled (`Limits::max_concurrent_requests`).
    pub(crate) running_requests: Arc<tokio::sync::Semaphore>,
    /// Peers of the plain TCP side whose forwarding headers are believed.
    pub(crate) trusted_proxies: Vec<crate::config::IpRange>,
    pub(crate) server_names: Vec<String>,
    pub(crate) settings_bytes: Bytes,
    pub(crate) runtime: tokio::runtime::Handle,
    pub(crate) keep_alive: Option<Duration>,
    /// permessage-deflate on plain WebSockets of the own TCP side.
    pub(crate) websocket_compression: crate::ws::deflate::WebSocketCompression,
    pub(crate) idle_timeout: Option<Duration>,
    pub(crate) closing_tx: watch::Sender<bool>,
    pub(crate) tcp_addr: Option<SocketAddr>,
    pub(crate) resolver: Arc<CertificateResolver>,
    pub(crate) routes: Mutex<HashMap<String, Arc<RequestQueue>>>,
    pub(crate) fallback: Arc<RequestQueue>,
    pub(crate) fallback_enabled: AtomicBool,
    /// Plain WebSocket requests for paths no route claims, when the application takes them
    /// ([`Server::unclaimed_websockets`]); otherwise they get 404.
    pub(crate) unclaimed_websockets: Mutex<Option<Arc<RequestQueue>>>,
    pub(crate) closing: AtomicBool,
    pub(crate) sessions: Mutex<HashMap<u64, Live>>,
    pub(crate) next_key: AtomicU64,
    pub(crate) sessions_changed: Notify,
    pub(crate) connections: AtomicUsize,
    pub(crate) per_ip: Mutex<HashMap<IpKey, IpCount>>,
    pub(crate) http: std::sync::RwLock<Option<crate::HttpService>>,
    pub(crate) counters: crate::stats::Counters,
    /// Whether a self-signed renewal is still in charge of the certificate.
    pub(crate) renewing: AtomicBool,
    /// The TCP accept loop, awaited by `close` so the port is free when it returns.
    pub(crate) tcp_task: Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// Set by `drain`: new sessions are refused, open ones go on.
    pub(crate) draining: AtomicBool,
    /// Set by `drain` and `close`: every HTTP/3 connection sends GOAWAY.
    pub(crate) winding_down: watch::Sender<bool>,
}

#[derive(Default)]
pub(crate) struct IpCount {
    pub(crate) connections: usize,
    pub(crate) sessions: usize,
}

impl ServerShared {
    /// The handler for ordinary HTTP requests, if the application gave one.
    pub(crate) fn http_service(&self) -> Option<crate::HttpService> {
        self.http.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The `Alt-Svc` value that moves browsers from the TCP side to HTTP/3 on our UDP port.
    pub(crate) fn alt_svc(&self) -> Option<String> {
        let port = self.endpoint.local_addr().ok()?.port();
        Some(format!("h3=\":{port}\"; ma=86400"))
    }

    pub(crate) fn is_closing(&self) -> bool {
        self.closing.load(Ordering::Acquire)
    }

    /// Whether new sessions are refused (503): the server is closing or draining.
    pub(crate) fn refuses_sessions(&self) -> bool {
        self.is_closing() || self.draining.load(Ordering::Acquire)
    }

    /// Session admission, the same on every transport: the status a session request is
    /// refused with before the application sees it (503 while the server refuses sessions,
    /// 421 for an authority that names another server, 403 for an origin the policy
    /// refuses), or `None` to hand it on. A drain that begins while an asynchronous origin
    /// check runs still answers 503.
    pub(crate) async fn admission(&self, authority: &str, origin: Option<&str>) -> Option<u16> {
        if self.refuses_sessions() {
            return Some(503);
        }
        if !origin::authority_allowed(authority, |h| self.is_own_host(h)) {
            return Some(421);
        }
        let allowed = self
            .origin_policy
            .decide(
                origin,
                authority,
                |h| self.is_own_host(h),
                self.limits.request_timeout,
            )
            .await;
        if self.refuses_sessions() {
            Some(503)
        } else if !allowed {
            Some(403)
        } else {
            None
        }
    }

    /// Becomes true when the server starts draining or closing.
    pub(crate) fn winding_down(&self) -> watch::Receiver<bool> {
        self.winding_down.subscribe()
    }

    /// The sessions and WebSockets open now.
    pub(crate) fn live(&self) -> (Vec<Arc<SessionShared>>, Vec<Arc<WsShared>>) {
        let map = self.sessions();
        let sessions = map
            .values()
            .filter_map(|l| match l {
                Live::Session(w) => w.upgrade(),
                _ => None,
            })
            .collect();
        let sockets = map
            .values()
            .filter_map(|l| match l {
                Live::WebSocket(w) => w.upgrade(),
                _ => None,
            })
            .collect();
        (sessions, sockets)
    }

    pub(crate) fn sessions(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Live>> {
        lock(&self.sessions)
    }

    /// A fresh ID for a session that has no QUIC stream to name it.
    pub(crate) fn next_session_id(&self) -> u64 {
        // Kept apart from QUIC stream IDs (all below 2^62) so logs never confuse them.
        (1 << 62) | self.next_key.fetch_add(1, Ordering::Relaxed)
    }

    /// Whether `host` is one of this server's names (configured, or the certificate's).
    pub(crate) fn is_own_host(&self, host: &str) -> bool {
        if self.server_names.is_empty() {
            self.resolver.get().is_valid_for(host)
        } else {
            origin::matches_any(&self.server_names, host)
        }
    }

    pub(crate) fn reserve_session(self: &Arc<Self>) -> Option<SessionSlot> {
        let mut map = self.sessions();
        if map.len() >= self.limits.max_sessions {
            return None;
        }
        let key = self.next_key.fetch_add(1, Ordering::Relaxed);
        map.insert(key, Live::Reserved);
        self.counters.session_accepted();
        Some(SessionSlot {
            server: self.clone(),
            key,
        })
    }

    /// Counts a session (requested or open) against its address; `None` over the limit.
    pub(crate) fn reserve_ip_session(self: &Arc<Self>, ip: IpAddr) -> Option<IpSessionToken> {
        let key = IpKey::of(ip);
        let mut map = lock(&self.per_ip);
        let entry = map.entry(key).or_default();
        if entry.sessions >= self.limits.max_sessions_per_ip {
            return None;
        }
        entry.sessions += 1;
        Some(IpSessionToken {
            server: Arc::downgrade(self),
            key,
        })
    }

    pub(crate) fn release_ip(&self, key: IpKey, connection: bool) {
        let mut map = lock(&self.per_ip);
        if let Some(entry) = map.get_mut(&key) {
            if connection {
                entry.connections = entry.connections.saturating_sub(1);
            } else {
                entry.sessions = entry.sessions.saturating_sub(1);
            }
            if entry.connections == 0 && entry.sessions == 0 {
                map.remove(&key);
            }
        }
    }

    /// Decides what to do with a new QUIC connection attempt.
    pub(crate) fn admit(self: &Arc<Self>, incoming: &quinn::Incoming) -> Admission {
        let total = self.connections.load(Ordering::Acquire);
        if !self.is_closing()
            && total < self.limits.max_connections
            && !incoming.remote_address_validated()
            && incoming.may_retry()
            && total >= self.limits.retry_threshold
        {
            return Admission::Retry;
        }
        match self.admit_addr(incoming.remote_address()) {
            Ok(slot) => Admission::Accept(slot),
            Err(why) => Admission::Refuse(why),
        }
    }

    /// Counts a new connection (QUIC or TCP) from `remote`, or says why not.
    pub(crate) fn admit_addr(
        self: &Arc<Self>,
        remote: SocketAddr,
    ) -> Result<ConnSlot, &'static str> {
        self.admit_conn(remote, true)
    }

    /// Counts a connection from a TLS-terminating proxy against the global limit only: the
    /// proxy carries many clients, whose per-address limits apply to their sessions.
    pub(crate) fn admit_proxied(
        self: &Arc<Self>,
        remote: SocketAddr,
    ) -> Result<ConnSlot, &'static str> {
        self.admit_conn(remote, false)
    }

    pub(crate) fn admit_conn(
        self: &Arc<Self>,
        remote: SocketAddr,
        per_ip: bool,
    ) -> Result<ConnSlot, &'static str> {
        if self.is_closing() {
            return Err("server closing");
        }
        if self.connections.load(Ordering::Acquire) >= self.limits.max_connections {
            return Err("connection limit");
        }
        let key = IpKey::of(remote.ip());
        let mut map = lock(&self.per_ip);
        let entry = map.entry(key).or_default();
        if per_ip && entry.connections >= self.limits.max_connections_per_ip {
            return Err("per-address connection limit");
        }
        entry.connections += 1;
        self.connections.fetch_add(1, Ordering::AcqRel);
        self.counters.connection_accepted();
        Ok(ConnSlot {
            server: self.clone(),
            key,
        })
    }

    /// Queues a request for its route; on failure, gives it back with the status to answer.
    #[allow(clippy::result_large_err)] // the request goes straight back to be rejected
    pub(crate) fn dispatch(&self, request: SessionRequest) -> Result<(), (SessionRequest, u16)> {
        let refused = self.route_request(request);
        if let Err((request, status)) = &refused {
            self.refused(*status, request.path(), request.remote_addr());
        }
        refused
    }

    /// Counts and logs a request the server answers itself.
    /// Whether `ip` is one of the plain TCP side's trusted proxies.
    pub(crate) fn is_trusted_proxy(&self, ip: std::net::IpAddr) -> bool {
        self.trusted_proxies.iter().any(|r| r.contains(ip))
    }

    /// Keeps the refusal of a request the connector tagged, for its next attempt.
    pub(crate) fn remember_refusal(&self, id: String, refusal: crate::request::Refusal) {
        lock(&self.refusals).remember(id, refusal);
    }

    /// The refusal of an earlier attempt of the same `connect()`, if any.
    pub(crate) fn recall_refusal(&self, id: &str) -> Option<crate::request::Refusal> {
        lock(&self.refusals).recall(id)
    }

    pub(crate) fn refused(&self, status: u16, path: &str, remote: SocketAddr) {
        let reason = crate::stats::refusal_reason(status);
        self.counters.request_refused(status, reason, path, remote);
    }

    #[allow(clippy::result_large_err)]
    pub(crate) fn route_request(
        &self,
        request: SessionRequest,
    ) -> Result<(), (SessionRequest, u16)> {
        let path = request.path().split('?').next().unwrap_or("/").to_owned();
        let queue = lock(&self.routes).get(&path).cloned();
        let plain = request.is_plain_websocket();
        let queue = match queue {
            Some(q) if plain && !q.websockets.load(Ordering::Acquire) => {
                // The path serves sessions; a plain WebSocket is not what it takes.
                return Err((request, 400));
            }
            Some(q) => q,
            None if plain => match lock(&self.unclaimed_websockets).clone() {
                Some(q) => q,
                None => return Err((request, 404)),
            },
            None if self.fallback_enabled.load(Ordering::Acquire) => self.fallback.clone(),
            None => return Err((request, 404)),
        };
        queue.push(request)
    }

    pub(crate) fn sessions_changed(&self) {
        self.sessions_changed.notify_waiters();
    }
}

pub(crate) enum Admission {
    Accept(ConnSlot),
    Retry,
    Refuse(&'static str),
}

/// A connection counted against the server-wide and per-address limits until dropped.
pub(crate) struct ConnSlot {
    pub(crate) server: Arc<ServerShared>,
    pub(crate) key: IpKey,
}

impl Drop for ConnSlot {
    fn drop(&mut self) {
        self.server.connections.fetch_sub(1, Ordering::AcqRel);
        self.server.release_ip(self.key, true);
        self.server.sessions_changed();
    }
}

/// A session (requested or open) counted against its address until dropped.
pub(crate) struct IpSessionToken {
    pub(crate) server: Weak<ServerShared>,
    pub(crate) key: IpKey,
}

impl Drop for IpSessionToken {
    fn drop(&mut self) {
        if let Some(server) = self.server.upgrade() {
            server.release_ip(self.key, false);
        }
    }
}

/// A server-wide session slot, released when the session ends.
pub(crate) struct SessionSlot {
    pub(crate) server: Arc<ServerShared>,
    pub(crate) key: u64,
}

impl SessionSlot {
    pub(crate) fn register(&self, session: &Arc<SessionShared>) {
        self.server
            .sessions()
            .insert(self.key, Live::Session(Arc::downgrade(session)));
    }

    pub(crate) fn register_websocket(&self, ws: &Arc<WsShared>) {
        self.server
            .sessions()
            .insert(self.key, Live::WebSocket(Arc::downgrade(ws)));
    }
}

impl Drop for SessionSlot {
    fn drop(&mut self) {
        self.server.sessions().remove(&self.key);
        self.server.sessions_changed();
    }
}

/// Session requests waiting for the application, for one route (or for
/// [`Server::accept`]). Bounded; requests the client abandoned while they waited are
/// dropped here, before the application sees them.
pub(crate) struct RequestQueue {
    pub(crate) state: Mutex<QueueState>,
    pub(crate) ready: Notify,
    pub(crate) capacity: usize,
    /// Plain WebSocket requests are taken too.
    pub(crate) websockets: AtomicBool,
}

pub(crate) struct QueueState {
    pub(crate) items: VecDeque<SessionRequest>,
    pub(crate) closed: bool,
}

impl RequestQueue {
    pub(crate) fn new(capacity: usize) -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(QueueState {
                items: VecDeque::new(),
                closed: false,
            }),
            ready: Notify::new(),
            capacity: capacity.max(1),
            websockets: AtomicBool::new(false),
        })
    }

    #[allow(clippy::result_large_err)]
    pub(crate) fn push(&self, request: SessionRequest) -> Result<(), (SessionRequest, u16)> {
        let mut st = lock(&self.state);
        if st.closed {
            return Err((request, 404));
        }
        if st.items.len() >= self.capacity {
            // Make room by dropping what clients have already given up on.
            st.items.retain_mut(|r| !r.poll_abandoned());
        }
        if st.items.len() >= self.capacity {
            return Err((request, 503));
        }
        st.items.push_back(request);
        drop(st);
        self.ready.notify_one();
        Ok(())
    }

    pub(crate) async fn pop(&self) -> Option<SessionRequest> {
        loop {
            let notified = self.ready.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut st = lock(&self.state);
                while let Some(mut r) = st.items.pop_front() {
                    if r.poll_abandoned() {
                        continue;
                    }
                    if !st.items.is_empty() {
                        // Another waiter may take the next one.
                        self.ready.notify_one();
                    }
                    return Some(r);
                }
                if st.closed {
                    return None;
                }
            }
            notified.await;
        }
    }

    /// Refuses what is queued (the requests answer 503 as they drop) and wakes every waiter.
    pub(crate) fn close(&self) {
        let items = {
            let mut st = lock(&self.state);
            st.closed = true;
            std::mem::take(&mut st.items)
        };
        for r in items {
            r.reject_in_background(503);
        }
        self.ready.notify_waiters();
    }

    pub(crate) fn is_closed(&self) -> bool {
        lock(&self.state).closed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_addresses_count_per_64_and_mapped_v4_as_v4() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::2".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(IpKey::of(a), IpKey::of(b));
        assert_ne!(IpKey::of(a), IpKey::of(c));
        let v4: IpAddr = "192.0.2.7".parse().unwrap();
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        assert_eq!(IpKey::of(v4), IpKey::of(mapped));
    }
}
