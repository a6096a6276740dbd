//! WebSocket handshakes that another server received (an ASGI server such as uvicorn):
//! the core checks and routes them, and whole messages travel through a pipe.

use std::{net::SocketAddr, sync::Mutex};

use pyo3::{exceptions::PyValueError, prelude::*};

use ferrovia::{Handshake, HandshakeOutcome, HostMessage, UpgradedWebSocket};
use tokio::sync::mpsc;

use crate::{awaitable, errors::Failure};

/// An accepted WebSocket whose messages the host frames itself.
#[pyclass(frozen, module = "ferrovia._ferrovia")]
pub(crate) struct Upgraded {
    inner: Mutex<Option<UpgradedWebSocket>>,
}

/// The session's end of a message pipe.
#[pyclass(frozen, module = "ferrovia._ferrovia")]
pub(crate) struct MessagePipe {
    to_session: mpsc::Sender<HostMessage>,
    from_session: std::sync::Arc<tokio::sync::Mutex<mpsc::Receiver<HostMessage>>>,
}

/// `(kind, payload)` for Python: `("text", str)`, `("binary", bytes)`, `("close", (code, reason))`.
pub(crate) enum Pulled {
    Text(String),
    Binary(bytes::Bytes),
    Close(u16, String),
}

impl<'py> IntoPyObject<'py> for Pulled {
    type Target = PyAny;
    type Output = Bound<'py, PyAny>;
    type Error = PyErr;

    fn into_pyobject(self, py: Python<'py>) -> Result<Self::Output, Self::Error> {
        Ok(match self {
            Pulled::Text(t) => ("text", t).into_pyobject(py)?.into_any(),
            Pulled::Binary(b) => ("binary", pyo3::types::PyBytes::new(py, &b))
                .into_pyobject(py)?
                .into_any(),
            Pulled::Close(c, r) => ("close", (c, r)).into_pyobject(py)?.into_any(),
        })
    }
}

#[pymethods]
impl Upgraded {
    /// Starts the session; returns the pipe its messages go through.
    fn run_messages(&self) -> PyResult<MessagePipe> {
        let socket = self
            .inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
            .ok_or_else(|| PyValueError::new_err("already started"))?;
        let _guard = crate::runtime().enter();
        let (to_session, from_session) = socket.run_messages();
        Ok(MessagePipe {
            to_session,
            from_session: std::sync::Arc::new(tokio::sync::Mutex::new(from_session)),
        })
    }
}

#[pymethods]
impl MessagePipe {
    /// A message from the client: `kind` is "text", "binary" or "close".
    #[pyo3(signature = (kind, text = None, data = None, code = 1000, reason = String::new()))]
    fn push<'py>(
        &self,
        py: Python<'py>,
        kind: &str,
        text: Option<String>,
        data: Option<Vec<u8>>,
        code: u16,
        reason: String,
    ) -> PyResult<Bound<'py, PyAny>> {
        let message = match kind {
            "text" => HostMessage::Text(text.unwrap_or_default()),
            "binary" => HostMessage::Binary(data.unwrap_or_default().into()),
            "close" => HostMessage::Close(code, reason),
            other => {
                return Err(PyValueError::new_err(format!(
                    "unknown message kind {other:?}"
                )))
            }
        };
        let tx = self.to_session.clone();
        awaitable(py, async move {
            // A session that is gone takes nothing more; the host learns it from pull().
            let _ = tx.send(message).await;
            Ok::<(), Failure>(())
        })
    }

    /// The next message for the client, or None once the session is done.
    fn pull<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let rx = self.from_session.clone();
        awaitable(py, async move {
            let pulled = rx.lock().await.recv().await;
            Ok::<_, Failure>(pulled.map(|m| match m {
                HostMessage::Text(t) => Pulled::Text(t),
                HostMessage::Binary(b) => Pulled::Binary(b),
                HostMessage::Close(c, r) => Pulled::Close(c, r),
            }))
        })
    }
}

/// Runs a handshake through the server's routes: `(status, headers, body, upgraded)`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn handshake<'py>(
    py: Python<'py>,
    server: ferrovia::Server,
    method: String,
    http2: bool,
    path: String,
    authority: String,
    headers: Vec<(String, String)>,
    remote: (String, u16),
    secure: bool,
) -> PyResult<Bound<'py, PyAny>> {
    let ip = remote
        .0
        .trim_matches(|c| c == '[' || c == ']')
        .parse()
        .map_err(|_| {
            PyValueError::new_err(format!(
                "client address {:?} is not an IP address",
                remote.0
            ))
        })?;
    let remote_addr = SocketAddr::new(ip, remote.1);
    awaitable(py, async move {
        let outcome = server
            .websocket_handshake(Handshake {
                method,
                http2,
                protocol: http2.then(|| "websocket".to_owned()),
                path,
                authority,
                headers,
                remote_addr,
                secure,
            })
            .await;
        Ok::<_, Failure>(match outcome {
            HandshakeOutcome::Respond {
                status,
                headers,
                body,
            } => (status, headers, body.to_owned(), None),
            HandshakeOutcome::Upgrade {
                status,
                headers,
                socket,
            } => (
                status,
                headers,
                String::new(),
                Some(Upgraded {
                    inner: Mutex::new(Some(socket)),
                }),
            ),
        })
    })
}
