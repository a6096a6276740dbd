//! A plain WebSocket session.

use pyo3::{
    prelude::*,
    types::{PyBytes, PyString},
};

use ferrovia::{WebSocketError, WebSocketMessage};

use crate::{awaitable, errors::Failure};

/// One message as the facade wants it: text or bytes.
pub(crate) enum Message {
    Text(String),
    Binary(bytes::Bytes),
}

impl From<WebSocketMessage> for Message {
    fn from(m: WebSocketMessage) -> Self {
        match m {
            WebSocketMessage::Text(t) => Message::Text(t),
            WebSocketMessage::Binary(b) => Message::Binary(b),
        }
    }
}

impl<'py> IntoPyObject<'py> for Message {
    type Target = PyAny;
    type Output = Bound<'py, PyAny>;
    type Error = PyErr;

    fn into_pyobject(self, py: Python<'py>) -> Result<Self::Output, Self::Error> {
        Ok(match self {
            Message::Text(t) => PyString::new(py, &t).into_any(),
            Message::Binary(b) => PyBytes::new(py, &b).into_any(),
        })
    }
}

/// An accepted plain WebSocket.
#[pyclass(frozen, module = "ferrovia._ferrovia")]
pub(crate) struct WebSocket {
    inner: ferrovia::WebSocket,
}

impl WebSocket {
    pub(crate) fn new(inner: ferrovia::WebSocket) -> Self {
        Self { inner }
    }
}

#[pymethods]
impl WebSocket {
    #[getter]
    fn path(&self) -> &str {
        self.inner.path()
    }

    #[getter]
    fn protocol(&self) -> Option<&str> {
        self.inner.protocol()
    }

    #[getter]
    fn remote_address(&self) -> (String, u16) {
        let a = self.inner.remote_addr();
        (a.ip().to_string(), a.port())
    }

    /// `(code, reason, initiator)` once closed, else None.
    #[getter]
    fn close_info(&self) -> Option<(u16, String, &'static str)> {
        self.inner.close_info().map(crate::errors::ws_close_tuple)
    }

    /// The next message (str or bytes), or None once the WebSocket closed cleanly.
    fn recv<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let ws = self.inner.clone();
        awaitable(py, async move {
            match ws.recv().await {
                Ok(m) => Ok(m.map(Message::from)),
                Err(e) => Err(Failure::from(e)),
            }
        })
    }

    /// A message already waiting (str or bytes), or None: nothing waiting, or the
    /// WebSocket ended (`recv()` then says how). No round trip through the event loop.
    fn try_recv(&self) -> Option<Message> {
        self.inner.try_recv().map(Message::from)
    }

    /// Queues text (str) or binary (bytes) if there is room now: True once queued;
    /// False when the queue is full or sending would fail (`send()` then waits or says
    /// why).
    fn try_send(&self, message: &Bound<'_, PyAny>) -> PyResult<bool> {
        let message = message_of(message)?;
        Ok(matches!(self.inner.try_send(message), Ok(None)))
    }

    /// Sends text (str) or binary (bytes-like) once queued.
    fn send<'py>(
        &self,
        py: Python<'py>,
        message: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let message = message_of(message)?;
        let ws = self.inner.clone();
        awaitable(
            py,
            async move { ws.send(message).await.map_err(Failure::from) },
        )
    }

    /// Starts the closing handshake with `code` and `reason`.
    fn close(&self, py: Python<'_>, code: u16, reason: &str) -> PyResult<()> {
        self.inner
            .close(code, reason)
            .map_err(|e| Failure::from(e).into_pyerr(py))
    }

    /// Resolves to `(code, reason, initiator)` once closed.
    fn wait_closed<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let ws = self.inner.clone();
        awaitable(py, async move {
            Ok(crate::errors::ws_close_tuple(ws.closed().await))
        })
    }
}

/// Text from a str, binary from a bytes-like object.
fn message_of(message: &Bound<'_, PyAny>) -> PyResult<WebSocketMessage> {
    if let Ok(s) = message.cast::<PyString>() {
        return Ok(WebSocketMessage::Text(s.to_str()?.to_owned()));
    }
    if let Ok(b) = message.cast::<PyBytes>() {
        return Ok(WebSocketMessage::Binary(bytes::Bytes::copy_from_slice(
            b.as_bytes(),
        )));
    }
    let data: Vec<u8> = message.extract().map_err(|_| {
        pyo3::exceptions::PyTypeError::new_err("a WebSocket message is str or a bytes-like object")
    })?;
    Ok(WebSocketMessage::Binary(data.into()))
}

impl From<WebSocketError> for Failure {
    fn from(e: WebSocketError) -> Self {
        Self::WebSocket(e)
    }
}
