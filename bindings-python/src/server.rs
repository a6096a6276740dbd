//! Certificates, the server, its routes and incoming session requests.

// The core's try_* calls hand a refused request back by value (see SessionRequest::try_accept).
#![allow(clippy::result_large_err)]

use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr},
    sync::{Arc, Mutex},
    time::Duration,
};

use pyo3::{
    exceptions::{PyRuntimeError, PyTypeError, PyValueError},
    prelude::*,
    types::{PyBytes, PyString},
};

use crate::{
    awaitable,
    errors::{Failure, IntoPyResult},
    runtime,
    session::Session,
    try_now,
};

/// A TLS certificate chain with its private key.
#[pyclass(frozen, module = "ferrovia._ferrovia")]
pub(crate) struct Certificate {
    pub(crate) inner: ferrovia::Certificate,
}

/// PEM given as `str` or `bytes`.
fn pem_bytes(arg: &str, value: &Bound<'_, PyAny>) -> PyResult<Vec<u8>> {
    if let Ok(s) = value.cast::<PyString>() {
        return Ok(s.to_str()?.as_bytes().to_vec());
    }
    if let Ok(b) = value.cast::<PyBytes>() {
        return Ok(b.as_bytes().to_vec());
    }
    Err(PyTypeError::new_err(format!(
        "{arg} must be str or bytes holding PEM, not {}",
        value.get_type().name()?
    )))
}

#[pymethods]
impl Certificate {
    /// A fresh ECDSA P-256 certificate valid for 13 days, usable with
    /// `serverCertificateHashes`.
    #[staticmethod]
    fn self_signed(py: Python<'_>, names: Vec<String>) -> PyResult<Self> {
        if names.is_empty() {
            return Err(PyValueError::new_err("names must not be empty"));
        }
        let inner = py
            .detach(|| ferrovia::Certificate::self_signed(&names))
            .py_err(py)?;
        Ok(Self { inner })
    }

    /// A certificate chain and key from PEM text.
    #[staticmethod]
    fn from_pem(py: Python<'_>, cert: &Bound<'_, PyAny>, key: &Bound<'_, PyAny>) -> PyResult<Self> {
        let cert = pem_bytes("cert", cert)?;
        let key = pem_bytes("key", key)?;
        let inner = ferrovia::Certificate::from_pem(&cert, &key).py_err(py)?;
        Ok(Self { inner })
    }

    /// A certificate chain and key from PEM files.
    #[staticmethod]
    fn from_pem_files(
        py: Python<'_>,
        cert_path: std::path::PathBuf,
        key_path: std::path::PathBuf,
    ) -> PyResult<Self> {
        let inner = py
            .detach(|| ferrovia::Certificate::from_pem_files(&cert_path, &key_path))
            .py_err(py)?;
        Ok(Self { inner })
    }

    /// SHA-256 of the DER certificate.
    fn sha256<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        PyBytes::new(py, &self.inner.sha256())
    }

    /// SHA-256 of the DER certificate as lowercase hex.
    fn sha256_hex(&self) -> String {
        self.inner.sha256_hex()
    }

    /// Base64 SHA-256 of the public key (for Chrome's SPKI allow-list flag).
    fn spki_sha256_base64(&self) -> String {
        self.inner.spki_sha256_base64()
    }

    /// The leaf certificate in DER.
    fn der<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        PyBytes::new(py, self.inner.der())
    }

    /// The chain as PEM.
    fn chain_pem(&self) -> String {
        self.inner.chain_pem()
    }

    /// The private key as PEM.
    fn key_pem(&self) -> String {
        self.inner.key_pem().to_owned()
    }
}

fn seconds(arg: &str, value: Option<f64>) -> PyResult<Option<Duration>> {
    match value {
        None => Ok(None),
        Some(s) if s.is_finite() && s > 0.0 && s < 1e9 => Ok(Some(Duration::from_secs_f64(s))),
        Some(s) => Err(PyValueError::new_err(format!(
            "{arg} must be a positive number of seconds or None, got {s}"
        ))),
    }
}

fn origin_policy(policy: &Bound<'_, PyAny>) -> PyResult<ferrovia::OriginPolicy> {
    if let Ok(s) = policy.cast::<PyString>() {
        return match s.to_str()? {
            "same-host" => Ok(ferrovia::OriginPolicy::SameHost),
            "*" => Ok(ferrovia::OriginPolicy::Any),
            other => Err(PyValueError::new_err(format!(
                "allowed_origins must be \"same-host\", \"*\", a list of origins or a callable, got {other:?}"
            ))),
        };
    }
    if policy.is_callable() {
        // The callable never runs on a runtime worker: a worker blocked on the interpreter
        // would stall the QUIC I/O of every connection it serves. It runs on tokio's
        // blocking pool instead (a coroutine function's coroutine runs on the event loop
        // the server was started from), and the request waits for the verdict.
        let check = Arc::new(policy.clone().unbind());
        let event_loop = policy
            .py()
            .import("asyncio")?
            .call_method0("get_running_loop")
            .ok()
            .map(|l| Arc::new(l.unbind()));
        return Ok(ferrovia::OriginPolicy::CustomAsync(Arc::new(
            move |origin: String, authority: String| {
                let check = check.clone();
                let event_loop = event_loop.clone();
                Box::pin(async move {
                    let verdict = tokio::task::spawn_blocking(move || {
                        Python::attach(|py| {
                            let decide = || -> PyResult<bool> {
                                let mut r = check.bind(py).call1((&origin, &authority))?;
                                let asyncio = py.import("asyncio")?;
                                if asyncio.call_method1("iscoroutine", (&r,))?.is_truthy()? {
                                    let Some(l) = &event_loop else {
                                        return Err(PyRuntimeError::new_err(
                                            "an async origin check needs the server to run in an event loop",
                                        ));
                                    };
                                    let fut = asyncio.call_method1(
                                        "run_coroutine_threadsafe",
                                        (&r, l.bind(py)),
                                    )?;
                                    // Waiting releases the interpreter.
                                    r = fut.call_method0("result")?;
                                }
                                r.is_truthy()
                            };
                            decide().unwrap_or_else(|e| {
                                // A failing policy denies; the traceback goes where
                                // unraisable errors go so the mistake is visible.
                                e.write_unraisable(py, Some(check.bind(py)));
                                false
                            })
                        })
                    })
                    .await;
                    verdict.unwrap_or(false)
                })
            },
        )));
    }
    let list: Vec<String> = policy.extract().map_err(|_| {
        PyTypeError::new_err(
            "allowed_origins must be \"same-host\", \"*\", a list of origin strings or a callable",
        )
    })?;
    Ok(ferrovia::OriginPolicy::AllowList(list))
}

fn apply_limits(limits: &mut ferrovia::Limits, values: HashMap<String, u64>) -> PyResult<()> {
    fn fit<T: TryFrom<u64>>(name: &str, v: u64) -> PyResult<T> {
        T::try_from(v)
            .map_err(|_| PyValueError::new_err(format!("limits.{name} is too large: {v}")))
    }
    for (name, v) in values {
        match name.as_str() {
            "max_sessions" => limits.max_sessions = fit(&name, v)?,
            "max_sessions_per_connection" => limits.max_sessions_per_connection = fit(&name, v)?,
            "max_bidi_streams" => limits.max_bidi_streams = fit(&name, v)?,
            "max_uni_streams" => limits.max_uni_streams = fit(&name, v)?,
            "stream_receive_window" => limits.stream_receive_window = fit(&name, v)?,
            "connection_receive_window" => limits.connection_receive_window = fit(&name, v)?,
            "send_window" => limits.send_window = v,
            "datagram_queue" => limits.datagram_queue = fit(&name, v)?,
            "max_buffered_streams" => limits.max_buffered_streams = fit(&name, v)?,
            "max_buffered_datagrams" => limits.max_buffered_datagrams = fit(&name, v)?,
            "request_queue" => limits.request_queue = fit(&name, v)?,
            "max_sessions_per_ip" => limits.max_sessions_per_ip = fit(&name, v)?,
            "max_connections" => limits.max_connections = fit(&name, v)?,
            "max_connections_per_ip" => limits.max_connections_per_ip = fit(&name, v)?,
            "retry_threshold" => limits.retry_threshold = fit(&name, v)?,
            "datagram_queue_bytes" => limits.datagram_queue_bytes = fit(&name, v)?,
            "max_refused_requests" => limits.max_refused_requests = fit(&name, v)?,
            "request_timeout_ms" => limits.request_timeout = Duration::from_millis(v),
            "response_timeout_ms" => limits.response_timeout = Duration::from_millis(v),
            "sessionless_timeout_ms" => limits.sessionless_timeout = Duration::from_millis(v),
            "handler_timeout_ms" => limits.handler_timeout = Duration::from_millis(v),
            "write_timeout_ms" => limits.write_timeout = Duration::from_millis(v),
            "max_message_size" => limits.max_message_size = fit(&name, v)?,
            "max_concurrent_requests" => limits.max_concurrent_requests = fit(&name, v)?,
            "max_request_body" => limits.max_request_body = v,
            other => {
                return Err(PyValueError::new_err(format!(
                    "limits has no field {other:?}"
                )));
            }
        }
    }
    Ok(())
}

/// A listening WebTransport server.
#[pyclass(frozen, module = "ferrovia._ferrovia")]
pub(crate) struct Server {
    inner: ferrovia::Server,
}

#[pymethods]
impl Server {
    /// Binds the UDP socket and starts serving.
    #[staticmethod]
    #[pyo3(signature = (host, port, certificate, *, allowed_origins, idle_timeout, keep_alive, congestion_controller, limits, tcp, tcp_address, trusted_proxies = None, renew_self_signed = None, reuse_port = false, connection_ids = None, fleet_secret = None, worker = None, websocket_compression = None))]
    #[allow(clippy::too_many_arguments)]
    fn bind(
        py: Python<'_>,
        host: &str,
        port: u16,
        certificate: &Certificate,
        allowed_origins: &Bound<'_, PyAny>,
        idle_timeout: Option<f64>,
        keep_alive: Option<f64>,
        congestion_controller: &str,
        limits: HashMap<String, u64>,
        tcp: &str,
        tcp_address: Option<(String, u16)>,
        trusted_proxies: Option<Vec<String>>,
        renew_self_signed: Option<Vec<String>>,
        reuse_port: bool,
        connection_ids: Option<(Vec<u8>, u8, usize)>,
        fleet_secret: Option<Vec<u8>>,
        worker: Option<(usize, i32, Option<i32>)>,
        websocket_compression: Option<&str>,
    ) -> PyResult<Self> {
        let ip: IpAddr = host
            .trim_matches(|c| c == '[' || c == ']')
            .parse()
            .map_err(|_| {
                PyValueError::new_err(format!("host must be an IP address, got {host:?}"))
            })?;
        let mut config =
            ferrovia::ServerConfig::new(SocketAddr::new(ip, port), certificate.inner.clone());
        config.origin_policy = origin_policy(allowed_origins)?;
        config.self_signed_renewal =
            renew_self_signed.map(|names| ferrovia::SelfSignedRenewal::new(&names));
        config.idle_timeout = seconds("idle_timeout", idle_timeout)?;
        config.keep_alive = seconds("keep_alive", keep_alive)?;
        config.congestion_controller = match congestion_controller {
            "cubic" => ferrovia::CongestionController::Cubic,
            "newreno" => ferrovia::CongestionController::NewReno,
            "bbr" => ferrovia::CongestionController::Bbr,
            other => {
                return Err(PyValueError::new_err(format!(
                    "congestion_controller must be \"cubic\", \"newreno\" or \"bbr\", got {other:?}"
                )))
            }
        };
        if let Some(name) = websocket_compression {
            config.websocket_compression = ferrovia::WebSocketCompression::from_name(name)
                .ok_or_else(|| {
                    PyValueError::new_err(format!(
                        "websocket_compression must be \"deflate\", \"deflate-no-context\" or None, got {name:?}"
                    ))
                })?;
        }
        apply_limits(&mut config.limits, limits)?;
        let tcp_addr = || -> PyResult<SocketAddr> {
            let (h, p) = tcp_address.clone().unwrap_or((host.to_owned(), 0));
            let ip: IpAddr = h
                .trim_matches(|c| c == '[' || c == ']')
                .parse()
                .map_err(|_| {
                    PyValueError::new_err(format!("tcp host must be an IP address, got {h:?}"))
                })?;
            Ok(SocketAddr::new(ip, p))
        };
        config.tcp = match tcp {
            "same-port" => ferrovia::TcpListen::SamePort,
            "off" => ferrovia::TcpListen::Off,
            "tls" => ferrovia::TcpListen::At(tcp_addr()?),
            "plain-behind-tls-proxy" => ferrovia::TcpListen::PlainBehindTlsProxy(tcp_addr()?),
            other => return Err(PyValueError::new_err(format!("unknown tcp mode {other:?}"))),
        };
        if let Some(ranges) = trusted_proxies {
            config.trusted_proxies = ranges
                .iter()
                .map(|r| {
                    r.parse()
                        .map_err(|e: ferrovia::InvalidIpRange| PyValueError::new_err(e.to_string()))
                })
                .collect::<PyResult<_>>()?;
        }
        crate::fleet::apply(
            &mut config,
            reuse_port,
            connection_ids,
            fleet_secret,
            worker,
        )?;
        let _guard = runtime().enter();
        let inner = ferrovia::Server::bind(config).py_err(py)?;
        Ok(Self { inner })
    }

    /// `(host, port)` actually bound.
    fn local_address(&self, py: Python<'_>) -> PyResult<(String, u16)> {
        let addr = self.inner.local_addr().py_err(py)?;
        Ok((addr.ip().to_string(), addr.port()))
    }

    /// SHA-256 of the current certificate and, while a renewal announces it, of the next.
    fn certificate_hashes<'py>(&self, py: Python<'py>) -> Vec<Bound<'py, PyBytes>> {
        self.inner
            .certificate_hashes()
            .iter()
            .map(|h| PyBytes::new(py, h))
            .collect()
    }

    /// The connector module with this server's `serverCertificateHashes` export appended.
    fn client_module(&self, connector: &str) -> String {
        self.inner.client_module(connector)
    }

    /// The certificate new connections get.
    fn certificate(&self) -> Certificate {
        Certificate {
            inner: self.inner.certificate(),
        }
    }

    /// Replaces the certificate for new connections.
    fn set_certificate(&self, certificate: &Certificate) {
        self.inner.set_certificate(certificate.inner.clone());
    }

    /// Sessions open right now (plain WebSockets included).
    fn session_count(&self) -> usize {
        self.inner.session_count()
    }

    /// QUIC and TCP connections open right now.
    fn connection_count(&self) -> usize {
        self.inner.connection_count()
    }

    /// The server's counters: `(connections, sessions, connections_accepted,
    /// connections_refused, handshakes_failed, sessions_accepted, http_requests,
    /// [(status, count)], prometheus_text, sessions_failed_to_start)`.
    #[allow(clippy::type_complexity)]
    fn stats(
        &self,
    ) -> (
        usize,
        usize,
        u64,
        u64,
        u64,
        u64,
        u64,
        Vec<(u16, u64)>,
        String,
        u64,
    ) {
        let s = self.inner.stats();
        (
            s.connections,
            s.sessions,
            s.connections_accepted,
            s.connections_refused,
            s.handshakes_failed,
            s.sessions_accepted,
            s.http_requests,
            s.requests_refused.iter().map(|(k, v)| (*k, *v)).collect(),
            s.to_prometheus(),
            s.sessions_failed_to_start,
        )
    }

    /// `(host, port)` of the TCP side, or None when it is off.
    fn tcp_address(&self) -> Option<(String, u16)> {
        self.inner
            .tcp_local_addr()
            .map(|a| (a.ip().to_string(), a.port()))
    }

    /// Claims the requests for one path; with `websockets`, plain WebSockets too.
    #[pyo3(signature = (path, websockets = false))]
    fn route(&self, py: Python<'_>, path: &str, websockets: bool) -> PyResult<Route> {
        let inner = self.inner.route(path).py_err(py)?;
        if websockets {
            inner.allow_websockets();
        }
        Ok(Route {
            inner: Arc::new(inner),
        })
    }

    /// Claims plain WebSocket requests for every path no route claims (the ASGI host's
    /// `websocket` scope).
    fn unclaimed_websockets(&self, py: Python<'_>) -> PyResult<Route> {
        let inner = self.inner.unclaimed_websockets().py_err(py)?;
        Ok(Route {
            inner: Arc::new(inner),
        })
    }

    /// A request for a path without a route that is already waiting, or None. The first
    /// call also starts queueing such requests instead of answering them with 404.
    fn try_accept(&self, py: Python<'_>) -> Option<SessionRequest> {
        try_now(py, self.inner.accept())
            .flatten()
            .map(SessionRequest::new)
    }

    /// The next request for a path without a route; resolves to None once closing.
    fn accept<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let server = self.inner.clone();
        awaitable(py, async move {
            Ok(server.accept().await.map(SessionRequest::new))
        })
    }

    /// A WebSocket handshake another server (an ASGI server) received; resolves to
    /// `(status, headers, body, upgraded or None)`.
    #[pyo3(signature = (method, http2, path, authority, headers, remote, secure))]
    #[allow(clippy::too_many_arguments)]
    fn websocket_handshake<'py>(
        &self,
        py: Python<'py>,
        method: String,
        http2: bool,
        path: String,
        authority: String,
        headers: Vec<(String, String)>,
        remote: (String, u16),
        secure: bool,
    ) -> PyResult<Bound<'py, PyAny>> {
        crate::upgrade::handshake(
            py,
            self.inner.clone(),
            method,
            http2,
            path,
            authority,
            headers,
            remote,
            secure,
        )
    }

    /// Sends every ordinary HTTP request to the returned queue from now on; past
    /// `capacity` waiting, more get 503.
    fn enable_http(&self, capacity: usize) -> crate::exchange::HttpRequests {
        let (service, requests) = ferrovia::HttpService::queue(capacity);
        self.inner.set_http_handler(Some(service));
        crate::exchange::HttpRequests::new(requests)
    }

    /// Ordinary requests, pushed to an inbox the event loop watches (instead of
    /// `enable_http`'s awaited queue); past `capacity` waiting, more get 503.
    #[cfg(unix)]
    fn enable_http_inbox(&self, capacity: usize) -> PyResult<crate::exchange::HttpInbox> {
        let (service, inbox) = crate::exchange::HttpInbox::pair(capacity)
            .map_err(|e| pyo3::exceptions::PyOSError::new_err(e.to_string()))?;
        self.inner.set_http_handler(Some(service));
        Ok(inbox)
    }

    /// Refuses new sessions (503) and asks open ones to drain.
    fn drain(&self) {
        self.inner.drain();
    }

    /// Whether `drain()` was called.
    fn is_draining(&self) -> bool {
        self.inner.is_draining()
    }

    /// Resolves once no session is open.
    fn drained<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let server = self.inner.clone();
        awaitable(py, async move {
            server.drained().await;
            Ok(())
        })
    }

    /// Graceful shutdown within `grace` seconds.
    fn close<'py>(&self, py: Python<'py>, grace: f64) -> PyResult<Bound<'py, PyAny>> {
        let grace = seconds("grace", Some(grace.max(1e-3)))?.unwrap_or_default();
        let server = self.inner.clone();
        awaitable(py, async move {
            server.close(grace).await;
            Ok(())
        })
    }
}

/// The requests for one path.
#[pyclass(frozen, module = "ferrovia._ferrovia")]
pub(crate) struct Route {
    inner: Arc<ferrovia::Route>,
}

#[pymethods]
impl Route {
    /// The path this route claims.
    #[getter]
    fn path(&self) -> String {
        self.inner.path().to_owned()
    }

    /// A request for this path that is already waiting, or None.
    fn try_accept(&self, py: Python<'_>) -> Option<SessionRequest> {
        try_now(py, self.inner.accept())
            .flatten()
            .map(SessionRequest::new)
    }

    /// The next request for this path; resolves to None once the server closes.
    fn accept<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let route = self.inner.clone();
        awaitable(py, async move {
            Ok(route.accept().await.map(SessionRequest::new))
        })
    }
}

/// A client asking to open a session.
#[pyclass(frozen, module = "ferrovia._ferrovia")]
pub(crate) struct SessionRequest {
    inner: Mutex<Option<ferrovia::SessionRequest>>,
    path: String,
    authority: String,
    origin: Option<String>,
    headers: Vec<(String, String)>,
    subprotocols: Vec<String>,
    remote: (String, u16),
    session_id: u64,
    transport: ferrovia::Transport,
    http_version: &'static str,
}

impl SessionRequest {
    fn new(r: ferrovia::SessionRequest) -> Self {
        let remote = r.remote_addr();
        Self {
            path: r.path().to_owned(),
            authority: r.authority().to_owned(),
            origin: r.origin().map(str::to_owned),
            headers: r.headers().to_vec(),
            subprotocols: r.subprotocols().to_vec(),
            remote: (remote.ip().to_string(), remote.port()),
            session_id: r.session_id(),
            transport: r.transport(),
            // ASGI's spelling of the version.
            http_version: match r.http_version() {
                v if v == http::Version::HTTP_3 => "3",
                v if v == http::Version::HTTP_2 => "2",
                _ => "1.1",
            },
            inner: Mutex::new(Some(r)),
        }
    }

    /// Answers with `f`, holding the request's lock throughout: a call refused for the
    /// caller's mistake puts the request back before anyone else can see it gone.
    fn answer<T>(
        &self,
        py: Python<'_>,
        f: impl FnOnce(
            ferrovia::SessionRequest,
        ) -> Result<T, (ferrovia::SessionRequest, ferrovia::RequestError)>,
    ) -> PyResult<T> {
        let mut slot = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let request = slot.take().ok_or_else(|| {
            PyRuntimeError::new_err("this request was already accepted or rejected")
        })?;
        f(request).map_err(|(request, e)| {
            *slot = Some(request);
            Failure::from(e).into_pyerr(py)
        })
    }
}

#[pymethods]
impl SessionRequest {
    #[getter]
    fn path(&self) -> &str {
        &self.path
    }
    #[getter]
    fn authority(&self) -> &str {
        &self.authority
    }
    #[getter]
    fn origin(&self) -> Option<&str> {
        self.origin.as_deref()
    }
    #[getter]
    fn headers(&self) -> Vec<(String, String)> {
        self.headers.clone()
    }
    #[getter]
    fn subprotocols(&self) -> Vec<String> {
        self.subprotocols.clone()
    }
    #[getter]
    fn remote_address(&self) -> (String, u16) {
        self.remote.clone()
    }
    #[getter]
    fn session_id(&self) -> u64 {
        self.session_id
    }
    #[getter]
    fn transport(&self) -> &'static str {
        self.transport.as_str()
    }
    #[getter]
    fn http_version(&self) -> &'static str {
        self.http_version
    }
    /// Whether accept or reject was already called.
    #[getter]
    fn answered(&self) -> bool {
        self.inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_none()
    }

    /// Accepts; resolves to the session. A bad protocol or header (or a plain WebSocket
    /// request) fails without answering: the request can still be accepted or rejected.
    #[pyo3(signature = (protocol, headers))]
    fn accept<'py>(
        &self,
        py: Python<'py>,
        protocol: Option<String>,
        headers: Vec<(String, String)>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let refs: Vec<(&str, &str)> = headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let _rt = runtime().enter();
        let session = self.answer(py, |r| r.try_accept(protocol.as_deref(), &refs))?;
        awaitable(py, async move { Ok(Session::new(session)) })
    }

    /// Accepts a plain WebSocket; resolves to it. Refused calls leave the request
    /// unanswered, as with `accept`.
    #[pyo3(signature = (protocol, headers))]
    fn accept_websocket<'py>(
        &self,
        py: Python<'py>,
        protocol: Option<String>,
        headers: Vec<(String, String)>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let refs: Vec<(&str, &str)> = headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let _rt = runtime().enter();
        let ws = self.answer(py, |r| r.try_accept_websocket(protocol.as_deref(), &refs))?;
        awaitable(py, async move { Ok(crate::websocket::WebSocket::new(ws)) })
    }

    /// Rejects with an HTTP status and response headers; the response is sent in the
    /// background. A bad status or header fails without answering.
    #[pyo3(signature = (status, headers = Vec::new()))]
    fn reject(&self, py: Python<'_>, status: u16, headers: Vec<(String, String)>) -> PyResult<()> {
        let pairs: Vec<(&str, &str)> = headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let _rt = runtime().enter();
        self.answer(py, |r| r.try_reject(status, &pairs))
    }
}
