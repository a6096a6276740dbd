//! An accepted session: incoming and outgoing streams, datagrams, close and drain.

use std::sync::Arc;

use bytes::Bytes;
use pyo3::{prelude::*, types::PyDict};

use ferrovia::{Interest, Readiness, SessionError};

use crate::{
    awaitable,
    errors::{close_tuple, Failure, IntoPyResult},
    stream::{Reader, Writer},
    try_now,
};

/// An accepted WebTransport session.
#[pyclass(frozen, module = "ferrovia._ferrovia")]
pub(crate) struct Session {
    inner: ferrovia::Session,
    interest: Arc<Interest>,
}

impl Session {
    pub(crate) fn new(inner: ferrovia::Session) -> Self {
        // A session stays open until either side closes it or its connection ends, whether
        // or not Python still refers to it (as in Node): this clone lives until then.
        let keeper = inner.clone();
        crate::runtime().spawn(async move {
            keeper.closed().await;
        });
        Self {
            inner,
            interest: Default::default(),
        }
    }
}

#[pymethods]
impl Session {
    #[getter]
    fn id(&self) -> u64 {
        self.inner.id()
    }

    #[getter]
    fn path(&self) -> &str {
        self.inner.path()
    }

    /// `webtransport` or `qmux`.
    #[getter]
    fn transport(&self) -> &'static str {
        self.inner.transport().as_str()
    }

    /// The subprotocol chosen at accept, if any.
    #[getter]
    fn protocol(&self) -> Option<&str> {
        self.inner.protocol()
    }

    #[getter]
    fn remote_address(&self) -> (String, u16) {
        let a = self.inner.remote_addr();
        (a.ip().to_string(), a.port())
    }

    #[getter]
    fn max_datagram_size(&self) -> usize {
        self.inner.max_datagram_size()
    }

    #[getter]
    fn is_draining(&self) -> bool {
        self.inner.is_draining()
    }

    /// `(code, reason, initiator)` once the session has ended, else None.
    #[getter]
    fn close_info(&self) -> Option<(u32, String, &'static str)> {
        self.inner.close_info().as_ref().map(close_tuple)
    }

    /// Resolves once something the session's interest names is ready, to what is (the
    /// `READY_*` bits of this module, the core's `Readiness`; `READY_CLOSED` is always set
    /// once the session has ended). The facade sets the interest first (`set_interest`) and
    /// keeps at most one of these pending per session instead of one wait per kind (each
    /// pending future holds a task and a way back into the event loop), widening or
    /// narrowing it in place, then takes what is ready with the synchronous tries.
    fn ready<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let s = self.inner.clone();
        let interest = self.interest.clone();
        awaitable(py, async move { Ok(s.ready_with(&interest).await.bits()) })
    }

    /// Widens or narrows what the pending (or the next) `ready` waits for, without ending
    /// it: replacing the wait would cost a new future and task.
    fn set_interest(&self, interest: u8) {
        self.interest.set(Readiness::from_bits(interest));
    }

    /// The next bidirectional stream the client opened as `(reader, writer)`, or None when
    /// none is queued; raises `SessionClosedError` once the session has ended.
    fn try_accept_bi(&self, py: Python<'_>) -> PyResult<Option<(Reader, Writer)>> {
        let pair = self.inner.try_accept_bi().py_err(py)?;
        Ok(pair.map(|(send, recv)| (Reader::new(recv), Writer::new(send))))
    }

    /// A reader of the next unidirectional stream the client opened, or None when none is
    /// queued; raises `SessionClosedError` once the session has ended.
    fn try_accept_uni(&self, py: Python<'_>) -> PyResult<Option<Reader>> {
        Ok(self.inner.try_accept_uni().py_err(py)?.map(Reader::new))
    }

    /// Resolves to `(reader, writer)` of a new bidirectional stream.
    fn open_bi<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let s = self.inner.clone();
        awaitable(py, async move {
            let (send, recv) = s.open_bi().await?;
            Ok((Reader::new(recv), Writer::new(send)))
        })
    }

    /// Resolves to a writer of a new unidirectional stream.
    fn open_uni<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let s = self.inner.clone();
        awaitable(py, async move { Ok(Writer::new(s.open_uni().await?)) })
    }

    /// Sends a datagram if the send buffer has room now: True when sent, False when the
    /// caller must await `send_datagram`.
    fn try_send_datagram(&self, py: Python<'_>, data: Bytes) -> PyResult<bool> {
        let s = &self.inner;
        match try_now(py, s.send_datagram(&data)) {
            Some(r) => r.py_err(py).map(|()| true),
            None => Ok(false),
        }
    }

    /// Sends a datagram, waiting while the send buffer is full.
    fn send_datagram<'py>(&self, py: Python<'py>, data: Bytes) -> PyResult<Bound<'py, PyAny>> {
        let s = self.inner.clone();
        awaitable(py, async move {
            s.send_datagram(&data).await.map_err(Failure::from)
        })
    }

    /// A datagram already received, or None when none is queued; raises
    /// `SessionClosedError` once the session has ended.
    fn try_receive_datagram(&self, py: Python<'_>) -> PyResult<Option<Bytes>> {
        if let Some(d) = self.inner.try_recv_datagram() {
            return Ok(Some(d));
        }
        // Looked at after the queue, so datagrams that came before the end are still read.
        match self.inner.close_info() {
            Some(info) => Err(Failure::from(SessionError::Closed(info)).into_pyerr(py)),
            None => Ok(None),
        }
    }

    /// Closes with an application code and reason.
    fn close(&self, code: u32, reason: &str) {
        self.inner.close(code, reason);
    }

    /// Sends DRAIN_WEBTRANSPORT_SESSION.
    fn drain(&self) {
        self.inner.drain();
    }

    /// Connection statistics as a dict.
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let st = self.inner.stats();
        let d = PyDict::new(py);
        d.set_item("rtt", st.rtt.as_secs_f64())?;
        d.set_item("bytes_sent", st.bytes_sent)?;
        d.set_item("bytes_received", st.bytes_received)?;
        d.set_item("packets_sent", st.packets_sent)?;
        d.set_item("packets_lost", st.packets_lost)?;
        d.set_item("congestion_window", st.congestion_window)?;
        d.set_item("mtu", st.mtu)?;
        d.set_item("datagrams_dropped", st.datagrams_dropped)?;
        Ok(d)
    }
}
