//! Ordinary HTTP requests, pushed to the facade in batches, which turns each into a WHATWG
//! `Request` for the application's `fetch` handler and streams its `Response` back.

use std::sync::Mutex;

use bytes::Bytes;
use ferrovia::{Body, BodySender, HttpResponder};
use napi::{
    bindgen_prelude::{Buffer, Either, Uint8Array},
    threadsafe_function::{ThreadsafeFunction, ThreadsafeFunctionCallMode},
};
use napi_derive::napi;

use crate::{error, request::NativeHeader};

/// A JavaScript callback called (with no arguments) when requests are waiting that
/// `take()` has not been asked for since; it keeps the process alive while the server
/// takes ordinary requests.
pub(crate) type Wake = ThreadsafeFunction<(), (), (), napi::Status, false>;

/// Ordinary requests pushed by the server in batches: the facade's `wake` callback runs
/// once per batch and takes every request waiting in one call, so a burst costs one
/// wake-up of the JavaScript thread and no promise.
#[napi]
pub struct NativeHttpInbox {
    inner: ferrovia::HttpInbox,
}

impl NativeHttpInbox {
    /// The service feeding the inbox (past `capacity` waiting, more get 503), and the inbox.
    pub(crate) fn pair(capacity: usize, wake: Wake) -> (ferrovia::HttpService, Self) {
        let (service, inner) = ferrovia::HttpService::inbox(capacity, move || {
            let _ = wake.call((), ThreadsafeFunctionCallMode::NonBlocking);
        });
        (service, Self { inner })
    }
}

#[napi]
impl NativeHttpInbox {
    /// Every request waiting, in arrival order (possibly none); `null` once the server is
    /// gone and nothing is left.
    #[napi(catch_unwind)]
    pub fn take(&self) -> Option<Vec<NativeHttpExchange>> {
        self.inner
            .take()
            .map(|batch| batch.into_iter().map(NativeHttpExchange::new).collect())
    }
}

/// What the facade needs of a request to build its WHATWG `Request`, in one crossing.
#[napi(object)]
pub struct NativeHttpHead {
    /// The request method.
    pub method: String,
    /// The absolute URL (scheme, authority, path and query).
    pub url: String,
    /// Header names and values, alternating (values that are not visible ASCII are left
    /// out).
    pub headers: Vec<String>,
    /// `'1.1'`, `'2.0'` or `'3.0'`.
    pub http_version: String,
    /// The client's IP address.
    pub remote_address: Option<String>,
    /// The client's port (0 when a proxy forwarded the address).
    pub remote_port: Option<u32>,
}

/// One ordinary request and the means to answer it.
#[napi]
pub struct NativeHttpExchange {
    method: String,
    url: String,
    headers: Vec<(String, String)>,
    version: &'static str,
    remote: Option<std::net::SocketAddr>,
    body: tokio::sync::Mutex<Option<Body>>,
    responder: Mutex<Option<HttpResponder>>,
    sender: Mutex<Option<BodySender>>,
}

impl NativeHttpExchange {
    fn new(exchange: ferrovia::HttpExchange) -> Self {
        let (request, responder) = exchange.into_parts();
        let (parts, body) = request.into_parts();
        Self {
            method: parts.method.as_str().to_owned(),
            url: parts.uri.to_string(),
            headers: parts
                .headers
                .iter()
                .filter_map(|(k, v)| Some((k.as_str().to_owned(), v.to_str().ok()?.to_owned())))
                .collect(),
            version: match parts.version {
                http::Version::HTTP_3 => "3.0",
                http::Version::HTTP_2 => "2.0",
                _ => "1.1",
            },
            remote: parts.extensions.get::<std::net::SocketAddr>().copied(),
            body: tokio::sync::Mutex::new(Some(body)),
            responder: Mutex::new(Some(responder)),
            sender: Mutex::new(None),
        }
    }
}

#[napi]
impl NativeHttpExchange {
    /// Method, URL, headers, version and client address at once.
    #[napi(getter, catch_unwind)]
    pub fn head(&self) -> NativeHttpHead {
        let mut headers = Vec::with_capacity(self.headers.len() * 2);
        for (name, value) in &self.headers {
            headers.push(name.clone());
            headers.push(value.clone());
        }
        NativeHttpHead {
            method: self.method.clone(),
            url: self.url.clone(),
            headers,
            http_version: self.version.to_owned(),
            remote_address: self.remote.map(|a| a.ip().to_string()),
            remote_port: self.remote.map(|a| u32::from(a.port())),
        }
    }

    /// The request method.
    #[napi(getter, catch_unwind)]
    pub fn method(&self) -> String {
        self.method.clone()
    }

    /// The absolute URL (scheme, authority, path and query).
    #[napi(getter, catch_unwind)]
    pub fn url(&self) -> String {
        self.url.clone()
    }

    /// The request headers (values that are not visible ASCII are left out).
    #[napi(getter, catch_unwind)]
    pub fn headers(&self) -> Vec<NativeHeader> {
        crate::request::native_headers(&self.headers)
    }

    /// `'1.1'`, `'2.0'` or `'3.0'`.
    #[napi(getter, catch_unwind)]
    pub fn http_version(&self) -> String {
        self.version.to_owned()
    }

    /// The client's IP address.
    #[napi(getter, catch_unwind)]
    pub fn remote_address(&self) -> Option<String> {
        self.remote.map(|a| a.ip().to_string())
    }

    /// The client's port (0 when a proxy forwarded the address).
    #[napi(getter, catch_unwind)]
    pub fn remote_port(&self) -> Option<u32> {
        self.remote.map(|a| u32::from(a.port()))
    }

    /// The next chunk of the request body; `null` at its end.
    #[napi]
    pub async fn read_body(&self) -> napi::Result<Option<Buffer>> {
        let mut body = self.body.lock().await;
        let Some(b) = body.as_mut() else {
            return Ok(None);
        };
        match b.next_data().await {
            Some(Ok(data)) => Ok(Some(data.to_vec().into())),
            Some(Err(e)) => {
                body.take();
                Err(error::from_body(e))
            }
            None => {
                body.take();
                Ok(None)
            }
        }
    }

    /// Stops reading the request body (the client is told to stop sending).
    #[napi]
    pub async fn discard_body(&self) {
        self.body.lock().await.take();
    }

    /// Sends the response head, with `headers` as names and values alternating. With
    /// `streaming`, the body follows through `write()` and `end()`; without, `body` (if
    /// any) is the whole body (a string is sent as UTF-8), sent with the head in this one
    /// call. Returns false when the request is already gone (the client left, or the
    /// handler timeout passed).
    #[napi(catch_unwind)]
    pub fn respond(
        &self,
        status: u32,
        headers: Vec<String>,
        streaming: bool,
        body: Option<Either<String, Uint8Array>>,
    ) -> napi::Result<bool> {
        let status = u16::try_from(status).unwrap_or(0);
        if !headers.len().is_multiple_of(2) {
            return Err(error::invalid(
                "response headers must come in name, value pairs",
            ));
        }
        let mut pairs = Vec::with_capacity(headers.len() / 2);
        let mut it = headers.into_iter();
        while let (Some(name), Some(value)) = (it.next(), it.next()) {
            pairs.push((name, value));
        }
        let (mut response, sender) =
            HttpResponder::build(status, &pairs, streaming).map_err(error::from_request)?;
        if let (false, Some(body)) = (streaming, body) {
            *response.body_mut() = Body::from(match body {
                Either::A(text) => Bytes::from(text),
                Either::B(bytes) => Bytes::copy_from_slice(&bytes),
            });
        }
        let responder = self
            .responder
            .lock()
            .ok()
            .and_then(|mut r| r.take())
            .ok_or_else(error::request_answered)?;
        if let Ok(mut s) = self.sender.lock() {
            *s = sender;
        }
        Ok(responder.respond(response))
    }

    /// Sends one chunk of the response body, waiting while the client is behind.
    #[napi]
    pub async fn write(&self, chunk: Uint8Array) -> napi::Result<()> {
        let sender = self
            .sender
            .lock()
            .ok()
            .and_then(|s| s.clone())
            .ok_or_else(error::stream_closed)?;
        sender
            .send(Bytes::copy_from_slice(&chunk))
            .await
            .map_err(error::from_body)
    }

    /// Ends the response body.
    #[napi(catch_unwind)]
    pub fn end(&self) {
        if let Ok(mut s) = self.sender.lock() {
            s.take();
        }
    }

    /// Cuts the response body off: the client sees the stream reset, never a short body
    /// taken for a whole one.
    #[napi]
    pub async fn abort(&self, reason: String) {
        let sender = self.sender.lock().ok().and_then(|mut s| s.take());
        if let Some(sender) = sender {
            sender.abort(ferrovia::BodyError::Aborted(reason)).await;
        }
    }
}
