//! Ordinary requests handed out one at a time, for applications (and the language
//! bindings) that pull work in a loop instead of registering a callback.

use tokio::sync::{mpsc, oneshot, Mutex};

use super::{status_response, Body, BodySender, HttpService};
use crate::RequestError;

/// One ordinary request waiting for its response.
#[derive(Debug)]
pub struct HttpExchange {
    pub(super) request: http::Request<Body>,
    pub(super) respond: oneshot::Sender<http::Response<Body>>,
}

impl HttpExchange {
    /// The request; its body streams in as the client sends it.
    pub fn request(&self) -> &http::Request<Body> {
        &self.request
    }

    /// Whether the client gave up on the request while it waited (an HTTP/2 or HTTP/3
    /// stream reset, a closed connection, the handler timeout): nobody would read an
    /// answer. [`HttpRequests`] never hands such a request out.
    pub fn is_abandoned(&self) -> bool {
        self.respond.is_closed()
    }

    /// The request, to read its body (and the responder to answer it with).
    pub fn into_parts(self) -> (http::Request<Body>, HttpResponder) {
        (
            self.request,
            HttpResponder {
                respond: self.respond,
            },
        )
    }
}

/// Answers one [`HttpExchange`]. Dropping it without answering answers 500.
#[derive(Debug)]
pub struct HttpResponder {
    respond: oneshot::Sender<http::Response<Body>>,
}

impl HttpResponder {
    /// A response from a status and header pairs, as a language binding receives them;
    /// with `streaming`, its body is fed through the returned sender.
    pub fn build(
        status: u16,
        headers: &[(String, String)],
        streaming: bool,
    ) -> Result<(http::Response<Body>, Option<BodySender>), RequestError> {
        let status =
            http::StatusCode::from_u16(status).map_err(|_| RequestError::InvalidStatus(status))?;
        let mut builder = http::Response::builder().status(status);
        for (name, value) in headers {
            let name = http::HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
                RequestError::InvalidHeader(format!("invalid header name {name:?}"))
            })?;
            let value = http::HeaderValue::from_str(value).map_err(|_| {
                RequestError::InvalidHeader(format!("invalid value for header {name:?}"))
            })?;
            builder = builder.header(name, value);
        }
        let (sender, body) = if streaming {
            let (tx, body) = Body::channel(4);
            (Some(tx), body)
        } else {
            (None, Body::empty())
        };
        let response = builder
            .body(body)
            .map_err(|e| RequestError::InvalidHeader(e.to_string()))?;
        Ok((response, sender))
    }

    /// Sends the response (its body may still be streaming, see [`Body::channel`]).
    /// False when the request is already gone (the client left, or the handler timeout
    /// passed).
    pub fn respond(self, response: http::Response<Body>) -> bool {
        self.respond.send(response).is_ok()
    }
}

/// The queue side of [`HttpService::queue`]: [`HttpRequests::accept`] hands out each
/// request in arrival order.
#[derive(Debug)]
pub struct HttpRequests {
    rx: Mutex<mpsc::Receiver<HttpExchange>>,
}

impl HttpRequests {
    /// The next request; `None` once the service (and every server holding it) is gone.
    /// Requests the client gave up on while they waited are dropped, not handed out.
    pub async fn accept(&self) -> Option<HttpExchange> {
        let mut rx = self.rx.lock().await;
        loop {
            let exchange = rx.recv().await?;
            if !exchange.is_abandoned() {
                return Some(exchange);
            }
        }
    }

    /// Every request already waiting, up to `max` (at least one), in arrival order; waits
    /// for the first when none is. Empty once the service (and every server holding it) is
    /// gone. A language binding takes a burst of requests in one crossing this way instead
    /// of one wake-up of its thread per request. Requests the client gave up on while they
    /// waited are dropped, not handed out.
    pub async fn accept_many(&self, max: usize) -> Vec<HttpExchange> {
        let mut batch = Vec::new();
        let mut rx = self.rx.lock().await;
        loop {
            if rx.recv_many(&mut batch, max.max(1)).await == 0 {
                return batch;
            }
            batch.retain(|e| !e.is_abandoned());
            if !batch.is_empty() {
                return batch;
            }
        }
    }
}

impl HttpService {
    /// A service that queues requests for [`HttpRequests::accept`]; past `capacity`
    /// requests waiting, more get 503 at once.
    pub fn queue(capacity: usize) -> (Self, HttpRequests) {
        let (tx, rx) = mpsc::channel::<HttpExchange>(capacity.max(1));
        let service = Self::new(move |request: http::Request<Body>| {
            let tx = tx.clone();
            async move {
                let (respond, response) = oneshot::channel();
                if tx.try_send(HttpExchange { request, respond }).is_err() {
                    return status_response(503, "too many requests waiting\n");
                }
                response.await.unwrap_or_else(|_| {
                    status_response(500, "the request was dropped unanswered\n")
                })
            }
        });
        (service, HttpRequests { rx: Mutex::new(rx) })
    }
}

#[cfg(test)]
mod tests {
    fn slots() -> std::sync::Arc<tokio::sync::Semaphore> {
        std::sync::Arc::new(tokio::sync::Semaphore::new(64))
    }

    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn queued_requests_are_answered_by_whoever_pulls_them() {
        let (service, requests) = HttpService::queue(1);
        let server = tokio::spawn(async move {
            let exchange = requests.accept().await.unwrap();
            assert_eq!(exchange.request().uri().path(), "/a");
            let (_, responder) = exchange.into_parts();
            assert!(responder.respond(http::Response::new(Body::from("ok"))));
            // The next one is dropped unanswered.
            drop(requests.accept().await.unwrap());
        });
        let get = |p: &str| http::Request::get(p).body(Body::empty()).unwrap();
        let first = service
            .respond(
                get("/a"),
                Duration::from_secs(5),
                super::super::Progress::new(),
                &slots(),
            )
            .await;
        assert_eq!(first.into_body().bytes(10).await.unwrap(), "ok");
        let second = service
            .respond(
                get("/b"),
                Duration::from_secs(5),
                super::super::Progress::new(),
                &slots(),
            )
            .await;
        assert_eq!(second.status(), 500);
        server.await.unwrap();
    }

    /// One client task per path, each request queued before the next is sent.
    async fn queued(
        service: &std::sync::Arc<HttpService>,
        requests: &HttpRequests,
        paths: &[&'static str],
    ) -> Vec<tokio::task::JoinHandle<http::Response<Body>>> {
        let mut clients = Vec::new();
        for path in paths {
            let service = service.clone();
            let request = http::Request::get(*path).body(Body::empty()).unwrap();
            clients.push(tokio::spawn(async move {
                let progress = super::super::Progress::new();
                service
                    .respond(request, Duration::from_secs(5), progress, &slots())
                    .await
            }));
            while requests.rx.lock().await.len() < clients.len() {
                tokio::task::yield_now().await;
            }
        }
        clients
    }

    #[tokio::test]
    async fn requests_given_up_while_waiting_are_not_handed_out() {
        let (service, requests) = HttpService::queue(8);
        let service = std::sync::Arc::new(service);
        let mut clients = queued(&service, &requests, &["/a", "/gone", "/c"]).await;
        // The client of /gone leaves: its request future is dropped, as hyper drops it.
        let gone = clients.remove(1);
        gone.abort();
        let _ = gone.await;
        // The handler task it spawned is cancelled next on this single-threaded runtime.
        tokio::task::yield_now().await;
        let mut paths = Vec::new();
        while paths.len() < 2 {
            for e in requests.accept_many(8).await {
                paths.push(e.request().uri().path().to_owned());
            }
        }
        assert_eq!(paths, ["/a", "/c"]);
    }

    #[tokio::test]
    async fn accept_many_takes_what_is_waiting_in_order() {
        let (service, requests) = HttpService::queue(8);
        let service = std::sync::Arc::new(service);
        let clients = queued(&service, &requests, &["/a", "/b", "/c"]).await;
        let batch = requests.accept_many(2).await;
        let rest = requests.accept_many(8).await;
        let paths: Vec<_> = batch
            .iter()
            .chain(&rest)
            .map(|e| e.request().uri().path().to_owned())
            .collect();
        assert_eq!(paths, ["/a", "/b", "/c"]);
        assert_eq!(batch.len(), 2);
        for exchange in batch.into_iter().chain(rest) {
            let path = exchange.request().uri().path().to_owned();
            let (_, responder) = exchange.into_parts();
            assert!(responder.respond(http::Response::new(Body::from(path))));
        }
        for (client, path) in clients.into_iter().zip(["/a", "/b", "/c"]) {
            let response = client.await.unwrap();
            assert_eq!(response.into_body().bytes(10).await.unwrap(), path);
        }
        drop(service);
        assert!(requests.accept_many(8).await.is_empty());
    }
}
