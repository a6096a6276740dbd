//! A WebTransport request over HTTP/3 waiting for the application's answer: its CONNECT
//! stream, and the capsules that arrived before the answer.

use std::{
    future::Future,
    sync::Arc,
    task::{Context, Poll},
};

use bytes::Bytes;

use super::conn::{send_and_finish, try_write_now, ConnShared, MAX_EARLY_CAPSULE_BYTES};
use crate::{
    close::CloseInfo,
    error::RequestError,
    request::{sf_string, Pending, Refusal, RequestHead, CLIENT_LEFT, SESSION_LIMIT},
    session::{Backend, Session},
    shared::IpSessionToken,
    ws::WebSocket,
};

pub(crate) struct H3Request {
    /// The request's slot under the per-address session limit, handed to the session;
    /// first, so it is released first, as before the request held it itself.
    pub(crate) ip: Option<IpSessionToken>,
    pub(crate) conn: Arc<ConnShared>,
    pub(crate) streams: Option<(quinn::SendStream, quinn::RecvStream)>,
    /// CONNECT-stream bytes that arrived before the answer (capsules).
    pub(crate) early_capsules: Vec<u8>,
    pub(crate) draft02: bool,
}

impl H3Request {
    fn session_id(&self) -> u64 {
        self.streams.as_ref().map_or(0, |(_, r)| u64::from(r.id()))
    }

    /// Accepts the session. Never fails because of the client: a client that left, or a
    /// session limit reached meanwhile, gives a session that is already closed.
    pub(crate) fn accept(
        &mut self,
        head: &RequestHead,
        protocol: Option<&str>,
        headers: &[(&str, &str)],
        ip: Option<IpSessionToken>,
    ) -> Session {
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
        let session_id = self.session_id();
        let conn = self.conn.clone();
        let closed = |info: CloseInfo| {
            conn.server
                .counters
                .session_failed_to_start(head.remote, &info.reason);
            Session::already_closed(
                head.id,
                Backend::h3(conn.conn.clone(), head.id),
                head.path.clone(),
                protocol.map(str::to_owned),
                &conn.server.limits,
                conn.runtime.clone(),
                info,
            )
        };
        // Taken only by `poll_abandoned`: the client gave up before the answer.
        let Some((mut send, recv)) = self.streams.take() else {
            return closed(CloseInfo::connection_lost(CLIENT_LEFT.into()));
        };
        let timeout = conn.server.limits.response_timeout;
        let Some(slot) = conn.reserve_session() else {
            let mut block = Vec::new();
            encode_response(503, &[], &mut block);
            send_and_finish(&conn.runtime, send, block.into(), timeout);
            conn.forget_request(session_id);
            conn.note_refusal();
            return closed(CloseInfo::refused(SESSION_LIMIT));
        };
        let field_refs: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let mut block = Vec::new();
        encode_response(200, &field_refs, &mut block);
        let mut response = Bytes::from(block);
        if let Err(e) = try_write_now(&mut send, &mut response) {
            conn.forget_request(session_id);
            return closed(CloseInfo::connection_lost(e.to_string()));
        }
        if let Some(reason) = conn.conn.close_reason() {
            conn.forget_request(session_id);
            return closed(CloseInfo::from_connection_error(&reason));
        }
        conn.start_session(
            session_id,
            head.path.clone(),
            send,
            recv,
            slot,
            ip,
            response,
            std::mem::take(&mut self.early_capsules),
            protocol.map(str::to_owned),
        )
    }

    pub(crate) fn answer(&mut self, status: u16, headers: &[(&str, &str)]) {
        let session_id = self.session_id();
        let Some((send, _recv)) = self.streams.take() else {
            return;
        };
        self.conn.forget_request(session_id);
        self.conn.note_refusal();
        let mut block = Vec::new();
        encode_response(status, headers, &mut block);
        send_and_finish(
            &self.conn.runtime,
            send,
            block.into(),
            self.conn.server.limits.response_timeout,
        );
    }

    /// Whether the client has given up on this request. Capsules that arrived meanwhile
    /// are kept for the session.
    pub(crate) fn poll_abandoned(&mut self) -> bool {
        let session_id = self.session_id();
        let abandoned = self.check_abandoned();
        if abandoned {
            if let Some((mut send, mut recv)) = self.streams.take() {
                let _ = send.reset(quinn::VarInt::from_u32(0x10c)); // H3_REQUEST_CANCELLED
                let _ = recv.stop(quinn::VarInt::from_u32(0x10c));
                self.conn.forget_request(session_id);
                self.conn.note_refusal();
            }
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

/// Encodes a response HEADERS frame with `:status` and extra fields.
pub(crate) fn encode_response(status: u16, extra: &[(&str, &str)], out: &mut Vec<u8>) {
    let status = status.to_string();
    let mut fields = vec![(":status", status.as_str())];
    fields.extend_from_slice(extra);
    let mut block = Vec::new();
    super::qpack::encode_field_section(&fields, &mut block);
    super::frame::put_frame(out, super::frame::HEADERS, &block);
}

impl Pending for H3Request {
    fn remember_refusal(&self, id: String, refusal: Refusal) {
        self.conn.server.remember_refusal(id, refusal);
    }

    fn unanswered(&self) -> bool {
        self.streams.is_some()
    }

    fn answer(&mut self, status: u16, headers: &[(&str, &str)]) {
        H3Request::answer(self, status, headers);
    }

    fn poll_abandoned(&mut self) -> bool {
        H3Request::poll_abandoned(self)
    }

    fn accept(
        &mut self,
        head: &RequestHead,
        protocol: Option<&str>,
        headers: &[(&str, &str)],
    ) -> Result<Session, RequestError> {
        let ip = self.ip.take();
        Ok(H3Request::accept(self, head, protocol, headers, ip))
    }

    fn accept_websocket(
        &mut self,
        head: &RequestHead,
        _protocol: Option<&str>,
        _headers: &[(&str, &str)],
    ) -> Result<WebSocket, RequestError> {
        Err(RequestError::WrongTransport(head.transport))
    }
}
