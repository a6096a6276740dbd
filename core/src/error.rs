//! Error types returned by the public API.

use std::{io, net::SocketAddr, path::PathBuf};

/// A certificate or key could not be loaded or generated.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CertificateError {
    /// A PEM file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file that failed.
        path: PathBuf,
        /// The underlying I/O error.
        #[source]
        source: io::Error,
    },
    /// The certificate PEM holds no `CERTIFICATE` block.
    #[error("no certificate found in {0}")]
    NoCertificate(String),
    /// The key PEM holds no private key, or it is malformed.
    #[error("no usable private key found in {0}")]
    NoPrivateKey(String),
    /// The private key does not belong to the first certificate, or its type is unsupported.
    #[error("certificate and private key do not match or are unsupported: {0}")]
    Mismatch(String),
    /// A name given to a self-signed certificate is invalid, or generation failed.
    #[error("cannot generate a self-signed certificate: {0}")]
    Generate(String),
}

/// The server could not be started or reconfigured.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    /// Binding the UDP socket failed (for example, the port is in use).
    #[error("cannot bind UDP {addr}: {source}")]
    Bind {
        /// The address that could not be bound.
        addr: SocketAddr,
        /// The underlying I/O error.
        #[source]
        source: io::Error,
    },
    /// Binding the TCP listener (WebSocket and QMux sessions) failed.
    #[error("cannot bind TCP {addr}: {source}")]
    BindTcp {
        /// The address that could not be bound.
        addr: SocketAddr,
        /// The underlying I/O error.
        #[source]
        source: io::Error,
    },
    /// A certificate problem.
    #[error(transparent)]
    Certificate(#[from] CertificateError),
    /// A configuration value is out of range.
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),
    /// The call was made outside a tokio runtime.
    #[error("ferrovia must be used from within a tokio runtime")]
    NoRuntime,
    /// A route for this path is already registered.
    #[error("a route for {0:?} is already registered")]
    RouteTaken(String),
    /// The server is shutting down or closed.
    #[error("the server is closed")]
    Closed,
    /// Steering by connection ID in a `SO_REUSEPORT` group could not be set up.
    #[error(transparent)]
    ReusePort(#[from] crate::fleet::ReusePortError),
}

/// Why a session request could not be answered as asked.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RequestError {
    /// `reject` was given a status that is not an HTTP error status (300..=599).
    #[error("invalid rejection status {0}: use 300..=599")]
    InvalidStatus(u16),
    /// The chosen subprotocol was not offered by the client.
    #[error("subprotocol {0:?} was not offered by the client")]
    ProtocolNotOffered(String),
    /// A response header name or value is not valid HTTP.
    #[error("invalid response header {0:?}")]
    InvalidHeader(String),
    /// The client went away before the response could be sent.
    #[error("the client went away: {0}")]
    ConnectionLost(String),
    /// The server refused the session because a limit was reached.
    #[error("session limit reached")]
    TooManySessions,
    /// `accept` was called on a plain WebSocket request, or `accept_websocket` on a
    /// session request: the request's transport is this.
    #[error(
        "this is a {} request: {}",
        .0.as_str(),
        if *.0 == crate::transport::Transport::WebSocket {
            "use accept_websocket for it"
        } else {
            "use accept for it, not accept_websocket"
        }
    )]
    WrongTransport(crate::transport::Transport),
    /// The client offered subprotocols only (a QMux client with `requireProtocol`):
    /// accepting needs one of them.
    #[error("the client requires a subprotocol: pass one of subprotocols() to accept_with")]
    ProtocolRequired,
}

/// An operation on a session failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SessionError {
    /// The session has ended; the [`CloseInfo`](crate::CloseInfo) says how.
    #[error("session closed: {0}")]
    Closed(crate::CloseInfo),
    /// The datagram payload exceeds what fits in one QUIC packet.
    #[error("datagram of {size} bytes exceeds the maximum of {max} bytes")]
    DatagramTooLarge {
        /// The payload size that was given.
        size: usize,
        /// The largest payload that fits right now.
        max: usize,
    },
    /// The client did not enable datagrams.
    #[error("the client does not support datagrams")]
    DatagramsUnsupported,
    /// No more streams may be opened now and the session closed while waiting.
    #[error("cannot open a stream: {0}")]
    OpenStream(String),
}

/// An operation on a stream failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StreamError {
    /// The peer reset the stream it was sending (RESET_STREAM) with this application code.
    #[error("stream reset by peer with code {code}")]
    Reset {
        /// The WebTransport application error code.
        code: u32,
    },
    /// The peer asked us to stop sending (STOP_SENDING) with this application code.
    #[error("peer stopped the stream with code {code}")]
    Stopped {
        /// The WebTransport application error code.
        code: u32,
    },
    /// The stream was already finished or reset locally.
    #[error("the stream is already closed")]
    ClosedStream,
    /// The session that owns the stream has ended.
    #[error("session closed: {0}")]
    SessionClosed(crate::CloseInfo),
    /// The read limit of `read_to_end` was exceeded.
    #[error("stream data exceeds the limit of {0} bytes")]
    TooLong(usize),
    /// The stream ended before enough bytes arrived.
    #[error("stream finished early")]
    FinishedEarly,
    /// A message's length prefix exceeds the reader's largest message (see
    /// [`MessageDecoder`](crate::message::MessageDecoder)).
    #[error("message of {size} bytes exceeds the limit of {max} bytes")]
    MessageTooLarge {
        /// The length the prefix announced.
        size: usize,
        /// The reader's limit.
        max: usize,
    },
    /// The stream ended inside a message: the sender stopped halfway.
    #[error("stream ended inside a message ({received} bytes of {} received)", expected.map_or_else(|| "a length prefix".to_string(), |n| n.to_string()))]
    MessageTruncated {
        /// Bytes of the unfinished message (or of its length prefix) that arrived.
        received: usize,
        /// The message's announced length; `None` when the prefix itself was cut.
        expected: Option<usize>,
    },
}

impl CertificateError {
    /// A stable, machine-readable name for this error, shared by the language bindings.
    pub fn code(&self) -> &'static str {
        "ERR_CERTIFICATE"
    }
}

impl ServerError {
    /// A stable, machine-readable name for this error, shared by the language bindings.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Bind { source, .. } if source.kind() == io::ErrorKind::AddrInUse => {
                "ERR_ADDRESS_IN_USE"
            }
            Self::Bind { .. } => "ERR_BIND",
            Self::BindTcp { source, .. } if source.kind() == io::ErrorKind::AddrInUse => {
                "ERR_ADDRESS_IN_USE"
            }
            Self::BindTcp { .. } => "ERR_BIND",
            Self::Certificate(e) => e.code(),
            Self::InvalidConfig(_) => "ERR_INVALID_CONFIG",
            Self::NoRuntime => "ERR_NO_RUNTIME",
            Self::RouteTaken(_) => "ERR_ROUTE_TAKEN",
            Self::Closed => "ERR_SERVER_CLOSED",
            Self::ReusePort(
                crate::fleet::ReusePortError::Workers(_)
                | crate::fleet::ReusePortError::ConnectionIds { .. },
            ) => "ERR_INVALID_CONFIG",
            Self::ReusePort(_) => "ERR_REUSE_PORT",
        }
    }
}

impl RequestError {
    /// A stable, machine-readable name for this error, shared by the language bindings.
    pub fn code(&self) -> &'static str {
        match self {
            Self::InvalidStatus(_) => "ERR_INVALID_STATUS",
            Self::ProtocolNotOffered(_) => "ERR_PROTOCOL_NOT_OFFERED",
            Self::InvalidHeader(_) => "ERR_INVALID_HEADER",
            Self::ConnectionLost(_) => "ERR_CONNECTION_LOST",
            Self::TooManySessions => "ERR_TOO_MANY_SESSIONS",
            Self::WrongTransport(_) => "ERR_WRONG_TRANSPORT",
            Self::ProtocolRequired => "ERR_PROTOCOL_REQUIRED",
        }
    }
}

impl SessionError {
    /// A stable, machine-readable name for this error, shared by the language bindings.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Closed(_) => "ERR_SESSION_CLOSED",
            Self::DatagramTooLarge { .. } => "ERR_DATAGRAM_TOO_LARGE",
            Self::DatagramsUnsupported => "ERR_DATAGRAMS_UNSUPPORTED",
            Self::OpenStream(_) => "ERR_OPEN_STREAM",
        }
    }
}

impl StreamError {
    /// A stable, machine-readable name for this error, shared by the language bindings.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Reset { .. } => "ERR_STREAM_RESET",
            Self::Stopped { .. } => "ERR_STREAM_STOPPED",
            Self::ClosedStream => "ERR_STREAM_CLOSED",
            Self::SessionClosed(_) => "ERR_SESSION_CLOSED",
            Self::TooLong(_) => "ERR_STREAM_TOO_LONG",
            Self::FinishedEarly => "ERR_STREAM_FINISHED_EARLY",
            Self::MessageTooLarge { .. } => "ERR_MESSAGE_TOO_LARGE",
            Self::MessageTruncated { .. } => "ERR_MESSAGE_TRUNCATED",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_stable_names() {
        let in_use = ServerError::Bind {
            addr: "127.0.0.1:1".parse().unwrap(),
            source: io::Error::from(io::ErrorKind::AddrInUse),
        };
        assert_eq!(in_use.code(), "ERR_ADDRESS_IN_USE");
        assert_eq!(StreamError::Reset { code: 7 }.code(), "ERR_STREAM_RESET");
        assert_eq!(
            SessionError::DatagramTooLarge { size: 2, max: 1 }.code(),
            "ERR_DATAGRAM_TOO_LARGE"
        );
        assert_eq!(
            RequestError::InvalidStatus(200).code(),
            "ERR_INVALID_STATUS"
        );
    }
}
