//! Stream halves with promise-returning methods.
//!
//! Each half sits behind an async mutex because JavaScript may call `reset`/`stop` while a
//! `write`/`read` is still pending (WritableStream's abort signal fires before the
//! in-flight write settles). Those calls first raise `cancel`, which makes the pending
//! operation give up the lock, and then act on the stream.

use bytes::Bytes;
use ferrovia::{RecvStream, SendStream, StreamError};
use napi::bindgen_prelude::Buffer;
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

/// The sending half of a stream.
#[napi]
pub struct NativeSendStream {
    half: Half<SendStream>,
}

impl NativeSendStream {
    pub(crate) fn new(s: SendStream) -> Self {
        let id = s.id();
        Self {
            half: Half::new(s, id),
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
        let mut guard = self.half.stream.lock().await;
        let stream = guard.as_mut().ok_or_else(error::stream_closed)?;
        tokio::select! {
            r = stream.write_chunk(chunk) => r.map_err(error::from_stream),
            _ = self.half.cancelled() => Err(error::stream_closed()),
        }
    }

    /// Finishes the stream (FIN) after what was written.
    #[napi]
    pub async fn finish(&self) -> napi::Result<()> {
        let mut guard = self.half.stream.lock().await;
        let stream = guard.as_mut().ok_or_else(error::stream_closed)?;
        stream.finish().map_err(error::from_stream)
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

    /// Sets the send priority (higher first).
    #[napi]
    pub async fn set_priority(&self, priority: i32) -> napi::Result<()> {
        let guard = self.half.stream.lock().await;
        let stream = guard.as_ref().ok_or_else(error::stream_closed)?;
        stream.set_priority(priority).map_err(error::from_stream)
    }
}

/// The receiving half of a stream.
#[napi]
pub struct NativeRecvStream {
    half: Half<RecvStream>,
}

impl NativeRecvStream {
    pub(crate) fn new(s: RecvStream) -> Self {
        let id = s.id();
        Self {
            half: Half::new(s, id),
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
                Ok(Some(chunk)) => Ok(Some(Vec::from(chunk).into())),
                Ok(None) => Ok(None),
                Err(e) => Err(error::from_stream(e)),
            },
            _ = self.half.cancelled() => Ok(None),
        }
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
