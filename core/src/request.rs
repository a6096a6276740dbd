//! An incoming session request, seen before it is accepted, whatever transport carries it.

use std::net::SocketAddr;

use crate::{error::RequestError, session::Session, sfv, transport::Transport, ws::WebSocket};

/// A client asking to open a session: WebTransport over HTTP/3, QMux over a WebSocket, or a
/// plain WebSocket ([`transport`](Self::transport) says which). Inspect it, then
/// [`accept`] (or [`accept_websocket`] for a plain WebSocket) or [`reject`] it; dropping
/// it unanswered rejects it with 404.
///
/// [`accept`]: SessionRequest::accept
/// [`accept_websocket`]: SessionRequest::accept_websocket
/// [`reject`]: SessionRequest::reject
///
/// Browsers send no cookies or `Authorization` on a WebTransport CONNECT, so a token in
/// the URL is the usual credential:
///
/// ```no_run
/// # async fn run(server: ferrovia::Server) -> Result<(), Box<dyn std::error::Error>> {
/// let room = server.route("/room")?;
/// while let Some(request) = room.accept().await {
///     let token = request.path().split_once("token=").map(|(_, t)| t.to_owned());
///     if token.as_deref() != Some("let-me-in") {
///         request
///             .reject_with(401, &[("www-authenticate", "Bearer")])
///             .await?;
///         continue;
///     }
///     let session = request.accept().await?;
///     tokio::spawn(async move { session.closed().await });
/// }
/// # Ok(()) }
/// ```
pub struct SessionRequest {
    pub(crate) head: RequestHead,
    pub(crate) inner: Box<dyn Pending>,
}

/// Why a session accepted after its client left ends at once.
pub(crate) const CLIENT_LEFT: &str = "the client went away";

/// Why a session accepted after the session limit was reached ends at once.
pub(crate) const SESSION_LIMIT: &str = "session limit reached: the client was answered 503";

/// The query parameter the browser connector tags both attempts of one `connect()` with
/// (native WebTransport, then QMux): a refusal of the first is replayed to the second
/// instead of asking the application again. Taken off the path before anyone sees it.
pub(crate) const ATTEMPT_PARAM: &str = "ferrovia-attempt";

/// Removes a valid `ferrovia-attempt=ID` (1 to 64 of `A-Z a-z 0-9 _ -`) from `path`'s
/// query and returns the ID.
pub(crate) fn take_attempt(path: &mut String) -> Option<String> {
    let (base, query) = path.split_once('?')?;
    let mut id = None;
    let mut kept = Vec::new();
    for pair in query.split('&') {
        match pair.split_once('=') {
            Some((ATTEMPT_PARAM, v))
                if id.is_none()
                    && (1..=64).contains(&v.len())
                    && v.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-') =>
            {
                id = Some(v.to_owned());
            }
            _ => kept.push(pair),
        }
    }
    let id = id?;
    *path = if kept.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    Some(id)
}

/// Refusals of tagged requests, kept briefly so that the connector's second attempt gets
/// the same answer without the application being asked twice (a single-use token, a rate
/// limit or an audit log would count it twice). Bounded: the oldest go first.
#[derive(Default)]
pub(crate) struct Refusals {
    by_id: std::collections::HashMap<String, (Refusal, std::time::Instant)>,
    order: std::collections::VecDeque<String>,
}

/// A refusal as the client should see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Refusal {
    pub(crate) status: u16,
    pub(crate) headers: Vec<(String, String)>,
}

impl Refusals {
    const MAX: usize = 4096;
    const TTL: std::time::Duration = std::time::Duration::from_secs(30);

    pub(crate) fn remember(&mut self, id: String, refusal: Refusal) {
        if self.by_id.len() >= Self::MAX {
            if let Some(old) = self.order.pop_front() {
                self.by_id.remove(&old);
            }
        }
        if self
            .by_id
            .insert(id.clone(), (refusal, std::time::Instant::now()))
            .is_none()
        {
            self.order.push_back(id);
        }
    }

    pub(crate) fn recall(&mut self, id: &str) -> Option<Refusal> {
        let (refusal, at) = self.by_id.get(id)?;
        if at.elapsed() > Self::TTL {
            self.by_id.remove(id);
            self.order.retain(|o| o != id);
            return None;
        }
        Some(refusal.clone())
    }
}

/// What every request has, whatever carried it.
pub(crate) struct RequestHead {
    pub(crate) id: u64,
    pub(crate) path: String,
    /// The connector's tag of this `connect()`, taken off the path.
    pub(crate) attempt: Option<String>,
    pub(crate) authority: String,
    pub(crate) origin: Option<String>,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) protocols: Vec<String>,
    pub(crate) remote: SocketAddr,
    pub(crate) version: http::Version,
    pub(crate) transport: Transport,
}

/// A transport's side of a session request waiting for its answer. The HTTP/3 and the TCP
/// side implement it, so this layer names neither.
pub(crate) trait Pending: Send + Sync {
    /// Keeps a refusal of a connector-tagged request, for the same `connect()`'s next
    /// attempt.
    fn remember_refusal(&self, id: String, refusal: Refusal);
    /// Whether the client still waits for an answer.
    fn unanswered(&self) -> bool;
    /// Answers `status` with `headers`; nothing if it was answered already.
    fn answer(&mut self, status: u16, headers: &[(&str, &str)]);
    /// Whether the client has given up on the request.
    fn poll_abandoned(&mut self) -> bool;
    /// Accepts a WebTransport or QMux session. A refused call (the caller's mistake)
    /// leaves the request whole, its per-address session slot included.
    fn accept(
        &mut self,
        head: &RequestHead,
        protocol: Option<&str>,
        headers: &[(&str, &str)],
    ) -> Result<Session, RequestError>;
    /// Accepts a plain WebSocket; a refused call leaves the request whole.
    fn accept_websocket(
        &mut self,
        head: &RequestHead,
        protocol: Option<&str>,
        headers: &[(&str, &str)],
    ) -> Result<WebSocket, RequestError>;
}

impl std::fmt::Debug for SessionRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionRequest")
            .field("transport", &self.head.transport)
            .field("session_id", &self.head.id)
            .field("path", &self.head.path)
            .field("authority", &self.head.authority)
            .field("origin", &self.head.origin)
            .field("protocols", &self.head.protocols)
            .finish_non_exhaustive()
    }
}

impl SessionRequest {
    /// The path and query, e.g. `/chat?room=1` (`:path`, or the request target).
    pub fn path(&self) -> &str {
        &self.head.path
    }

    /// The host (and port) the client asked for (`:authority`, or `Host`).
    pub fn authority(&self) -> &str {
        &self.head.authority
    }

    /// The `origin` header, sent by browsers.
    pub fn origin(&self) -> Option<&str> {
        self.head.origin.as_deref()
    }

    /// Every regular header in the order received (names are lowercase).
    pub fn headers(&self) -> &[(String, String)] {
        &self.head.headers
    }

    /// The first value of header `name` (compared case-insensitively).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.head
            .headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The subprotocols offered, in preference order: `wt-available-protocols` over
    /// HTTP/3, the application protocols of the QMux tokens (`qmux-02.chat` offers
    /// `chat`), or `Sec-WebSocket-Protocol` for a plain WebSocket.
    pub fn subprotocols(&self) -> &[String] {
        &self.head.protocols
    }

    /// The client's address.
    pub fn remote_addr(&self) -> SocketAddr {
        self.head.remote
    }

    /// The session ID the session will have (over HTTP/3, the CONNECT stream's ID).
    pub fn session_id(&self) -> u64 {
        self.head.id
    }

    /// What the client asked for: a WebTransport session over HTTP/3, a QMux session
    /// over a WebSocket, or a plain WebSocket.
    pub fn transport(&self) -> Transport {
        self.head.transport
    }

    /// The HTTP version the request came over (3, 2 or 1.1).
    pub fn http_version(&self) -> http::Version {
        self.head.version
    }

    /// Accepts the session with a 200 response (101 on HTTP/1.1).
    ///
    /// Never fails because of what the client did: if the client left before the answer,
    /// or a session limit was reached meanwhile (the client is answered 503), the session
    /// comes back already closed and its [`closed`](Session::closed) says why. It fails
    /// only for the caller's mistakes (a subprotocol that was not offered, an invalid
    /// header, a plain WebSocket request).
    pub async fn accept(self) -> Result<Session, RequestError> {
        self.accept_with(None, &[]).await
    }

    /// What [`accept_with`](Self::accept_with) refuses before answering: a subprotocol the
    /// client did not offer, an invalid header.
    fn check_accept(
        &self,
        protocol: Option<&str>,
        headers: &[(&str, &str)],
    ) -> Result<(), RequestError> {
        if let Some(p) = protocol {
            if !self.head.protocols.iter().any(|o| o == p) {
                return Err(RequestError::ProtocolNotOffered(p.to_owned()));
            }
        }
        check_headers(headers)
    }

    /// Accepts the session, choosing one of the offered subprotocols (sent back as
    /// `wt-protocol`, or in `Sec-WebSocket-Protocol` for QMux) and adding response headers.
    /// A plain WebSocket request is accepted with
    /// [`accept_websocket`](Self::accept_websocket) instead.
    ///
    /// This never waits on the client: a response the client's flow control cannot take
    /// at once is written in the background, and if the client withholds credit past
    /// [`Limits::response_timeout`](crate::Limits::response_timeout) the session ends
    /// (its [`closed`](Session::closed) resolves) instead.
    pub async fn accept_with(
        self,
        protocol: Option<&str>,
        headers: &[(&str, &str)],
    ) -> Result<Session, RequestError> {
        self.try_accept(protocol, headers).map_err(|(_, e)| e)
    }

    /// Like [`accept_with`](Self::accept_with), without waiting, and a refused call hands
    /// the request back unanswered with the error: the caller can report its mistake and
    /// still answer. A request is only refused for the caller's mistakes (a subprotocol that
    /// was not offered, an invalid header, a plain WebSocket request).
    // The request comes back by value, as `Rc::try_unwrap` hands back `Self`: the error
    // path is a caller's mistake, rare, and boxing would cost every caller an allocation.
    #[allow(clippy::result_large_err)]
    pub fn try_accept(
        mut self,
        protocol: Option<&str>,
        headers: &[(&str, &str)],
    ) -> Result<Session, (Self, RequestError)> {
        if let Err(e) = self.check_accept(protocol, headers) {
            return Err((self, e));
        }
        // A refused call leaves the transport's request whole (see `Pending::accept`).
        match self.inner.accept(&self.head, protocol, headers) {
            Ok(session) => Ok(session),
            Err(e) => Err((self, e)),
        }
    }

    /// Accepts a plain WebSocket request, with no subprotocol.
    pub async fn accept_websocket(self) -> Result<WebSocket, RequestError> {
        self.accept_websocket_with(None, &[]).await
    }

    /// Accepts a plain WebSocket request (the route must allow them, see
    /// [`Route::allow_websockets`](crate::Route::allow_websockets)), choosing one of the
    /// offered subprotocols and adding response headers.
    pub async fn accept_websocket_with(
        self,
        protocol: Option<&str>,
        headers: &[(&str, &str)],
    ) -> Result<WebSocket, RequestError> {
        self.try_accept_websocket(protocol, headers)
            .map_err(|(_, e)| e)
    }

    /// Like [`accept_websocket_with`](Self::accept_websocket_with), without waiting; a
    /// refused call hands the request back unanswered, as [`try_accept`](Self::try_accept)
    /// does.
    // The request comes back by value, as `Rc::try_unwrap` hands back `Self`: the error
    // path is a caller's mistake, rare, and boxing would cost every caller an allocation.
    #[allow(clippy::result_large_err)]
    pub fn try_accept_websocket(
        mut self,
        protocol: Option<&str>,
        headers: &[(&str, &str)],
    ) -> Result<WebSocket, (Self, RequestError)> {
        if let Err(e) = self.check_accept(protocol, headers) {
            return Err((self, e));
        }
        match self.inner.accept_websocket(&self.head, protocol, headers) {
            Ok(ws) => Ok(ws),
            Err(e) => Err((self, e)),
        }
    }

    /// Rejects the session with an HTTP status (300..=599), e.g. 403 or 404. Like
    /// [`accept_with`](Self::accept_with), this never waits on the client.
    pub async fn reject(self, status: u16) -> Result<(), RequestError> {
        self.reject_with(status, &[]).await
    }

    /// Like [`reject`](Self::reject), with response headers (lowercase names): a
    /// `www-authenticate` with a 401, a `retry-after` with a 503.
    pub async fn reject_with(
        self,
        status: u16,
        headers: &[(&str, &str)],
    ) -> Result<(), RequestError> {
        self.try_reject(status, headers).map_err(|(_, e)| e)
    }

    /// Like [`reject_with`](Self::reject_with), without waiting; a status outside
    /// 300..=599 or an invalid header hands the request back unanswered with the error.
    // The request comes back by value, as `Rc::try_unwrap` hands back `Self`: the error
    // path is a caller's mistake, rare, and boxing would cost every caller an allocation.
    #[allow(clippy::result_large_err)]
    pub fn try_reject(
        mut self,
        status: u16,
        headers: &[(&str, &str)],
    ) -> Result<(), (Self, RequestError)> {
        if !(300..=599).contains(&status) {
            return Err((self, RequestError::InvalidStatus(status)));
        }
        if let Err(e) = check_headers(headers) {
            return Err((self, e));
        }
        self.answer_with(status, headers);
        Ok(())
    }

    /// Answers `status` without waiting; the request counts as refused.
    pub(crate) fn reject_in_background(mut self, status: u16) {
        self.answer(status);
    }

    fn answer(&mut self, status: u16) {
        self.answer_with(status, &[]);
    }

    fn answer_with(&mut self, status: u16, headers: &[(&str, &str)]) {
        let unanswered = self.inner.unanswered();
        if let Some(id) = self.head.attempt.take().filter(|_| unanswered) {
            let headers = headers
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect();
            self.inner.remember_refusal(id, Refusal { status, headers });
        }
        self.inner.answer(status, headers);
    }

    /// Whether the client has given up on this request (reset or finished its CONNECT
    /// stream, closed the connection). An abandoned request releases its slots and must
    /// not be handed to the application.
    pub(crate) fn poll_abandoned(&mut self) -> bool {
        self.inner.poll_abandoned()
    }

    /// Whether a plain WebSocket request, which only routes that allow them take.
    pub(crate) fn is_plain_websocket(&self) -> bool {
        self.head.transport == Transport::WebSocket
    }
}

impl Drop for SessionRequest {
    fn drop(&mut self) {
        self.answer(404);
    }
}

/// A header value as an RFC 8941 string item (subprotocols were checked to be offered, so
/// they are valid strings).
pub(crate) fn sf_string(s: &str) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subprotocol_is_a_structured_string() {
        assert_eq!(sf_string("chat.v1"), "\"chat.v1\"");
        assert_eq!(sf_string("a\"b\\"), "\"a\\\"b\\\\\"");
    }

    #[test]
    fn a_request_can_be_shared_across_tasks() {
        fn send_sync<T: Send + Sync>() {}
        send_sync::<SessionRequest>();
    }

    #[test]
    fn response_headers_are_validated() {
        assert!(check_headers(&[("x-ok", "fine")]).is_ok());
        assert!(check_headers(&[("X-Upper", "v")]).is_err());
        assert!(check_headers(&[("x-nl", "a\r\nb")]).is_err());
        assert!(check_headers(&[("", "v")]).is_err());
    }
}

#[cfg(test)]
mod attempt_tests {
    use super::*;

    #[test]
    fn the_attempt_tag_is_taken_off_the_path() {
        let take = |p: &str| {
            let mut path = p.to_owned();
            let id = take_attempt(&mut path);
            (path, id)
        };
        assert_eq!(
            take("/a?ferrovia-attempt=x1"),
            ("/a".into(), Some("x1".into()))
        );
        assert_eq!(
            take("/a?t=1&ferrovia-attempt=x_-9&u=2"),
            ("/a?t=1&u=2".into(), Some("x_-9".into()))
        );
        // Not a valid tag: left in place for the application.
        assert_eq!(
            take("/a?ferrovia-attempt=a%20b"),
            ("/a?ferrovia-attempt=a%20b".into(), None)
        );
        assert_eq!(
            take("/a?ferrovia-attempt="),
            ("/a?ferrovia-attempt=".into(), None)
        );
        assert_eq!(
            take(&format!("/a?ferrovia-attempt={}", "x".repeat(65))).1,
            None
        );
        assert_eq!(take("/a"), ("/a".into(), None));
        // Only the first tag is the tag.
        assert_eq!(
            take("/a?ferrovia-attempt=one&ferrovia-attempt=two"),
            ("/a?ferrovia-attempt=two".into(), Some("one".into()))
        );
    }

    #[test]
    fn refusals_are_bounded() {
        let mut r = Refusals::default();
        let refusal = |status| Refusal {
            status,
            headers: Vec::new(),
        };
        for i in 0..Refusals::MAX + 10 {
            r.remember(format!("id{i}"), refusal(403));
        }
        assert_eq!(r.by_id.len(), Refusals::MAX);
        assert_eq!(r.recall("id0"), None, "the oldest went first");
        assert_eq!(
            r.recall(&format!("id{}", Refusals::MAX + 9)),
            Some(refusal(403))
        );
    }
}
