//! A WebTransport session: the streams and datagrams that share one extended CONNECT.

use std::{
    collections::VecDeque,
    fmt,
    net::SocketAddr,
    sync::{
        atomic::{AtomicU64, AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use bytes::{BufMut, Bytes, BytesMut};
use tokio::sync::{mpsc, watch, Notify};
use web_transport_proto::VarInt;

use crate::{
    config::Limits,
    error::SessionError,
    h3::capsule,
    stream::{RecvStream, SendStream, WT_SESSION_GONE},
};

/// Who ended a session.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CloseInitiator {
    /// This server called [`Session::close`] (or dropped every handle).
    Local,
    /// The client sent CLOSE_WEBTRANSPORT_SESSION, or finished or reset the CONNECT stream.
    Remote,
    /// The QUIC connection ended underneath the session (idle timeout, loss, shutdown).
    Connection,
}

/// How a session ended: the application code and reason carried by
/// CLOSE_WEBTRANSPORT_SESSION (0 and empty when the session ended any other way).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CloseInfo {
    /// The application close code.
    pub code: u32,
    /// The UTF-8 reason, at most 1024 bytes.
    pub reason: String,
    /// Who ended the session.
    pub initiator: CloseInitiator,
}

impl CloseInfo {
    pub(crate) fn connection_lost(reason: String) -> Self {
        // A peer's CONNECTION_CLOSE reason can be as long as a packet: keep the bound that
        // every close reason has.
        let reason = capsule::truncate_reason(&reason).to_owned();
        Self {
            code: 0,
            reason,
            initiator: CloseInitiator::Connection,
        }
    }
}

impl fmt::Display for CloseInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let who = match self.initiator {
            CloseInitiator::Local => "locally",
            CloseInitiator::Remote => "by the peer",
            CloseInitiator::Connection => "with the connection",
        };
        write!(f, "closed {who} with code {}", self.code)?;
        if !self.reason.is_empty() {
            write!(f, ": {}", self.reason)?;
        }
        Ok(())
    }
}

/// Connection statistics as seen from one session (shared by every session on the same
/// QUIC connection).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SessionStats {
    /// Smoothed round-trip time.
    pub rtt: Duration,
    /// UDP payload bytes sent on the connection.
    pub bytes_sent: u64,
    /// UDP payload bytes received on the connection.
    pub bytes_received: u64,
    /// Packets sent on the connection.
    pub packets_sent: u64,
    /// Packets declared lost on the connection.
    pub packets_lost: u64,
    /// The congestion window in bytes.
    pub congestion_window: u64,
    /// The current path MTU.
    pub mtu: u16,
    /// Datagrams received for this session but dropped because its queue was full.
    pub datagrams_dropped: u64,
}

pub(crate) enum Command {
    Close {
        code: u32,
        reason: String,
    },
    /// Close with code 0 once every finished stream has been acknowledged (bounded).
    CloseWhenFlushed,
    Drain,
}

/// What arrived for the session and waits for the application. Bounded: streams by the
/// client's QUIC stream credit, datagrams by count and bytes (oldest dropped).
#[derive(Default)]
struct Incoming {
    closed: bool,
    bi: VecDeque<(quinn::SendStream, quinn::RecvStream)>,
    uni: VecDeque<quinn::RecvStream>,
    datagrams: VecDeque<Bytes>,
    datagram_bytes: usize,
}

/// What every handle to a session shares with the connection that feeds it.
pub(crate) struct SessionShared {
    pub(crate) id: u64,
    pub(crate) conn: quinn::Connection,
    pub(crate) path: String,
    runtime: tokio::runtime::Handle,
    prefix: Bytes,
    closed: watch::Sender<Option<CloseInfo>>,
    draining: watch::Sender<bool>,
    commands: mpsc::UnboundedSender<Command>,
    incoming: Mutex<Incoming>,
    bi_ready: Notify,
    uni_ready: Notify,
    datagram_ready: Notify,
    datagram_limit: usize,
    datagram_byte_limit: usize,
    datagrams_dropped: AtomicU64,
    /// Runs once, before `closed` resolves: releases the session's slots.
    on_close: Mutex<Option<Box<dyn FnOnce() + Send>>>,
    /// Finished send streams whose data is not yet acknowledged.
    unflushed: AtomicUsize,
    flushed: Notify,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn gone() -> quinn::VarInt {
    quinn::VarInt::from_u64(WT_SESSION_GONE).unwrap_or(quinn::VarInt::MAX)
}

impl SessionShared {
    pub(crate) fn new(
        id: u64,
        conn: quinn::Connection,
        path: String,
        limits: &Limits,
        runtime: tokio::runtime::Handle,
    ) -> (Arc<Self>, mpsc::UnboundedReceiver<Command>) {
        let (commands, command_rx) = mpsc::unbounded_channel();
        let mut prefix = BytesMut::new();
        VarInt::from_u64(id / 4)
            .unwrap_or(VarInt::MAX)
            .encode(&mut prefix);
        let shared = Arc::new(Self {
            id,
            conn,
            path,
            runtime,
            prefix: prefix.freeze(),
            closed: watch::channel(None).0,
            draining: watch::channel(false).0,
            commands,
            incoming: Mutex::new(Incoming::default()),
            bi_ready: Notify::new(),
            uni_ready: Notify::new(),
            datagram_ready: Notify::new(),
            datagram_limit: limits.datagram_queue.max(1),
            datagram_byte_limit: limits.datagram_queue_bytes.max(1),
            datagrams_dropped: AtomicU64::new(0),
            on_close: Mutex::new(None),
            unflushed: AtomicUsize::new(0),
            flushed: Notify::new(),
        });
        (shared, command_rx)
    }

    pub(crate) fn on_close(&self, f: Box<dyn FnOnce() + Send>) {
        *lock(&self.on_close) = Some(f);
    }

    pub(crate) fn closed_rx(&self) -> watch::Receiver<Option<CloseInfo>> {
        self.closed.subscribe()
    }

    pub(crate) fn close_info(&self) -> Option<CloseInfo> {
        self.closed.borrow().clone()
    }

    /// Records how the session ended; only the first call counts. Streams still queued for
    /// the application are reset so the peer learns the session is gone, and the session's
    /// slots are released before anyone waiting on `closed` wakes up, so that counts read
    /// after `closed` are already right.
    pub(crate) fn set_closed(&self, info: CloseInfo) -> bool {
        if self.closed.borrow().is_some() {
            return false;
        }
        let queued = {
            let mut incoming = lock(&self.incoming);
            if incoming.closed {
                return false;
            }
            incoming.closed = true;
            incoming.datagrams.clear();
            incoming.datagram_bytes = 0;
            (
                std::mem::take(&mut incoming.bi),
                std::mem::take(&mut incoming.uni),
            )
        };
        for (mut s, mut r) in queued.0 {
            let _ = s.reset(gone());
            let _ = r.stop(gone());
        }
        for mut r in queued.1 {
            let _ = r.stop(gone());
        }
        if let Some(f) = lock(&self.on_close).take() {
            f();
        }
        self.closed.send_replace(Some(info));
        self.bi_ready.notify_waiters();
        self.uni_ready.notify_waiters();
        self.datagram_ready.notify_waiters();
        true
    }

    pub(crate) fn set_draining(&self) {
        self.draining.send_replace(true);
    }

    pub(crate) fn push_bi(&self, mut s: quinn::SendStream, mut r: quinn::RecvStream) {
        {
            let mut incoming = lock(&self.incoming);
            if !incoming.closed {
                incoming.bi.push_back((s, r));
                drop(incoming);
                self.bi_ready.notify_one();
                return;
            }
        }
        let _ = s.reset(gone());
        let _ = r.stop(gone());
    }

    pub(crate) fn push_uni(&self, mut r: quinn::RecvStream) {
        {
            let mut incoming = lock(&self.incoming);
            if !incoming.closed {
                incoming.uni.push_back(r);
                drop(incoming);
                self.uni_ready.notify_one();
                return;
            }
        }
        let _ = r.stop(gone());
    }

    /// Queues a received datagram payload; past the count or byte bound the oldest are
    /// dropped, because for real-time data the newest is worth more.
    pub(crate) fn push_datagram(&self, payload: Bytes) {
        {
            let mut q = lock(&self.incoming);
            if q.closed {
                return;
            }
            if payload.len() > self.datagram_byte_limit {
                self.datagrams_dropped.fetch_add(1, Ordering::Relaxed);
                return;
            }
            while q.datagrams.len() >= self.datagram_limit
                || q.datagram_bytes + payload.len() > self.datagram_byte_limit
            {
                let Some(old) = q.datagrams.pop_front() else {
                    break;
                };
                q.datagram_bytes -= old.len();
                self.datagrams_dropped.fetch_add(1, Ordering::Relaxed);
            }
            q.datagram_bytes += payload.len();
            q.datagrams.push_back(payload);
        }
        self.datagram_ready.notify_one();
    }

    fn pop_datagram(&self) -> Option<Bytes> {
        let mut q = lock(&self.incoming);
        let d = q.datagrams.pop_front()?;
        q.datagram_bytes -= d.len();
        Some(d)
    }

    /// Closes the session locally; only the first close counts.
    pub(crate) fn close(&self, code: u32, reason: &str) {
        let reason = capsule::truncate_reason(reason).to_owned();
        let info = CloseInfo {
            code,
            reason: reason.clone(),
            initiator: CloseInitiator::Local,
        };
        if self.set_closed(info) {
            self.command(Command::Close { code, reason });
        }
    }

    /// The application let go of every handle: close with code 0, but only after the
    /// streams it finished have been delivered (bounded), so that dropping a session after
    /// writing loses nothing.
    fn close_implicitly(&self) {
        if self.close_info().is_some() {
            return;
        }
        if self.unflushed.load(Ordering::Acquire) == 0 {
            self.close(0, "");
        } else {
            self.command(Command::CloseWhenFlushed);
        }
    }

    /// A finished send stream was dropped before its data was acknowledged: watch it.
    pub(crate) fn track_unflushed(self: &Arc<Self>, stream: quinn::SendStream) {
        self.unflushed.fetch_add(1, Ordering::AcqRel);
        let this = self.clone();
        self.runtime.spawn(async move {
            let _ = stream.stopped().await;
            if this.unflushed.fetch_sub(1, Ordering::AcqRel) == 1 {
                this.flushed.notify_waiters();
            }
        });
    }

    /// Resolves once every finished stream has been acknowledged.
    pub(crate) async fn flushed(&self) {
        loop {
            let notified = self.flushed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.unflushed.load(Ordering::Acquire) == 0 {
                return;
            }
            notified.await;
        }
    }

    pub(crate) fn command(&self, cmd: Command) {
        let _ = self.commands.send(cmd);
    }
}

fn open_failed(e: crate::StreamError) -> SessionError {
    match e {
        crate::StreamError::SessionClosed(info) => SessionError::Closed(info),
        e => SessionError::OpenStream(e.to_string()),
    }
}

/// Waits until the session has a [`CloseInfo`].
pub(crate) async fn wait_closed(rx: &mut watch::Receiver<Option<CloseInfo>>) -> CloseInfo {
    match rx.wait_for(|c| c.is_some()).await {
        Ok(info) => info
            .clone()
            .unwrap_or_else(|| CloseInfo::connection_lost(String::new())),
        // The sender lives as long as the session; reaching here means it is gone.
        Err(_) => CloseInfo::connection_lost("session dropped".into()),
    }
}

/// Owns the session on behalf of the application: when the last handle (including every
/// stream) is dropped, the session is closed with code 0.
pub(crate) struct SessionHandle {
    pub(crate) shared: Arc<SessionShared>,
}

impl fmt::Debug for SessionHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field("id", &self.shared.id)
            .finish()
    }
}

impl Drop for SessionHandle {
    fn drop(&mut self) {
        self.shared.close_implicitly();
    }
}

/// An accepted WebTransport session. Cheap to clone; the session closes with code 0 once
/// every clone and every stream of it has been dropped.
#[derive(Clone, Debug)]
pub struct Session {
    handle: Arc<SessionHandle>,
}

impl Session {
    pub(crate) fn new(shared: Arc<SessionShared>) -> Self {
        Self {
            handle: Arc::new(SessionHandle { shared }),
        }
    }

    fn shared(&self) -> &SessionShared {
        &self.handle.shared
    }

    /// The session ID: the QUIC stream ID of its CONNECT stream.
    pub fn id(&self) -> u64 {
        self.shared().id
    }

    /// The request path (with query) the session was opened with.
    pub fn path(&self) -> &str {
        &self.shared().path
    }

    /// The client's address.
    pub fn remote_addr(&self) -> SocketAddr {
        self.shared().conn.remote_address()
    }

    /// Waits for the next bidirectional stream the client opens.
    pub async fn accept_bi(&self) -> Result<(SendStream, RecvStream), SessionError> {
        let shared = self.shared();
        loop {
            let notified = shared.bi_ready.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut q = lock(&shared.incoming);
                if let Some((s, r)) = q.bi.pop_front() {
                    return Ok((
                        SendStream::new(s, self.handle.clone()),
                        RecvStream::new(r, self.handle.clone()),
                    ));
                }
                if q.closed {
                    drop(q);
                    return Err(self.closed_error());
                }
            }
            notified.await;
        }
    }

    /// Waits for the next unidirectional stream the client opens.
    pub async fn accept_uni(&self) -> Result<RecvStream, SessionError> {
        let shared = self.shared();
        loop {
            let notified = shared.uni_ready.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut q = lock(&shared.incoming);
                if let Some(r) = q.uni.pop_front() {
                    return Ok(RecvStream::new(r, self.handle.clone()));
                }
                if q.closed {
                    drop(q);
                    return Err(self.closed_error());
                }
            }
            notified.await;
        }
    }

    fn closed_error(&self) -> SessionError {
        SessionError::Closed(
            self.shared()
                .close_info()
                .unwrap_or_else(|| CloseInfo::connection_lost(String::new())),
        )
    }

    fn stream_header(&self, kind: u64) -> Bytes {
        let mut buf = BytesMut::with_capacity(16);
        VarInt::from_u64(kind)
            .unwrap_or(VarInt::MAX)
            .encode(&mut buf);
        VarInt::from_u64(self.id())
            .unwrap_or(VarInt::MAX)
            .encode(&mut buf);
        buf.freeze()
    }

    /// Opens a bidirectional stream toward the client, waiting for stream credit.
    pub async fn open_bi(&self) -> Result<(SendStream, RecvStream), SessionError> {
        let mut closed = self.shared().closed_rx();
        let (s, r) = tokio::select! {
            biased;
            r = self.shared().conn.open_bi() => r.map_err(|e| self.lost(e))?,
            info = wait_closed(&mut closed) => return Err(SessionError::Closed(info)),
        };
        let mut send = SendStream::new(s, self.handle.clone());
        // The header makes the stream visible to the client at once.
        send.write_chunk(self.stream_header(0x41))
            .await
            .map_err(open_failed)?;
        Ok((send, RecvStream::new(r, self.handle.clone())))
    }

    /// Opens a unidirectional stream toward the client, waiting for stream credit.
    pub async fn open_uni(&self) -> Result<SendStream, SessionError> {
        let mut closed = self.shared().closed_rx();
        let s = tokio::select! {
            biased;
            r = self.shared().conn.open_uni() => r.map_err(|e| self.lost(e))?,
            info = wait_closed(&mut closed) => return Err(SessionError::Closed(info)),
        };
        let mut send = SendStream::new(s, self.handle.clone());
        send.write_chunk(self.stream_header(0x54))
            .await
            .map_err(open_failed)?;
        Ok(send)
    }

    fn lost(&self, e: quinn::ConnectionError) -> SessionError {
        SessionError::Closed(
            self.shared()
                .close_info()
                .unwrap_or_else(|| CloseInfo::connection_lost(e.to_string())),
        )
    }

    /// The largest datagram payload that fits in one packet now (0 if the client did not
    /// enable datagrams).
    pub fn max_datagram_size(&self) -> usize {
        self.shared()
            .conn
            .max_datagram_size()
            .map_or(0, |m| m.saturating_sub(self.shared().prefix.len()))
    }

    /// Frames `payload` with the session's quarter-stream-ID prefix, or says why it cannot
    /// be sent.
    fn frame_datagram(&self, payload: &[u8]) -> Result<Bytes, SessionError> {
        if let Some(info) = self.shared().close_info() {
            return Err(SessionError::Closed(info));
        }
        let Some(limit) = self.shared().conn.max_datagram_size() else {
            return Err(SessionError::DatagramsUnsupported);
        };
        let prefix = &self.shared().prefix;
        let max = limit.saturating_sub(prefix.len());
        if payload.len() > max {
            return Err(SessionError::DatagramTooLarge {
                size: payload.len(),
                max,
            });
        }
        let mut buf = BytesMut::with_capacity(prefix.len() + payload.len());
        buf.put_slice(prefix);
        buf.put_slice(payload);
        Ok(buf.freeze())
    }

    fn datagram_error(&self, e: quinn::SendDatagramError, size: usize) -> SessionError {
        match e {
            quinn::SendDatagramError::TooLarge => SessionError::DatagramTooLarge {
                size,
                max: self.max_datagram_size(),
            },
            quinn::SendDatagramError::ConnectionLost(e) => self.lost(e),
            _ => SessionError::DatagramsUnsupported,
        }
    }

    /// Sends a datagram, waiting while the outgoing datagram buffer is full. Fails with
    /// [`SessionError::DatagramTooLarge`] when it cannot fit in a packet.
    pub async fn send_datagram(&self, payload: &[u8]) -> Result<(), SessionError> {
        let framed = self.frame_datagram(payload)?;
        self.shared()
            .conn
            .send_datagram_wait(framed)
            .await
            .map_err(|e| self.datagram_error(e, payload.len()))
    }

    /// Sends a datagram without waiting: when the outgoing datagram buffer is full, the
    /// oldest queued datagram is dropped instead (datagrams are unreliable anyway). For
    /// callers where a wait per datagram costs more than the datagram is worth.
    pub fn try_send_datagram(&self, payload: &[u8]) -> Result<(), SessionError> {
        let framed = self.frame_datagram(payload)?;
        self.shared()
            .conn
            .send_datagram(framed)
            .map_err(|e| self.datagram_error(e, payload.len()))
    }

    /// A datagram already queued from the client, if any, without waiting.
    pub fn try_recv_datagram(&self) -> Option<Bytes> {
        self.shared().pop_datagram()
    }

    /// Waits for the next datagram from the client.
    pub async fn recv_datagram(&self) -> Result<Bytes, SessionError> {
        let shared = self.shared();
        loop {
            let notified = shared.datagram_ready.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(d) = shared.pop_datagram() {
                return Ok(d);
            }
            if let Some(info) = shared.close_info() {
                return Err(SessionError::Closed(info));
            }
            notified.await;
        }
    }

    /// Closes the session: sends CLOSE_WEBTRANSPORT_SESSION with `code` and `reason`
    /// (truncated to 1024 bytes), then finishes the CONNECT stream. Later calls do nothing.
    pub fn close(&self, code: u32, reason: &str) {
        self.shared().close(code, reason);
    }

    /// Asks the client to wrap up (DRAIN_WEBTRANSPORT_SESSION) without closing yet.
    pub fn drain(&self) {
        self.shared().command(Command::Drain);
    }

    /// Whether the client asked this server to drain the session.
    pub fn is_draining(&self) -> bool {
        *self.shared().draining.borrow()
    }

    /// Resolves when the client asks to drain the session (or at once if it already did).
    pub async fn draining(&self) {
        let mut rx = self.shared().draining.subscribe();
        let _ = rx.wait_for(|d| *d).await;
    }

    /// Resolves once the session has ended, however it ended.
    pub async fn closed(&self) -> CloseInfo {
        let mut rx = self.shared().closed_rx();
        wait_closed(&mut rx).await
    }

    /// How the session ended, if it has.
    pub fn close_info(&self) -> Option<CloseInfo> {
        self.shared().close_info()
    }

    /// Statistics of the underlying connection.
    pub fn stats(&self) -> SessionStats {
        let conn = &self.shared().conn;
        let s = conn.stats();
        SessionStats {
            rtt: conn.rtt(),
            bytes_sent: s.udp_tx.bytes,
            bytes_received: s.udp_rx.bytes,
            packets_sent: s.path.sent_packets,
            packets_lost: s.path.lost_packets,
            congestion_window: s.path.cwnd,
            mtu: s.path.current_mtu,
            datagrams_dropped: self.shared().datagrams_dropped.load(Ordering::Relaxed),
        }
    }
}
