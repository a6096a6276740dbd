//! Server-wide counters: what the server did on its own (connections it refused, requests
//! it answered itself and why, handshakes that failed) next to what it carries, readable
//! at any time and in the Prometheus text format.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    net::SocketAddr,
    sync::{
        atomic::{AtomicU64, Ordering},
        Mutex,
    },
};

use tracing::info;

/// A snapshot of a server's counters, from [`Server::stats`](crate::Server::stats).
///
/// Totals count from the server's start; `connections` and `sessions` are the numbers open
/// at the moment of the snapshot.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ServerStats {
    /// QUIC and TCP connections open now.
    pub connections: usize,
    /// Sessions open now (WebTransport, QMux and plain WebSockets).
    pub sessions: usize,
    /// Connections admitted since the start (QUIC and TCP).
    pub connections_accepted: u64,
    /// Connection attempts refused by a limit or because the server was closing.
    pub connections_refused: u64,
    /// QUIC or TLS handshakes that failed or timed out after admission.
    pub handshakes_failed: u64,
    /// Sessions the application accepted since the start.
    pub sessions_accepted: u64,
    /// Accepted sessions that ended before they started: the client left before the
    /// answer, a QMux client sent no transport parameters in time, or a session limit was
    /// reached after the request arrived (the client got 503). `accept` hands these back
    /// already closed instead of failing.
    pub sessions_failed_to_start: u64,
    /// Session and WebSocket requests the server answered itself, by status: 400
    /// (malformed, or a plain WebSocket on a sessions-only route), 403 (origin), 404 (no
    /// route), 421 (foreign authority), 429 (per-connection or per-address limit), 503
    /// (closing, or the route's queue full). Rejections by the application are not counted.
    pub requests_refused: BTreeMap<u16, u64>,
    /// Ordinary HTTP requests that reached the HTTP handler.
    pub http_requests: u64,
}

impl ServerStats {
    /// The counters in the Prometheus text exposition format (version 0.0.4), every name
    /// prefixed `ferrovia_`, ready to serve from a `/metrics` route.
    pub fn to_prometheus(&self) -> String {
        let mut out = String::new();
        let mut metric = |name: &str, kind: &str, help: &str, value: String| {
            let _ = writeln!(out, "# HELP ferrovia_{name} {help}");
            let _ = writeln!(out, "# TYPE ferrovia_{name} {kind}");
            let _ = writeln!(out, "ferrovia_{name} {value}");
        };
        metric(
            "connections",
            "gauge",
            "QUIC and TCP connections open.",
            self.connections.to_string(),
        );
        metric(
            "sessions",
            "gauge",
            "Sessions open (WebTransport, QMux, WebSocket).",
            self.sessions.to_string(),
        );
        metric(
            "connections_accepted_total",
            "counter",
            "Connections admitted.",
            self.connections_accepted.to_string(),
        );
        metric(
            "connections_refused_total",
            "counter",
            "Connection attempts refused by a limit or while closing.",
            self.connections_refused.to_string(),
        );
        metric(
            "handshakes_failed_total",
            "counter",
            "QUIC or TLS handshakes that failed or timed out.",
            self.handshakes_failed.to_string(),
        );
        metric(
            "sessions_accepted_total",
            "counter",
            "Sessions the application accepted.",
            self.sessions_accepted.to_string(),
        );
        metric(
            "sessions_failed_to_start_total",
            "counter",
            "Accepted sessions that ended before they started.",
            self.sessions_failed_to_start.to_string(),
        );
        metric(
            "http_requests_total",
            "counter",
            "Ordinary HTTP requests that reached the handler.",
            self.http_requests.to_string(),
        );
        let _ = writeln!(
            out,
            "# HELP ferrovia_requests_refused_total Session and WebSocket requests the server answered itself, by status."
        );
        let _ = writeln!(out, "# TYPE ferrovia_requests_refused_total counter");
        for (status, count) in &self.requests_refused {
            let _ = writeln!(
                out,
                "ferrovia_requests_refused_total{{status=\"{status}\"}} {count}"
            );
        }
        out
    }
}

/// The live counters behind [`ServerStats`].
#[derive(Default)]
pub(crate) struct Counters {
    connections_accepted: AtomicU64,
    connections_refused: AtomicU64,
    handshakes_failed: AtomicU64,
    sessions_accepted: AtomicU64,
    sessions_failed_to_start: AtomicU64,
    http_requests: AtomicU64,
    requests_refused: Mutex<BTreeMap<u16, u64>>,
    refusal_log: Mutex<LogBudget>,
}

/// At most this many refusals are logged per second; the rest are counted and summed up in
/// the next line that is logged, so a flood of refused requests cannot flood the log.
const REFUSALS_LOGGED_PER_SECOND: u32 = 20;

#[derive(Default)]
struct LogBudget {
    window: Option<std::time::Instant>,
    logged: u32,
    suppressed: u64,
}

impl LogBudget {
    /// Whether to log one more line now, and how many were left out before it.
    fn take(&mut self) -> Option<u64> {
        let now = std::time::Instant::now();
        if self
            .window
            .is_none_or(|w| now.duration_since(w) >= std::time::Duration::from_secs(1))
        {
            self.window = Some(now);
            self.logged = 0;
        }
        if self.logged >= REFUSALS_LOGGED_PER_SECOND {
            self.suppressed += 1;
            return None;
        }
        self.logged += 1;
        Some(std::mem::take(&mut self.suppressed))
    }
}

impl Counters {
    pub(crate) fn connection_accepted(&self) {
        self.connections_accepted.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn connection_refused(&self, remote: SocketAddr, why: &'static str) {
        self.connections_refused.fetch_add(1, Ordering::Relaxed);
        info!(%remote, reason = why, "connection refused");
    }

    pub(crate) fn handshake_failed(&self, remote: SocketAddr, error: &dyn std::fmt::Display) {
        self.handshakes_failed.fetch_add(1, Ordering::Relaxed);
        info!(%remote, %error, "handshake failed");
    }

    pub(crate) fn session_accepted(&self) {
        self.sessions_accepted.fetch_add(1, Ordering::Relaxed);
    }

    /// An accepted session that ended before it started, and why.
    pub(crate) fn session_failed_to_start(&self, remote: SocketAddr, why: &str) {
        self.sessions_failed_to_start
            .fetch_add(1, Ordering::Relaxed);
        info!(%remote, reason = why, "session ended before it started");
    }

    pub(crate) fn http_request(&self) {
        self.http_requests.fetch_add(1, Ordering::Relaxed);
    }

    /// A request the server answered itself with `status`, and why.
    pub(crate) fn request_refused(
        &self,
        status: u16,
        reason: &'static str,
        path: &str,
        remote: SocketAddr,
    ) {
        *self
            .requests_refused
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(status)
            .or_default() += 1;
        let budget = self
            .refusal_log
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        match budget {
            Some(0) => info!(status, reason, path, %remote, "request refused"),
            Some(suppressed) => {
                info!(status, reason, path, %remote, suppressed, "request refused (and {suppressed} more not logged)")
            }
            None => {}
        }
    }

    pub(crate) fn snapshot(&self, connections: usize, sessions: usize) -> ServerStats {
        ServerStats {
            connections,
            sessions,
            connections_accepted: self.connections_accepted.load(Ordering::Relaxed),
            connections_refused: self.connections_refused.load(Ordering::Relaxed),
            handshakes_failed: self.handshakes_failed.load(Ordering::Relaxed),
            sessions_accepted: self.sessions_accepted.load(Ordering::Relaxed),
            sessions_failed_to_start: self.sessions_failed_to_start.load(Ordering::Relaxed),
            http_requests: self.http_requests.load(Ordering::Relaxed),
            requests_refused: self
                .requests_refused
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        }
    }
}

/// Why a request with this status was refused, for the log.
pub(crate) fn refusal_reason(status: u16) -> &'static str {
    match status {
        400 => "malformed request, or a plain WebSocket on a route that takes sessions only",
        403 => "origin not allowed",
        404 => "no route for the path",
        421 => "authority is not this server",
        429 => "too many sessions on the connection or from the address",
        503 => "server closing or draining, or request queue full",
        _ => "refused",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prometheus_text_names_every_counter_and_each_status() {
        let c = Counters::default();
        let remote: SocketAddr = "192.0.2.1:5000".parse().unwrap();
        c.connection_accepted();
        c.request_refused(404, refusal_reason(404), "/x", remote);
        c.request_refused(404, refusal_reason(404), "/y", remote);
        c.request_refused(403, refusal_reason(403), "/x", remote);
        let stats = c.snapshot(1, 0);
        assert_eq!(stats.requests_refused, BTreeMap::from([(403, 1), (404, 2)]));
        let text = stats.to_prometheus();
        assert!(text.contains("ferrovia_connections 1\n"), "{text}");
        assert!(
            text.contains("ferrovia_connections_accepted_total 1\n"),
            "{text}"
        );
        assert!(
            text.contains("ferrovia_requests_refused_total{status=\"404\"} 2\n"),
            "{text}"
        );
        assert!(
            text.contains("# TYPE ferrovia_requests_refused_total counter\n"),
            "{text}"
        );
        // Every sample line is `name{labels} value`, every name announced by a TYPE line.
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let name = line.split(['{', ' ']).next().unwrap();
            assert!(text.contains(&format!("# TYPE {name} ")), "{name}");
        }
    }
}

#[cfg(test)]
mod log_budget_tests {
    use super::*;

    #[test]
    fn refusal_logs_are_rate_limited_and_count_what_they_leave_out() {
        let mut budget = LogBudget::default();
        let logged: Vec<_> = (0..50).map(|_| budget.take()).collect();
        assert_eq!(logged.iter().filter(|l| l.is_some()).count(), 20);
        assert_eq!(budget.suppressed, 30);
        // A new window logs again and reports the 30 left out.
        budget.window = Some(std::time::Instant::now() - std::time::Duration::from_secs(2));
        assert_eq!(budget.take(), Some(30));
        assert_eq!(budget.take(), Some(0));
    }
}
