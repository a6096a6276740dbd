//! Messages on a stream: the core's decoder and encoder (`ferrovia::message`), so the
//! framing is written once. The facade feeds each chunk it reads to `push`, which returns
//! every message the chunk completed: one call per chunk, not per message.

use bytes::Bytes;
use ferrovia::message::{encode_message, MessageDecoder as CoreDecoder};
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

    /// Takes the next chunk of the stream; returns the messages it completed, in order.
    fn push(&self, py: Python<'_>, chunk: &[u8]) -> PyResult<Vec<Bytes>> {
        let mut d = self.lock();
        d.push(chunk);
        let mut out = Vec::new();
        while let Some(m) = d.decode().py_err(py)? {
            out.push(m);
        }
        Ok(out)
    }

    /// Checks the end of the stream: raises when it came inside a message.
    fn finish(&self, py: Python<'_>) -> PyResult<()> {
        self.lock().finish().py_err(py)
    }

    /// How many more bytes the message being received needs (at least 1).
    #[getter]
    fn wanted(&self) -> usize {
        self.lock().wanted()
    }
}

/// One message as it goes on the stream: its length prefix, then `data`.
#[pyfunction]
pub(crate) fn encode_message_frame(data: &[u8]) -> Bytes {
    encode_message(data)
}
