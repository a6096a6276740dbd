//! Ordinary HTTP requests, pulled one at a time by the package's ASGI host, which runs the
//! application's `http` scope for each and streams its response back.

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use ferrovia::{Body, BodySender, HttpResponder};
use pyo3::{exceptions::PyValueError, prelude::*, types::PyBytes};

use crate::{awaitable, errors::Failure};

/// The queue of ordinary requests.
#[pyclass(frozen, module = "ferrovia._ferrovia")]
pub(crate) struct HttpRequests {
    inner: Arc<ferrovia::HttpRequests>,
}

impl HttpRequests {
    pub(crate) fn new(inner: ferrovia::HttpRequests) -> Self {
        Self {
            inner: Arc::new(inner),
        }
    }
}

#[pymethods]
impl HttpRequests {
    /// The next request; resolves to None once the server is closed.
    fn accept<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let inner = self.inner.clone();
        awaitable(py, async move {
            Ok::<_, Failure>(inner.accept().await.map(HttpExchange::new))
        })
    }

    /// Every request already waiting, up to `max` (at least one), in arrival order, in one
    /// crossing; waits for the first when none is. Resolves to an empty list once the
    /// server is closed.
    fn accept_many<'py>(&self, py: Python<'py>, max: usize) -> PyResult<Bound<'py, PyAny>> {
        let inner = self.inner.clone();
        awaitable(py, async move {
            Ok::<_, Failure>(
                inner
                    .accept_many(max)
                    .await
                    .into_iter()
                    .map(HttpExchange::new)
                    .collect::<Vec<_>>(),
            )
        })
    }
}

/// Ordinary requests pushed by the server, taken in batches: the event loop watches
/// `fileno()` (`loop.add_reader`) and calls `take()` when it is readable. No runtime thread
/// ever takes the interpreter lock to hand a request over.
#[cfg(unix)]
#[pyclass(frozen, module = "ferrovia._ferrovia")]
pub(crate) struct HttpInbox {
    inner: ferrovia::HttpInbox,
    /// The end the event loop watches; the server writes a byte to the other end per batch.
    readable: std::os::unix::net::UnixStream,
}

#[cfg(unix)]
impl HttpInbox {
    /// The service that feeds the inbox, and the inbox.
    pub(crate) fn pair(capacity: usize) -> std::io::Result<(ferrovia::HttpService, Self)> {
        use std::io::Write;
        let (readable, writable) = std::os::unix::net::UnixStream::pair()?;
        readable.set_nonblocking(true)?;
        writable.set_nonblocking(true)?;
        let (service, inner) = ferrovia::HttpService::inbox(capacity, move || {
            // A full socket buffer means wake-ups are already pending: nothing is lost.
            let _ = (&writable).write(&[1]);
        });
        Ok((service, Self { inner, readable }))
    }
}

#[cfg(unix)]
#[pymethods]
impl HttpInbox {
    /// The file descriptor to watch for readability. Owned by the inbox: never close it.
    fn fileno(&self) -> i32 {
        use std::os::fd::AsRawFd;
        self.readable.as_raw_fd()
    }

    /// Every request waiting, in arrival order (possibly none); None once the server is
    /// gone and nothing is left.
    fn take(&self) -> Option<Vec<HttpExchange>> {
        use std::io::Read;
        // The wake-up bytes first, then the requests: a request queued in between writes
        // another byte, so the event loop is called again rather than missing it.
        let mut sink = [0u8; 256];
        while matches!((&self.readable).read(&mut sink), Ok(n) if n > 0) {}
        self.inner
            .take()
            .map(|batch| batch.into_iter().map(HttpExchange::new).collect())
    }
}

impl HttpExchange {
    fn new(exchange: ferrovia::HttpExchange) -> Self {
        let (request, responder) = exchange.into_parts();
        let (parts, body) = request.into_parts();
        // Known to carry no body: `content-length: 0`, or an HTTP/1.1 request with neither
        // `content-length` nor `transfer-encoding` (RFC 9112, 6.3). The host then answers
        // the application's receive() itself.
        let length = parts.headers.get(http::header::CONTENT_LENGTH);
        let body_empty = length.is_some_and(|v| v.as_bytes() == b"0")
            || (length.is_none()
                && parts.version < http::Version::HTTP_2
                && !parts.headers.contains_key(http::header::TRANSFER_ENCODING));
        HttpExchange {
            method: parts.method.as_str().to_owned(),
            scheme: parts.uri.scheme_str().unwrap_or("https").to_owned(),
            authority: parts.uri.authority().map(|a| a.as_str().to_owned()),
            path: parts
                .uri
                .path_and_query()
                .map_or("/", |p| p.as_str())
                .to_owned(),
            headers: parts
                .headers
                .iter()
                .filter_map(|(k, v)| Some((k.as_str().to_owned(), v.to_str().ok()?.to_owned())))
                .collect(),
            version: match parts.version {
                http::Version::HTTP_3 => "3",
                http::Version::HTTP_2 => "2",
                _ => "1.1",
            },
            remote: parts.extensions.get::<std::net::SocketAddr>().copied(),
            body_empty,
            body: Arc::new(tokio::sync::Mutex::new(Some(body))),
            responder: Mutex::new(Some(responder)),
            sender: Mutex::new(None),
        }
    }
}

/// One ordinary request and the means to answer it.
#[pyclass(frozen, module = "ferrovia._ferrovia")]
pub(crate) struct HttpExchange {
    method: String,
    scheme: String,
    authority: Option<String>,
    path: String,
    headers: Vec<(String, String)>,
    version: &'static str,
    remote: Option<std::net::SocketAddr>,
    body_empty: bool,
    body: Arc<tokio::sync::Mutex<Option<Body>>>,
    responder: Mutex<Option<HttpResponder>>,
    sender: Mutex<Option<BodySender>>,
}

#[pymethods]
impl HttpExchange {
    /// The whole request head in one call: `(method, scheme, target, headers, http_version,
    /// client, body_empty)`, the headers as ASGI wants them (`(bytes, bytes)` pairs, with
    /// `host` first from the authority when the request has no `host` header), and
    /// `body_empty` true when the request is known to carry no body.
    #[allow(clippy::type_complexity)]
    fn head<'py>(
        &self,
        py: Python<'py>,
    ) -> (
        String,
        String,
        String,
        Vec<(Bound<'py, PyBytes>, Bound<'py, PyBytes>)>,
        &'static str,
        Option<(String, u16)>,
        bool,
    ) {
        let mut headers = Vec::with_capacity(self.headers.len() + 1);
        if let Some(authority) = &self.authority {
            if !self.headers.iter().any(|(k, _)| k == "host") {
                headers.push((
                    PyBytes::new(py, b"host"),
                    PyBytes::new(py, authority.as_bytes()),
                ));
            }
        }
        for (k, v) in &self.headers {
            headers.push((
                PyBytes::new(py, k.as_bytes()),
                PyBytes::new(py, v.as_bytes()),
            ));
        }
        (
            self.method.clone(),
            self.scheme.clone(),
            self.path.clone(),
            headers,
            self.version,
            self.client(),
            self.body_empty,
        )
    }

    #[getter]
    fn method(&self) -> String {
        self.method.clone()
    }

    #[getter]
    fn scheme(&self) -> String {
        self.scheme.clone()
    }

    #[getter]
    fn authority(&self) -> Option<String> {
        self.authority.clone()
    }

    /// Path and query, as sent.
    #[getter]
    fn target(&self) -> String {
        self.path.clone()
    }

    #[getter]
    fn headers(&self) -> Vec<(String, String)> {
        self.headers.clone()
    }

    /// `"1.1"`, `"2"` or `"3"` (the ASGI spelling).
    #[getter]
    fn http_version(&self) -> &'static str {
        self.version
    }

    /// The client's `(host, port)`.
    #[getter]
    fn client(&self) -> Option<(String, u16)> {
        self.remote.map(|a| (a.ip().to_string(), a.port()))
    }

    /// The next chunk of the request body as `(bytes or None at the end, error code or
    /// None)`: a body cut off (too large, quiet too long, reset) reports its code instead.
    fn read_body<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let body = self.body.clone();
        awaitable(py, async move {
            let mut body = body.lock().await;
            let Some(b) = body.as_mut() else {
                return Ok::<_, Failure>((None::<Bytes>, None::<&'static str>));
            };
            Ok(match b.next_data().await {
                Some(Ok(data)) => (Some(data), None),
                Some(Err(e)) => {
                    body.take();
                    (None, Some(e.code()))
                }
                None => {
                    body.take();
                    (None, None)
                }
            })
        })
    }

    /// Sends the response head; with `streaming`, the body follows through `write()` and
    /// `end()`; otherwise `body` (if any) is the whole body, sent with the head, and the
    /// response is complete. False when the request is already gone.
    #[pyo3(signature = (status, headers, body=None, streaming=false))]
    fn respond(
        &self,
        status: u16,
        headers: Vec<(String, String)>,
        body: Option<Bound<'_, PyBytes>>,
        streaming: bool,
    ) -> PyResult<bool> {
        let (mut response, sender) = HttpResponder::build(status, &headers, streaming)
            .map_err(|e| PyValueError::new_err(e.to_string()))?;
        if let (false, Some(body)) = (streaming, body) {
            let data = body.as_bytes();
            if !data.is_empty() {
                *response.body_mut() = Body::from(Bytes::copy_from_slice(data));
            }
        }
        let responder = self
            .responder
            .lock()
            .ok()
            .and_then(|mut r| r.take())
            .ok_or_else(|| PyValueError::new_err("the response was already started"))?;
        if let Ok(mut s) = self.sender.lock() {
            *s = sender;
        }
        Ok(responder.respond(response))
    }

    /// Sends one chunk of the response body, waiting while the client is behind; resolves
    /// to False once the client is gone.
    fn write<'py>(&self, py: Python<'py>, data: Vec<u8>) -> PyResult<Bound<'py, PyAny>> {
        let sender = self.sender.lock().ok().and_then(|s| s.clone());
        awaitable(py, async move {
            let Some(sender) = sender else {
                return Ok::<_, Failure>(false);
            };
            Ok(sender.send(Bytes::from(data)).await.is_ok())
        })
    }

    /// Ends the response body.
    fn end(&self) {
        if let Ok(mut s) = self.sender.lock() {
            s.take();
        }
    }

    /// Cuts the response off: the client sees the stream reset, not a short body.
    fn abort<'py>(&self, py: Python<'py>, reason: String) -> PyResult<Bound<'py, PyAny>> {
        let sender = self.sender.lock().ok().and_then(|mut s| s.take());
        awaitable(py, async move {
            if let Some(sender) = sender {
                sender.abort(ferrovia::BodyError::Aborted(reason)).await;
            }
            Ok::<_, Failure>(())
        })
    }
}
