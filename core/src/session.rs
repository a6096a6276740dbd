//! A WebTransport session: the streams and datagrams that share one extended CONNECT.

use std::{
    collections::VecDeque,
    fmt,
    net::SocketAddr,
    sync::{
        atomic::{AtomicU64, AtomicU8, AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use bytes::{BufMut, Bytes, BytesMut};
use tokio::sync::{mpsc, watch, Notify};
use web_transport_proto::VarInt;

pub use crate::transport::Transport;
use crate::{
    close::{wait_closed, CloseInfo, CloseInitiator},
    config::Limits,
    error::SessionError,
    qmux::{self, proto::Dir, QRecv, QSend, QmuxShared},
    stream::{RawRecv, RawSend, RecvStream, SendStream, StreamOwner},
};

/// How long a session's implicit close waits for its finished streams to be delivered.
pub(crate) const FLUSH_TIMEOUT: Duration = Duration::from_secs(10);

/// Connection statistics as seen from one session (shared by every session on the same
/// QUIC connection).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
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
    /// The smallest round-trip time seen (HTTP/3 only: QMux keeps just its latest ping's
    /// round trip).
    pub min_rtt: Option<Duration>,
    /// Packets received on the connection (UDP datagrams over HTTP/3, records over QMux).
    pub packets_received: u64,
    /// Bytes in packets declared lost on the connection.
    pub bytes_lost: u64,
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
    bi: VecDeque<(RawSend, RawRecv)>,
    uni: VecDeque<RawRecv>,
    datagrams: VecDeque<Bytes>,
    datagram_bytes: usize,
}

/// What every handle to a session shares with the connection that feeds it.
pub(crate) struct SessionShared {
    pub(crate) id: u64,
    pub(crate) backend: Backend,
    pub(crate) path: String,
    pub(crate) protocol: Option<String>,
    runtime: tokio::runtime::Handle,
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
    me: Mutex<std::sync::Weak<SessionShared>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// What carries a session.
pub(crate) enum Backend {
    /// WebTransport over HTTP/3: a QUIC connection, and the quarter stream ID that prefixes
    /// every datagram of this session.
    H3 {
        conn: quinn::Connection,
        prefix: Bytes,
    },
    /// A QMux connection over a WebSocket.
    Qmux(Arc<QmuxShared>),
}

impl Backend {
    /// The HTTP/3 backend of session `id` on `conn`.
    pub(crate) fn h3(conn: quinn::Connection, id: u64) -> Self {
        let mut prefix = BytesMut::new();
        VarInt::from_u64(id / 4)
            .unwrap_or(VarInt::MAX)
            .encode(&mut prefix);
        Self::H3 {
            conn,
            prefix: prefix.freeze(),
        }
    }
}

impl SessionShared {
    pub(crate) fn new(
        id: u64,
        backend: Backend,
        path: String,
        protocol: Option<String>,
        limits: &Limits,
        runtime: tokio::runtime::Handle,
    ) -> (Arc<Self>, mpsc::UnboundedReceiver<Command>) {
        let (commands, command_rx) = mpsc::unbounded_channel();
        let shared = Arc::new(Self {
            id,
            backend,
            path,
            protocol,
            runtime,
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
            me: Mutex::new(std::sync::Weak::new()),
        });
        shared.set_self();
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
            s.reset_gone();
            r.stop_gone();
        }
        for mut r in queued.1 {
            r.stop_gone();
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

    pub(crate) fn push_bi(&self, mut s: RawSend, mut r: RawRecv) {
        {
            let mut incoming = lock(&self.incoming);
            if !incoming.closed {
                incoming.bi.push_back((s, r));
                drop(incoming);
                self.bi_ready.notify_one();
                return;
            }
        }
        s.reset_gone();
        r.stop_gone();
    }

    pub(crate) fn push_uni(&self, mut r: RawRecv) {
        {
            let mut incoming = lock(&self.incoming);
            if !incoming.closed {
                incoming.uni.push_back(r);
                drop(incoming);
                self.uni_ready.notify_one();
                return;
            }
        }
        r.stop_gone();
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
        let reason = crate::close::truncate_reason(reason).to_owned();
        let info = CloseInfo {
            code,
            reason: reason.clone(),
            initiator: CloseInitiator::Local,
        };
        if let Backend::Qmux(q) = &self.backend {
            // Over QMux the connection is the session: close it before `set_closed` lets
            // go of the streams the application never took, so the peer gets
            // CONNECTION_CLOSE with our code and no STOP_SENDING or RESET_STREAM ahead of
            // it (which a page would report as a stream's failure instead of the session's).
            if self.closed.borrow().is_none() {
                q.close(code, &reason);
            }
        }
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
    pub(crate) fn track_unflushed(self: &Arc<Self>, stream: RawSend) {
        self.unflushed.fetch_add(1, Ordering::AcqRel);
        let this = self.clone();
        self.runtime.spawn(async move {
            stream.flushed().await;
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

    pub(crate) fn runtime(&self) -> &tokio::runtime::Handle {
        &self.runtime
    }

    pub(crate) fn command(&self, cmd: Command) {
        if let Backend::Qmux(q) = &self.backend {
            // QMux sessions have no CONNECT stream to drive: the machine does it all.
            match cmd {
                Command::Close { code, reason } => q.close(code, &reason),
                Command::CloseWhenFlushed => {
                    let this = self.self_arc();
                    self.runtime.spawn(async move {
                        let Some(this) = this else { return };
                        let _ = tokio::time::timeout(FLUSH_TIMEOUT, this.flushed()).await;
                        this.close(0, "");
                    });
                }
                // QMux has no drain signal; the session carries on until closed.
                Command::Drain => {}
            }
            return;
        }
        let _ = self.commands.send(cmd);
    }

    fn self_arc(&self) -> Option<Arc<Self>> {
        lock(&self.me).upgrade()
    }

    pub(crate) fn set_self(self: &Arc<Self>) {
        *lock(&self.me) = Arc::downgrade(self);
    }
}

fn open_failed(e: crate::StreamError) -> SessionError {
    match e {
        crate::StreamError::SessionClosed(info) => SessionError::Closed(info),
        e => SessionError::OpenStream(e.to_string()),
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

impl StreamOwner for SessionHandle {
    fn closed_rx(&self) -> watch::Receiver<Option<CloseInfo>> {
        self.shared.closed_rx()
    }

    fn track_unflushed(&self, stream: RawSend) {
        self.shared.track_unflushed(stream);
    }

    fn runtime(&self) -> &tokio::runtime::Handle {
        self.shared.runtime()
    }

    fn quic_connection(&self) -> Option<&quinn::Connection> {
        match &self.shared.backend {
            Backend::H3 { conn, .. } => Some(conn),
            Backend::Qmux(_) => None,
        }
    }
}

impl qmux::SessionEvents for SessionShared {
    fn incoming_bi(&self, send: QSend, recv: QRecv) {
        self.push_bi(RawSend::Qmux(send), RawRecv::Qmux(recv));
    }

    fn incoming_uni(&self, recv: QRecv) {
        self.push_uni(RawRecv::Qmux(recv));
    }

    fn datagram(&self, payload: Bytes) {
        self.push_datagram(payload);
    }

    fn closed(&self, info: CloseInfo) -> bool {
        self.set_closed(info)
    }
}

/// An accepted WebTransport session. Cheap to clone; the session closes with code 0 once
/// every clone and every stream of it has been dropped.
///
/// Datagrams and streams run side by side; here each datagram is answered and each
/// unidirectional stream is read whole, until the client closes:
///
/// ```no_run
/// # async fn serve(session: ferrovia::Session) -> Result<(), Box<dyn std::error::Error>> {
/// let datagrams = {
///     let session = session.clone();
///     async move {
///         while let Ok(datagram) = session.recv_datagram().await {
///             session.send_datagram(&datagram).await?;
///         }
///         Ok::<_, ferrovia::SessionError>(())
///     }
/// };
/// let streams = async {
///     while let Ok(mut recv) = session.accept_uni().await {
///         let message = recv.read_to_end(64 * 1024).await?;
///         println!("{} bytes on a stream", message.len());
///     }
///     Ok::<_, ferrovia::StreamError>(())
/// };
/// let (d, s) = tokio::join!(datagrams, streams);
/// d?;
/// s?;
/// let info = session.closed().await;
/// println!("closed by {:?} with {} {:?}", info.initiator, info.code, info.reason);
/// # Ok(()) }
/// ```
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

    /// A session that ended before it started (the client left, or a limit refused it):
    /// what `accept` hands back instead of failing, so that an accept loop never stops
    /// because of what a client did. Its [`closed`](Self::closed) resolves at once with
    /// `info`.
    pub(crate) fn already_closed(
        id: u64,
        backend: Backend,
        path: String,
        protocol: Option<String>,
        limits: &Limits,
        runtime: tokio::runtime::Handle,
        info: CloseInfo,
    ) -> Self {
        let (shared, _commands) = SessionShared::new(id, backend, path, protocol, limits, runtime);
        shared.set_closed(info);
        Self::new(shared)
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
        match &self.shared().backend {
            Backend::H3 { conn, .. } => conn.remote_address(),
            Backend::Qmux(q) => q.remote_addr(),
        }
    }

    /// What carries this session: WebTransport over HTTP/3, or QMux over a WebSocket.
    pub fn transport(&self) -> Transport {
        match &self.shared().backend {
            Backend::H3 { .. } => Transport::WebTransport,
            Backend::Qmux(_) => Transport::Qmux,
        }
    }

    /// The subprotocol chosen when the session was accepted, if any.
    pub fn protocol(&self) -> Option<&str> {
        self.shared().protocol.as_deref()
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

    /// The next bidirectional stream the client opened, if one is queued, without waiting;
    /// fails with [`SessionError::Closed`] once the session has ended.
    pub fn try_accept_bi(&self) -> Result<Option<(SendStream, RecvStream)>, SessionError> {
        let mut q = lock(&self.shared().incoming);
        if let Some((s, r)) = q.bi.pop_front() {
            return Ok(Some((
                SendStream::new(s, self.handle.clone()),
                RecvStream::new(r, self.handle.clone()),
            )));
        }
        if q.closed {
            drop(q);
            return Err(self.closed_error());
        }
        Ok(None)
    }

    /// The next unidirectional stream the client opened, if one is queued, without
    /// waiting; fails with [`SessionError::Closed`] once the session has ended.
    pub fn try_accept_uni(&self) -> Result<Option<RecvStream>, SessionError> {
        let mut q = lock(&self.shared().incoming);
        if let Some(r) = q.uni.pop_front() {
            return Ok(Some(RecvStream::new(r, self.handle.clone())));
        }
        if q.closed {
            drop(q);
            return Err(self.closed_error());
        }
        Ok(None)
    }

    /// What is ready now, of the kinds [`ready`](Self::ready) reports.
    fn readiness(&self) -> Readiness {
        let shared = self.shared();
        let mut now = Readiness::NONE;
        {
            let q = lock(&shared.incoming);
            if q.closed {
                now = now | Readiness::BI | Readiness::UNI | Readiness::DATAGRAM;
            }
            if !q.bi.is_empty() {
                now = now | Readiness::BI;
            }
            if !q.uni.is_empty() {
                now = now | Readiness::UNI;
            }
            if !q.datagrams.is_empty() {
                now = now | Readiness::DATAGRAM;
            }
        }
        if shared.close_info().is_some() {
            now = now | Readiness::CLOSED;
        }
        if *shared.draining.borrow() {
            now = now | Readiness::DRAINING;
        }
        now
    }

    /// Waits until something of `interest` is ready, and says what is: a stream or a
    /// datagram queued (take it with `try_accept_bi`, `try_accept_uni` or
    /// `try_recv_datagram`; another caller may have taken it first), the session ended,
    /// or a drain asked for. Once the session has ended this returns at once with
    /// [`Readiness::CLOSED`] set, asked for or not, so nobody waits on a dead session.
    ///
    /// One wait for everything a session can deliver: a language binding keeps a single
    /// pending call per idle session instead of one per kind (see
    /// [`ready_with`](Self::ready_with) for one whose interest can grow while it waits).
    pub async fn ready(&self, interest: Readiness) -> Readiness {
        let shared = self.shared();
        let mut closed = shared.closed_rx();
        let mut draining = shared.draining.subscribe();
        loop {
            let bi = shared.bi_ready.notified();
            let uni = shared.uni_ready.notified();
            let datagram = shared.datagram_ready.notified();
            tokio::pin!(bi, uni, datagram);
            // Registered before looking, so nothing that arrives in between is missed.
            if interest.contains(Readiness::BI) {
                bi.as_mut().enable();
            }
            if interest.contains(Readiness::UNI) {
                uni.as_mut().enable();
            }
            if interest.contains(Readiness::DATAGRAM) {
                datagram.as_mut().enable();
            }
            closed.borrow_and_update();
            draining.borrow_and_update();
            let now = self.readiness();
            if now.contains(Readiness::CLOSED) {
                return (now & interest) | Readiness::CLOSED;
            }
            if !(now & interest).is_empty() {
                return now & interest;
            }
            tokio::select! {
                _ = &mut bi, if interest.contains(Readiness::BI) => {}
                _ = &mut uni, if interest.contains(Readiness::UNI) => {}
                _ = &mut datagram, if interest.contains(Readiness::DATAGRAM) => {}
                r = closed.changed() => if r.is_err() {
                    return interest | Readiness::CLOSED;
                },
                _ = draining.changed(), if interest.contains(Readiness::DRAINING) => {}
            }
        }
    }

    /// Like [`ready`](Self::ready), waiting for whatever `interest` holds at each moment:
    /// a change made with [`Interest::set`] while this waits applies at once, without
    /// ending the wait. The language bindings keep one such wait per session.
    pub async fn ready_with(&self, interest: &Interest) -> Readiness {
        // A permit left by a change made before this wait began is stale (the load below
        // sees that change): drop it rather than build the first wait twice.
        let _ = futures_util::FutureExt::now_or_never(interest.changed.notified());
        loop {
            let want = interest.get();
            // `notify_one` leaves a permit when nobody waits, so a change made between the
            // load above and this select is not missed.
            tokio::select! {
                biased;
                r = self.ready(want) => return r,
                () = interest.changed.notified() => {}
            }
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

    async fn open_qmux(&self, q: &Arc<QmuxShared>, dir: Dir) -> Result<u64, SessionError> {
        let mut closed = self.shared().closed_rx();
        tokio::select! {
            biased;
            r = q.open(dir) => r.map(|id| id.0).map_err(|e| self.lost(e)),
            info = wait_closed(&mut closed) => Err(SessionError::Closed(info)),
        }
    }

    /// Opens a bidirectional stream toward the client, waiting for stream credit.
    pub async fn open_bi(&self) -> Result<(SendStream, RecvStream), SessionError> {
        let (s, r) = match &self.shared().backend {
            Backend::H3 { conn, .. } => {
                let mut closed = self.shared().closed_rx();
                let (s, r) = tokio::select! {
                    biased;
                    r = conn.open_bi() => r.map_err(|e| self.lost(e.to_string()))?,
                    info = wait_closed(&mut closed) => return Err(SessionError::Closed(info)),
                };
                let mut send = SendStream::new(RawSend::Quic(s), self.handle.clone());
                // The header makes the stream visible to the client at once.
                send.write_chunk(self.stream_header(0x41))
                    .await
                    .map_err(open_failed)?;
                return Ok((send, RecvStream::new(RawRecv::Quic(r), self.handle.clone())));
            }
            Backend::Qmux(q) => {
                let id = self.open_qmux(q, Dir::Bi).await?;
                let id = crate::qmux::proto::StreamId(id);
                (
                    RawSend::Qmux(QSend::new(q.clone(), id)),
                    RawRecv::Qmux(QRecv::new(q.clone(), id)),
                )
            }
        };
        Ok((
            SendStream::new(s, self.handle.clone()),
            RecvStream::new(r, self.handle.clone()),
        ))
    }

    /// Opens a unidirectional stream toward the client, waiting for stream credit.
    pub async fn open_uni(&self) -> Result<SendStream, SessionError> {
        match &self.shared().backend {
            Backend::H3 { conn, .. } => {
                let mut closed = self.shared().closed_rx();
                let s = tokio::select! {
                    biased;
                    r = conn.open_uni() => r.map_err(|e| self.lost(e.to_string()))?,
                    info = wait_closed(&mut closed) => return Err(SessionError::Closed(info)),
                };
                let mut send = SendStream::new(RawSend::Quic(s), self.handle.clone());
                send.write_chunk(self.stream_header(0x54))
                    .await
                    .map_err(open_failed)?;
                Ok(send)
            }
            Backend::Qmux(q) => {
                let id = crate::qmux::proto::StreamId(self.open_qmux(q, Dir::Uni).await?);
                Ok(SendStream::new(
                    RawSend::Qmux(QSend::new(q.clone(), id)),
                    self.handle.clone(),
                ))
            }
        }
    }

    fn lost(&self, e: String) -> SessionError {
        SessionError::Closed(
            self.shared()
                .close_info()
                .unwrap_or_else(|| CloseInfo::connection_lost(e)),
        )
    }

    /// The largest datagram payload that can be sent now (0 if the client did not enable
    /// datagrams). Over QMux, datagrams travel inside the WebSocket's TCP connection: they
    /// are delivered reliably and in order, and may be as large as a QMux record allows.
    pub fn max_datagram_size(&self) -> usize {
        match &self.shared().backend {
            Backend::H3 { conn, prefix } => conn
                .max_datagram_size()
                .map_or(0, |m| m.saturating_sub(prefix.len())),
            Backend::Qmux(q) => q.max_datagram_size(),
        }
    }

    /// Frames `payload` with the session's quarter-stream-ID prefix, or says why it cannot
    /// be sent.
    fn frame_datagram(
        &self,
        conn: &quinn::Connection,
        prefix: &Bytes,
        payload: &[u8],
    ) -> Result<Bytes, SessionError> {
        if let Some(info) = self.shared().close_info() {
            return Err(SessionError::Closed(info));
        }
        let Some(limit) = conn.max_datagram_size() else {
            return Err(SessionError::DatagramsUnsupported);
        };
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
            quinn::SendDatagramError::ConnectionLost(e) => self.lost(e.to_string()),
            _ => SessionError::DatagramsUnsupported,
        }
    }

    fn qmux_datagram(&self, q: &QmuxShared, payload: &[u8]) -> Result<(), SessionError> {
        use crate::qmux::proto::DatagramError as E;
        if let Some(info) = self.shared().close_info() {
            return Err(SessionError::Closed(info));
        }
        q.send_datagram(Bytes::copy_from_slice(payload))
            .map_err(|e| match e {
                E::TooLarge => SessionError::DatagramTooLarge {
                    size: payload.len(),
                    max: q.max_datagram_size(),
                },
                E::ConnectionClosed => self.lost("session closed".into()),
                E::Unsupported | E::ParametersPending => SessionError::DatagramsUnsupported,
            })
    }

    /// Sends a datagram, waiting while the outgoing datagram buffer is full. Fails with
    /// [`SessionError::DatagramTooLarge`] when it cannot fit in a packet.
    pub async fn send_datagram(&self, payload: &[u8]) -> Result<(), SessionError> {
        match &self.shared().backend {
            Backend::H3 { conn, prefix } => {
                let framed = self.frame_datagram(conn, prefix, payload)?;
                conn.send_datagram_wait(framed)
                    .await
                    .map_err(|e| self.datagram_error(e, payload.len()))
            }
            Backend::Qmux(q) => self.qmux_datagram(q, payload),
        }
    }

    /// Sends a datagram without waiting: when the outgoing datagram buffer is full, the
    /// oldest queued datagram is dropped instead (datagrams are unreliable anyway). For
    /// callers where a wait per datagram costs more than the datagram is worth.
    pub fn try_send_datagram(&self, payload: &[u8]) -> Result<(), SessionError> {
        match &self.shared().backend {
            Backend::H3 { conn, prefix } => {
                let framed = self.frame_datagram(conn, prefix, payload)?;
                conn.send_datagram(framed)
                    .map_err(|e| self.datagram_error(e, payload.len()))
            }
            Backend::Qmux(q) => self.qmux_datagram(q, payload),
        }
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
        let dropped = self.shared().datagrams_dropped.load(Ordering::Relaxed);
        match &self.shared().backend {
            Backend::H3 { conn, .. } => {
                let s = conn.stats();
                SessionStats {
                    rtt: conn.rtt(),
                    bytes_sent: s.udp_tx.bytes,
                    bytes_received: s.udp_rx.bytes,
                    packets_sent: s.path.sent_packets,
                    packets_lost: s.path.lost_packets,
                    congestion_window: s.path.cwnd,
                    mtu: s.path.current_mtu,
                    datagrams_dropped: dropped,
                    min_rtt: Some(s.path.min_rtt),
                    packets_received: s.udp_rx.datagrams,
                    bytes_lost: s.path.lost_bytes,
                }
            }
            Backend::Qmux(q) => {
                let (rtt, s, record) = q.stats();
                SessionStats {
                    rtt,
                    bytes_sent: s.bytes_sent,
                    bytes_received: s.bytes_received,
                    packets_sent: s.records_sent,
                    packets_lost: 0,
                    congestion_window: 0,
                    mtu: u16::try_from(record).unwrap_or(u16::MAX),
                    datagrams_dropped: dropped + s.datagrams_dropped,
                    min_rtt: None,
                    packets_received: s.records_received,
                    bytes_lost: 0,
                }
            }
        }
    }
}

/// What [`Session::ready`] waits for and reports; combine with `|`.
#[doc(hidden)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Readiness(u8);

impl Readiness {
    /// Nothing.
    pub const NONE: Self = Self(0);
    /// A bidirectional stream from the client is queued (or the session ended).
    pub const BI: Self = Self(1);
    /// A unidirectional stream from the client is queued (or the session ended).
    pub const UNI: Self = Self(2);
    /// A datagram is queued (or the session ended).
    pub const DATAGRAM: Self = Self(4);
    /// The session ended.
    pub const CLOSED: Self = Self(8);
    /// The client asked to drain the session.
    pub const DRAINING: Self = Self(16);

    /// The bits, as a binding passes them across.
    pub fn bits(self) -> u8 {
        self.0
    }

    /// From bits; unknown bits are ignored.
    pub fn from_bits(bits: u8) -> Self {
        Self(bits & 31)
    }

    /// Whether every kind in `other` is in `self`.
    pub fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }

    /// Whether nothing is set.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }
}

/// What a [`Session::ready_with`] wait waits for; it may change while the wait is pending.
#[derive(Debug, Default)]
pub struct Interest {
    bits: AtomicU8,
    changed: Notify,
}

impl Interest {
    /// An interest in `readiness`.
    pub fn new(readiness: Readiness) -> Self {
        Self {
            bits: AtomicU8::new(readiness.bits()),
            changed: Notify::new(),
        }
    }

    /// Changes what the pending (or the next) wait waits for.
    pub fn set(&self, readiness: Readiness) {
        self.bits.store(readiness.bits(), Ordering::Release);
        self.changed.notify_one();
    }

    /// What is waited for now.
    pub fn get(&self) -> Readiness {
        Readiness::from_bits(self.bits.load(Ordering::Acquire))
    }
}

impl std::ops::BitOr for Readiness {
    type Output = Self;
    fn bitor(self, rhs: Self) -> Self {
        Self(self.0 | rhs.0)
    }
}

impl std::ops::BitAnd for Readiness {
    type Output = Self;
    fn bitand(self, rhs: Self) -> Self {
        Self(self.0 & rhs.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app_close(code: u64, reason: &[u8]) -> quinn::ConnectionError {
        quinn::ConnectionError::ApplicationClosed(quinn::ApplicationClose {
            error_code: quinn::VarInt::from_u64(code).unwrap(),
            reason: Bytes::copy_from_slice(reason),
        })
    }

    #[test]
    fn a_webtransport_code_in_a_connection_close_is_the_sessions_code() {
        let code = crate::stream::error_to_http3(4242);
        let info = CloseInfo::from_connection_error(&app_close(code, b"bye"));
        assert_eq!(info.code, 4242);
        assert_eq!(info.reason, "bye");
        assert_eq!(info.initiator, CloseInitiator::Remote);
    }

    #[test]
    fn other_connection_closes_stay_connection_errors() {
        // H3_NO_ERROR and a reserved point inside the WebTransport range carry no session code.
        let reserved = crate::stream::error_to_http3(0) + 0x1e;
        for code in [0x100, reserved] {
            let info = CloseInfo::from_connection_error(&app_close(code, b"x"));
            assert_eq!((info.code, info.initiator), (0, CloseInitiator::Connection));
        }
        let info = CloseInfo::from_connection_error(&quinn::ConnectionError::TimedOut);
        assert_eq!((info.code, info.initiator), (0, CloseInitiator::Connection));
    }
}
