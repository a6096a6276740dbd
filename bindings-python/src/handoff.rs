//! Values that survive a cancelled await.
//!
//! An awaitable's value is produced on the runtime and converted to Python before the
//! event loop learns that the awaiting task was cancelled; asyncio then drops it. For an
//! accepted stream or bytes already read, dropping would lose data. So such values travel
//! inside a [`Handoff`]: the facade claims the content with `take()` as soon as the await
//! returns, and a handoff dropped unclaimed puts its content back where the next accept or
//! read will find it.

use std::{
    collections::VecDeque,
    sync::{Arc, Mutex},
};

use bytes::Bytes;
use ferrovia::{RecvStream, SendStream};
use pyo3::{prelude::*, IntoPyObjectExt};

use crate::stream::{Reader, Writer};

/// Streams put back for the next accept.
pub(crate) type Returned<T> = Arc<Mutex<VecDeque<T>>>;

/// Pops a stream put back by a cancelled accept, if any.
pub(crate) fn pop<T>(returned: &Returned<T>) -> Option<T> {
    returned.lock().unwrap_or_else(|e| e.into_inner()).pop_front()
}

/// What a handoff carries, with the place it goes back to.
pub(crate) enum Content {
    /// An incoming bidirectional stream.
    Bidi(SendStream, RecvStream, Returned<(SendStream, RecvStream)>),
    /// An incoming unidirectional stream.
    Uni(RecvStream, Returned<RecvStream>),
    /// Bytes read from a stream; they go back in front of the reader's next read.
    Data(Bytes, Arc<Mutex<Option<Bytes>>>),
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
    /// The content: `(Reader, Writer)`, a `Reader`, or `bytes`. Only once.
    fn take(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let content = self.content.lock().unwrap_or_else(|e| e.into_inner()).take();
        match content {
            Some(Content::Bidi(send, recv, _)) => {
                (Reader::new(recv), Writer::new(send)).into_py_any(py)
            }
            Some(Content::Uni(recv, _)) => Reader::new(recv).into_py_any(py),
            Some(Content::Data(bytes, _)) => bytes.into_py_any(py),
            None => Err(pyo3::exceptions::PyRuntimeError::new_err(
                "this value was already taken",
            )),
        }
    }
}

impl Drop for Handoff {
    fn drop(&mut self) {
        let content = self.content.get_mut().unwrap_or_else(|e| e.into_inner()).take();
        match content {
            Some(Content::Bidi(send, recv, home)) => home
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push_front((send, recv)),
            Some(Content::Uni(recv, home)) => home
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push_front(recv),
            Some(Content::Data(bytes, home)) => {
                let mut slot = home.lock().unwrap_or_else(|e| e.into_inner());
                *slot = Some(match slot.take() {
                    // Cannot happen while reads are serialised, but never lose bytes.
                    Some(later) => [bytes, later].concat().into(),
                    None => bytes,
                });
            }
            None => {}
        }
    }
}
