//! An accepted session: incoming and outgoing streams, datagrams, close and drain.

use bytes::Bytes;
use pyo3::{prelude::*, types::PyDict};

use ferrovia::{RecvStream, SendStream};

use crate::{
    awaitable,
    errors::{close_tuple, Failure, IntoPyResult},
    handoff::{self, AcceptLock, Content, Handoff, Returned},
    stream::{Reader, Writer},
    try_now,
};

/// An accepted WebTransport session.
#[pyclass(frozen, module = "ferrovia._ferrovia")]
pub(crate) struct Session {
    inner: ferrovia::Session,
    /// Streams whose accept was cancelled after they arrived.
    returned_bi: Returned<(SendStream, RecvStream)>,
    returned_uni: Returned<RecvStream>,
    accepting_bi: AcceptLock,
    accepting_uni: AcceptLock,
    /// Datagrams whose receive was cancelled after they arrived.
    returned_datagrams: Returned<Bytes>,
    receiving: AcceptLock,
}

impl Session {
    pub(crate) fn new(inner: ferrovia::Session) -> Self {
        Self {
            inner,
            returned_bi: Default::default(),
            returned_uni: Default::default(),
            accepting_bi: Default::default(),
            accepting_uni: Default::default(),
            returned_datagrams: Default::default(),
            receiving: Default::default(),
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

    /// Resolves to a handoff of `(reader, writer)` for the next bidirectional stream the
    /// client opens.
    fn accept_bi<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let s = self.inner.clone();
        let home = self.returned_bi.clone();
        let lock = self.accepting_bi.clone();
        awaitable(py, async move {
            let guard = lock.lock_owned().await;
            let (send, recv) = match handoff::pop(&home) {
                Some(pair) => pair,
                None => s.accept_bi().await?,
            };
            Ok(Handoff::new(Content::Bidi(send, recv, home, guard)))
        })
    }

    /// Resolves to a handoff of a reader for the next unidirectional stream the client
    /// opens.
    fn accept_uni<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let s = self.inner.clone();
        let home = self.returned_uni.clone();
        let lock = self.accepting_uni.clone();
        awaitable(py, async move {
            let guard = lock.lock_owned().await;
            let recv = match handoff::pop(&home) {
                Some(recv) => recv,
                None => s.accept_uni().await?,
            };
            Ok(Handoff::new(Content::Uni(recv, home, guard)))
        })
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

    /// A datagram already received, or None (also while a receive is pending).
    fn try_receive_datagram(&self, py: Python<'_>) -> PyResult<Option<Bytes>> {
        let Ok(_guard) = self.receiving.try_lock() else {
            return Ok(None);
        };
        if let Some(d) = handoff::pop(&self.returned_datagrams) {
            return Ok(Some(d));
        }
        match try_now(py, self.inner.recv_datagram()) {
            Some(r) => r.py_err(py).map(Some),
            None => Ok(None),
        }
    }

    /// Resolves to a handoff of the next datagram.
    fn receive_datagram<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let s = self.inner.clone();
        let home = self.returned_datagrams.clone();
        let lock = self.receiving.clone();
        awaitable(py, async move {
            let guard = lock.lock_owned().await;
            let d = match handoff::pop(&home) {
                Some(d) => d,
                None => s.recv_datagram().await?,
            };
            Ok(Handoff::new(Content::Datagram(d, home, guard)))
        })
    }

    /// Closes with an application code and reason.
    fn close(&self, code: u32, reason: &str) {
        self.inner.close(code, reason);
    }

    /// Sends DRAIN_WEBTRANSPORT_SESSION.
    fn drain(&self) {
        self.inner.drain();
    }

    /// Resolves when the client asks to drain.
    fn wait_draining<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let s = self.inner.clone();
        awaitable(py, async move {
            s.draining().await;
            Ok(())
        })
    }

    /// Resolves to `(code, reason, initiator)` once the session has ended.
    fn wait_closed<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let s = self.inner.clone();
        awaitable(py, async move { Ok(close_tuple(&s.closed().await)) })
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
