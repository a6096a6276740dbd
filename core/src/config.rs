//! Server configuration: address, certificate, limits, origin policy and transport tuning.

use std::{
    net::{IpAddr, SocketAddr},
    time::Duration,
};

use crate::{certificate::Certificate, origin::OriginPolicy};

/// Everything [`Server::bind`](crate::Server::bind) needs.
#[derive(Clone, Debug)]
#[non_exhaustive]
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
    /// The host names (or IP addresses) this server answers for. A request whose
    /// `:authority` names another host gets 421, and [`OriginPolicy::SameHost`] accepts only
    /// origins on these hosts. `*.example.com` matches one label; `*` matches anything.
    /// Empty (the default) means the names in the current certificate.
    pub server_names: Vec<String>,
    /// A connection with no traffic for this long is closed. `None` disables the timeout.
    pub idle_timeout: Option<Duration>,
    /// Send a keep-alive packet this often so idle sessions survive NAT and the idle timeout.
    /// A connection that carries no session is not kept alive: it is closed after
    /// [`Limits::sessionless_timeout`].
    pub keep_alive: Option<Duration>,
    /// The congestion controller for new connections.
    pub congestion_controller: CongestionController,
    /// The TCP side (WebSocket and QMux sessions for clients without WebTransport over
    /// HTTP/3): TLS on the same address and port as UDP by default.
    pub tcp: TcpListen,
    /// The handler for ordinary HTTP requests (everything but session and WebSocket
    /// requests) over HTTP/3, HTTP/2 and HTTP/1.1. Without one, such requests get 404. It
    /// can be set later with
    /// [`Server::set_http_handler`](crate::Server::set_http_handler).
    pub http: Option<crate::HttpService>,
    /// Keeps a self-signed certificate fresh for as long as the server runs: with this
    /// set, the server makes its own certificate at bind (the configured one is not used)
    /// and renews it before it expires. See [`SelfSignedRenewal`].
    pub self_signed_renewal: Option<SelfSignedRenewal>,
    /// Connection IDs a QUIC-LB load balancer routes by (see
    /// [`QuicLbConfig`](crate::fleet::QuicLbConfig)); `None`: quinn's random 8-byte IDs.
    pub connection_ids: Option<crate::fleet::QuicLbConfig>,
    /// Stateless-reset and address-validation token keys shared by a fleet (see
    /// [`FleetKeys`](crate::fleet::FleetKeys)); `None`: random keys made at bind.
    pub fleet_keys: Option<crate::fleet::FleetKeys>,
    /// permessage-deflate (RFC 7692) on plain WebSockets this server's own TCP side
    /// accepts; off by default. See [`WebSocketCompression`](crate::WebSocketCompression).
    pub websocket_compression: crate::WebSocketCompression,
    /// Sets `SO_REUSEPORT` on the UDP socket and the TCP listener the server binds, so that
    /// several servers (threads with their own runtime, or processes) share the port and
    /// the kernel spreads clients over them by a hash of the 4-tuple. Without
    /// [`steering`](Self::steering) a client whose address changes lands on a sibling that
    /// does not hold its connection. Unix only; false by default.
    pub reuse_port: bool,
    /// A UDP socket opened elsewhere (by a parent process, systemd, or a
    /// [`ReusePortGroup`](crate::fleet::ReusePortGroup)) to serve on instead of binding
    /// `bind`. The server serves on a duplicate, so the socket stays open, and keeps its
    /// place in its `SO_REUSEPORT` group, for as long as any clone of this `Arc` lives.
    pub udp_socket: Option<std::sync::Arc<std::net::UdpSocket>>,
    /// A listening TCP socket opened elsewhere for the TCP side (TLS, or plain with
    /// [`TcpListen::PlainBehindTlsProxy`]), instead of binding one; `tcp` must not be
    /// [`TcpListen::Off`]. Shared as [`udp_socket`](Self::udp_socket) is.
    pub tcp_listener: Option<std::sync::Arc<std::net::TcpListener>>,
    /// This server's place in a `SO_REUSEPORT` group that routes by connection ID (see
    /// [`Steering`](crate::fleet::Steering)): needs `reuse_port` or a `udp_socket`, and
    /// puts the index in front of the server ID of `connection_ids`.
    pub steering: Option<crate::fleet::Steering>,
    /// The peers of the plain TCP side ([`TcpListen::PlainBehindTlsProxy`]) whose
    /// `Forwarded` / `X-Forwarded-For` and `X-Forwarded-Proto` headers are believed: from
    /// them the client address is the one the headers name (the per-address limits apply
    /// to it instead of the proxy's), and `https` as the forwarded scheme makes request
    /// URLs `https`. Any other peer is a client itself: its headers are ignored and the
    /// per-address limits apply to its own address. Loopback only by default (a proxy on
    /// the same host).
    pub trusted_proxies: Vec<IpRange>,
}

/// An IP address range in CIDR notation (`10.0.0.0/8`, `2001:db8::/32`), or one address
/// (`192.0.2.7`, a /32 or /128).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct IpRange {
    addr: IpAddr,
    prefix: u8,
}

/// Text that is not an IP address or a CIDR range.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not an IP address or CIDR range (such as 10.0.0.0/8 or 2001:db8::/32)")]
pub struct InvalidIpRange(pub String);

impl IpRange {
    /// The range of `prefix` leading bits of `addr`; `None` if `prefix` is longer than the
    /// address (32 bits for IPv4, 128 for IPv6).
    pub fn new(addr: IpAddr, prefix: u8) -> Option<Self> {
        let bits = if addr.is_ipv4() { 32 } else { 128 };
        (prefix <= bits).then_some(Self { addr, prefix })
    }

    /// 127.0.0.0/8 and ::1: the default [`ServerConfig::trusted_proxies`].
    pub fn loopback() -> Vec<Self> {
        vec![
            Self {
                addr: IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
                prefix: 8,
            },
            Self {
                addr: IpAddr::V6(std::net::Ipv6Addr::LOCALHOST),
                prefix: 128,
            },
        ]
    }

    /// Whether `ip` is in the range. An IPv4 address mapped into IPv6 (`::ffff:10.1.2.3`,
    /// as a dual-stack socket reports IPv4 peers) counts as the IPv4 address.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl std::str::FromStr for IpRange {
    type Err = InvalidIpRange;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || InvalidIpRange(s.to_owned());
        let text = s.trim();
        let (addr, prefix) = match text.split_once('/') {
            Some((a, p)) => {
                let addr: IpAddr = a.parse().map_err(|_| bad())?;
                // Digits only: `+8` and ` 8` are typing mistakes, not prefixes.
                if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(bad());
                }
                (addr, p.parse::<u8>().map_err(|_| bad())?)
            }
            None => {
                let addr: IpAddr = text.parse().map_err(|_| bad())?;
                (addr, if addr.is_ipv4() { 32 } else { 128 })
            }
        };
        Self::new(addr, prefix).ok_or_else(bad)
    }
}

impl std::fmt::Display for IpRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// How a server renews its self-signed certificate. Browsers accept a certificate by hash
/// (`serverCertificateHashes`) only when it is valid for 14 days or less, so a server that
/// runs longer needs new ones. `overlap` before the switch the next certificate is made and
/// its hash listed beside the current one ([`Server::certificate_hashes`]), so a page that
/// loads the list then accepts either; at the switch new connections get the next
/// certificate, which is valid for `validity` from when it was made. Connections made
/// before keep theirs.
///
/// [`Server::certificate_hashes`]: crate::Server::certificate_hashes
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct SelfSignedRenewal {
    /// The DNS names and IP addresses of each certificate.
    pub names: Vec<String>,
    /// How long each certificate is valid: 13 days by default (at most 14 for browsers).
    pub validity: Duration,
    /// How long before the switch the next certificate's hash is listed, and how long
    /// before its expiry a certificate is replaced: one day by default. Must be under a
    /// third of `validity`.
    pub overlap: Duration,
}

impl SelfSignedRenewal {
    /// Renewal of 13-day certificates for `names`, each announced a day ahead and replaced
    /// a day before it expires.
    pub fn new<S: AsRef<str>>(names: &[S]) -> Self {
        Self {
            names: names.iter().map(|n| n.as_ref().to_owned()).collect(),
            validity: Duration::from_secs(13 * 24 * 3600),
            overlap: Duration::from_secs(24 * 3600),
        }
    }
}

/// Where the TCP side listens. Browsers without WebTransport (Safari before 26.4) and
/// networks that block UDP reach the same routes through it, as QMux sessions or plain
/// WebSockets (RFC 6455 over HTTP/1.1, RFC 8441 over HTTP/2).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum TcpListen {
    /// TLS on TCP at the same address and port number as UDP, with the same certificate.
    #[default]
    SamePort,
    /// TLS on TCP at another address.
    At(SocketAddr),
    /// Plain TCP without TLS at this address, **only** for running behind a
    /// TLS-terminating proxy (nginx, a cloud load balancer) that forwards WebSockets:
    /// nothing on this socket is encrypted, and `no-masking` is never negotiated on it.
    PlainBehindTlsProxy(SocketAddr),
    /// No TCP side.
    Off,
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
            server_names: Vec::new(),
            idle_timeout: Some(Duration::from_secs(30)),
            keep_alive: Some(Duration::from_secs(10)),
            congestion_controller: CongestionController::default(),
            tcp: TcpListen::default(),
            http: None,
            self_signed_renewal: None,
            connection_ids: None,
            fleet_keys: None,
            websocket_compression: crate::WebSocketCompression::Off,
            reuse_port: false,
            udp_socket: None,
            tcp_listener: None,
            steering: None,
            trusted_proxies: IpRange::loopback(),
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
        if l.max_message_size == 0 {
            return Err("limits.max_message_size must be at least 1".into());
        }
        if l.stream_receive_window == 0 || l.connection_receive_window == 0 {
            return Err("receive windows must be non-zero".into());
        }
        if l.max_concurrent_requests == 0
            || l.max_concurrent_requests > tokio::sync::Semaphore::MAX_PERMITS
        {
            return Err(format!(
                "limits.max_concurrent_requests must be in 1..={}",
                tokio::sync::Semaphore::MAX_PERMITS
            ));
        }
        if l.max_connections == 0 || l.max_connections_per_ip == 0 || l.max_sessions_per_ip == 0 {
            return Err("limits.max_connections, max_connections_per_ip and max_sessions_per_ip must be at least 1".into());
        }
        for (name, d) in [
            ("request_timeout", l.request_timeout),
            ("response_timeout", l.response_timeout),
            ("sessionless_timeout", l.sessionless_timeout),
            ("handler_timeout", l.handler_timeout),
            ("write_timeout", l.write_timeout),
        ] {
            if d.is_zero() {
                return Err(format!("limits.{name} must be non-zero"));
            }
        }
        if let (Some(idle), Some(ka)) = (self.idle_timeout, self.keep_alive) {
            if ka >= idle {
                return Err(format!(
                    "keep_alive ({ka:?}) must be shorter than idle_timeout ({idle:?})"
                ));
            }
        }
        if let Some(r) = &self.self_signed_renewal {
            if r.names.is_empty() {
                return Err("self_signed_renewal.names must not be empty".into());
            }
            if r.overlap.is_zero() || r.overlap.saturating_mul(3) >= r.validity {
                return Err(
                    "self_signed_renewal.overlap must be non-zero and under a third of validity"
                        .into(),
                );
            }
            // Certificates start 5 minutes back; browsers take them by hash only when the
            // whole span is at most 14 days.
            if r.validity > Duration::from_secs(14 * 24 * 3600 - 300) {
                return Err("self_signed_renewal.validity must be at most 14 days less 5 minutes: browsers accept a certificate by hash only when it is valid for 14 days or less, and it starts 5 minutes back".into());
            }
        }
        if self.steering.is_some() && !self.reuse_port && self.udp_socket.is_none() {
            return Err("steering needs reuse_port or a udp_socket".into());
        }
        if self.tcp_listener.is_some() && self.tcp == TcpListen::Off {
            return Err("a tcp_listener needs a TCP side (tcp is Off)".into());
        }
        if let Some(idle) = self.idle_timeout {
            if idle.as_millis() == 0 || idle.as_millis() >= (1u128 << 62) {
                return Err("idle_timeout out of range".into());
            }
        }
        Ok(())
    }
}

/// Bounds that keep memory use and waiting predictable whatever clients do. Each one and
/// the threat it answers is listed in `docs/security.md`.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Limits {
    /// Sessions the whole server accepts at once; more are refused with 503.
    pub max_sessions: usize,
    /// Sessions one connection may hold at once (draft-02 clients, which can pool; later
    /// drafts are offered one session per connection).
    pub max_sessions_per_connection: u32,
    /// Sessions, open or waiting to be accepted, from one IP address (one /64 for IPv6);
    /// more are refused with 429.
    pub max_sessions_per_ip: usize,
    /// QUIC connections the server holds at once; more are refused.
    pub max_connections: usize,
    /// QUIC connections from one IP address (one /64 for IPv6); more are refused.
    pub max_connections_per_ip: usize,
    /// Above this many connections, a client must prove its address with a QUIC Retry
    /// (one extra round trip) before the server spends a handshake on it. 0 retries always.
    pub retry_threshold: usize,
    /// Concurrent bidirectional streams a client may open per connection.
    pub max_bidi_streams: u32,
    /// Concurrent unidirectional streams a client may open per connection (beyond these,
    /// HTTP/3 needs three of its own).
    pub max_uni_streams: u32,
    /// Bytes a client may send on one stream before we read them.
    pub stream_receive_window: u32,
    /// Bytes a client may send on all streams of a connection before we read them, once it
    /// has a session. Before that, a connection gets at most 256 KiB.
    pub connection_receive_window: u32,
    /// Bytes we may have in flight unacknowledged per connection.
    pub send_window: u64,
    /// Received datagrams queued per session before the oldest are dropped.
    pub datagram_queue: usize,
    /// Bytes of received datagrams queued per session before the oldest are dropped.
    pub datagram_queue_bytes: usize,
    /// Streams that may wait per connection for a session that is not accepted yet; more
    /// are refused with WT_BUFFERED_STREAM_REJECTED.
    pub max_buffered_streams: usize,
    /// Datagrams that may wait per connection for a session that is not accepted yet.
    pub max_buffered_datagrams: usize,
    /// Session requests that may wait for `accept` per route; more are refused with 503.
    pub request_queue: usize,
    /// Refused session requests (any non-2xx the server or application answers, or a
    /// request the client abandons) a connection may make in a burst; the allowance
    /// refills by one per second. A connection past it is closed with H3_EXCESSIVE_LOAD.
    pub max_refused_requests: u32,
    /// A client must send a stream's type, session ID or request headers (and its SETTINGS
    /// before a request is served) within this time.
    pub request_timeout: Duration,
    /// A client must accept our response to its request, and our close or drain capsule,
    /// within this time (by granting flow-control credit); otherwise the CONNECT stream is
    /// reset and the session ends.
    pub response_timeout: Duration,
    /// A connection without any session or pending session request is closed after this
    /// long, whatever its keep-alive traffic.
    pub sessionless_timeout: Duration,
    /// The largest plain WebSocket message, received or sent (payload bytes; the frame
    /// header does not count); a larger one received closes the WebSocket with 1009, a
    /// larger one sent fails with `TooLarge`.
    pub max_message_size: usize,
    /// A write toward a client on the TCP side (WebSocket and QMux frames, queued in
    /// batches) must complete within this time; a client that stops reading loses its
    /// session (or an HTTP response its connection) instead of holding it.
    pub write_timeout: Duration,
    /// Concurrent requests (streams) per HTTP/2 connection on the TCP side.
    pub max_http2_streams: u32,
    /// The largest ordinary HTTP request body: a declared larger one is answered 413
    /// before the handler sees it, a streamed one fails with
    /// [`BodyError::TooLarge`](crate::BodyError::TooLarge) at the limit. A body that goes
    /// quiet for [`Limits::request_timeout`] fails with
    /// [`BodyError::TimedOut`](crate::BodyError::TimedOut).
    pub max_request_body: u64,
    /// The time the HTTP handler has to produce a response head, counted from the request
    /// or from the last request-body bytes it read (an upload in progress keeps it alive);
    /// past it the request is answered 503 and the handler's task is dropped.
    pub handler_timeout: Duration,
    /// Ordinary HTTP requests handled at once, counted from the handler's start to the end
    /// of its response body. More wait for a slot (the client's stream stays open; nothing
    /// is read for them), for up to `handler_timeout`, then get 503: a flood of slow
    /// requests cannot pile up handler tasks without bound.
    pub max_concurrent_requests: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_sessions: 10_000,
            max_sessions_per_connection: 16,
            max_sessions_per_ip: 1_024,
            max_connections: 10_000,
            max_connections_per_ip: 256,
            retry_threshold: 1_000,
            // Concurrent, not total: credit comes back as streams close. quinn keeps state
            // for every stream a peer may open, so this is most of an idle session's memory
            // (512 each: about 108 KiB a session; 100: about 49 KiB).
            max_bidi_streams: 100,
            max_uni_streams: 100,
            stream_receive_window: 4 * 1024 * 1024,
            connection_receive_window: 16 * 1024 * 1024,
            send_window: 16 * 1024 * 1024,
            datagram_queue: 1024,
            datagram_queue_bytes: 1024 * 1024,
            max_buffered_streams: 64,
            max_buffered_datagrams: 256,
            request_queue: 128,
            max_refused_requests: 64,
            request_timeout: Duration::from_secs(10),
            response_timeout: Duration::from_secs(5),
            sessionless_timeout: Duration::from_secs(10),
            max_message_size: 1024 * 1024,
            write_timeout: Duration::from_secs(20),
            max_http2_streams: 100,
            max_request_body: 16 * 1024 * 1024,
            handler_timeout: Duration::from_secs(30),
            max_concurrent_requests: 1024,
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

#[cfg(test)]
mod tests {
    use super::*;

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

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn ip_ranges_parse_and_match() {
        let r: IpRange = "10.0.0.0/8".parse().unwrap();
        assert!(r.contains(ip("10.255.1.2")));
        assert!(!r.contains(ip("11.0.0.1")));
        assert!(
            r.contains(ip("::ffff:10.1.2.3")),
            "IPv4-mapped peers count as IPv4"
        );
        assert!(!r.contains(ip("::1")));
        let one: IpRange = "192.0.2.7".parse().unwrap();
        assert_eq!(one.to_string(), "192.0.2.7/32");
        assert!(one.contains(ip("192.0.2.7")) && !one.contains(ip("192.0.2.8")));
        let v6: IpRange = "2001:db8::/32".parse().unwrap();
        assert!(v6.contains(ip("2001:db8:ffff::1")) && !v6.contains(ip("2001:db9::1")));
        let all: IpRange = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains(ip("203.0.113.1")));
        for bad in [
            "10.0.0.0/33",
            "::/129",
            "10.0.0.0/",
            "10.0.0.0/+8",
            "example.com",
            "",
            "10.0.0/8",
        ] {
            assert_eq!(
                bad.parse::<IpRange>(),
                Err(InvalidIpRange(bad.into())),
                "{bad}"
            );
        }
        let lo = IpRange::loopback();
        assert!(lo.iter().any(|r| r.contains(ip("127.0.0.1"))));
        assert!(lo.iter().any(|r| r.contains(ip("::1"))));
        assert!(!lo.iter().any(|r| r.contains(ip("192.168.1.1"))));
    }
}
