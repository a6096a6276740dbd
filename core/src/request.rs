//! An incoming session request (extended CONNECT), seen before it is accepted.

use std::{net::SocketAddr, sync::Arc};

use crate::{connection::ConnShared, error::RequestError, qpack, session::Session};

/// A client asking to open a WebTransport session. Inspect it, then [`accept`] or
/// [`reject`] it; dropping it unanswered rejects it with 404.
///
/// [`accept`]: SessionRequest::accept
/// [`reject`]: SessionRequest::reject
pub struct SessionRequest {
    pub(crate) conn: Arc<ConnShared>,
    pub(crate) session_id: u64,
    pub(crate) streams: Option<(quinn::SendStream, quinn::RecvStream)>,
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
    pub async fn accept_with(
        mut self,
        protocol: Option<&str>,
        headers: &[(&str, &str)],
    ) -> Result<Session, RequestError> {
        self.check_accept(protocol, headers)?;
        let mut fields: Vec<(&str, String)> = vec![(":status", "200".into())];
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
        let Some(slot) = conn.reserve_session() else {
            write_response(&mut send, 503, &[]).await.ok();
            let _ = send.finish();
            conn.forget_request(self.session_id);
            return Err(RequestError::TooManySessions);
        };
        let field_refs: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
        if let Err(e) = write_frame(&mut send, &field_refs).await {
            conn.forget_request(self.session_id);
            return Err(RequestError::ConnectionLost(e));
        }
        Ok(conn.start_session(self.session_id, self.path.clone(), send, recv, slot))
    }

    /// Rejects the session with an HTTP status (300..=599), e.g. 403 or 404.
    pub async fn reject(mut self, status: u16) -> Result<(), RequestError> {
        Self::check_status(status)?;
        let Some((mut send, _recv)) = self.streams.take() else {
            return Ok(());
        };
        self.conn.forget_request(self.session_id);
        write_response(&mut send, status, &[])
            .await
            .map_err(RequestError::ConnectionLost)?;
        let _ = send.finish();
        Ok(())
    }
}

impl Drop for SessionRequest {
    fn drop(&mut self) {
        if let Some((mut send, _recv)) = self.streams.take() {
            self.conn.forget_request(self.session_id);
            let handle = self.conn.runtime.clone();
            handle.spawn(async move {
                let _ = write_response(&mut send, 404, &[]).await;
                let _ = send.finish();
            });
        }
    }
}

/// A header value as an RFC 8941 string item.
fn sf_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
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

/// Writes a response HEADERS frame with `:status` and extra fields.
pub(crate) async fn write_response(
    send: &mut quinn::SendStream,
    status: u16,
    extra: &[(&str, &str)],
) -> Result<(), String> {
    let status = status.to_string();
    let mut fields = vec![(":status", status.as_str())];
    fields.extend_from_slice(extra);
    write_frame(send, &fields).await
}

async fn write_frame(send: &mut quinn::SendStream, fields: &[(&str, &str)]) -> Result<(), String> {
    let mut block = Vec::new();
    qpack::encode_field_section(fields, &mut block);
    let mut frame = Vec::with_capacity(block.len() + 9);
    web_transport_proto::Frame::HEADERS.encode(&mut frame);
    web_transport_proto::VarInt::from_u64(block.len() as u64)
        .map_err(|_| "header block too large".to_string())?
        .encode(&mut frame);
    frame.extend_from_slice(&block);
    send.write_all(&frame).await.map_err(|e| e.to_string())
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
