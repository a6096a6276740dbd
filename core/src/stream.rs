//! WebTransport streams: QUIC streams that carry a session header, with application error
//! codes mapped to and from the HTTP/3 code space.

use std::{future::Future, sync::Arc};

use bytes::Bytes;
use tokio::sync::watch;

use crate::{
    error::StreamError,
    session::{CloseInfo, SessionHandle},
};

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
        info = crate::session::wait_closed(closed) => Err(Guarded::SessionClosed(info)),
    }
}

fn closed_info(closed: &watch::Receiver<Option<CloseInfo>>, conn_err: String) -> CloseInfo {
    closed
        .borrow()
        .clone()
        .unwrap_or_else(|| CloseInfo::connection_lost(conn_err))
}

fn present(inner: &mut Option<quinn::SendStream>) -> &mut quinn::SendStream {
    inner.as_mut().expect("present until drop")
}

/// The sending half of a WebTransport stream.
///
/// Dropping a stream after [`finish`](Self::finish) still delivers what was written; a
/// session that closes because its last handle was dropped waits (bounded) for that.
#[derive(Debug)]
pub struct SendStream {
    /// Always `Some` until dropped.
    inner: Option<quinn::SendStream>,
    closed: watch::Receiver<Option<CloseInfo>>,
    finished: bool,
    session: Arc<SessionHandle>,
}

impl Drop for SendStream {
    fn drop(&mut self) {
        let Some(inner) = self.inner.take() else {
            return;
        };
        if !self.finished || self.closed.borrow().is_some() {
            return;
        }
        // Acknowledged already? Then there is nothing to wait for.
        let waker = std::task::Waker::noop();
        let mut cx = std::task::Context::from_waker(waker);
        let pending = {
            let fut = inner.stopped();
            std::pin::pin!(fut).poll(&mut cx).is_pending()
        };
        if pending {
            // quinn keeps sending a finished stream after its handle is gone; watching it
            // lets an implicit session close wait for delivery.
            self.session.shared.track_unflushed(inner);
        }
    }
}

impl SendStream {
    fn q(&self) -> &quinn::SendStream {
        self.inner.as_ref().expect("present until drop")
    }

    fn qm(&mut self) -> &mut quinn::SendStream {
        present(&mut self.inner)
    }

    pub(crate) fn new(inner: quinn::SendStream, session: Arc<SessionHandle>) -> Self {
        Self {
            closed: session.shared.closed_rx(),
            inner: Some(inner),
            finished: false,
            session,
        }
    }

    /// The QUIC stream ID.
    pub fn id(&self) -> u64 {
        self.q().id().into()
    }

    fn map_write(&self, e: quinn::WriteError) -> StreamError {
        match e {
            quinn::WriteError::Stopped(code) if code.into_inner() == WT_SESSION_GONE => {
                StreamError::SessionClosed(closed_info(&self.closed, "session gone".into()))
            }
            quinn::WriteError::Stopped(code) => StreamError::Stopped {
                code: error_from_http3(code.into_inner()),
            },
            quinn::WriteError::ConnectionLost(e) => {
                StreamError::SessionClosed(closed_info(&self.closed, e.to_string()))
            }
            quinn::WriteError::ClosedStream | quinn::WriteError::ZeroRttRejected => {
                StreamError::ClosedStream
            }
        }
    }

    /// Maps a failed write; a write that lost to the session's end resets the stream with
    /// WT_SESSION_GONE so the peer learns why.
    fn write_failed(&mut self, e: Guarded<quinn::WriteError>) -> StreamError {
        let e = match e {
            Guarded::Inner(e) => self.map_write(e),
            Guarded::SessionClosed(info) => StreamError::SessionClosed(info),
        };
        if matches!(e, StreamError::SessionClosed(_)) {
            let _ = self.qm().reset(quic_code(WT_SESSION_GONE));
        }
        e
    }

    /// Writes some of `buf`, waiting for flow-control credit; returns how many bytes were
    /// taken. Memory stays bounded: nothing is queued beyond the stream's send window.
    pub async fn write(&mut self, buf: &[u8]) -> Result<usize, StreamError> {
        let r = guarded(&mut self.closed, present(&mut self.inner).write(buf)).await;
        r.map_err(|e| self.write_failed(e))
    }

    /// Writes all of `buf`, waiting for flow-control credit as needed.
    pub async fn write_all(&mut self, buf: &[u8]) -> Result<(), StreamError> {
        let r = guarded(&mut self.closed, present(&mut self.inner).write_all(buf)).await;
        r.map_err(|e| self.write_failed(e))
    }

    /// Writes a whole chunk without copying it.
    pub async fn write_chunk(&mut self, chunk: Bytes) -> Result<(), StreamError> {
        let r = guarded(
            &mut self.closed,
            present(&mut self.inner).write_chunk(chunk),
        )
        .await;
        r.map_err(|e| self.write_failed(e))
    }

    /// Ends the stream (FIN) after the data written so far.
    pub fn finish(&mut self) -> Result<(), StreamError> {
        self.qm().finish().map_err(|_| StreamError::ClosedStream)?;
        self.finished = true;
        Ok(())
    }

    /// Abandons the stream (RESET_STREAM) with a WebTransport application code.
    pub fn reset(&mut self, code: u32) -> Result<(), StreamError> {
        self.finished = false;
        self.qm()
            .reset(quic_code(error_to_http3(code)))
            .map_err(|_| StreamError::ClosedStream)
    }

    /// Waits until the peer has received everything (`Ok(None)`), or asked us to stop
    /// sending (`Ok(Some(code))`).
    pub async fn stopped(&mut self) -> Result<Option<u32>, StreamError> {
        let inner = self.inner.as_mut().expect("present until drop");
        let fut = async {
            match inner.stopped().await {
                Ok(None) => Ok(None),
                Ok(Some(code)) => Ok(Some(error_from_http3(code.into_inner()))),
                Err(quinn::StoppedError::ConnectionLost(e)) => Err(StreamError::SessionClosed(
                    CloseInfo::connection_lost(e.to_string()),
                )),
                Err(quinn::StoppedError::ZeroRttRejected) => Err(StreamError::ClosedStream),
            }
        };
        guarded(&mut self.closed, fut).await.map_err(|e| match e {
            Guarded::Inner(e) => e,
            Guarded::SessionClosed(info) => StreamError::SessionClosed(info),
        })
    }

    /// Sets the send priority: streams with higher values are sent first.
    pub fn set_priority(&self, priority: i32) -> Result<(), StreamError> {
        self.q()
            .set_priority(priority)
            .map_err(|_| StreamError::ClosedStream)
    }

    /// The current send priority.
    pub fn priority(&self) -> Result<i32, StreamError> {
        self.q().priority().map_err(|_| StreamError::ClosedStream)
    }
}

/// The receiving half of a WebTransport stream.
#[derive(Debug)]
pub struct RecvStream {
    inner: quinn::RecvStream,
    closed: watch::Receiver<Option<CloseInfo>>,
    /// The end (`Ok`) or failure that `read_available` saw behind data it returned,
    /// reported by the next read.
    pending: Option<Result<(), StreamError>>,
    _session: Arc<SessionHandle>,
}

impl RecvStream {
    pub(crate) fn new(inner: quinn::RecvStream, session: Arc<SessionHandle>) -> Self {
        Self {
            closed: session.shared.closed_rx(),
            inner,
            pending: None,
            _session: session,
        }
    }

    /// The QUIC stream ID.
    pub fn id(&self) -> u64 {
        self.inner.id().into()
    }

    fn read_failed(&mut self, e: Guarded<quinn::ReadError>) -> StreamError {
        match e {
            Guarded::Inner(quinn::ReadError::Reset(code))
                if code.into_inner() == WT_SESSION_GONE =>
            {
                StreamError::SessionClosed(closed_info(&self.closed, "session gone".into()))
            }
            Guarded::Inner(quinn::ReadError::Reset(code)) => StreamError::Reset {
                code: error_from_http3(code.into_inner()),
            },
            Guarded::Inner(quinn::ReadError::ConnectionLost(e)) => {
                StreamError::SessionClosed(closed_info(&self.closed, e.to_string()))
            }
            Guarded::Inner(_) => StreamError::ClosedStream,
            Guarded::SessionClosed(info) => {
                let _ = self.inner.stop(quic_code(WT_SESSION_GONE));
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
        let r = guarded(&mut self.closed, self.inner.read_chunk(max, true)).await;
        r.map(|c| c.map(|c| c.bytes))
            .map_err(|e| self.read_failed(e))
    }

    /// Waits for data, then returns it together with whatever else has already arrived,
    /// up to `max` bytes; `Ok(None)` at the end. QUIC hands data over roughly a packet
    /// at a time, so this saves callers that pay per call (a language binding, say) one
    /// call per packet.
    pub async fn read_available(&mut self, max: usize) -> Result<Option<Bytes>, StreamError> {
        let Some(first) = self.read_chunk(max).await? else {
            return Ok(None);
        };
        if first.len() >= max {
            return Ok(Some(first));
        }
        let mut out = bytes::BytesMut::with_capacity(max);
        out.extend_from_slice(&first);
        let waker = std::task::Waker::noop();
        let mut cx = std::task::Context::from_waker(waker);
        while out.len() < max {
            let want = max - out.len();
            // One poll: data already buffered by quinn comes back at once; anything else
            // is left for the next call (quinn's reads are cancel-safe).
            let poll = {
                let fut = self.inner.read_chunk(want, true);
                std::pin::pin!(fut).poll(&mut cx)
            };
            // The end or a failure is kept for the next call, after this data.
            match poll {
                std::task::Poll::Ready(Ok(Some(chunk))) => out.extend_from_slice(&chunk.bytes),
                std::task::Poll::Ready(Ok(None)) => {
                    self.pending = Some(Ok(()));
                    break;
                }
                std::task::Poll::Ready(Err(e)) => {
                    let e = self.read_failed(Guarded::Inner(e));
                    self.pending = Some(Err(e));
                    break;
                }
                std::task::Poll::Pending => break,
            }
        }
        Ok(Some(out.freeze()))
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
        self.inner
            .stop(quic_code(error_to_http3(code)))
            .map_err(|_| StreamError::ClosedStream)
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
