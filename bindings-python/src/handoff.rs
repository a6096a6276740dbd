//! Values that survive a cancelled await.
//!
//! An awaitable's value is produced on the runtime and converted to Python before the
//! event loop learns that the awaiting task was cancelled; asyncio then drops it. For an
//! accepted stream or bytes already read, dropping would lose data. So such values travel
//! inside a [`Handoff`]: the facade claims the content with `take()` as soon as the await
//! returns, and a handoff dropped unclaimed puts its content back where the next accept or
//! read will find it. Each handoff also holds the lock that serialises accepts (or reads)
//! on its source, so the next accept or read starts only after the value was taken or put
//! back: a cancelled await can neither lose a value nor let a later one overtake it.

use std::{
    collections::VecDeque,
    sync::{Arc, Mutex},
};

use bytes::Bytes;
use ferrovia::{RecvStream, SendStream};
use pyo3::{prelude::*, IntoPyObjectExt};
use tokio::sync::OwnedMutexGuard;

use crate::stream::{Reader, Writer};

/// Streams put back for the next accept.
pub(crate) type Returned<T> = Arc<Mutex<VecDeque<T>>>;

/// Pops a stream put back by a cancelled accept, if any.
pub(crate) fn pop<T>(returned: &Returned<T>) -> Option<T> {
    returned
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .pop_front()
}

/// The lock that serialises accepts of one kind on a session.
pub(crate) type AcceptLock = Arc<tokio::sync::Mutex<()>>;

/// What a handoff carries, with the place it goes back to and the lock it holds.
pub(crate) enum Content {
    /// An incoming bidirectional stream.
    Bidi(
        SendStream,
        RecvStream,
        Returned<(SendStream, RecvStream)>,
        OwnedMutexGuard<()>,
    ),
    /// An incoming unidirectional stream.
    Uni(RecvStream, Returned<RecvStream>, OwnedMutexGuard<()>),
    /// Bytes read from a stream; they go back in front of the reader's next read.
    Data(
        Bytes,
        Arc<Mutex<Option<Bytes>>>,
        OwnedMutexGuard<RecvStream>,
    ),
    /// A received datagram; it goes back in front of the next receive.
    Datagram(Bytes, Returned<Bytes>, OwnedMutexGuard<()>),
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
        let content = self
            .content
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        match content {
            Some(Content::Bidi(send, recv, _, _lock)) => {
                (Reader::new(recv), Writer::new(send)).into_py_any(py)
            }
            Some(Content::Uni(recv, _, _lock)) => Reader::new(recv).into_py_any(py),
            Some(Content::Data(bytes, _, _lock)) => bytes.into_py_any(py),
            Some(Content::Datagram(bytes, _, _lock)) => bytes.into_py_any(py),
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
        // Each arm puts the value back before its lock guard is dropped at the arm's end.
        match content {
            Some(Content::Bidi(send, recv, home, lock)) => {
                home.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push_front((send, recv));
                drop(lock);
            }
            Some(Content::Uni(recv, home, lock)) => {
                home.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push_front(recv);
                drop(lock);
            }
            Some(Content::Datagram(bytes, home, lock)) => {
                home.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push_front(bytes);
                drop(lock);
            }
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
