//! A WebTransport session: the streams and datagrams that share one extended CONNECT.

use std::{
    collections::VecDeque,
    fmt,
    net::SocketAddr,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use bytes::{BufMut, Bytes, BytesMut};
use tokio::sync::{mpsc, watch, Notify};
use web_transport_proto::VarInt;

use crate::{
    capsule,
    error::SessionError,
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
    Close { code: u32, reason: String },
    Drain,
}

/// What every handle to a session shares with the connection that feeds it.
pub(crate) struct SessionShared {
    pub(crate) id: u64,
    pub(crate) conn: quinn::Connection,
    pub(crate) path: String,
    prefix: Bytes,
    closed: watch::Sender<Option<CloseInfo>>,
    draining: watch::Sender<bool>,
    commands: mpsc::UnboundedSender<Command>,
    bi_tx: mpsc::UnboundedSender<(quinn::SendStream, quinn::RecvStream)>,
    bi_rx: tokio::sync::Mutex<mpsc::UnboundedReceiver<(quinn::SendStream, quinn::RecvStream)>>,
    uni_tx: mpsc::UnboundedSender<quinn::RecvStream>,
    uni_rx: tokio::sync::Mutex<mpsc::UnboundedReceiver<quinn::RecvStream>>,
    datagrams: Mutex<VecDeque<Bytes>>,
    datagram_ready: Notify,
    datagram_limit: usize,
    datagrams_dropped: AtomicU64,
}

impl SessionShared {
    pub(crate) fn new(
        id: u64,
        conn: quinn::Connection,
        path: String,
        datagram_limit: usize,
    ) -> (Arc<Self>, mpsc::UnboundedReceiver<Command>) {
        let (commands, command_rx) = mpsc::unbounded_channel();
        let (bi_tx, bi_rx) = mpsc::unbounded_channel();
        let (uni_tx, uni_rx) = mpsc::unbounded_channel();
        let mut prefix = BytesMut::new();
        VarInt::from_u64(id / 4)
            .unwrap_or(VarInt::MAX)
            .encode(&mut prefix);
        let shared = Arc::new(Self {
            id,
            conn,
            path,
            prefix: prefix.freeze(),
            closed: watch::channel(None).0,
            draining: watch::channel(false).0,
            commands,
            bi_tx,
            bi_rx: tokio::sync::Mutex::new(bi_rx),
            uni_tx,
            uni_rx: tokio::sync::Mutex::new(uni_rx),
            datagrams: Mutex::new(VecDeque::new()),
            datagram_ready: Notify::new(),
            datagram_limit: datagram_limit.max(1),
            datagrams_dropped: AtomicU64::new(0),
        });
        (shared, command_rx)
    }

    pub(crate) fn closed_rx(&self) -> watch::Receiver<Option<CloseInfo>> {
        self.closed.subscribe()
    }

    pub(crate) fn close_info(&self) -> Option<CloseInfo> {
        self.closed.borrow().clone()
    }

    /// Records how the session ended; only the first call counts. Streams still queued for
    /// the application are reset so the peer learns the session is gone.
    pub(crate) fn set_closed(&self, info: CloseInfo) -> bool {
        let first = self.closed.send_if_modified(|slot| {
            if slot.is_none() {
                *slot = Some(info);
                true
            } else {
                false
            }
        });
        if first {
            let gone = quinn::VarInt::from_u64(WT_SESSION_GONE).unwrap_or(quinn::VarInt::MAX);
            if let Ok(mut rx) = self.bi_rx.try_lock() {
                while let Ok((mut s, mut r)) = rx.try_recv() {
                    let _ = s.reset(gone);
                    let _ = r.stop(gone);
                }
            }
            if let Ok(mut rx) = self.uni_rx.try_lock() {
                while let Ok(mut r) = rx.try_recv() {
                    let _ = r.stop(gone);
                }
            }
            self.datagram_ready.notify_waiters();
        }
        first
    }

    pub(crate) fn set_draining(&self) {
        self.draining.send_replace(true);
    }

    pub(crate) fn push_bi(&self, s: quinn::SendStream, r: quinn::RecvStream) {
        if let Err(mpsc::error::SendError((mut s, mut r))) = self.bi_tx.send((s, r)) {
            let gone = quinn::VarInt::from_u64(WT_SESSION_GONE).unwrap_or(quinn::VarInt::MAX);
            let _ = s.reset(gone);
            let _ = r.stop(gone);
        }
    }

    pub(crate) fn push_uni(&self, r: quinn::RecvStream) {
        if let Err(mpsc::error::SendError(mut r)) = self.uni_tx.send(r) {
            let gone = quinn::VarInt::from_u64(WT_SESSION_GONE).unwrap_or(quinn::VarInt::MAX);
            let _ = r.stop(gone);
        }
    }

    /// Queues a received datagram payload; when the queue is full the oldest is dropped,
    /// because for real-time data the newest is worth more.
    pub(crate) fn push_datagram(&self, payload: Bytes) {
        {
            let mut q = self.datagrams.lock().unwrap_or_else(|e| e.into_inner());
            if q.len() >= self.datagram_limit {
                q.pop_front();
                self.datagrams_dropped.fetch_add(1, Ordering::Relaxed);
            }
            q.push_back(payload);
        }
        self.datagram_ready.notify_one();
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
        self.shared.close(0, "");
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
        let mut closed = self.shared().closed_rx();
        let mut rx = self.shared().bi_rx.lock().await;
        tokio::select! {
            biased;
            Some((s, r)) = rx.recv() => Ok((
                SendStream::new(s, self.handle.clone()),
                RecvStream::new(r, self.handle.clone()),
            )),
            info = wait_closed(&mut closed) => Err(SessionError::Closed(info)),
        }
    }

    /// Waits for the next unidirectional stream the client opens.
    pub async fn accept_uni(&self) -> Result<RecvStream, SessionError> {
        let mut closed = self.shared().closed_rx();
        let mut rx = self.shared().uni_rx.lock().await;
        tokio::select! {
            biased;
            Some(r) = rx.recv() => Ok(RecvStream::new(r, self.handle.clone())),
            info = wait_closed(&mut closed) => Err(SessionError::Closed(info)),
        }
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
        self.shared()
            .datagrams
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop_front()
    }

    /// Waits for the next datagram from the client.
    pub async fn recv_datagram(&self) -> Result<Bytes, SessionError> {
        let shared = self.shared();
        loop {
            let notified = shared.datagram_ready.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(d) = shared
                .datagrams
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .pop_front()
            {
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
