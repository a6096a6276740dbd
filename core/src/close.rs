//! How a session ends: who ended it, with which code and reason.

use std::fmt;

use tokio::sync::watch;

/// The longest close reason the protocol allows, in bytes (the W3C API's bound too).
pub const MAX_REASON_LEN: usize = 1024;

/// Truncates `reason` to at most [`MAX_REASON_LEN`] bytes on a character boundary, as the
/// W3C API does for `close({ reason })`.
pub(crate) fn truncate_reason(reason: &str) -> &str {
    if reason.len() <= MAX_REASON_LEN {
        return reason;
    }
    let mut end = MAX_REASON_LEN;
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    &reason[..end]
}

/// Who ended a session.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CloseInitiator {
    /// This server called [`Session::close`] (or dropped every handle).
    Local,
    /// The client sent CLOSE_WEBTRANSPORT_SESSION, or finished or reset the CONNECT stream.
    Remote,
    /// The QUIC connection ended underneath the session (idle timeout, loss, shutdown).
    Connection,
}

/// How a session ended: the application code and reason carried by
/// CLOSE_WEBTRANSPORT_SESSION (0 and empty when the session ended any other way).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct CloseInfo {
    /// The application close code.
    pub code: u32,
    /// The UTF-8 reason, at most 1024 bytes.
    pub reason: String,
    /// Who ended the session.
    pub initiator: CloseInitiator,
}

impl CloseInfo {
    /// The server refused the session after `accept` was called (a limit was reached).
    pub(crate) fn refused(reason: &str) -> Self {
        Self {
            code: 0,
            reason: reason.to_owned(),
            initiator: CloseInitiator::Local,
        }
    }

    pub(crate) fn connection_lost(reason: String) -> Self {
        // A peer's CONNECTION_CLOSE reason can be as long as a packet: keep the bound that
        // every close reason has.
        let reason = truncate_reason(&reason).to_owned();
        Self {
            code: 0,
            reason,
            initiator: CloseInitiator::Connection,
        }
    }
}

impl CloseInfo {
    /// The session's end when its QUIC connection ended first.
    ///
    /// Some clients on a connection that carries one session (web-transport-quinn among
    /// them) close the whole connection with the session's code mapped into the HTTP/3
    /// WebTransport range when the server does not close it soon enough after their
    /// CLOSE_WEBTRANSPORT_SESSION capsule; if that capsule was lost, this is the only place
    /// the code survives. A code outside that range is an ordinary connection error.
    pub(crate) fn from_connection_error(e: &quinn::ConnectionError) -> Self {
        if let quinn::ConnectionError::ApplicationClosed(close) = e {
            let raw = close.error_code.into_inner();
            if let Some(code) = web_transport_proto::error_from_http3(raw) {
                if web_transport_proto::error_to_http3(code) == raw {
                    let reason = String::from_utf8_lossy(&close.reason);
                    return Self {
                        code,
                        reason: truncate_reason(&reason).to_owned(),
                        initiator: CloseInitiator::Remote,
                    };
                }
            }
        }
        Self::connection_lost(e.to_string())
    }
}

impl fmt::Display for CloseInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let who = match self.initiator {
            CloseInitiator::Local => "locally",
            CloseInitiator::Remote => "by the peer",
            CloseInitiator::Connection => "with the connection",
        };
        write!(f, "closed {who} with code {}", self.code)?;
        if !self.reason.is_empty() {
            write!(f, ": {}", self.reason)?;
        }
        Ok(())
    }
}

/// Waits until the session has a [`CloseInfo`].
pub(crate) async fn wait_closed(rx: &mut watch::Receiver<Option<CloseInfo>>) -> CloseInfo {
    match rx.wait_for(|c| c.is_some()).await {
        Ok(info) => info
            .clone()
            .unwrap_or_else(|| CloseInfo::connection_lost(String::new())),
        // The sender lives as long as the session; reaching here means it is gone.
        Err(_) => CloseInfo::connection_lost("session dropped".into()),
    }
}
