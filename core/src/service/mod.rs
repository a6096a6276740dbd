//! Ordinary HTTP: every request that is not a session or WebSocket request goes to the
//! application's [`HttpHandler`], the same over HTTP/3, HTTP/2 and HTTP/1.1, so a page, its
//! assets and its API share the origin (and the port) of its WebTransport endpoint.

mod body;
mod inbox;
mod queue;
mod tower;

use std::{fmt, future::Future, panic::AssertUnwindSafe, pin::Pin, sync::Arc, time::Duration};

use futures_util::FutureExt;
use tracing::warn;

pub use body::{Body, BodyError, BodySender};
pub(crate) use body::{BoxError, Progress};
pub use inbox::HttpInbox;
pub use queue::{HttpExchange, HttpRequests, HttpResponder};

/// The boxed future an [`HttpHandler`] returns.
pub type ResponseFuture = Pin<Box<dyn Future<Output = http::Response<Body>> + Send + 'static>>;

/// Answers ordinary HTTP requests. Any `Fn(http::Request<Body>) -> impl Future<Output =
/// http::Response<Body>>` is one:
///
/// ```no_run
/// use ferrovia::{Body, HttpService};
///
/// let http = HttpService::new(|request: http::Request<Body>| async move {
///     match request.uri().path() {
///         "/" => http::Response::new(Body::from("hello")),
///         _ => http::Response::builder().status(404).body(Body::empty()).unwrap(),
///     }
/// });
/// ```
///
/// The handler runs on its own task: a panic answers 500 and a handler that has not
/// answered within [`Limits::handler_timeout`](crate::Limits::handler_timeout) is
/// abandoned with 503; either way the server goes on.
pub trait HttpHandler: Send + Sync + 'static {
    /// Answers one request. The request body streams in as the client sends it; the
    /// response body streams out as the client accepts it.
    fn call(&self, request: http::Request<Body>) -> ResponseFuture;
}

impl<F, Fut> HttpHandler for F
where
    F: Fn(http::Request<Body>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = http::Response<Body>> + Send + 'static,
{
    fn call(&self, request: http::Request<Body>) -> ResponseFuture {
        Box::pin(self(request))
    }
}

/// A shareable [`HttpHandler`], as [`ServerConfig::http`](crate::ServerConfig::http) and
/// [`Server::set_http_handler`](crate::Server::set_http_handler) take it.
#[derive(Clone)]
pub struct HttpService(Arc<dyn HttpHandler>);

impl HttpService {
    /// Wraps a handler.
    pub fn new(handler: impl HttpHandler) -> Self {
        Self(Arc::new(handler))
    }

    /// Runs the handler on its own task once one of `running`'s slots is free (503 if none
    /// frees within `deadline`); never fails: a panic becomes 500, and a handler that
    /// neither answers nor reads its request body for `deadline` gets 503. The slot is
    /// held until the response body is dropped.
    pub(crate) async fn respond(
        &self,
        request: http::Request<Body>,
        deadline: Duration,
        progress: Arc<Progress>,
        running: &Arc<tokio::sync::Semaphore>,
    ) -> http::Response<Body> {
        let method = request.method().clone();
        let path = request.uri().path().to_owned();
        let slot = match tokio::time::timeout(deadline, running.clone().acquire_owned()).await {
            Ok(Ok(slot)) => slot,
            _ => {
                warn!(%method, path, "every handler slot stayed busy (limits.max_concurrent_requests); answered 503");
                return status_response(503, "the server is busy\n");
            }
        };
        progress.touch();
        self.run(request, deadline, progress, method, path)
            .await
            .map(|body| body.holding(slot))
    }

    async fn run(
        &self,
        request: http::Request<Body>,
        deadline: Duration,
        progress: Arc<Progress>,
        method: http::Method,
        path: String,
    ) -> http::Response<Body> {
        let future = AssertUnwindSafe(self.0.call(request)).catch_unwind();
        // Dropped when the client gives up (a stream reset, a closed connection): the
        // handler is cancelled with it, as hyper cancels a service future, and a queued
        // request is never handed out (see `HttpRequests`).
        let mut task = AbortOnDrop(tokio::spawn(future));
        let outcome = loop {
            let last = progress.last();
            tokio::select! {
                r = &mut task.0 => break Some(r),
                () = tokio::time::sleep_until(last + deadline) => {
                    // An upload still arriving keeps the handler alive.
                    if progress.last() == last {
                        break None;
                    }
                }
            }
        };
        match outcome {
            Some(Ok(Ok(response))) => response,
            Some(Ok(Err(panic))) => {
                let what = panic
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_default();
                warn!(%method, path, panic = what, "HTTP handler panicked; answered 500");
                status_response(500, "internal server error\n")
            }
            Some(Err(e)) => {
                warn!(%method, path, "HTTP handler task failed ({e}); answered 500");
                status_response(500, "internal server error\n")
            }
            None => {
                task.0.abort();
                warn!(%method, path, ?deadline, "HTTP handler did not answer in time; answered 503");
                status_response(503, "the handler did not answer in time\n")
            }
        }
    }
}

/// Aborts the task when dropped.
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl fmt::Debug for HttpService {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("HttpService(..)")
    }
}

impl<H: HttpHandler> From<H> for HttpService {
    fn from(handler: H) -> Self {
        Self::new(handler)
    }
}

/// A plain-text response the server gives by itself.
pub(crate) fn status_response(status: u16, text: &'static str) -> http::Response<Body> {
    let mut response = http::Response::new(Body::from(text));
    *response.status_mut() =
        http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR);
    if !text.is_empty() {
        response.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("text/plain; charset=utf-8"),
        );
    }
    response
}

/// The 413 for a request whose declared length is over the limit, before the handler
/// sees it; `None` when the length is acceptable or not declared (a streamed body is cut
/// off by [`Body`] at the limit instead).
pub(crate) fn check_declared_length(
    headers: &http::HeaderMap,
    limit: u64,
) -> Option<http::Response<Body>> {
    let declared = headers
        .get(http::header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse::<u64>()
        .ok()?;
    (declared > limit).then(|| status_response(413, "request body too large\n"))
}

#[cfg(test)]
mod tests {
    fn slots() -> std::sync::Arc<tokio::sync::Semaphore> {
        std::sync::Arc::new(tokio::sync::Semaphore::new(64))
    }

    use super::*;

    fn request() -> http::Request<Body> {
        http::Request::new(Body::empty())
    }

    #[tokio::test]
    async fn a_panicking_handler_answers_500_and_a_silent_one_503() {
        let panics = HttpService::new(|_: http::Request<Body>| async move {
            if true {
                panic!("boom");
            }
            http::Response::new(Body::empty())
        });
        let r = panics
            .respond(request(), Duration::from_secs(5), Progress::new(), &slots())
            .await;
        assert_eq!(r.status(), 500);

        let silent = HttpService::new(|_: http::Request<Body>| async move {
            std::future::pending::<()>().await;
            http::Response::new(Body::empty())
        });
        let r = silent
            .respond(
                request(),
                Duration::from_millis(50),
                Progress::new(),
                &slots(),
            )
            .await;
        assert_eq!(r.status(), 503);
    }

    #[test]
    fn declared_lengths_over_the_limit_are_refused() {
        let mut h = http::HeaderMap::new();
        assert!(check_declared_length(&h, 10).is_none());
        h.insert(
            http::header::CONTENT_LENGTH,
            http::HeaderValue::from_static("10"),
        );
        assert!(check_declared_length(&h, 10).is_none());
        h.insert(
            http::header::CONTENT_LENGTH,
            http::HeaderValue::from_static("11"),
        );
        assert_eq!(check_declared_length(&h, 10).unwrap().status(), 413);
    }
}
