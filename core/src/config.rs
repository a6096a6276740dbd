//! Server configuration: address, certificate, limits, origin policy and transport tuning.

use std::{fmt, net::SocketAddr, sync::Arc, time::Duration};

use crate::certificate::Certificate;

/// Everything [`Server::bind`](crate::Server::bind) needs.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// The UDP address to listen on. Port 0 picks a free port.
    pub bind: SocketAddr,
    /// The certificate served to new connections. It can be replaced later with
    /// [`Server::set_certificate`](crate::Server::set_certificate).
    pub certificate: Certificate,
    /// Bounds on sessions, streams and buffers.
    pub limits: Limits,
    /// Which `origin` headers are accepted.
    pub origin_policy: OriginPolicy,
    /// A connection with no traffic for this long is closed. `None` disables the timeout.
    pub idle_timeout: Option<Duration>,
    /// Send a keep-alive packet this often so idle sessions survive NAT and the idle timeout.
    pub keep_alive: Option<Duration>,
    /// The congestion controller for new connections.
    pub congestion_controller: CongestionController,
}

impl ServerConfig {
    /// A configuration with default limits, the same-host origin policy, a 30 s idle timeout
    /// and a 10 s keep-alive.
    pub fn new(bind: SocketAddr, certificate: Certificate) -> Self {
        Self {
            bind,
            certificate,
            limits: Limits::default(),
            origin_policy: OriginPolicy::default(),
            idle_timeout: Some(Duration::from_secs(30)),
            keep_alive: Some(Duration::from_secs(10)),
            congestion_controller: CongestionController::default(),
        }
    }

    pub(crate) fn validate(&self) -> Result<(), String> {
        let l = &self.limits;
        if l.max_sessions_per_connection == 0 {
            return Err("limits.max_sessions_per_connection must be at least 1".into());
        }
        if l.max_sessions == 0 {
            return Err("limits.max_sessions must be at least 1".into());
        }
        if l.stream_receive_window == 0 || l.connection_receive_window == 0 {
            return Err("receive windows must be non-zero".into());
        }
        if let (Some(idle), Some(ka)) = (self.idle_timeout, self.keep_alive) {
            if ka >= idle {
                return Err(format!(
                    "keep_alive ({ka:?}) must be shorter than idle_timeout ({idle:?})"
                ));
            }
        }
        if let Some(idle) = self.idle_timeout {
            if idle.as_millis() == 0 || idle.as_millis() >= (1u128 << 62) {
                return Err("idle_timeout out of range".into());
            }
        }
        Ok(())
    }
}

/// Bounds that keep memory use predictable whatever the clients do.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Sessions the whole server accepts at once; more are refused with 503.
    pub max_sessions: usize,
    /// Sessions one connection may hold at once; advertised to clients in SETTINGS.
    pub max_sessions_per_connection: u32,
    /// Concurrent bidirectional streams a client may open per connection.
    pub max_bidi_streams: u32,
    /// Concurrent unidirectional streams a client may open per connection (beyond these,
    /// HTTP/3 needs three of its own).
    pub max_uni_streams: u32,
    /// Bytes a client may send on one stream before we read them.
    pub stream_receive_window: u32,
    /// Bytes a client may send on all streams of a connection before we read them.
    pub connection_receive_window: u32,
    /// Bytes we may have in flight unacknowledged per connection.
    pub send_window: u64,
    /// Received datagrams queued per session before the oldest are dropped.
    pub datagram_queue: usize,
    /// Streams that may wait per connection for a session that is not accepted yet; more
    /// are refused with WT_BUFFERED_STREAM_REJECTED.
    pub max_buffered_streams: usize,
    /// Datagrams that may wait per connection for a session that is not accepted yet.
    pub max_buffered_datagrams: usize,
    /// Session requests that may wait for `accept` per route; more are refused with 503.
    pub request_queue: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_sessions: 10_000,
            max_sessions_per_connection: 16,
            max_bidi_streams: 512,
            max_uni_streams: 512,
            stream_receive_window: 4 * 1024 * 1024,
            connection_receive_window: 16 * 1024 * 1024,
            send_window: 16 * 1024 * 1024,
            datagram_queue: 1024,
            max_buffered_streams: 64,
            max_buffered_datagrams: 256,
            request_queue: 128,
        }
    }
}

/// The congestion controller used by QUIC.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum CongestionController {
    /// CUBIC (RFC 9438), the default.
    #[default]
    Cubic,
    /// NewReno (RFC 9002).
    NewReno,
    /// BBR (experimental in quinn).
    Bbr,
}

/// A callback deciding an origin: `(origin, authority) -> allowed`.
pub type OriginCheck = Arc<dyn Fn(&str, &str) -> bool + Send + Sync>;

/// Decides whether a request's `origin` header is acceptable. A request without `origin`
/// (a non-browser client) is always allowed: the policy exists to stop other web pages
/// from using a visitor's browser against this server.
#[derive(Clone, Default)]
pub enum OriginPolicy {
    /// The origin's host must equal the host in `:authority` (ports may differ).
    #[default]
    SameHost,
    /// Any origin is allowed.
    Any,
    /// Only these origins (`scheme://host[:port]`, compared case-insensitively).
    AllowList(Vec<String>),
    /// A callback given the origin and the `:authority`.
    Custom(OriginCheck),
}

impl fmt::Debug for OriginPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::SameHost => f.write_str("SameHost"),
            Self::Any => f.write_str("Any"),
            Self::AllowList(list) => f.debug_tuple("AllowList").field(list).finish(),
            Self::Custom(_) => f.write_str("Custom(..)"),
        }
    }
}

impl OriginPolicy {
    /// Whether a request with this `origin` (if any) and `:authority` is allowed.
    pub fn allows(&self, origin: Option<&str>, authority: &str) -> bool {
        let Some(origin) = origin else { return true };
        match self {
            Self::Any => true,
            Self::SameHost => match origin_host(origin) {
                Some(host) => host.eq_ignore_ascii_case(authority_host(authority)),
                None => false,
            },
            Self::AllowList(list) => {
                let origin = origin.trim_end_matches('/');
                list.iter()
                    .any(|o| o.trim_end_matches('/').eq_ignore_ascii_case(origin))
            }
            Self::Custom(f) => f(origin, authority),
        }
    }
}

/// The host of `scheme://host[:port]`, without brackets for IPv6.
fn origin_host(origin: &str) -> Option<&str> {
    let rest = origin.split_once("://")?.1;
    let rest = rest.split('/').next().unwrap_or(rest);
    Some(authority_host(rest))
}

/// The host part of `host[:port]` or `[v6]:port`.
fn authority_host(authority: &str) -> &str {
    let authority = authority.rsplit_once('@').map_or(authority, |(_, a)| a);
    if let Some(rest) = authority.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    authority.split(':').next().unwrap_or(authority)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_host_compares_hosts_not_ports() {
        let p = OriginPolicy::SameHost;
        assert!(p.allows(Some("http://localhost:8080"), "localhost:4433"));
        assert!(p.allows(Some("https://Example.com"), "example.com"));
        assert!(p.allows(Some("http://[::1]:80"), "[::1]:4433"));
        assert!(!p.allows(Some("http://localhost:8080"), "127.0.0.1:4433"));
        assert!(!p.allows(Some("https://evil.example"), "example.com"));
        assert!(!p.allows(Some("null"), "example.com"));
        assert!(p.allows(None, "example.com"));
    }

    #[test]
    fn allow_list_and_custom() {
        let p = OriginPolicy::AllowList(vec!["https://app.example".into()]);
        assert!(p.allows(Some("https://app.example"), "api.example"));
        assert!(!p.allows(Some("https://other.example"), "api.example"));
        let p = OriginPolicy::Custom(Arc::new(|o, _| o.ends_with(".trusted")));
        assert!(p.allows(Some("https://a.trusted"), "x"));
        assert!(!p.allows(Some("https://a.untrusted"), "x"));
    }

    #[test]
    fn validation_names_the_field() {
        let cert = Certificate::self_signed(&["localhost"]).unwrap();
        let mut c = ServerConfig::new("127.0.0.1:0".parse().unwrap(), cert);
        assert!(c.validate().is_ok());
        c.limits.max_sessions_per_connection = 0;
        assert!(c
            .validate()
            .unwrap_err()
            .contains("max_sessions_per_connection"));
    }
}
