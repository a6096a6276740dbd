//! `tower::Service` as an [`HttpHandler`]: an axum `Router`, or any stack of tower layers,
//! answers the server's ordinary HTTP requests unchanged.

use std::{fmt::Display, sync::Mutex};

use bytes::Bytes;
use http_body::Body as HttpBody;
use tower_service::Service;
use tracing::warn;

use super::{status_response, Body, BoxError, HttpService};

impl HttpService {
    /// Wraps a `tower::Service` from `http::Request<Body>` to `http::Response<B>` (an axum
    /// `Router`, a tower-http stack, a hyper service): each request gets a clone of the
    /// service, waits for `poll_ready`, then calls it, as hyper does.
    ///
    /// A service that fails (`poll_ready` or the call returns `Err`) answers 500, and the
    /// error is logged; a panic answers 500 and a service that takes longer than
    /// [`Limits::handler_timeout`](crate::Limits::handler_timeout) answers 503, as for any
    /// handler. The response body streams out with backpressure; its errors end the response
    /// early as [`BodyError::Other`](crate::BodyError::Other).
    ///
    /// ```no_run
    /// # use std::convert::Infallible;
    /// # use ferrovia::{Body, Certificate, HttpService, ServerConfig};
    /// // Any tower service: here one made from a function, in practice an axum `Router`.
    /// #[derive(Clone)]
    /// struct Hello;
    /// impl tower_service::Service<http::Request<Body>> for Hello {
    ///     type Response = http::Response<Body>;
    ///     type Error = Infallible;
    ///     type Future = std::future::Ready<Result<Self::Response, Infallible>>;
    ///     fn poll_ready(&mut self, _: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Infallible>> {
    ///         std::task::Poll::Ready(Ok(()))
    ///     }
    ///     fn call(&mut self, _: http::Request<Body>) -> Self::Future {
    ///         std::future::ready(Ok(http::Response::new(Body::from("hello"))))
    ///     }
    /// }
    /// let certificate = Certificate::self_signed(&["localhost"]).unwrap();
    /// let mut config = ServerConfig::new("[::]:4433".parse().unwrap(), certificate);
    /// config.http = Some(HttpService::from_tower(Hello)); // or from_tower(router)
    /// ```
    pub fn from_tower<S, B>(service: S) -> Self
    where
        S: Service<http::Request<Body>, Response = http::Response<B>> + Clone + Send + 'static,
        S::Future: Send + 'static,
        S::Error: Display + Send + 'static,
        B: HttpBody<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        // The handler is shared across tasks; a tower service need not be `Sync`, so each
        // request clones it under a lock and then owns its clone.
        let shared = Mutex::new(service);
        HttpService::new(move |request: http::Request<Body>| {
            let mut service = shared.lock().unwrap_or_else(|e| e.into_inner()).clone();
            async move {
                let method = request.method().clone();
                let path = request.uri().path().to_owned();
                let ready = futures_util::future::poll_fn(|cx| service.poll_ready(cx)).await;
                let outcome = match ready {
                    Ok(()) => service.call(request).await,
                    Err(e) => Err(e),
                };
                match outcome {
                    Ok(response) => response.map(Body::new),
                    Err(e) => {
                        warn!(%method, path, error = %e, "HTTP service failed; answered 500");
                        status_response(500, "internal server error\n")
                    }
                }
            }
        })
    }
}
