//! Values that survive a cancelled await.
//!
//! An awaitable's value is produced on the runtime and converted to Python before the
//! event loop learns that the awaiting task was cancelled; asyncio then drops it. For bytes
//! already read from a stream, dropping would lose data. So they travel inside a
//! [`Handoff`]: the facade claims the content with `take()` as soon as the await returns,
//! and a handoff dropped unclaimed puts its content back where the next read will find it.
//! Each handoff also holds the lock that serialises reads on its stream, so the next read
//! starts only after the bytes were taken or put back: a cancelled await can neither lose
//! them nor let later bytes overtake them. (Incoming streams and datagrams need none of
//! this: the session's wait only reports them, and a synchronous try takes them.)

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use ferrovia::RecvStream;
use pyo3::{prelude::*, IntoPyObjectExt};
use tokio::sync::OwnedMutexGuard;

/// What a handoff carries, with the place it goes back to and the lock it holds.
pub(crate) enum Content {
    /// Bytes read from a stream; they go back in front of the reader's next read.
    Data(
        Bytes,
        Arc<Mutex<Option<Bytes>>>,
        OwnedMutexGuard<RecvStream>,
    ),
}

/// A value to claim with `take()`; unclaimed, it goes back to its source.
#[pyclass(frozen, module = "ferrovia._ferrovia")]
pub(crate) struct Handoff {
    content: Mutex<Option<Content>>,
}

impl Handoff {
    pub(crate) fn new(content: Content) -> Self {
        Self {
            content: Mutex::new(Some(content)),
        }
    }
}

#[pymethods]
impl Handoff {
    /// The bytes read. Only once.
    fn take(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let content = self
            .content
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        match content {
            Some(Content::Data(bytes, _, _lock)) => bytes.into_py_any(py),
            None => Err(pyo3::exceptions::PyRuntimeError::new_err(
                "this value was already taken",
            )),
        }
    }
}

impl Drop for Handoff {
    fn drop(&mut self) {
        let content = self
            .content
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        // The value goes back before the lock guard is dropped.
        match content {
            Some(Content::Data(bytes, home, lock)) => {
                {
                    let mut slot = home.lock().unwrap_or_else(|e| e.into_inner());
                    *slot = Some(match slot.take() {
                        // Cannot happen while reads are serialised, but never lose bytes.
                        Some(later) => [bytes, later].concat().into(),
                        None => bytes,
                    });
                }
                drop(lock);
            }
            None => {}
        }
    }
}
