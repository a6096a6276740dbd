//! Messages on a stream: the core's decoder and encoder (`ferrovia::message`), so the
//! framing is written once. The facade feeds each chunk it reads to `push`, which returns
//! the messages it completed, at most `MAX_MESSAGE_BATCH` at a time (`take_batch` returns the
//! rest): one call per batch, not per message.

use bytes::Bytes;
use ferrovia::message::{encode_message, MessageDecoder as CoreDecoder, MAX_MESSAGE_BATCH};
use pyo3::prelude::*;
use std::sync::Mutex;

use crate::errors::IntoPyResult;

/// Splits a stream's bytes into length-prefixed messages.
#[pyclass(frozen, module = "ferrovia._ferrovia")]
pub(crate) struct MessageDecoder {
    inner: Mutex<CoreDecoder>,
}

impl MessageDecoder {
    fn lock(&self) -> std::sync::MutexGuard<'_, CoreDecoder> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[pymethods]
impl MessageDecoder {
    #[new]
    fn new(max_size: usize) -> Self {
        Self {
            inner: Mutex::new(CoreDecoder::new(max_size)),
        }
    }

    /// Takes the next chunk of the stream; returns the first batch of messages completed.
    fn push(&self, py: Python<'_>, chunk: &[u8]) -> PyResult<Vec<Bytes>> {
        self.lock().push(chunk);
        self.take_batch(py)
    }

    /// The next batch of whole messages already pushed; empty when there are none. A
    /// failure comes after the messages before it.
    fn take_batch(&self, py: Python<'_>) -> PyResult<Vec<Bytes>> {
        self.lock().decode_batch(MAX_MESSAGE_BATCH).py_err(py)
    }

    /// Checks the end of the stream: raises when it came inside a message.
    fn finish(&self, py: Python<'_>) -> PyResult<()> {
        self.lock().finish().py_err(py)
    }
}

/// One message as it goes on the stream: its length prefix, then `data`.
#[pyfunction]
pub(crate) fn encode_message_frame(data: &[u8]) -> Bytes {
    encode_message(data)
}
