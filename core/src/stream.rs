//! WebTransport streams: QUIC streams that carry a session header, with application error
//! codes mapped to and from the HTTP/3 code space.

use std::{future::Future, sync::Arc};

use bytes::Bytes;
use tokio::sync::watch;

use crate::{
    close::{wait_closed, CloseInfo},
    error::StreamError,
    qmux::{QError, QRecv, QSend},
};

/// The session a stream belongs to, as the stream sees it. Streams keep it alive (a session
/// closes when its last handle, streams included, is gone) and ask it for what they share.
/// The session implements it, so this module sits below the session's and never names it.
pub(crate) trait StreamOwner: Send + Sync + std::fmt::Debug {
    /// The session's end, once it has one.
    fn closed_rx(&self) -> watch::Receiver<Option<CloseInfo>>;
    /// Keeps delivering a finished stream whose handle is gone.
    fn track_unflushed(&self, stream: RawSend);
    /// The runtime the session's tasks run on.
    fn runtime(&self) -> &tokio::runtime::Handle;
    /// The QUIC connection under an HTTP/3 session (`None` over QMux).
    fn quic_connection(&self) -> Option<&quinn::Connection>;
}

/// WT_SESSION_GONE: streams of a session that has ended are reset with this HTTP/3 code.
pub const WT_SESSION_GONE: u64 = 0x170d7b68;
/// WT_BUFFERED_STREAM_REJECTED: a stream for an unknown session that could not be buffered.
pub const WT_BUFFERED_STREAM_REJECTED: u64 = 0x3994bd84;

/// Maps a WebTransport application error code into the HTTP/3 error code space.
pub fn error_to_http3(code: u32) -> u64 {
    web_transport_proto::error_to_http3(code)
}

/// Maps an HTTP/3 error code back to a WebTransport application code; codes outside the
/// WebTransport range (or reserved GREASE points) map to 0, as the protocol asks.
pub fn error_from_http3(code: u64) -> u32 {
    let first = web_transport_proto::error_to_http3(0);
    if code >= first && (code - first) % 0x1f == 0x1e {
        return 0; // a reserved codepoint inside the range
    }
    web_transport_proto::error_from_http3(code).unwrap_or(0)
}

fn quic_code(code: u64) -> quinn::VarInt {
    quinn::VarInt::from_u64(code).unwrap_or(quinn::VarInt::MAX)
}

/// A failure of a raw stream operation, with codes already in WebTransport terms.
#[derive(Debug)]
pub(crate) enum RawError {
    /// The peer stopped (send side) or reset (receive side) with this application code.
    Code(u32),
    /// The peer ended the stream because its session is gone.
    SessionGone,
    /// The connection (or WebSocket) underneath ended.
    Lost(String),
    /// The stream half is already finished, reset or stopped.
    Closed,
}

impl From<quinn::WriteError> for RawError {
    fn from(e: quinn::WriteError) -> Self {
        match e {
            quinn::WriteError::Stopped(code) if code.into_inner() == WT_SESSION_GONE => {
                Self::SessionGone
            }
            quinn::WriteError::Stopped(code) => Self::Code(error_from_http3(code.into_inner())),
            quinn::WriteError::ConnectionLost(e) => Self::Lost(e.to_string()),
            quinn::WriteError::ClosedStream | quinn::WriteError::ZeroRttRejected => Self::Closed,
        }
    }
}

impl From<quinn::ReadError> for RawError {
    fn from(e: quinn::ReadError) -> Self {
        match e {
            quinn::ReadError::Reset(code) if code.into_inner() == WT_SESSION_GONE => {
                Self::SessionGone
            }
            quinn::ReadError::Reset(code) => Self::Code(error_from_http3(code.into_inner())),
            quinn::ReadError::ConnectionLost(e) => Self::Lost(e.to_string()),
            _ => Self::Closed,
        }
    }
}

impl From<QError> for RawError {
    fn from(e: QError) -> Self {
        match e {
            // QMux carries application codes as they are; they are u32 in WebTransport.
            QError::Stopped(c) | QError::Reset(c) => Self::Code(u32::try_from(c).unwrap_or(0)),
            QError::Closed => Self::Closed,
            QError::Ended(why) => Self::Lost(why),
        }
    }
}

/// The sending half of a stream of either transport.
#[derive(Debug)]
pub(crate) enum RawSend {
    Quic(quinn::SendStream),
    Qmux(QSend),
}

impl RawSend {
    fn id(&self) -> u64 {
        match self {
            Self::Quic(s) => s.id().into(),
            Self::Qmux(s) => s.id(),
        }
    }

    async fn write(&mut self, buf: &[u8]) -> Result<usize, RawError> {
        match self {
            Self::Quic(s) => Ok(s.write(buf).await?),
            Self::Qmux(s) => Ok(s.write(buf).await?),
        }
    }

    /// One write attempt, waking `cx` when there is credit (cancel-safe for both).
    fn poll_write(
        &mut self,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<Result<usize, RawError>> {
        match self {
            Self::Quic(s) => {
                let fut = s.write(buf);
                std::pin::pin!(fut).poll(cx).map_err(RawError::from)
            }
            Self::Qmux(s) => s.poll_write(cx.waker(), buf).map_err(RawError::from),
        }
    }

    async fn write_all(&mut self, mut buf: &[u8]) -> Result<(), RawError> {
        match self {
            Self::Quic(s) => Ok(s.write_all(buf).await?),
            Self::Qmux(s) => {
                while !buf.is_empty() {
                    let n = s.write(buf).await?;
                    buf = &buf[n..];
                }
                Ok(())
            }
        }
    }

    async fn write_chunk(&mut self, chunk: Bytes) -> Result<(), RawError> {
        match self {
            Self::Quic(s) => Ok(s.write_chunk(chunk).await?),
            Self::Qmux(_) => self.write_all(&chunk).await,
        }
    }

    fn finish(&mut self) -> Result<(), RawError> {
        match self {
            Self::Quic(s) => s.finish().map_err(|_| RawError::Closed),
            Self::Qmux(s) => Ok(s.finish()?),
        }
    }

    /// Resets with a WebTransport application code.
    fn reset(&mut self, code: u32) -> Result<(), RawError> {
        match self {
            Self::Quic(s) => s
                .reset(quic_code(error_to_http3(code)))
                .map_err(|_| RawError::Closed),
            Self::Qmux(s) => Ok(s.reset(code)?),
        }
    }

    /// Resets because the session is gone.
    pub(crate) fn reset_gone(&mut self) {
        match self {
            Self::Quic(s) => {
                let _ = s.reset(quic_code(WT_SESSION_GONE));
            }
            Self::Qmux(s) => {
                let _ = s.reset(0);
            }
        }
    }

    async fn stopped(&mut self) -> Result<Option<u32>, RawError> {
        match self {
            Self::Quic(s) => match s.stopped().await {
                Ok(None) => Ok(None),
                Ok(Some(code)) => Ok(Some(error_from_http3(code.into_inner()))),
                Err(quinn::StoppedError::ConnectionLost(e)) => Err(RawError::Lost(e.to_string())),
                Err(quinn::StoppedError::ZeroRttRejected) => Err(RawError::Closed),
            },
            Self::Qmux(s) => Ok(s.stopped().await?.map(|c| u32::try_from(c).unwrap_or(0))),
        }
    }

    /// Whether the peer already has everything (checked without waiting).
    pub(crate) fn is_flushed(&mut self) -> bool {
        match self {
            Self::Quic(s) => {
                let waker = std::task::Waker::noop();
                let mut cx = std::task::Context::from_waker(waker);
                let fut = s.stopped();
                std::pin::pin!(fut).poll(&mut cx).is_ready()
            }
            Self::Qmux(s) => s.is_flushed(),
        }
    }

    /// Waits until the peer has everything, however that turns out.
    pub(crate) async fn flushed(mut self) {
        let _ = self.stopped().await;
    }

    fn set_priority(&self, priority: i32) -> Result<(), RawError> {
        match self {
            Self::Quic(s) => s.set_priority(priority).map_err(|_| RawError::Closed),
            Self::Qmux(s) => Ok(s.set_priority(priority)?),
        }
    }

    fn priority(&self) -> Result<i32, RawError> {
        match self {
            Self::Quic(s) => s.priority().map_err(|_| RawError::Closed),
            Self::Qmux(_) => Err(RawError::Closed),
        }
    }
}

/// The receiving half of a stream of either transport.
#[derive(Debug)]
pub(crate) enum RawRecv {
    Quic(quinn::RecvStream),
    Qmux(QRecv),
}

impl RawRecv {
    fn id(&self) -> u64 {
        match self {
            Self::Quic(s) => s.id().into(),
            Self::Qmux(s) => s.id(),
        }
    }

    async fn read(&mut self, buf: &mut [u8]) -> Result<Option<usize>, RawError> {
        match self {
            Self::Quic(s) => Ok(s.read(buf).await?),
            Self::Qmux(s) => Ok(s.read_chunk(buf.len()).await?.map(|b| {
                buf[..b.len()].copy_from_slice(&b);
                b.len()
            })),
        }
    }

    async fn read_chunk(&mut self, max: usize) -> Result<Option<Bytes>, RawError> {
        match self {
            Self::Quic(s) => Ok(s.read_chunk(max, true).await?.map(|c| c.bytes)),
            Self::Qmux(s) => Ok(s.read_chunk(max).await?),
        }
    }

    /// One read attempt that does not wait (cancel-safe for both transports).
    fn try_read_chunk(&mut self, max: usize) -> std::task::Poll<Result<Option<Bytes>, RawError>> {
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        self.poll_read_chunk(&mut cx, max)
    }

    /// One read attempt, waking `cx` when data comes (cancel-safe for both transports).
    fn poll_read_chunk(
        &mut self,
        cx: &mut std::task::Context<'_>,
        max: usize,
    ) -> std::task::Poll<Result<Option<Bytes>, RawError>> {
        match self {
            Self::Quic(s) => {
                let fut = s.read_chunk(max, true);
                std::pin::pin!(fut)
                    .poll(cx)
                    .map(|r| r.map(|c| c.map(|c| c.bytes)).map_err(RawError::from))
            }
            Self::Qmux(s) => s.poll_read_chunk(cx.waker(), max).map_err(RawError::from),
        }
    }

    /// Asks the peer to stop with a WebTransport application code.
    fn stop(&mut self, code: u32) -> Result<(), RawError> {
        match self {
            Self::Quic(s) => s
                .stop(quic_code(error_to_http3(code)))
                .map_err(|_| RawError::Closed),
            Self::Qmux(s) => Ok(s.stop(code)?),
        }
    }

    /// Stops because the session is gone.
    pub(crate) fn stop_gone(&mut self) {
        match self {
            Self::Quic(s) => {
                let _ = s.stop(quic_code(WT_SESSION_GONE));
            }
            Self::Qmux(s) => {
                let _ = s.stop(0);
            }
        }
    }
}

/// Either the operation's own error, or the session ended first.
enum Guarded<E> {
    Inner(E),
    SessionClosed(CloseInfo),
}

/// Runs `fut` unless the session ends first.
async fn guarded<T, E>(
    closed: &mut watch::Receiver<Option<CloseInfo>>,
    fut: impl Future<Output = Result<T, E>>,
) -> Result<T, Guarded<E>> {
    if let Some(info) = closed.borrow().clone() {
        return Err(Guarded::SessionClosed(info));
    }
    tokio::select! {
        biased;
        r = fut => r.map_err(Guarded::Inner),
        info = wait_closed(closed) => Err(Guarded::SessionClosed(info)),
    }
}

fn closed_info(closed: &watch::Receiver<Option<CloseInfo>>, conn_err: String) -> CloseInfo {
    closed
        .borrow()
        .clone()
        .unwrap_or_else(|| CloseInfo::connection_lost(conn_err))
}

/// The sending half of a WebTransport stream (over HTTP/3 or QMux).
///
/// Dropping a stream after [`finish`](Self::finish) still delivers what was written; a
/// session that closes because its last handle was dropped waits (bounded) for that.
#[derive(Debug)]
pub struct SendStream {
    /// `None` once dropped, or handed to a delayed reset.
    inner: Option<RawSend>,
    id: u64,
    closed: watch::Receiver<Option<CloseInfo>>,
    finished: bool,
    session: Arc<dyn StreamOwner>,
    /// The session's end, watched by `AsyncWrite` (made on first use).
    close_watch: Option<CloseWatch>,
}

impl Drop for SendStream {
    fn drop(&mut self) {
        let Some(mut inner) = self.inner.take() else {
            return;
        };
        if !self.finished || self.closed.borrow().is_some() {
            return;
        }
        if !inner.is_flushed() {
            // A finished stream keeps sending after its handle is gone; watching it lets
            // an implicit session close wait for delivery.
            self.session.track_unflushed(inner);
        }
    }
}

/// How long a bidirectional stream's RESET_STREAM waits for a STOP_SENDING on the same
/// stream to go out first (see [`SendStream::reset`]).
const RESET_AFTER_STOP: std::time::Duration = std::time::Duration::from_millis(20);

impl SendStream {
    fn q(&self) -> Result<&RawSend, StreamError> {
        self.inner.as_ref().ok_or(StreamError::ClosedStream)
    }

    fn qm(&mut self) -> Result<&mut RawSend, StreamError> {
        self.inner.as_mut().ok_or(StreamError::ClosedStream)
    }

    pub(crate) fn new(inner: RawSend, session: Arc<dyn StreamOwner>) -> Self {
        Self {
            closed: session.closed_rx(),
            id: inner.id(),
            inner: Some(inner),
            finished: false,
            session,
            close_watch: None,
        }
    }

    /// The stream ID (QUIC's, or QMux's).
    pub fn id(&self) -> u64 {
        self.id
    }

    fn map_write(&self, e: RawError) -> StreamError {
        match e {
            RawError::SessionGone => {
                StreamError::SessionClosed(closed_info(&self.closed, "session gone".into()))
            }
            RawError::Code(code) => StreamError::Stopped { code },
            RawError::Lost(e) => StreamError::SessionClosed(closed_info(&self.closed, e)),
            RawError::Closed => StreamError::ClosedStream,
        }
    }

    /// Maps a failed write; a write that lost to the session's end resets the stream with
    /// WT_SESSION_GONE so the peer learns why.
    fn write_failed(&mut self, e: Guarded<RawError>) -> StreamError {
        let e = match e {
            Guarded::Inner(e) => self.map_write(e),
            Guarded::SessionClosed(info) => StreamError::SessionClosed(info),
        };
        if matches!(e, StreamError::SessionClosed(_)) {
            if let Ok(inner) = self.qm() {
                inner.reset_gone();
            }
        }
        e
    }

    /// Writes some of `buf`, waiting for flow-control credit; returns how many bytes were
    /// taken. Memory stays bounded: nothing is queued beyond the stream's send window.
    pub async fn write(&mut self, buf: &[u8]) -> Result<usize, StreamError> {
        let inner = self.inner.as_mut().ok_or(StreamError::ClosedStream)?;
        let r = guarded(&mut self.closed, inner.write(buf)).await;
        r.map_err(|e| self.write_failed(e))
    }

    /// Writes what the stream can take right now, without waiting: returns how many bytes
    /// were taken, 0 when flow control (or the session's buffer) has no room. Callers that
    /// pay for every wait, such as a language binding that must switch threads to await,
    /// finish most writes here and await [`write`](Self::write) only for the rest.
    pub fn try_write(&mut self, buf: &[u8]) -> Result<usize, StreamError> {
        let closed = self.closed.borrow().clone();
        if let Some(info) = closed {
            return Err(self.write_failed(Guarded::SessionClosed(info)));
        }
        let inner = self.inner.as_mut().ok_or(StreamError::ClosedStream)?;
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        match inner.poll_write(&mut cx, buf) {
            std::task::Poll::Ready(Ok(n)) => Ok(n),
            std::task::Poll::Ready(Err(e)) => Err(self.write_failed(Guarded::Inner(e))),
            std::task::Poll::Pending => Ok(0),
        }
    }

    /// Writes all of `buf`, waiting for flow-control credit as needed.
    pub async fn write_all(&mut self, buf: &[u8]) -> Result<(), StreamError> {
        let inner = self.inner.as_mut().ok_or(StreamError::ClosedStream)?;
        let r = guarded(&mut self.closed, inner.write_all(buf)).await;
        r.map_err(|e| self.write_failed(e))
    }

    /// Writes a whole chunk without copying it (over HTTP/3).
    pub async fn write_chunk(&mut self, chunk: Bytes) -> Result<(), StreamError> {
        let inner = self.inner.as_mut().ok_or(StreamError::ClosedStream)?;
        let r = guarded(&mut self.closed, inner.write_chunk(chunk)).await;
        r.map_err(|e| self.write_failed(e))
    }

    /// Writes one message (see [`crate::message`]): its length, then its bytes, as one
    /// write, so messages written from one task never interleave.
    pub async fn send_message(&mut self, message: &[u8]) -> Result<(), StreamError> {
        self.write_chunk(crate::message::encode_message(message))
            .await
    }

    /// Ends the stream (FIN) after the data written so far.
    pub fn finish(&mut self) -> Result<(), StreamError> {
        self.qm()?.finish().map_err(|_| StreamError::ClosedStream)?;
        self.finished = true;
        Ok(())
    }

    /// Abandons the stream (RESET_STREAM) with a WebTransport application code.
    ///
    /// On a bidirectional HTTP/3 stream the RESET_STREAM leaves once a STOP_SENDING that
    /// the application sends right after (with [`RecvStream::stop`]) has gone out, or
    /// after 20 ms: Chromium drops the STOP_SENDING code when both frames arrive in one
    /// packet with RESET_STREAM first, which is the order QUIC stacks write them in.
    pub fn reset(&mut self, code: u32) -> Result<(), StreamError> {
        self.finished = false;
        let bidi = self.id & 0x2 == 0;
        if let (true, Some(RawSend::Quic(_)), Some(conn)) =
            (bidi, &self.inner, self.session.quic_connection())
        {
            let conn = conn.clone();
            let before = conn.stats().frame_tx.stop_sending;
            let Some(RawSend::Quic(mut stream)) = self.inner.take() else {
                return Err(StreamError::ClosedStream);
            };
            // Refuse now what quinn would refuse, rather than from the task.
            if stream.priority().is_err() {
                return Err(StreamError::ClosedStream);
            }
            self.session.runtime().spawn(async move {
                let deadline = tokio::time::Instant::now() + RESET_AFTER_STOP;
                let mut yields = 0;
                while conn.stats().frame_tx.stop_sending == before
                    && tokio::time::Instant::now() < deadline
                {
                    // A stop issued in the same breath goes out within a few turns of the
                    // runtime; one that comes through a language binding takes a hop or two.
                    if yields < 16 {
                        yields += 1;
                        tokio::task::yield_now().await;
                    } else {
                        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
                    }
                }
                let _ = stream.reset(quic_code(error_to_http3(code)));
            });
            return Ok(());
        }
        self.qm()?
            .reset(code)
            .map_err(|_| StreamError::ClosedStream)
    }

    /// Waits until the peer has received everything (`Ok(None)`), or asked us to stop
    /// sending (`Ok(Some(code))`). Over QMux, data counts as received once handed to the
    /// WebSocket (TCP delivers it or the session ends).
    pub async fn stopped(&mut self) -> Result<Option<u32>, StreamError> {
        let inner = self.inner.as_mut().ok_or(StreamError::ClosedStream)?;
        let fut = async {
            inner.stopped().await.map_err(|e| match e {
                RawError::Lost(e) => StreamError::SessionClosed(CloseInfo::connection_lost(e)),
                _ => StreamError::ClosedStream,
            })
        };
        guarded(&mut self.closed, fut).await.map_err(|e| match e {
            Guarded::Inner(e) => e,
            Guarded::SessionClosed(info) => StreamError::SessionClosed(info),
        })
    }

    /// Sets the send priority: streams with higher values are sent first.
    pub fn set_priority(&self, priority: i32) -> Result<(), StreamError> {
        self.q()?
            .set_priority(priority)
            .map_err(|_| StreamError::ClosedStream)
    }

    /// The current send priority (HTTP/3 streams only).
    pub fn priority(&self) -> Result<i32, StreamError> {
        self.q()?.priority().map_err(|_| StreamError::ClosedStream)
    }
}

/// The receiving half of a WebTransport stream (over HTTP/3 or QMux).
#[derive(Debug)]
pub struct RecvStream {
    inner: RawRecv,
    closed: watch::Receiver<Option<CloseInfo>>,
    /// The end (`Ok`) or failure that `read_available` saw behind data it returned,
    /// reported by the next read.
    pending: Option<Result<(), StreamError>>,
    _session: Arc<dyn StreamOwner>,
    /// The session's end, watched by `AsyncRead` (made on first use).
    close_watch: Option<CloseWatch>,
}

impl RecvStream {
    pub(crate) fn new(inner: RawRecv, session: Arc<dyn StreamOwner>) -> Self {
        Self {
            closed: session.closed_rx(),
            inner,
            pending: None,
            _session: session,
            close_watch: None,
        }
    }

    /// The stream ID (QUIC's, or QMux's).
    pub fn id(&self) -> u64 {
        self.inner.id()
    }

    fn read_failed(&mut self, e: Guarded<RawError>) -> StreamError {
        match e {
            Guarded::Inner(RawError::SessionGone) => {
                StreamError::SessionClosed(closed_info(&self.closed, "session gone".into()))
            }
            Guarded::Inner(RawError::Code(code)) => StreamError::Reset { code },
            Guarded::Inner(RawError::Lost(e)) => {
                StreamError::SessionClosed(closed_info(&self.closed, e))
            }
            Guarded::Inner(RawError::Closed) => StreamError::ClosedStream,
            Guarded::SessionClosed(info) => {
                self.inner.stop_gone();
                StreamError::SessionClosed(info)
            }
        }
    }

    /// Reads into `buf`; `Ok(None)` once the peer finished the stream.
    pub async fn read(&mut self, buf: &mut [u8]) -> Result<Option<usize>, StreamError> {
        if let Some(p) = self.pending.take() {
            return p.map(|()| None);
        }
        let r = guarded(&mut self.closed, self.inner.read(buf)).await;
        r.map_err(|e| self.read_failed(e))
    }

    /// Reads the next chunk of at most `max` bytes without copying; `Ok(None)` at the end.
    pub async fn read_chunk(&mut self, max: usize) -> Result<Option<Bytes>, StreamError> {
        if let Some(p) = self.pending.take() {
            return p.map(|()| None);
        }
        let r = guarded(&mut self.closed, self.inner.read_chunk(max)).await;
        r.map_err(|e| self.read_failed(e))
    }

    /// Waits for data, then returns it together with whatever else has already arrived,
    /// up to `max` bytes; `Ok(None)` at the end. QUIC hands data over roughly a packet
    /// at a time, so this saves callers that pay per call (a language binding, say) one
    /// call per packet. For the language bindings: Rust callers have `read_chunk` and
    /// `AsyncRead`.
    #[doc(hidden)]
    pub async fn read_available(&mut self, max: usize) -> Result<Option<Bytes>, StreamError> {
        let Some(first) = self.read_chunk(max).await? else {
            return Ok(None);
        };
        Ok(Some(self.gather(first, max)))
    }

    /// The data that has already arrived, up to `max` bytes, without waiting; `None` when
    /// there is none yet. The end of the stream or a failure is left for the next
    /// [`read_available`](Self::read_available), so a caller tries this first and awaits
    /// that only when this has nothing. For the language bindings.
    #[doc(hidden)]
    pub fn try_read_available(&mut self, max: usize) -> Option<Bytes> {
        if self.pending.is_some() || self.closed.borrow().is_some() {
            return None;
        }
        let first = self.try_read_more(max)?;
        Some(self.gather(first, max))
    }

    /// Waits for the next whole message (see [`crate::message`]), then returns it with the
    /// other whole messages already decoded (at most [`MAX_MESSAGE_BATCH`](crate::message::MAX_MESSAGE_BATCH)); `Ok(None)` at the
    /// end of the stream. `decoder` keeps a partly received message and messages beyond the
    /// batch between calls, so the same decoder must be passed each time. The stream is
    /// read [`MESSAGE_READ_SIZE`](crate::message::MESSAGE_READ_SIZE) bytes at a time whatever length a message announces, so
    /// memory follows what arrived, bounded by the decoder's largest message.
    ///
    /// A failure (a message above the limit, an end inside a message) comes after the
    /// whole messages before it. Cancel-safe: bytes read are in `decoder` before the call
    /// can be dropped.
    pub async fn read_messages(
        &mut self,
        decoder: &mut crate::message::MessageDecoder,
    ) -> Result<Option<Vec<Bytes>>, StreamError> {
        let mut out = Vec::new();
        loop {
            while out.len() < crate::message::MAX_MESSAGE_BATCH {
                match decoder.decode() {
                    Ok(Some(m)) => out.push(m),
                    Ok(None) => break,
                    // The decoder keeps failing: the error comes with the next call.
                    Err(_) if !out.is_empty() => return Ok(Some(out)),
                    Err(e) => return Err(e),
                }
            }
            if !out.is_empty() {
                return Ok(Some(out));
            }
            match self
                .read_available(crate::message::MESSAGE_READ_SIZE)
                .await?
            {
                Some(chunk) => decoder.push(&chunk),
                None => {
                    decoder.finish()?;
                    return Ok(None);
                }
            }
        }
    }

    /// Reads the stream as messages (see [`crate::message`]), refusing any longer than
    /// `max_message_size` bytes.
    pub fn into_messages(self, max_message_size: usize) -> MessageReader {
        MessageReader {
            stream: self,
            decoder: crate::message::MessageDecoder::new(max_message_size),
            ready: std::collections::VecDeque::new(),
        }
    }

    /// Appends to `first` whatever else has already arrived, up to `max` bytes in all.
    fn gather(&mut self, first: Bytes, max: usize) -> Bytes {
        if first.len() >= max {
            return first;
        }
        let Some(second) = self.try_read_more(max - first.len()) else {
            return first;
        };
        let mut out = bytes::BytesMut::with_capacity(max);
        out.extend_from_slice(&first);
        out.extend_from_slice(&second);
        while out.len() < max {
            match self.try_read_more(max - out.len()) {
                Some(chunk) => out.extend_from_slice(&chunk),
                None => break,
            }
        }
        out.freeze()
    }

    /// One read attempt that does not wait: data already buffered comes back at once;
    /// the end or a failure is kept in `pending` for the next read, behind earlier data.
    fn try_read_more(&mut self, max: usize) -> Option<Bytes> {
        match self.inner.try_read_chunk(max) {
            std::task::Poll::Ready(Ok(Some(chunk))) => Some(chunk),
            std::task::Poll::Ready(Ok(None)) => {
                self.pending = Some(Ok(()));
                None
            }
            std::task::Poll::Ready(Err(e)) => {
                let e = self.read_failed(Guarded::Inner(e));
                self.pending = Some(Err(e));
                None
            }
            std::task::Poll::Pending => None,
        }
    }

    /// Fills `buf` completely, or fails with [`StreamError::FinishedEarly`].
    pub async fn read_exact(&mut self, buf: &mut [u8]) -> Result<(), StreamError> {
        let mut filled = 0;
        while filled < buf.len() {
            match self.read(&mut buf[filled..]).await? {
                Some(n) => filled += n,
                None => return Err(StreamError::FinishedEarly),
            }
        }
        Ok(())
    }

    /// Reads until the peer finishes the stream; fails with [`StreamError::TooLong`] past
    /// `limit` bytes so a peer cannot make us buffer without bound.
    pub async fn read_to_end(&mut self, limit: usize) -> Result<Vec<u8>, StreamError> {
        let mut out = Vec::new();
        while let Some(chunk) = self.read_chunk(64 * 1024).await? {
            if out.len() + chunk.len() > limit {
                let _ = self.stop(0);
                return Err(StreamError::TooLong(limit));
            }
            out.extend_from_slice(&chunk);
        }
        Ok(out)
    }

    /// Asks the peer to stop sending (STOP_SENDING) with a WebTransport application code.
    pub fn stop(&mut self, code: u32) -> Result<(), StreamError> {
        self.inner.stop(code).map_err(|_| StreamError::ClosedStream)
    }
}

/// Resolves once the session has ended, for the poll-based traits.
struct CloseWatch(std::pin::Pin<Box<dyn Future<Output = CloseInfo> + Send + Sync>>);

impl std::fmt::Debug for CloseWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CloseWatch")
    }
}

/// Polls the session's end, making the watch on first use.
fn poll_session_end(
    watch: &mut Option<CloseWatch>,
    closed: &watch::Receiver<Option<CloseInfo>>,
    cx: &mut std::task::Context<'_>,
) -> std::task::Poll<CloseInfo> {
    let fut = watch.get_or_insert_with(|| {
        let mut rx = closed.clone();
        CloseWatch(Box::pin(async move { wait_closed(&mut rx).await }))
    });
    fut.0.as_mut().poll(cx)
}

/// A [`StreamError`] as the `std::io::Error` the tokio traits return: the kind says what
/// happened (`ConnectionReset` for a reset, `BrokenPipe` for a stop, `ConnectionAborted`
/// for the session's end, `NotConnected` for a stream already closed here) and
/// `get_ref()` holds the `StreamError` with its code.
fn io_error(e: StreamError) -> std::io::Error {
    use std::io::ErrorKind;
    let kind = match &e {
        StreamError::Reset { .. } => ErrorKind::ConnectionReset,
        StreamError::Stopped { .. } => ErrorKind::BrokenPipe,
        StreamError::SessionClosed(_) => ErrorKind::ConnectionAborted,
        StreamError::ClosedStream => ErrorKind::NotConnected,
        _ => ErrorKind::Other,
    };
    std::io::Error::new(kind, e)
}

/// Reads as a tokio byte stream (`tokio::io::copy`, `BufReader`, codecs): the peer's FIN is
/// the end of file, and errors are [`io_error`]s carrying the [`StreamError`].
impl tokio::io::AsyncRead for RecvStream {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        use std::task::Poll;
        let this = self.get_mut();
        if let Some(p) = this.pending.take() {
            return Poll::Ready(p.map_err(io_error));
        }
        if buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        match this.inner.poll_read_chunk(cx, buf.remaining()) {
            Poll::Ready(Ok(Some(chunk))) => {
                buf.put_slice(&chunk);
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Ok(None)) => Poll::Ready(Ok(())),
            Poll::Ready(Err(e)) => Poll::Ready(Err(io_error(this.read_failed(Guarded::Inner(e))))),
            Poll::Pending => match poll_session_end(&mut this.close_watch, &this.closed, cx) {
                Poll::Ready(info) => Poll::Ready(Err(io_error(
                    this.read_failed(Guarded::SessionClosed(info)),
                ))),
                Poll::Pending => Poll::Pending,
            },
        }
    }
}

/// Writes as a tokio byte sink, with the stream's flow control as backpressure:
/// `poll_shutdown` finishes the stream (FIN), `poll_flush` has nothing to do (what is
/// written is the transport's), and errors are [`io_error`]s carrying the [`StreamError`].
impl tokio::io::AsyncWrite for SendStream {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        use std::task::Poll;
        let this = self.get_mut();
        let Some(inner) = this.inner.as_mut() else {
            return Poll::Ready(Err(io_error(StreamError::ClosedStream)));
        };
        match inner.poll_write(cx, buf) {
            Poll::Ready(Ok(n)) => Poll::Ready(Ok(n)),
            Poll::Ready(Err(e)) => Poll::Ready(Err(io_error(this.write_failed(Guarded::Inner(e))))),
            Poll::Pending => match poll_session_end(&mut this.close_watch, &this.closed, cx) {
                Poll::Ready(info) => Poll::Ready(Err(io_error(
                    this.write_failed(Guarded::SessionClosed(info)),
                ))),
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let this = self.get_mut();
        if this.finished {
            return std::task::Poll::Ready(Ok(()));
        }
        std::task::Poll::Ready(this.finish().map_err(io_error))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_codes_round_trip_through_http3() {
        for code in [0u32, 1, 0x1d, 0x1e, 0x1f, 0x3c, 4242, 0xffff_ffff] {
            assert_eq!(error_from_http3(error_to_http3(code)), code, "code {code}");
        }
        assert_eq!(error_to_http3(0), 0x52e4a40fa8db);
        assert_eq!(error_to_http3(0x1e), 0x52e4a40fa8db + 0x1e + 1);
        // Outside the range, and the reserved points inside it, map to 0.
        assert_eq!(error_from_http3(0x100), 0);
        assert_eq!(error_from_http3(0x52e4a40fa8db + 0x1e), 0);
    }
}

/// A receive stream read as messages: [`RecvStream::into_messages`].
#[derive(Debug)]
pub struct MessageReader {
    stream: RecvStream,
    decoder: crate::message::MessageDecoder,
    ready: std::collections::VecDeque<Bytes>,
}

impl MessageReader {
    /// The next message; `Ok(None)` once the peer finished the stream after a whole
    /// message. Fails with [`StreamError::MessageTooLarge`] or
    /// [`StreamError::MessageTruncated`] on a message the reader cannot take whole.
    pub async fn next(&mut self) -> Result<Option<Bytes>, StreamError> {
        if let Some(m) = self.ready.pop_front() {
            return Ok(Some(m));
        }
        let Some(batch) = self.stream.read_messages(&mut self.decoder).await? else {
            return Ok(None);
        };
        self.ready.extend(batch);
        Ok(self.ready.pop_front())
    }

    /// The stream underneath, for `stop()` or its ID.
    pub fn get_mut(&mut self) -> &mut RecvStream {
        &mut self.stream
    }
}
