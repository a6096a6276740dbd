//! Which transport carries a session or a request.

/// What carries a session or a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Transport {
    /// WebTransport over HTTP/3 (QUIC, UDP).
    WebTransport,
    /// QMux (draft-ietf-quic-qmux) over a WebSocket, on TCP: the same session semantics,
    /// with datagrams delivered reliably.
    Qmux,
    /// A plain WebSocket: a message-oriented [`WebSocket`](crate::WebSocket).
    WebSocket,
}

impl Transport {
    /// A stable lowercase name: `webtransport`, `qmux` or `websocket`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::WebTransport => "webtransport",
            Self::Qmux => "qmux",
            Self::WebSocket => "websocket",
        }
    }
}
