//! Stream halves with promise-returning methods.
//!
//! Each half sits behind an async mutex because JavaScript may call `reset`/`stop` while a
//! `write`/`read` is still pending (WritableStream's abort signal fires before the
//! in-flight write settles). Those calls first raise `cancel`, which makes the pending
//! operation give up the lock, and then act on the stream.
//!
//! The byte counters behind `getStats()` live here because quinn keeps no per-stream
//! counts that it shares.

use std::{
    future::Future,
    pin::pin,
    sync::atomic::{fence, AtomicBool, AtomicI32, AtomicU64, Ordering},
    task::{Context, Poll, Waker},
};

use bytes::Bytes;
use ferrovia::{RecvStream, SendStream, StreamError};
use napi::{
    bindgen_prelude::{Buffer, BufferSlice},
    Env,
};
use napi_derive::napi;
use tokio::sync::{watch, Mutex};

use crate::error;

struct Half<T> {
    stream: Mutex<Option<T>>,
    cancel: watch::Sender<bool>,
    id: u64,
}

impl<T> Half<T> {
    fn new(stream: T, id: u64) -> Self {
        Self {
            stream: Mutex::new(Some(stream)),
            cancel: watch::channel(false).0,
            id,
        }
    }

    /// Resolves when `cancel` is raised.
    async fn cancelled(&self) {
        let mut rx = self.cancel.subscribe();
        let _ = rx.wait_for(|c| *c).await;
    }

    /// Takes the stream out after cancelling any pending operation.
    async fn take(&self) -> Option<T> {
        self.cancel.send_replace(true);
        self.stream.lock().await.take()
    }
}

/// Byte counts of a sending half (W3C `WebTransportSendStreamStats`).
#[napi(object)]
pub struct NativeSendStats {
    /// Bytes the core has taken from `write`.
    pub bytes_written: f64,
    /// Bytes sent at least once, estimated as `bytes_written`: QUIC sends what it has
    /// taken as flow and congestion control allow, but quinn does not count it per stream.
    pub bytes_sent: f64,
    /// Bytes the peer acknowledged: known only once the stream is finished and every byte
    /// is acknowledged (then `bytes_written`), 0 before.
    pub bytes_acknowledged: f64,
}

/// Byte counts of a receiving half (W3C `WebTransportReceiveStreamStats`).
#[napi(object)]
pub struct NativeRecvStats {
    /// Bytes received, as far as known: quinn does not tell how much waits in its buffer
    /// unread, so this is `bytes_read`, a lower bound.
    pub bytes_received: f64,
    /// Bytes handed to JavaScript by `read`.
    pub bytes_read: f64,
}

/// The sending half of a stream.
#[napi]
pub struct NativeSendStream {
    half: Half<SendStream>,
    /// The priority asked for last. A write waiting for credit holds the stream for as long
    /// as the peer makes it wait, which is when a new priority matters most, so whoever
    /// holds the stream applies changes (see `sync_priority`).
    priority: watch::Sender<i32>,
    /// The priority the core stream has; changed only under the stream's lock.
    applied: AtomicI32,
    written: AtomicU64,
    finished: AtomicBool,
    acknowledged: AtomicBool,
}

impl NativeSendStream {
    pub(crate) fn new(s: SendStream) -> Self {
        let id = s.id();
        Self {
            half: Half::new(s, id),
            // quinn's default.
            priority: watch::channel(0).0,
            applied: AtomicI32::new(0),
            written: AtomicU64::new(0),
            finished: AtomicBool::new(false),
            acknowledged: AtomicBool::new(false),
        }
    }

    /// Gives the core stream the priority asked for last; call with the stream locked.
    fn sync_priority(&self, stream: &SendStream) {
        let want = *self.priority.borrow();
        // A stream quinn has already forgotten (everything acknowledged) refuses; there
        // is nothing left to prioritise then.
        if self.applied.load(Ordering::Relaxed) != want && stream.set_priority(want).is_ok() {
            self.applied.store(want, Ordering::Relaxed);
        }
    }

    /// Applies the priority asked for last unless someone holds the stream.
    ///
    /// Called after each release of the lock and after each change: with the fence on
    /// both sides, either the releaser sees the change or the changer finds the lock free
    /// (or held by a write, which applies changes itself), so no change is left unapplied.
    fn try_sync_priority(&self) {
        fence(Ordering::SeqCst);
        if let Ok(guard) = self.half.stream.try_lock() {
            if let Some(s) = guard.as_ref() {
                self.sync_priority(s);
            }
        }
    }
}

#[napi]
impl NativeSendStream {
    /// The QUIC stream ID.
    #[napi(getter, catch_unwind)]
    pub fn id(&self) -> f64 {
        self.half.id as f64
    }

    /// Writes all of `data`; resolves once the core has taken every byte (flow control
    /// permitting), so a caller that awaits each write never buffers without bound.
    #[napi]
    pub async fn write(&self, data: Buffer) -> napi::Result<()> {
        // Copied because QUIC may retransmit from this buffer after the promise resolves,
        // when JavaScript is free to reuse its array.
        let chunk = Bytes::copy_from_slice(&data);
        drop(data);
        let mut changes = self.priority.subscribe();
        let mut guard = self.half.stream.lock().await;
        let stream = guard.as_mut().ok_or_else(error::stream_closed)?;
        let mut rest = &chunk[..];
        // `write` (not `write_chunk`) because it is cancel-safe: a priority change
        // interrupts a write that waits for credit without losing bytes.
        let r = loop {
            self.sync_priority(stream);
            if rest.is_empty() {
                break Ok(());
            }
            tokio::select! {
                r = stream.write(rest) => match r {
                    Ok(n) => {
                        rest = &rest[n..];
                        self.written.fetch_add(n as u64, Ordering::Relaxed);
                    }
                    Err(e) => break Err(error::from_stream(e)),
                },
                _ = changes.changed() => {}
                _ = self.half.cancelled() => break Err(error::stream_closed()),
            }
        };
        drop(guard);
        self.try_sync_priority();
        r
    }

    /// Writes what the stream can take now without waiting; returns how many bytes were
    /// taken (0 also while another call holds the stream), so `write` is awaited only for
    /// the rest.
    #[napi(catch_unwind)]
    pub fn try_write(&self, data: &[u8]) -> napi::Result<u32> {
        let Ok(mut guard) = self.half.stream.try_lock() else {
            return Ok(0);
        };
        let stream = guard.as_mut().ok_or_else(error::stream_closed)?;
        self.sync_priority(stream);
        let r = stream.try_write(data);
        drop(guard);
        self.try_sync_priority();
        let n = r.map_err(error::from_stream)?;
        self.written.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n as u32)
    }

    /// Finishes the stream (FIN) after what was written.
    #[napi]
    pub async fn finish(&self) -> napi::Result<()> {
        let mut guard = self.half.stream.lock().await;
        let stream = guard.as_mut().ok_or_else(error::stream_closed)?;
        self.sync_priority(stream);
        let r = stream.finish().map_err(error::from_stream);
        if r.is_ok() {
            self.finished.store(true, Ordering::Relaxed);
        }
        drop(guard);
        self.try_sync_priority();
        r
    }

    /// Abandons the stream (RESET_STREAM) with an application code; cancels a pending write.
    #[napi]
    pub async fn reset(&self, code: u32) -> napi::Result<()> {
        match self.half.take().await {
            Some(mut s) => match s.reset(code) {
                Ok(()) | Err(StreamError::ClosedStream) => Ok(()),
                Err(e) => Err(error::from_stream(e)),
            },
            None => Ok(()),
        }
    }

    /// Sets the send priority (higher first), at once even while a write waits for credit.
    /// A stream that is already closed keeps the value without effect.
    #[napi(catch_unwind)]
    pub fn set_priority(&self, priority: i32) {
        self.priority.send_replace(priority);
        self.try_sync_priority();
    }

    /// Byte counts so far.
    #[napi(catch_unwind)]
    pub fn stats(&self) -> NativeSendStats {
        if self.finished.load(Ordering::Relaxed) && !self.acknowledged.load(Ordering::Relaxed) {
            // After FIN nothing holds the stream for long; a busy lock just means the
            // answer comes with the next call.
            if let Ok(mut guard) = self.half.stream.try_lock() {
                if let Some(s) = guard.as_mut() {
                    // quinn's `stopped` resolves `None` once every byte after FIN is
                    // acknowledged: one look, without waiting.
                    let mut cx = Context::from_waker(Waker::noop());
                    if let Poll::Ready(Ok(None)) = pin!(s.stopped()).poll(&mut cx) {
                        self.acknowledged.store(true, Ordering::Relaxed);
                    }
                }
                drop(guard);
                self.try_sync_priority();
            }
        }
        let written = self.written.load(Ordering::Relaxed) as f64;
        NativeSendStats {
            bytes_written: written,
            bytes_sent: written,
            bytes_acknowledged: if self.acknowledged.load(Ordering::Relaxed) {
                written
            } else {
                0.0
            },
        }
    }
}

/// The receiving half of a stream.
#[napi]
pub struct NativeRecvStream {
    half: Half<RecvStream>,
    read: AtomicU64,
}

impl NativeRecvStream {
    pub(crate) fn new(s: RecvStream) -> Self {
        let id = s.id();
        Self {
            half: Half::new(s, id),
            read: AtomicU64::new(0),
        }
    }
}

#[napi]
impl NativeRecvStream {
    /// The QUIC stream ID.
    #[napi(getter, catch_unwind)]
    pub fn id(&self) -> f64 {
        self.half.id as f64
    }

    /// The data that has arrived, at most `max` bytes (waiting for at least one byte);
    /// `null` at the end of the stream (or after `stop`).
    #[napi]
    pub async fn read(&self, max: u32) -> napi::Result<Option<Buffer>> {
        let mut guard = self.half.stream.lock().await;
        let Some(stream) = guard.as_mut() else {
            return Ok(None);
        };
        tokio::select! {
            r = stream.read_available(max.max(1) as usize) => match r {
                Ok(Some(chunk)) => {
                    self.read.fetch_add(chunk.len() as u64, Ordering::Relaxed);
                    Ok(Some(Vec::from(chunk).into()))
                }
                Ok(None) => Ok(None),
                Err(e) => Err(error::from_stream(e)),
            },
            _ = self.half.cancelled() => Ok(None),
        }
    }

    /// The data that has already arrived, at most `max` bytes, without waiting; `null`
    /// when there is none (also at the end, which `read` then reports).
    #[napi(catch_unwind)]
    pub fn try_read<'env>(
        &self,
        env: &'env Env,
        max: u32,
    ) -> napi::Result<Option<BufferSlice<'env>>> {
        let Ok(mut guard) = self.half.stream.try_lock() else {
            return Ok(None);
        };
        let Some(chunk) = guard
            .as_mut()
            .and_then(|s| s.try_read_available(max.max(1) as usize))
        else {
            return Ok(None);
        };
        drop(guard);
        self.read.fetch_add(chunk.len() as u64, Ordering::Relaxed);
        BufferSlice::copy_from(env, chunk).map(Some)
    }

    /// Asks the peer to stop sending (STOP_SENDING) with an application code; a pending
    /// read resolves `null`.
    #[napi]
    pub async fn stop(&self, code: u32) -> napi::Result<()> {
        match self.half.take().await {
            Some(mut s) => match s.stop(code) {
                Ok(()) | Err(StreamError::ClosedStream) => Ok(()),
                Err(e) => Err(error::from_stream(e)),
            },
            None => Ok(()),
        }
    }

    /// Byte counts so far.
    #[napi(catch_unwind)]
    pub fn stats(&self) -> NativeRecvStats {
        let read = self.read.load(Ordering::Relaxed) as f64;
        NativeRecvStats {
            bytes_received: read,
            bytes_read: read,
        }
    }
}

/// Both halves of a bidirectional stream, taken out once each by the facade.
#[napi]
pub struct NativeBidiStream {
    send: std::sync::Mutex<Option<NativeSendStream>>,
    recv: std::sync::Mutex<Option<NativeRecvStream>>,
}

impl NativeBidiStream {
    pub(crate) fn new(send: SendStream, recv: RecvStream) -> Self {
        Self {
            send: std::sync::Mutex::new(Some(NativeSendStream::new(send))),
            recv: std::sync::Mutex::new(Some(NativeRecvStream::new(recv))),
        }
    }
}

#[napi]
impl NativeBidiStream {
    /// The sending half (once).
    #[napi(catch_unwind)]
    pub fn take_send(&self) -> napi::Result<NativeSendStream> {
        self.send
            .lock()
            .ok()
            .and_then(|mut s| s.take())
            .ok_or_else(error::stream_closed)
    }

    /// The receiving half (once).
    #[napi(catch_unwind)]
    pub fn take_recv(&self) -> napi::Result<NativeRecvStream> {
        self.recv
            .lock()
            .ok()
            .and_then(|mut s| s.take())
            .ok_or_else(|| error::invalid("the receiving half was already taken"))
    }
}
