//! A session request waiting for an answer.

// The core's try_* calls hand a refused request back by value (see SessionRequest::try_accept).
#![allow(clippy::result_large_err)]

use std::sync::Mutex;

use ferrovia::SessionRequest;
use napi_derive::napi;

use crate::{error, session::NativeSession, websocket::NativeWebSocket};

/// One request or response header.
#[napi(object)]
pub struct NativeHeader {
    /// Lower-case header name.
    pub name: String,
    /// Header value.
    pub value: String,
}

/// Header pairs as JavaScript objects.
pub(crate) fn native_headers(list: &[(String, String)]) -> Vec<NativeHeader> {
    list.iter()
        .map(|(name, value)| NativeHeader {
            name: name.clone(),
            value: value.clone(),
        })
        .collect()
}

/// An extended CONNECT request for a WebTransport session.
#[napi]
pub struct NativeRequest {
    inner: Mutex<Option<SessionRequest>>,
    path: String,
    authority: String,
    origin: Option<String>,
    headers: Vec<(String, String)>,
    subprotocols: Vec<String>,
    remote: std::net::SocketAddr,
    transport: ferrovia::Transport,
    version: http_version::Version,
}

mod http_version {
    /// The HTTP version in Node's spelling (`IncomingMessage.httpVersion`).
    #[derive(Clone, Copy)]
    pub(super) struct Version(pub(super) &'static str);
}

impl NativeRequest {
    pub(crate) fn new(r: SessionRequest) -> Self {
        Self {
            path: r.path().to_owned(),
            authority: r.authority().to_owned(),
            origin: r.origin().map(str::to_owned),
            headers: r.headers().to_vec(),
            subprotocols: r.subprotocols().to_vec(),
            remote: r.remote_addr(),
            transport: r.transport(),
            version: http_version::Version(match r.http_version() {
                v if v == http::Version::HTTP_3 => "3.0",
                v if v == http::Version::HTTP_2 => "2.0",
                _ => "1.1",
            }),
            inner: Mutex::new(Some(r)),
        }
    }

    /// Answers with `f`, holding the request's lock throughout: a call refused for the
    /// caller's mistake puts the request back before anyone else can see it gone.
    fn answer<T>(
        &self,
        f: impl FnOnce(SessionRequest) -> Result<T, (SessionRequest, ferrovia::RequestError)>,
    ) -> napi::Result<T> {
        let mut slot = self.inner.lock().map_err(|_| error::request_answered())?;
        let request = slot.take().ok_or_else(error::request_answered)?;
        f(request).map_err(|(request, e)| {
            *slot = Some(request);
            error::from_request(e)
        })
    }
}

#[napi]
impl NativeRequest {
    /// `:path`, including the query.
    #[napi(getter, catch_unwind)]
    pub fn path(&self) -> String {
        self.path.clone()
    }

    /// `:authority`.
    #[napi(getter, catch_unwind)]
    pub fn authority(&self) -> String {
        self.authority.clone()
    }

    /// The `origin` header, if any.
    #[napi(getter, catch_unwind)]
    pub fn origin(&self) -> Option<String> {
        self.origin.clone()
    }

    /// Every header in arrival order, pseudo-headers included.
    #[napi(getter, catch_unwind)]
    pub fn headers(&self) -> Vec<NativeHeader> {
        native_headers(&self.headers)
    }

    /// Subprotocols offered in `wt-available-protocols`, in preference order.
    #[napi(getter, catch_unwind)]
    pub fn subprotocols(&self) -> Vec<String> {
        self.subprotocols.clone()
    }

    /// The client's IP address.
    #[napi(getter, catch_unwind)]
    pub fn remote_address(&self) -> String {
        self.remote.ip().to_string()
    }

    /// The client's UDP port.
    #[napi(getter, catch_unwind)]
    pub fn remote_port(&self) -> u32 {
        u32::from(self.remote.port())
    }

    /// `webtransport`, `qmux` or `websocket`.
    #[napi(getter, catch_unwind)]
    pub fn transport(&self) -> String {
        self.transport.as_str().to_owned()
    }

    /// The HTTP version the request came over: `3.0`, `2.0` or `1.1`.
    #[napi(getter, catch_unwind)]
    pub fn http_version(&self) -> String {
        self.version.0.to_owned()
    }

    /// Whether the request was already accepted or rejected.
    #[napi(getter, catch_unwind)]
    pub fn answered(&self) -> bool {
        self.inner.lock().map(|r| r.is_none()).unwrap_or(true)
    }

    /// Accepts with 200, optionally choosing a subprotocol and adding response headers.
    /// A bad protocol or header (or a plain WebSocket request) fails without answering, so
    /// the request can still be used.
    #[napi]
    pub async fn accept(
        &self,
        protocol: Option<String>,
        headers: Option<Vec<NativeHeader>>,
    ) -> napi::Result<NativeSession> {
        let headers = headers.unwrap_or_default();
        let pairs = pairs(&headers);
        let session = self.answer(|r| r.try_accept(protocol.as_deref(), &pairs))?;
        Ok(NativeSession::new(session, protocol))
    }

    /// Accepts a plain WebSocket request, optionally choosing a subprotocol and adding
    /// response headers. Refused calls leave the request unanswered, as with `accept`.
    #[napi]
    pub async fn accept_web_socket(
        &self,
        protocol: Option<String>,
        headers: Option<Vec<NativeHeader>>,
    ) -> napi::Result<NativeWebSocket> {
        let headers = headers.unwrap_or_default();
        let pairs = pairs(&headers);
        let ws = self.answer(|r| r.try_accept_websocket(protocol.as_deref(), &pairs))?;
        Ok(NativeWebSocket::new(ws))
    }

    /// Rejects with an HTTP status in 300..=599 and optional response headers. A bad
    /// status or header fails without answering, so the request can still be used.
    #[napi]
    pub async fn reject(
        &self,
        status: u32,
        headers: Option<Vec<NativeHeader>>,
    ) -> napi::Result<()> {
        let headers = headers.unwrap_or_default();
        let pairs = pairs(&headers);
        // Out of u16's range is as invalid as 200: the core names the status it got.
        let status = u16::try_from(status).unwrap_or(u16::MAX);
        self.answer(|r| r.try_reject(status, &pairs))
    }
}

fn pairs(headers: &[NativeHeader]) -> Vec<(&str, &str)> {
    headers
        .iter()
        .map(|h| (h.name.as_str(), h.value.as_str()))
        .collect()
}
