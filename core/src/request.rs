//! An incoming session request (extended CONNECT), seen before it is accepted.

use std::{
    future::Future,
    net::SocketAddr,
    sync::Arc,
    task::{Context, Poll},
};

use bytes::Bytes;

use crate::{
    error::RequestError,
    h3::{
        connection::{send_and_finish, try_write_now, ConnShared, MAX_EARLY_CAPSULE_BYTES},
        qpack,
    },
    server::IpSessionToken,
    session::Session,
    sfv,
};

/// A client asking to open a WebTransport session. Inspect it, then [`accept`] or
/// [`reject`] it; dropping it unanswered rejects it with 404.
///
/// [`accept`]: SessionRequest::accept
/// [`reject`]: SessionRequest::reject
pub struct SessionRequest {
    pub(crate) conn: Arc<ConnShared>,
    pub(crate) session_id: u64,
    pub(crate) streams: Option<(quinn::SendStream, quinn::RecvStream)>,
    /// CONNECT-stream bytes that arrived before the answer (capsules).
    pub(crate) early_capsules: Vec<u8>,
    pub(crate) ip: Option<IpSessionToken>,
    pub(crate) path: String,
    pub(crate) authority: String,
    pub(crate) origin: Option<String>,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) protocols: Vec<String>,
    pub(crate) draft02: bool,
}

impl std::fmt::Debug for SessionRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionRequest")
            .field("session_id", &self.session_id)
            .field("path", &self.path)
            .field("authority", &self.authority)
            .field("origin", &self.origin)
            .field("protocols", &self.protocols)
            .finish_non_exhaustive()
    }
}

impl SessionRequest {
    /// The `:path` pseudo-header: path and query, e.g. `/chat?room=1`.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The `:authority` pseudo-header: the host (and port) the client asked for.
    pub fn authority(&self) -> &str {
        &self.authority
    }

    /// The `origin` header, sent by browsers.
    pub fn origin(&self) -> Option<&str> {
        self.origin.as_deref()
    }

    /// Every regular header in the order received (names are lowercase).
    pub fn headers(&self) -> &[(String, String)] {
        &self.headers
    }

    /// The first value of header `name` (compared case-insensitively).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Subprotocols offered in `wt-available-protocols`, in preference order.
    pub fn subprotocols(&self) -> &[String] {
        &self.protocols
    }

    /// The client's address.
    pub fn remote_addr(&self) -> SocketAddr {
        self.conn.conn.remote_address()
    }

    /// The session ID the session will have.
    pub fn session_id(&self) -> u64 {
        self.session_id
    }

    /// Accepts the session with a 200 response.
    pub async fn accept(self) -> Result<Session, RequestError> {
        self.accept_with(None, &[]).await
    }

    /// Checks what [`accept_with`](Self::accept_with) would refuse, without answering:
    /// lets a caller report a bad argument and still hold the request.
    pub fn check_accept(
        &self,
        protocol: Option<&str>,
        headers: &[(&str, &str)],
    ) -> Result<(), RequestError> {
        if let Some(p) = protocol {
            if !self.protocols.iter().any(|o| o == p) {
                return Err(RequestError::ProtocolNotOffered(p.to_owned()));
            }
        }
        check_headers(headers)
    }

    /// Checks that `status` may be given to [`reject`](Self::reject) (300..=599).
    pub fn check_status(status: u16) -> Result<(), RequestError> {
        if (300..=599).contains(&status) {
            Ok(())
        } else {
            Err(RequestError::InvalidStatus(status))
        }
    }

    /// Accepts the session, choosing one of the offered subprotocols (sent back as
    /// `wt-protocol`) and adding response headers.
    ///
    /// This never waits on the client: a response the client's flow control cannot take
    /// at once is written in the background, and if the client withholds credit past
    /// [`Limits::response_timeout`](crate::Limits::response_timeout) the session ends
    /// (its [`closed`](Session::closed) resolves) instead.
    pub async fn accept_with(
        mut self,
        protocol: Option<&str>,
        headers: &[(&str, &str)],
    ) -> Result<Session, RequestError> {
        self.check_accept(protocol, headers)?;
        let mut fields: Vec<(&str, String)> = Vec::new();
        if self.draft02 {
            fields.push(("sec-webtransport-http3-draft", "draft02".into()));
        }
        if let Some(p) = protocol {
            fields.push(("wt-protocol", sf_string(p)));
        }
        for (k, v) in headers {
            fields.push((k, (*v).to_owned()));
        }
        let (mut send, recv) = self.streams.take().ok_or(RequestError::ConnectionLost(
            "request already answered".into(),
        ))?;
        let conn = self.conn.clone();
        let timeout = conn.server.limits.response_timeout;
        let Some(slot) = conn.reserve_session() else {
            let mut block = Vec::new();
            encode_response(503, &[], &mut block);
            send_and_finish(&conn.runtime, send, block.into(), timeout);
            conn.forget_request(self.session_id);
            conn.note_refusal();
            return Err(RequestError::TooManySessions);
        };
        let field_refs: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let mut block = Vec::new();
        encode_response(200, &field_refs, &mut block);
        let mut response = Bytes::from(block);
        if let Err(e) = try_write_now(&mut send, &mut response) {
            conn.forget_request(self.session_id);
            return Err(RequestError::ConnectionLost(e.to_string()));
        }
        if let Some(reason) = conn.conn.close_reason() {
            conn.forget_request(self.session_id);
            return Err(RequestError::ConnectionLost(reason.to_string()));
        }
        Ok(conn.start_session(
            self.session_id,
            self.path.clone(),
            send,
            recv,
            slot,
            self.ip.take(),
            response,
            std::mem::take(&mut self.early_capsules),
        ))
    }

    /// Rejects the session with an HTTP status (300..=599), e.g. 403 or 404. Like
    /// [`accept_with`](Self::accept_with), this never waits on the client.
    pub async fn reject(self, status: u16) -> Result<(), RequestError> {
        Self::check_status(status)?;
        self.reject_in_background(status);
        Ok(())
    }

    /// Answers `status` without waiting; the request counts as refused.
    pub(crate) fn reject_in_background(mut self, status: u16) {
        self.answer(status);
    }

    fn answer(&mut self, status: u16) {
        let Some((send, _recv)) = self.streams.take() else {
            return;
        };
        self.conn.forget_request(self.session_id);
        self.conn.note_refusal();
        let mut block = Vec::new();
        encode_response(status, &[], &mut block);
        send_and_finish(
            &self.conn.runtime,
            send,
            block.into(),
            self.conn.server.limits.response_timeout,
        );
    }

    /// Whether the client has given up on this request (reset or finished its CONNECT
    /// stream, or closed the connection). An abandoned request is answered (so that its
    /// slots are released) and must not be handed to the application. Capsules that
    /// arrived meanwhile are kept for the session.
    pub(crate) fn poll_abandoned(&mut self) -> bool {
        let abandoned = self.check_abandoned();
        if abandoned {
            if let Some((mut send, mut recv)) = self.streams.take() {
                let _ = send.reset(quinn::VarInt::from_u32(0x10c)); // H3_REQUEST_CANCELLED
                let _ = recv.stop(quinn::VarInt::from_u32(0x10c));
            }
            self.conn.forget_request(self.session_id);
            self.conn.note_refusal();
        }
        abandoned
    }

    fn check_abandoned(&mut self) -> bool {
        if self.conn.conn.close_reason().is_some() {
            return true;
        }
        let Some((_, recv)) = self.streams.as_mut() else {
            return true;
        };
        let waker = std::task::Waker::noop();
        let mut cx = Context::from_waker(waker);
        loop {
            let poll = {
                let fut = recv.read_chunk(4096, true);
                std::pin::pin!(fut).poll(&mut cx)
            };
            match poll {
                Poll::Ready(Ok(Some(chunk))) => {
                    if self.early_capsules.len() + chunk.bytes.len() > MAX_EARLY_CAPSULE_BYTES {
                        return true;
                    }
                    self.early_capsules.extend_from_slice(&chunk.bytes);
                }
                Poll::Ready(Ok(None)) | Poll::Ready(Err(_)) => return true,
                Poll::Pending => return false,
            }
        }
    }
}

impl Drop for SessionRequest {
    fn drop(&mut self) {
        self.answer(404);
    }
}

/// A header value as an RFC 8941 string item (subprotocols were checked to be offered, so
/// they are valid strings).
fn sf_string(s: &str) -> String {
    sfv::serialize_string(s).unwrap_or_else(|| "\"\"".to_owned())
}

fn check_headers(headers: &[(&str, &str)]) -> Result<(), RequestError> {
    for (k, v) in headers {
        let name_ok = !k.is_empty()
            && k.bytes().all(|b| {
                b.is_ascii_lowercase() || b.is_ascii_digit() || b"!#$%&'*+-.^_`|~".contains(&b)
            });
        let value_ok = v.bytes().all(|b| b == b'\t' || (b >= 0x20 && b != 0x7f));
        if !name_ok || !value_ok {
            return Err(RequestError::InvalidHeader((*k).to_owned()));
        }
    }
    Ok(())
}

/// Encodes a response HEADERS frame with `:status` and extra fields.
pub(crate) fn encode_response(status: u16, extra: &[(&str, &str)], out: &mut Vec<u8>) {
    let status = status.to_string();
    let mut fields = vec![(":status", status.as_str())];
    fields.extend_from_slice(extra);
    let mut block = Vec::new();
    qpack::encode_field_section(&fields, &mut block);
    crate::h3::frame::encode_varint(crate::h3::frame::HEADERS, out);
    crate::h3::frame::encode_varint(block.len() as u64, out);
    out.extend_from_slice(&block);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subprotocol_is_a_structured_string() {
        assert_eq!(sf_string("chat.v1"), "\"chat.v1\"");
        assert_eq!(sf_string("a\"b\\"), "\"a\\\"b\\\\\"");
    }

    #[test]
    fn response_headers_are_validated() {
        assert!(check_headers(&[("x-ok", "fine")]).is_ok());
        assert!(check_headers(&[("X-Upper", "v")]).is_err());
        assert!(check_headers(&[("x-nl", "a\r\nb")]).is_err());
        assert!(check_headers(&[("", "v")]).is_err());
    }
}
