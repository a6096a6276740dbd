//! Translation of core errors into the Python exceptions defined in `ferrovia._errors`.
//!
//! The exception classes are written in Python so that they carry typed attributes
//! (`stream_error_code`, `close_info`, ...) and plain docstrings; this module only picks the
//! class and fills in the fields.

use ferrovia::fleet::ReusePortError;
use ferrovia::{
    CertificateError, CloseInfo, CloseInitiator, RequestError, ServerError, SessionError,
    StreamError,
};
use pyo3::{
    exceptions::{PyOSError, PyRuntimeError, PyValueError},
    prelude::*,
    sync::PyOnceLock,
    types::{PyDict, PyModule},
    IntoPyObjectExt,
};

static ERRORS: PyOnceLock<Py<PyModule>> = PyOnceLock::new();

/// Any failure a binding call can report, converted to a Python exception only once the
/// interpreter is attached (futures resolve on tokio threads that do not hold it).
#[derive(Debug)]
pub(crate) enum Failure {
    Session(SessionError),
    Stream(StreamError),
    Request(RequestError),
    Server(ServerError),
    Certificate(CertificateError),
    /// The stream was stopped or reset by this side, so reading or writing is over.
    Local(String),
    WebSocket(ferrovia::WebSocketError),
}

impl From<SessionError> for Failure {
    fn from(e: SessionError) -> Self {
        Self::Session(e)
    }
}
impl From<StreamError> for Failure {
    fn from(e: StreamError) -> Self {
        Self::Stream(e)
    }
}
impl From<RequestError> for Failure {
    fn from(e: RequestError) -> Self {
        Self::Request(e)
    }
}
impl From<ServerError> for Failure {
    fn from(e: ServerError) -> Self {
        Self::Server(e)
    }
}
impl From<CertificateError> for Failure {
    fn from(e: CertificateError) -> Self {
        Self::Certificate(e)
    }
}

fn initiator(i: CloseInitiator) -> &'static str {
    match i {
        CloseInitiator::Local => "local",
        CloseInitiator::Remote => "remote",
        CloseInitiator::Connection => "connection",
    }
}

/// `(code, reason, initiator)` as the facade's `CloseInfo` expects it.
pub(crate) fn ws_close_tuple(c: ferrovia::WebSocketClose) -> (u16, String, &'static str) {
    (c.code, c.reason, initiator(c.initiator))
}

pub(crate) fn close_tuple(info: &CloseInfo) -> (u32, String, &'static str) {
    (info.code, info.reason.clone(), initiator(info.initiator))
}

fn raise(py: Python<'_>, class: &str, message: String, kwargs: &[(&str, Py<PyAny>)]) -> PyErr {
    let build = || -> PyResult<PyErr> {
        let module = ERRORS.get_or_try_init(py, || {
            Ok::<_, PyErr>(py.import("ferrovia._errors")?.unbind())
        })?;
        let cls = module.bind(py).getattr(class)?;
        let kw = PyDict::new(py);
        for (k, v) in kwargs {
            kw.set_item(k, v)?;
        }
        Ok(PyErr::from_value(cls.call((message,), Some(&kw))?))
    };
    build().unwrap_or_else(|e| e)
}

fn any<'py, T: IntoPyObjectExt<'py>>(py: Python<'py>, v: T) -> Py<PyAny> {
    v.into_py_any(py).unwrap_or_else(|_| py.None())
}

fn session_closed(py: Python<'_>, message: String, info: &CloseInfo) -> PyErr {
    raise(
        py,
        "SessionClosedError",
        message,
        &[
            ("code", any(py, info.code)),
            ("reason", any(py, info.reason.as_str())),
            ("initiator", any(py, initiator(info.initiator))),
        ],
    )
}

impl Failure {
    pub(crate) fn into_pyerr(self, py: Python<'_>) -> PyErr {
        let message = self.to_string();
        match self {
            Failure::Session(SessionError::Closed(info)) => session_closed(py, message, &info),
            Failure::Session(SessionError::DatagramTooLarge { size, max }) => raise(
                py,
                "DatagramTooLargeError",
                message,
                &[("size", any(py, size)), ("max_size", any(py, max))],
            ),
            Failure::Session(SessionError::DatagramsUnsupported) => {
                raise(py, "DatagramsUnsupportedError", message, &[])
            }
            Failure::Session(_) => raise(
                py,
                "WebTransportError",
                message,
                &[("source", any(py, "session"))],
            ),
            Failure::Stream(StreamError::SessionClosed(info)) => session_closed(py, message, &info),
            Failure::Stream(StreamError::Reset { code }) => raise(
                py,
                "StreamResetError",
                message,
                &[("stream_error_code", any(py, code))],
            ),
            Failure::Stream(StreamError::Stopped { code }) => raise(
                py,
                "StreamStoppedError",
                message,
                &[("stream_error_code", any(py, code))],
            ),
            Failure::Stream(StreamError::MessageTooLarge { size, max }) => raise(
                py,
                "MessageTooLargeError",
                message,
                &[("size", any(py, size)), ("max_size", any(py, max))],
            ),
            Failure::Stream(StreamError::MessageTruncated { received, expected }) => raise(
                py,
                "MessageTruncatedError",
                message,
                &[
                    ("received", any(py, received)),
                    ("expected", any(py, expected)),
                ],
            ),
            Failure::Stream(StreamError::ClosedStream) | Failure::Local(_) => {
                raise(py, "StreamClosedError", message, &[])
            }
            Failure::Stream(_) => raise(
                py,
                "WebTransportError",
                message,
                &[("source", any(py, "stream"))],
            ),
            Failure::Request(RequestError::InvalidStatus(_)) => {
                PyValueError::new_err(format!("status: {message}"))
            }
            Failure::Request(RequestError::ProtocolNotOffered(_)) => {
                PyValueError::new_err(format!("protocol: {message}"))
            }
            Failure::Request(RequestError::InvalidHeader(_)) => {
                PyValueError::new_err(format!("headers: {message}"))
            }
            Failure::Request(RequestError::WrongTransport(_)) => PyValueError::new_err(message),
            Failure::Request(_) => raise(py, "RequestError", message, &[]),
            Failure::Server(ServerError::Bind { source, .. })
            | Failure::Server(ServerError::BindTcp { source, .. })
            | Failure::Server(ServerError::ReusePort(ReusePortError::Bind { source, .. })) => {
                PyOSError::new_err((source.raw_os_error().unwrap_or(0), message))
            }
            Failure::Server(ServerError::ReusePort(
                ReusePortError::Workers(_) | ReusePortError::ConnectionIds { .. },
            )) => PyValueError::new_err(message),
            Failure::Server(ServerError::Certificate(_)) | Failure::Certificate(_) => {
                raise(py, "CertificateError", message, &[])
            }
            Failure::Server(ServerError::InvalidConfig(_))
            | Failure::Server(ServerError::RouteTaken(_)) => PyValueError::new_err(message),
            Failure::Server(ServerError::Closed) => raise(py, "ServerClosedError", message, &[]),
            Failure::Server(_) => PyRuntimeError::new_err(message),
            Failure::WebSocket(ferrovia::WebSocketError::Closed(c)) => raise(
                py,
                "WebSocketClosedError",
                message,
                &[
                    ("code", any(py, c.code)),
                    ("reason", any(py, c.reason)),
                    ("initiator", any(py, initiator(c.initiator))),
                ],
            ),
            Failure::WebSocket(_) => PyValueError::new_err(message),
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Session(e) => e.fmt(f),
            Failure::Stream(e) => e.fmt(f),
            Failure::Request(e) => e.fmt(f),
            Failure::Server(e) => e.fmt(f),
            Failure::Certificate(e) => e.fmt(f),
            Failure::Local(m) => f.write_str(m),
            Failure::WebSocket(e) => e.fmt(f),
        }
    }
}

/// A future's outcome whose error becomes a Python exception during the conversion that
/// happens with the interpreter attached.
pub(crate) struct Outcome<T>(pub(crate) Result<T, Failure>);

impl<'py, T: IntoPyObject<'py>> IntoPyObject<'py> for Outcome<T> {
    type Target = PyAny;
    type Output = Bound<'py, PyAny>;
    type Error = PyErr;

    fn into_pyobject(self, py: Python<'py>) -> Result<Self::Output, Self::Error> {
        match self.0 {
            Ok(v) => v.into_bound_py_any(py),
            Err(e) => Err(e.into_pyerr(py)),
        }
    }
}

/// Extension for converting core results in synchronous methods.
pub(crate) trait IntoPyResult<T> {
    fn py_err(self, py: Python<'_>) -> PyResult<T>;
}

impl<T, E: Into<Failure>> IntoPyResult<T> for Result<T, E> {
    fn py_err(self, py: Python<'_>) -> PyResult<T> {
        self.map_err(|e| e.into().into_pyerr(py))
    }
}
