//! Request and response bodies: frames of bytes with backpressure, a byte limit and an idle
//! deadline on what a client sends.

use std::{
    future::Future as _,
    pin::Pin,
    task::{ready, Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use tokio::sync::mpsc;

pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Why a body stopped before its end.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BodyError {
    /// The client sent more than [`Limits::max_request_body`](crate::Limits::max_request_body).
    #[error("the body is larger than the limit of {limit} bytes")]
    TooLarge {
        /// The limit that was passed.
        limit: u64,
    },
    /// The client sent nothing for this long in the middle of a body.
    #[error("no body data arrived for {0:?}")]
    TimedOut(Duration),
    /// The other side abandoned the body (reset the stream, closed the connection, or
    /// dropped the reader or writer).
    #[error("the body was abandoned: {0}")]
    Aborted(String),
    /// An error from a body the application supplied.
    #[error(transparent)]
    Other(BoxError),
}

impl BodyError {
    /// A stable, machine-readable name for this error, shared by the language bindings.
    pub fn code(&self) -> &'static str {
        match self {
            Self::TooLarge { .. } => "ERR_BODY_TOO_LARGE",
            Self::TimedOut(_) => "ERR_BODY_TIMEOUT",
            Self::Aborted(_) => "ERR_BODY_ABORTED",
            Self::Other(_) => "ERR_BODY",
        }
    }
}

/// When a request body last moved, so that a handler still reading its upload is not taken
/// for one that never answers.
#[derive(Debug)]
pub(crate) struct Progress {
    base: tokio::time::Instant,
    last_ms: std::sync::atomic::AtomicU64,
}

impl Progress {
    pub(crate) fn new() -> std::sync::Arc<Self> {
        std::sync::Arc::new(Self {
            base: tokio::time::Instant::now(),
            last_ms: std::sync::atomic::AtomicU64::new(0),
        })
    }

    pub(crate) fn touch(&self) {
        let ms = self.base.elapsed().as_millis() as u64;
        self.last_ms.store(ms, std::sync::atomic::Ordering::Relaxed);
    }

    /// The last time the body moved (the start, if it never did).
    pub(crate) fn last(&self) -> tokio::time::Instant {
        self.base + Duration::from_millis(self.last_ms.load(std::sync::atomic::Ordering::Relaxed))
    }
}

/// A request or response body: [`http_body::Body`] with `Bytes` frames.
///
/// Build one from bytes or text (`Body::from("hello")`), from any other `http_body::Body`
/// ([`Body::new`]), or stream it from a task with [`Body::channel`].
pub struct Body {
    kind: Kind,
    /// A handler slot (`Limits::max_concurrent_requests`), released when the body is
    /// dropped: sent, or given up on.
    held: Option<tokio::sync::OwnedSemaphorePermit>,
}

enum Kind {
    Full(Option<Bytes>),
    Channel {
        rx: mpsc::Receiver<Result<Bytes, BodyError>>,
        length: Option<u64>,
    },
    Boxed(Pin<Box<dyn HttpBody<Data = Bytes, Error = BodyError> + Send + 'static>>),
}

impl Body {
    /// A body with no bytes.
    pub fn empty() -> Self {
        Self {
            held: None,
            kind: Kind::Full(None),
        }
    }

    /// Wraps any body whose frames are `Bytes`; its errors become [`BodyError::Other`].
    pub fn new<B>(body: B) -> Self
    where
        B: HttpBody<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        Self {
            held: None,
            kind: Kind::Boxed(Box::pin(Mapped(Box::pin(body)))),
        }
    }

    /// A body fed by the returned [`BodySender`], `capacity` chunks ahead of the reader at
    /// most: a sender that outpaces the client waits.
    pub fn channel(capacity: usize) -> (BodySender, Self) {
        Self::channel_with_length(capacity, None)
    }

    pub(crate) fn channel_with_length(capacity: usize, length: Option<u64>) -> (BodySender, Self) {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        (
            BodySender { tx },
            Self {
                held: None,
                kind: Kind::Channel { rx, length },
            },
        )
    }

    /// A body the client sends, cut off with [`BodyError::TooLarge`] past `limit` bytes and
    /// with [`BodyError::TimedOut`] when nothing arrives for `idle`.
    pub(crate) fn guarded<B>(
        body: B,
        limit: u64,
        idle: Duration,
        progress: std::sync::Arc<Progress>,
    ) -> Self
    where
        B: HttpBody<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        Self {
            held: None,
            kind: Kind::Boxed(Box::pin(Guarded {
                inner: Mapped(Box::pin(body)),
                limit,
                seen: 0,
                idle,
                timer: None,
                progress,
            })),
        }
    }

    /// The next chunk of data (trailers are skipped); `None` at the end.
    pub async fn next_data(&mut self) -> Option<Result<Bytes, BodyError>> {
        loop {
            let frame = std::future::poll_fn(|cx| Pin::new(&mut *self).poll_frame(cx)).await?;
            match frame {
                Ok(frame) => {
                    if let Ok(data) = frame.into_data() {
                        return Some(Ok(data));
                    }
                }
                Err(e) => return Some(Err(e)),
            }
        }
    }

    /// Reads the whole body, failing past `limit` bytes.
    pub async fn bytes(mut self, limit: usize) -> Result<Bytes, BodyError> {
        let mut out = bytes::BytesMut::new();
        while let Some(frame) = std::future::poll_fn(|cx| Pin::new(&mut self).poll_frame(cx)).await
        {
            if let Ok(data) = frame?.into_data() {
                if out.len() + data.len() > limit {
                    return Err(BodyError::TooLarge {
                        limit: limit as u64,
                    });
                }
                out.extend_from_slice(&data);
            }
        }
        Ok(out.freeze())
    }
}

impl Body {
    /// The same body, holding `slot` until it is dropped.
    pub(crate) fn holding(mut self, slot: tokio::sync::OwnedSemaphorePermit) -> Self {
        self.held = Some(slot);
        self
    }
}

impl Default for Body {
    fn default() -> Self {
        Self::empty()
    }
}

impl std::fmt::Debug for Body {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.kind {
            Kind::Full(b) => write!(f, "Body({} bytes)", b.as_ref().map_or(0, Bytes::len)),
            Kind::Channel { .. } => f.write_str("Body(streaming)"),
            Kind::Boxed(_) => f.write_str("Body(..)"),
        }
    }
}

impl From<Bytes> for Body {
    fn from(b: Bytes) -> Self {
        Self {
            held: None,
            kind: Kind::Full((!b.is_empty()).then_some(b)),
        }
    }
}

impl From<Vec<u8>> for Body {
    fn from(b: Vec<u8>) -> Self {
        Bytes::from(b).into()
    }
}

impl From<String> for Body {
    fn from(s: String) -> Self {
        Bytes::from(s).into()
    }
}

impl From<&'static str> for Body {
    fn from(s: &'static str) -> Self {
        Bytes::from_static(s.as_bytes()).into()
    }
}

impl From<&'static [u8]> for Body {
    fn from(s: &'static [u8]) -> Self {
        Bytes::from_static(s).into()
    }
}

impl HttpBody for Body {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        match &mut self.get_mut().kind {
            Kind::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            Kind::Channel { rx, .. } => rx
                .poll_recv(cx)
                .map(|item| item.map(|r| r.map(Frame::data))),
            Kind::Boxed(b) => b.as_mut().poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Full(b) => b.is_none(),
            Kind::Channel { .. } => false,
            Kind::Boxed(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            Kind::Channel { length, .. } => {
                length.map_or_else(SizeHint::default, SizeHint::with_exact)
            }
            Kind::Boxed(b) => b.size_hint(),
        }
    }
}

/// Feeds a [`Body::channel`]. Dropping it (and every clone) ends the body;
/// [`BodySender::abort`] ends it with an error the reader sees.
#[derive(Debug, Clone)]
pub struct BodySender {
    tx: mpsc::Sender<Result<Bytes, BodyError>>,
}

impl BodySender {
    /// Sends one chunk, waiting while the reader is `capacity` chunks behind. Fails with
    /// [`BodyError::Aborted`] once the reader is gone (the client went away).
    pub async fn send(&self, data: Bytes) -> Result<(), BodyError> {
        self.tx
            .send(Ok(data))
            .await
            .map_err(|_| BodyError::Aborted("the body's reader is gone".into()))
    }

    /// Ends the body with an error instead of its end: the client sees the response cut
    /// off (a reset stream, not a clean end).
    pub async fn abort(self, error: BodyError) {
        let _ = self.tx.send(Err(error)).await;
    }

    /// Whether the reader is gone.
    pub fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }
}

/// Any `Bytes` body with its error boxed into [`BodyError::Other`].
struct Mapped<B>(Pin<Box<B>>);

impl<B> HttpBody for Mapped<B>
where
    B: HttpBody<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        self.get_mut().0.as_mut().poll_frame(cx).map(|f| {
            f.map(|r| {
                r.map_err(|e| {
                    let e: BoxError = e.into();
                    match e.downcast::<BodyError>() {
                        Ok(e) => *e,
                        Err(e) => BodyError::Other(e),
                    }
                })
            })
        })
    }

    fn is_end_stream(&self) -> bool {
        self.0.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.0.size_hint()
    }
}

struct Guarded<B> {
    inner: Mapped<B>,
    limit: u64,
    seen: u64,
    idle: Duration,
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
    progress: std::sync::Arc<Progress>,
}

impl<B> HttpBody for Guarded<B>
where
    B: HttpBody<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = self.get_mut();
        if this.seen > this.limit {
            return Poll::Ready(None);
        }
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                this.timer = None;
                this.progress.touch();
                if let Some(Ok(f)) = &frame {
                    if let Some(data) = f.data_ref() {
                        this.seen += data.len() as u64;
                        if this.seen > this.limit {
                            return Poll::Ready(Some(Err(BodyError::TooLarge {
                                limit: this.limit,
                            })));
                        }
                    }
                }
                Poll::Ready(frame)
            }
            Poll::Pending => {
                let idle = this.idle;
                let timer = this
                    .timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(idle)));
                ready!(timer.as_mut().poll(cx));
                this.timer = None;
                this.seen = this.limit + 1;
                Poll::Ready(Some(Err(BodyError::TimedOut(idle))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.seen > self.limit || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_channel_body_streams_in_order_and_an_abort_reaches_the_reader() {
        let (tx, body) = Body::channel(2);
        let writer = tokio::spawn(async move {
            for i in 0..10u8 {
                tx.send(Bytes::from(vec![i; 1000])).await.unwrap();
            }
        });
        let all = body.bytes(1 << 20).await.unwrap();
        writer.await.unwrap();
        assert_eq!(all.len(), 10_000);
        assert!(all
            .chunks(1000)
            .enumerate()
            .all(|(i, c)| c.iter().all(|b| *b == i as u8)));

        let (tx, body) = Body::channel(2);
        tx.send(Bytes::from_static(b"x")).await.unwrap();
        tokio::spawn(tx.abort(BodyError::Aborted("gone".into())));
        assert!(matches!(body.bytes(100).await, Err(BodyError::Aborted(_))));
    }

    #[tokio::test]
    async fn a_guarded_body_stops_at_its_limit_and_when_the_client_goes_quiet() {
        let (tx, inner) = Body::channel(4);
        let body = Body::guarded(inner, 1500, Duration::from_secs(5), Progress::new());
        tx.send(Bytes::from(vec![0; 1000])).await.unwrap();
        tx.send(Bytes::from(vec![0; 1000])).await.unwrap();
        drop(tx);
        assert!(matches!(
            body.bytes(1 << 20).await,
            Err(BodyError::TooLarge { limit: 1500 })
        ));

        let (tx, inner) = Body::channel(4);
        let body = Body::guarded(inner, 1 << 20, Duration::from_millis(50), Progress::new());
        tx.send(Bytes::from_static(b"a little")).await.unwrap();
        let result = body.bytes(1 << 20).await;
        assert!(matches!(result, Err(BodyError::TimedOut(_))), "{result:?}");
        drop(tx);
    }
}
