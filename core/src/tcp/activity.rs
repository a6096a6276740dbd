//! What a TCP connection is doing, for the deadlines that close it: no request head within
//! `request_timeout` of the TLS handshake, nothing in progress for `sessionless_timeout`
//! (HTTP/1.1 keep-alive and an HTTP/2 connection that only answers PINGs alike), or a
//! write toward the client that stalls past `write_timeout`.

use std::{
    collections::BTreeMap,
    io,
    pin::Pin,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    sync::Notify,
    time::Instant,
};

use crate::service::{Body, BodyError};

/// Why the watchdog gave up on a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Expired {
    /// No request head arrived within the deadline after the TLS handshake.
    NoRequest,
    /// Nothing was in progress for the sessionless timeout.
    Idle,
    /// A write toward the client made no progress within the write timeout.
    Stalled,
}

#[derive(Default)]
struct State {
    busy: usize,
    seen_request: bool,
    idle_since: Option<Instant>,
    /// Writes waiting on the client, by waiter, with the moment they started waiting.
    stalls: BTreeMap<u64, Instant>,
}

/// Shared by a connection's requests, response bodies, upgraded sockets and IO.
pub(crate) struct Activity {
    state: Mutex<State>,
    changed: Notify,
    next_id: AtomicU64,
    /// The IO-level write stall's key in `stalls`.
    io_key: u64,
}

impl Activity {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(State {
                idle_since: Some(Instant::now()),
                ..State::default()
            }),
            changed: Notify::new(),
            next_id: AtomicU64::new(1),
            io_key: 0,
        })
    }

    /// The deadline to the first request starts now (after the TLS handshake).
    pub(crate) fn restart(&self) {
        self.state().idle_since = Some(Instant::now());
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Marks a request (or an upgraded socket) in progress until the guard drops.
    pub(crate) fn busy(self: &Arc<Self>) -> Busy {
        {
            let mut st = self.state();
            st.busy += 1;
            st.seen_request = true;
            st.idle_since = None;
        }
        Busy {
            activity: self.clone(),
            key: self.next_id.fetch_add(1, Ordering::Relaxed),
        }
    }

    fn stall(&self, key: u64, stalled: bool) {
        let mut st = self.state();
        let changed = if stalled {
            match st.stalls.entry(key) {
                std::collections::btree_map::Entry::Occupied(_) => false,
                std::collections::btree_map::Entry::Vacant(v) => {
                    v.insert(Instant::now());
                    true
                }
            }
        } else {
            st.stalls.remove(&key).is_some()
        };
        drop(st);
        if changed {
            self.changed.notify_one();
        }
    }

    /// Resolves when a deadline passes: which one.
    pub(crate) async fn expired(
        &self,
        request: Duration,
        idle: Duration,
        write: Duration,
    ) -> Expired {
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let now = Instant::now();
            let (deadline, why) = {
                let st = self.state();
                let stall = st
                    .stalls
                    .values()
                    .min()
                    .map(|t| (*t + write, Expired::Stalled));
                let quiet = st.idle_since.map(|t| {
                    if st.seen_request {
                        (t + idle, Expired::Idle)
                    } else {
                        (t + request, Expired::NoRequest)
                    }
                });
                match (stall, quiet) {
                    (Some(a), Some(b)) => {
                        if a.0 <= b.0 {
                            a
                        } else {
                            b
                        }
                    }
                    (Some(a), None) | (None, Some(a)) => a,
                    (None, None) => (now + Duration::from_secs(3600), Expired::Idle),
                }
            };
            if deadline <= now {
                return why;
            }
            tokio::select! {
                () = notified => {}
                () = tokio::time::sleep_until(deadline) => {}
            }
        }
    }
}

/// A request or upgraded socket in progress; also the key of its stalled writes.
pub(crate) struct Busy {
    activity: Arc<Activity>,
    key: u64,
}

impl Busy {
    /// Whether a write of this request toward the client is waiting on the client.
    fn stalled(&self, stalled: bool) {
        self.activity.stall(self.key, stalled);
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        let mut st = self.activity.state();
        st.stalls.remove(&self.key);
        st.busy -= 1;
        if st.busy == 0 {
            st.idle_since = Some(Instant::now());
        }
        drop(st);
        self.activity.changed.notify_one();
    }
}

/// A response body that keeps its connection busy until it is written (or dropped), and
/// counts as a stalled write while a chunk it produced waits for the client to take it.
pub(crate) struct TrackedBody {
    body: Body,
    busy: Option<Busy>,
    handed_out: bool,
}

impl TrackedBody {
    pub(crate) fn new(body: Body, busy: Busy) -> Self {
        Self {
            body,
            busy: Some(busy),
            handed_out: false,
        }
    }
}

impl HttpBody for TrackedBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = self.get_mut();
        if this.handed_out {
            // The server came back for more: the last chunk was taken.
            this.handed_out = false;
            if let Some(b) = &this.busy {
                b.stalled(false);
            }
        }
        let r = Pin::new(&mut this.body).poll_frame(cx);
        match &r {
            Poll::Ready(Some(Ok(_))) => {
                this.handed_out = true;
                if let Some(b) = &this.busy {
                    b.stalled(true);
                }
            }
            Poll::Ready(None) | Poll::Ready(Some(Err(_))) => {
                this.busy.take();
            }
            Poll::Pending => {}
        }
        r
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// The connection's socket, reporting when a write waits on the client.
pub(crate) struct WatchedIo<T> {
    io: T,
    activity: Arc<Activity>,
    stalled: bool,
}

impl<T> WatchedIo<T> {
    pub(crate) fn new(io: T, activity: Arc<Activity>) -> Self {
        Self {
            io,
            activity,
            stalled: false,
        }
    }

    fn note<R>(&mut self, poll: &Poll<R>) {
        let stalled = poll.is_pending();
        if stalled != self.stalled {
            self.stalled = stalled;
            self.activity.stall(self.activity.io_key, stalled);
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for WatchedIo<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for WatchedIo<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.io).poll_write(cx, buf);
        this.note(&r);
        r
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.io).poll_write_vectored(cx, bufs);
        this.note(&r);
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.io).poll_flush(cx);
        this.note(&r);
        r
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

impl<T> Drop for WatchedIo<T> {
    fn drop(&mut self) {
        if self.stalled {
            self.activity.stall(self.activity.io_key, false);
        }
    }
}
