//! Stream halves. A reader polls the core stream directly; a writer hands its data to a
//! task that owns the core stream, so `write()` can stay synchronous (as in asyncio) while
//! the amount of data buffered on the way stays under a limit the facade enforces.

use std::sync::{
    atomic::{AtomicBool, AtomicUsize, Ordering},
    Arc, Mutex,
};

use bytes::Bytes;
use ferrovia::{RecvStream, SendStream, StreamError};
use pyo3::{
    exceptions::{PyBufferError, PyValueError},
    prelude::*,
};
use tokio::sync::{mpsc, watch, Notify};

use crate::{
    awaitable,
    errors::{Failure, IntoPyResult},
    handoff::{Content, Handoff},
    runtime, try_now,
};

/// The largest chunk one read hands to Python.
const MAX_READ: usize = 1 << 20;

/// What a queued piece costs beyond its bytes (the queue entry and its allocation), counted
/// in the write buffer so that many tiny writes cannot queue without bound under the
/// high-water mark.
const CHUNK_COST: usize = 64;

struct ReaderShared {
    stream: Arc<tokio::sync::Mutex<RecvStream>>,
    /// Bytes a cancelled read had already taken; the next read returns them first.
    unread: Arc<Mutex<Option<Bytes>>>,
    id: u64,
    /// A STOP_SENDING code asked for while a read held the stream.
    pending_stop: Mutex<Option<u32>>,
    stop_requested: Notify,
    stopped: AtomicBool,
}

/// The receiving half of a stream.
#[pyclass(frozen, module = "ferrovia._ferrovia")]
pub(crate) struct Reader {
    shared: Arc<ReaderShared>,
}

impl Reader {
    pub(crate) fn new(stream: RecvStream) -> Self {
        Self {
            shared: Arc::new(ReaderShared {
                id: stream.id(),
                stream: Arc::new(tokio::sync::Mutex::new(stream)),
                unread: Default::default(),
                pending_stop: Mutex::new(None),
                stop_requested: Notify::new(),
                stopped: AtomicBool::new(false),
            }),
        }
    }
}

fn stopped_locally() -> Failure {
    Failure::Local("the stream was stopped by this side".into())
}

impl ReaderShared {
    /// Up to `max` bytes put back by a cancelled read.
    fn take_unread(&self, max: usize) -> Option<Bytes> {
        let mut slot = self.unread.lock().unwrap_or_else(|e| e.into_inner());
        let mut bytes = slot.take()?;
        if bytes.len() > max {
            *slot = Some(bytes.split_off(max));
        }
        Some(bytes)
    }

    /// The next bytes, with the stream still locked: the lock goes with the bytes into
    /// a handoff, so no later read runs before they are taken or put back.
    async fn read(
        &self,
        max: usize,
    ) -> Result<(Bytes, tokio::sync::OwnedMutexGuard<RecvStream>), Failure> {
        if self.stopped.load(Ordering::Acquire) {
            return Err(stopped_locally());
        }
        let mut stream = self.stream.clone().lock_owned().await;
        if let Some(bytes) = self.take_unread(max) {
            return Ok((bytes, stream));
        }
        let stop = self.stop_requested.notified();
        tokio::pin!(stop);
        stop.as_mut().enable();
        if let Some(code) = self.take_pending_stop() {
            let _ = stream.stop(code);
            return Err(stopped_locally());
        }
        tokio::select! {
            r = stream.read_chunk(max) => Ok((r?.unwrap_or_default(), stream)),
            () = stop => {
                if let Some(code) = self.take_pending_stop() {
                    let _ = stream.stop(code);
                }
                Err(stopped_locally())
            }
        }
    }

    fn take_pending_stop(&self) -> Option<u32> {
        self.pending_stop
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
    }
}

fn check_max(max: usize) -> PyResult<usize> {
    if max == 0 {
        return Err(PyValueError::new_err("max must be at least 1"));
    }
    Ok(max.min(MAX_READ))
}

#[pymethods]
impl Reader {
    /// The QUIC stream ID.
    #[getter]
    fn id(&self) -> u64 {
        self.shared.id
    }

    /// Bytes already received (at most `max`), `b""` at the end of the stream, or None
    /// when nothing is buffered yet.
    fn try_read(&self, py: Python<'_>, max: usize) -> PyResult<Option<Bytes>> {
        let max = check_max(max)?;
        if self.shared.stopped.load(Ordering::Acquire) {
            return Err(stopped_locally().into_pyerr(py));
        }
        let Ok(mut stream) = self.shared.stream.try_lock() else {
            return Ok(None);
        };
        if let Some(bytes) = self.shared.take_unread(max) {
            return Ok(Some(bytes));
        }
        match try_now(py, stream.read_chunk(max)) {
            Some(r) => r.map(|c| Some(c.unwrap_or_default())).py_err(py),
            None => Ok(None),
        }
    }

    /// Resolves to a handoff of the next bytes (at most `max`), `b""` at the end of the
    /// stream.
    fn read<'py>(&self, py: Python<'py>, max: usize) -> PyResult<Bound<'py, PyAny>> {
        let max = check_max(max)?;
        let shared = self.shared.clone();
        awaitable(py, async move {
            let (bytes, guard) = shared.read(max).await?;
            Ok(Handoff::new(Content::Data(
                bytes,
                shared.unread.clone(),
                guard,
            )))
        })
    }

    /// Sends STOP_SENDING with an application code; pending and later reads fail.
    fn stop(&self, py: Python<'_>, code: u32) -> PyResult<()> {
        if self.shared.stopped.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        match self.shared.stream.try_lock() {
            Ok(mut stream) => stream.stop(code).py_err(py),
            Err(_) => {
                // A read holds the stream: it performs the stop when woken.
                *self
                    .shared
                    .pending_stop
                    .lock()
                    .unwrap_or_else(|e| e.into_inner()) = Some(code);
                self.shared.stop_requested.notify_one();
                Ok(())
            }
        }
    }
}

/// What the writer task is told, in order.
enum Chunk {
    Data(Bytes),
    Finish,
}

/// How the writer task ended.
#[derive(Clone)]
enum Done {
    /// FIN sent and acknowledged by the peer.
    Finished,
    /// The stream was reset by this side.
    Reset,
    /// Writing failed.
    Failed(StreamError),
}

struct WriterShared {
    id: u64,
    buffered: AtomicUsize,
    high_water: AtomicUsize,
    low_water: AtomicUsize,
    progress: Notify,
    error: Mutex<Option<StreamError>>,
    eof: AtomicBool,
    reset: Mutex<Option<u32>>,
    reset_requested: Notify,
    priority: Mutex<Option<i32>>,
    done: watch::Sender<Option<Done>>,
}

/// The sending half of a stream.
#[pyclass(frozen, module = "ferrovia._ferrovia")]
pub(crate) struct Writer {
    shared: Arc<WriterShared>,
    tx: mpsc::UnboundedSender<Chunk>,
}

const DEFAULT_HIGH_WATER: usize = 1 << 20;

impl Writer {
    pub(crate) fn new(stream: SendStream) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        let shared = Arc::new(WriterShared {
            id: stream.id(),
            buffered: AtomicUsize::new(0),
            high_water: AtomicUsize::new(DEFAULT_HIGH_WATER),
            low_water: AtomicUsize::new(DEFAULT_HIGH_WATER / 4),
            progress: Notify::new(),
            error: Mutex::new(None),
            eof: AtomicBool::new(false),
            reset: Mutex::new(None),
            reset_requested: Notify::new(),
            priority: Mutex::new(None),
            done: watch::channel(None).0,
        });
        runtime().spawn(write_loop(stream, rx, shared.clone()));
        Self { shared, tx }
    }

    fn error(&self) -> Option<StreamError> {
        self.shared
            .error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

impl WriterShared {
    fn take_reset(&self) -> Option<u32> {
        self.reset.lock().unwrap_or_else(|e| e.into_inner()).take()
    }

    fn fail(&self, e: StreamError) {
        *self.error.lock().unwrap_or_else(|e| e.into_inner()) = Some(e);
    }
}

async fn write_loop(
    mut stream: SendStream,
    mut rx: mpsc::UnboundedReceiver<Chunk>,
    shared: Arc<WriterShared>,
) {
    let done = 'outer: loop {
        let reset = shared.reset_requested.notified();
        tokio::pin!(reset);
        reset.as_mut().enable();
        if let Some(code) = shared.take_reset() {
            let _ = stream.reset(code);
            break Done::Reset;
        }
        if let Some(p) = shared
            .priority
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            let _ = stream.set_priority(p);
        }
        let chunk = tokio::select! {
            biased;
            () = reset.as_mut() => continue,
            c = rx.recv() => c,
        };
        match chunk {
            Some(Chunk::Data(data)) => {
                let len = data.len() + CHUNK_COST;
                tokio::select! {
                    biased;
                    () = reset.as_mut() => {
                        shared.buffered.fetch_sub(len, Ordering::AcqRel);
                        continue;
                    }
                    r = stream.write_chunk(data) => {
                        shared.buffered.fetch_sub(len, Ordering::AcqRel);
                        if let Err(e) = r {
                            break 'outer Done::Failed(e);
                        }
                    }
                }
                shared.progress.notify_waiters();
            }
            Some(Chunk::Finish) | None => {
                // A dropped writer finishes the stream too, like the core's send stream.
                let _ = stream.finish();
                tokio::select! {
                    biased;
                    () = reset.as_mut() => continue,
                    r = stream.stopped() => break match r {
                        Ok(None) => Done::Finished,
                        Ok(Some(code)) => Done::Failed(StreamError::Stopped { code }),
                        Err(e) => Done::Failed(e),
                    },
                }
            }
        }
    };
    if let Done::Failed(e) = &done {
        shared.fail(e.clone());
    }
    shared.buffered.store(0, Ordering::Release);
    shared.progress.notify_waiters();
    shared.done.send_replace(Some(done));
}

#[pymethods]
impl Writer {
    /// The QUIC stream ID.
    #[getter]
    fn id(&self) -> u64 {
        self.shared.id
    }

    /// Bytes handed to `write` that the stream has not taken yet.
    #[getter]
    fn buffered(&self) -> usize {
        self.shared.buffered.load(Ordering::Acquire)
    }

    /// `(high, low)` water marks.
    #[getter]
    fn write_buffer_limits(&self) -> (usize, usize) {
        (
            self.shared.high_water.load(Ordering::Acquire),
            self.shared.low_water.load(Ordering::Acquire),
        )
    }

    /// Sets the water marks: `write` refuses data while more than `high` bytes wait, and
    /// `wait_drained` resolves at `low` or below.
    fn set_write_buffer_limits(&self, high: usize, low: usize) -> PyResult<()> {
        if high == 0 || low > high {
            return Err(PyValueError::new_err(format!(
                "need 0 <= low <= high and high > 0, got high={high}, low={low}"
            )));
        }
        self.shared.high_water.store(high, Ordering::Release);
        self.shared.low_water.store(low, Ordering::Release);
        Ok(())
    }

    /// Queues data; fails at once if the stream failed, was finished or reset, or if more
    /// than the high-water mark is already waiting.
    fn write(&self, py: Python<'_>, data: Bytes) -> PyResult<()> {
        if let Some(e) = self.error() {
            return Err(Failure::Stream(e).into_pyerr(py));
        }
        if self.shared.eof.load(Ordering::Acquire) {
            return Err(
                Failure::Local("the stream was already finished or reset".into()).into_pyerr(py),
            );
        }
        let buffered = self.shared.buffered.load(Ordering::Acquire);
        let high = self.shared.high_water.load(Ordering::Acquire);
        if buffered > high {
            return Err(PyBufferError::new_err(format!(
                "{buffered} bytes are waiting to be sent (limit {high}): await drain() before writing more"
            )));
        }
        if data.is_empty() {
            return Ok(());
        }
        self.shared
            .buffered
            .fetch_add(data.len() + CHUNK_COST, Ordering::AcqRel);
        if self.tx.send(Chunk::Data(data)).is_err() {
            self.shared.buffered.store(0, Ordering::Release);
            let e = self.error().unwrap_or(StreamError::ClosedStream);
            return Err(Failure::Stream(e).into_pyerr(py));
        }
        Ok(())
    }

    /// Resolves once at most the low-water mark is waiting; raises if the stream failed.
    fn wait_drained<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let shared = self.shared.clone();
        awaitable(py, async move {
            loop {
                let progress = shared.progress.notified();
                tokio::pin!(progress);
                progress.as_mut().enable();
                if let Some(e) = shared
                    .error
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .clone()
                {
                    return Err(Failure::Stream(e));
                }
                if shared.buffered.load(Ordering::Acquire)
                    <= shared.low_water.load(Ordering::Acquire)
                {
                    return Ok(());
                }
                progress.await;
            }
        })
    }

    /// Raises the error that ended writing, if any.
    fn check(&self, py: Python<'_>) -> PyResult<()> {
        match self.error() {
            Some(e) => Err(Failure::Stream(e).into_pyerr(py)),
            None => Ok(()),
        }
    }

    /// Finishes the stream (FIN) after the data written so far.
    fn write_eof(&self) {
        if !self.shared.eof.swap(true, Ordering::AcqRel) {
            let _ = self.tx.send(Chunk::Finish);
        }
    }

    /// Whether `write_eof` or `reset` was called.
    fn is_closing(&self) -> bool {
        self.shared.eof.load(Ordering::Acquire)
    }

    /// Abandons the stream with an application code; buffered data is discarded.
    fn reset(&self, code: u32) {
        self.shared.eof.store(true, Ordering::Release);
        *self.shared.reset.lock().unwrap_or_else(|e| e.into_inner()) = Some(code);
        self.shared.reset_requested.notify_one();
    }

    /// Sets the send priority (higher goes first).
    fn set_priority(&self, priority: i32) {
        // Applied before the next chunk is written; a write in progress is not interrupted.
        *self
            .shared
            .priority
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(priority);
    }

    /// Resolves once the stream is over: True when the peer acknowledged everything after
    /// `write_eof`, False when it was reset by this side; raises if writing failed.
    fn wait_closed<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let mut done = self.shared.done.subscribe();
        awaitable(py, async move {
            let d = done
                .wait_for(|d| d.is_some())
                .await
                .map(|d| d.clone())
                .ok()
                .flatten();
            match d {
                Some(Done::Finished) => Ok(true),
                Some(Done::Reset) | None => Ok(false),
                Some(Done::Failed(e)) => Err(Failure::Stream(e)),
            }
        })
    }
}
