//! One QUIC connection speaking HTTP/3: the control streams, the CONNECT requests, and the
//! routing of WebTransport streams and datagrams to their sessions.
//!
//! Everything a client can make this code hold or wait for is bounded: stream headers and
//! SETTINGS have a deadline, every write toward the client has a deadline, early streams and
//! datagrams are capped, refused requests drain a per-connection allowance, and a
//! connection without sessions is closed after a while.

use std::{
    collections::{HashMap, HashSet},
    future::Future,
    net::IpAddr,
    sync::{Arc, Mutex},
    task::{Context, Poll},
    time::Duration,
};

use bytes::{Buf, Bytes};
use tokio::sync::watch;
use tracing::{debug, trace, warn};

use super::{
    capsule::{self, Capsule, CapsuleReader},
    connect::parse_connect,
    frame::{self, FrameDecoder},
    qpack,
    session_request::H3Request,
    settings::PeerSettings,
};
use crate::{
    request::{RequestHead, SessionRequest},
    session::{
        Backend, CloseInfo, CloseInitiator, Command, Session, SessionShared, Transport,
        FLUSH_TIMEOUT,
    },
    shared::{Allowance, ConnSlot, IpSessionToken, ServerShared, SessionSlot},
    stream::{RawRecv, RawSend, WT_BUFFERED_STREAM_REJECTED, WT_SESSION_GONE},
};

/// HTTP/3 error codes (RFC 9114 §8.1, RFC 9204 §6) we send.
pub(crate) mod h3 {
    pub const NO_ERROR: u32 = 0x100;
    pub const INTERNAL_ERROR: u32 = 0x102;
    pub const STREAM_CREATION_ERROR: u32 = 0x103;
    pub const CLOSED_CRITICAL_STREAM: u32 = 0x104;
    pub const FRAME_UNEXPECTED: u32 = 0x105;
    pub const EXCESSIVE_LOAD: u32 = 0x107;
    pub const ID_ERROR: u32 = 0x108;
    pub const SETTINGS_ERROR: u32 = 0x109;
    pub const MISSING_SETTINGS: u32 = 0x10a;
    pub const REQUEST_REJECTED: u32 = 0x10b;
    pub const REQUEST_CANCELLED: u32 = 0x10c;
    pub const REQUEST_INCOMPLETE: u32 = 0x10d;
    pub const MESSAGE_ERROR: u32 = 0x10e;
    pub const QPACK_DECOMPRESSION_FAILED: u32 = 0x200;
}

/// Upper bound on a request's HEADERS frame; browsers send well under 2 KiB.
pub(crate) const MAX_HEADERS_LEN: u64 = 16 * 1024;
/// Upper bound on a control-stream frame we keep (SETTINGS, GOAWAY and friends).
const MAX_CONTROL_FRAME: u64 = 16 * 1024;
/// Early CONNECT-stream bytes (capsules before the session was accepted) kept at most.
pub(crate) const MAX_EARLY_CAPSULE_BYTES: usize = 8 * 1024;

pub(crate) fn code(v: u64) -> quinn::VarInt {
    quinn::VarInt::from_u64(v).unwrap_or(quinn::VarInt::MAX)
}

/// Something that arrived for a session before the application accepted it.
enum Early {
    Bi(quinn::SendStream, quinn::RecvStream),
    Uni(quinn::RecvStream),
    Datagram(Bytes),
}

fn refuse(early: Early, why: u64) {
    match early {
        Early::Bi(mut s, mut r) => {
            let _ = s.reset(code(why));
            let _ = r.stop(code(why));
        }
        Early::Uni(mut r) => {
            let _ = r.stop(code(why));
        }
        Early::Datagram(_) => {}
    }
}

struct ConnState {
    sessions: HashMap<u64, Arc<SessionShared>>,
    /// CONNECT streams waiting for the application.
    requested: HashSet<u64>,
    /// Client bidirectional streams whose first bytes are not classified yet.
    parsing: HashSet<u64>,
    /// The highest client bidirectional stream accepted so far: a session ID at or below
    /// it that is neither open, requested nor parsing is gone for good.
    highest_bidi: Option<u64>,
    buffered: HashMap<u64, Vec<Early>>,
    buffered_streams: usize,
    buffered_datagrams: usize,
    refusals: Allowance,
    critical: HashSet<u64>,
    window_raised: bool,
    /// Ordinary HTTP requests being answered.
    http_exchanges: usize,
    /// The stream ID our GOAWAY named, once sent: requests on streams at or above it are
    /// rejected unprocessed, so the client may retry them elsewhere.
    goaway: Option<u64>,
}

/// State shared by the tasks serving one connection.
pub(crate) struct ConnShared {
    pub(crate) conn: quinn::Connection,
    pub(crate) server: Arc<ServerShared>,
    pub(crate) runtime: tokio::runtime::Handle,
    state: Mutex<ConnState>,
    peer: watch::Sender<Option<PeerSettings>>,
    /// Sessions plus pending requests, watched by the sessionless timer.
    active: watch::Sender<usize>,
}

/// How a session of this connection tells the connection it is gone.
struct SessionEnd {
    conn: Arc<ConnShared>,
    session_id: u64,
    slot: Option<SessionSlot>,
    ip: Option<IpSessionToken>,
}

impl SessionEnd {
    fn run(mut self) {
        {
            let mut st = self.conn.state();
            st.sessions.remove(&self.session_id);
            self.conn.update_active(&st);
        }
        self.slot.take();
        self.ip.take();
    }
}

impl ConnShared {
    fn state(&self) -> std::sync::MutexGuard<'_, ConnState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn update_active(&self, st: &ConnState) {
        self.active
            .send_replace(st.sessions.len() + st.requested.len() + st.http_exchanges);
    }

    /// Counts an ordinary request in progress; one that may carry a body also lifts the
    /// pre-session receive window, as a session does: the handler reads what arrives.
    pub(crate) fn http_exchange_started(&self, with_body: bool) {
        let raise = {
            let mut st = self.state();
            st.http_exchanges += 1;
            self.update_active(&st);
            with_body && !std::mem::replace(&mut st.window_raised, true)
        };
        if raise {
            let window = self.server.limits.connection_receive_window;
            self.conn
                .set_receive_window(quinn::VarInt::from_u32(window));
        }
    }

    pub(crate) fn http_exchange_ended(&self) {
        let mut st = self.state();
        st.http_exchanges -= 1;
        self.update_active(&st);
    }

    pub(crate) fn remote_ip(&self) -> IpAddr {
        self.conn.remote_address().ip()
    }

    /// Counts a refused or abandoned request; a connection that spends its allowance is
    /// closed.
    pub(crate) fn note_refusal(&self) {
        let exhausted = !self.state().refusals.spend();
        if exhausted {
            debug!(remote = %self.conn.remote_address(), "too many refused requests; closing");
            self.conn
                .close(h3::EXCESSIVE_LOAD.into(), b"too many refused requests");
        }
    }

    /// Hands a stream or datagram to its session, buffers it until the session is
    /// accepted, or refuses it.
    fn route(self: &Arc<Self>, session_id: u64, early: Early) {
        if !session_id.is_multiple_of(4) {
            // Only client-initiated bidirectional streams can be CONNECT streams.
            self.conn.close(h3::ID_ERROR.into(), b"invalid session id");
            return;
        }
        let mut st = self.state();
        if let Some(session) = st.sessions.get(&session_id).cloned() {
            drop(st);
            deliver(&session, early);
            return;
        }
        let pending = st.requested.contains(&session_id)
            || st.parsing.contains(&session_id)
            || st.highest_bidi.is_none_or(|h| session_id > h);
        if !pending {
            drop(st);
            refuse(early, WT_SESSION_GONE);
            return;
        }
        let limits = &self.server.limits;
        let fits = match early {
            Early::Datagram(_) => st.buffered_datagrams < limits.max_buffered_datagrams,
            _ => st.buffered_streams < limits.max_buffered_streams,
        };
        if !fits {
            drop(st);
            trace!(session_id, "early buffer full; refusing");
            refuse(early, WT_BUFFERED_STREAM_REJECTED);
            return;
        }
        match early {
            Early::Datagram(_) => st.buffered_datagrams += 1,
            _ => st.buffered_streams += 1,
        }
        let first = !st.buffered.contains_key(&session_id);
        st.buffered.entry(session_id).or_default().push(early);
        drop(st);
        if first {
            // What waits for a session that never comes is refused after a while.
            let conn = Arc::downgrade(self);
            let deadline = self.server.limits.request_timeout;
            self.runtime.spawn(async move {
                tokio::time::sleep(deadline).await;
                let Some(conn) = conn.upgrade() else { return };
                let items = {
                    let mut st = conn.state();
                    if st.requested.contains(&session_id) || st.sessions.contains_key(&session_id) {
                        return;
                    }
                    Self::take_buffered(&mut st, session_id)
                };
                for e in items {
                    refuse(e, WT_BUFFERED_STREAM_REJECTED);
                }
            });
        }
    }

    fn take_buffered(st: &mut ConnState, session_id: u64) -> Vec<Early> {
        let items = st.buffered.remove(&session_id).unwrap_or_default();
        for e in &items {
            match e {
                Early::Datagram(_) => st.buffered_datagrams -= 1,
                _ => st.buffered_streams -= 1,
            }
        }
        items
    }

    /// A bidirectional stream turned out not to be a pending session (or stopped being
    /// one): its early arrivals are refused.
    fn leave_pending(&self, session_id: u64) {
        let items = {
            let mut st = self.state();
            st.parsing.remove(&session_id);
            st.requested.remove(&session_id);
            self.update_active(&st);
            Self::take_buffered(&mut st, session_id)
        };
        for e in items {
            refuse(e, WT_BUFFERED_STREAM_REJECTED);
        }
    }

    /// The request was rejected or abandoned: its early arrivals are refused.
    pub(crate) fn forget_request(&self, session_id: u64) {
        self.leave_pending(session_id);
    }

    /// Claims a server-wide session slot, or `None` at the limit.
    pub(crate) fn reserve_session(&self) -> Option<SessionSlot> {
        self.server.reserve_session()
    }

    /// Registers an accepted session and starts the task that watches its CONNECT stream.
    /// `response` is what is left to write of the 200 response.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn start_session(
        self: &Arc<Self>,
        session_id: u64,
        path: String,
        send: quinn::SendStream,
        recv: quinn::RecvStream,
        slot: SessionSlot,
        ip: Option<IpSessionToken>,
        response: Bytes,
        early_capsules: Vec<u8>,
        protocol: Option<String>,
    ) -> Session {
        let (shared, commands) = SessionShared::new(
            session_id,
            Backend::h3(self.conn.clone(), session_id),
            path,
            protocol,
            &self.server.limits,
            self.runtime.clone(),
        );
        slot.register(&shared);
        let end = SessionEnd {
            conn: self.clone(),
            session_id,
            slot: Some(slot),
            ip,
        };
        shared.on_close(Box::new(move || end.run()));
        let (early, raise) = {
            let mut st = self.state();
            st.requested.remove(&session_id);
            st.sessions.insert(session_id, shared.clone());
            self.update_active(&st);
            let raise = !std::mem::replace(&mut st.window_raised, true);
            (Self::take_buffered(&mut st, session_id), raise)
        };
        if raise {
            let window = self.server.limits.connection_receive_window;
            self.conn
                .set_receive_window(quinn::VarInt::from_u32(window));
        }
        for e in early {
            deliver(&shared, e);
        }
        let session = Session::new(shared.clone());
        let timeout = self.server.limits.response_timeout;
        self.runtime.spawn(async move {
            let guard = DriverGuard(shared.clone());
            drive_session(
                &shared,
                send,
                recv,
                commands,
                response,
                early_capsules,
                timeout,
            )
            .await;
            drop(guard);
        });
        session
    }
}

/// Ends the session however its driver task ends, a panic included, so that its slots are
/// released and every waiter learns it is gone.
struct DriverGuard(Arc<SessionShared>);

impl Drop for DriverGuard {
    fn drop(&mut self) {
        if std::thread::panicking() {
            warn!(
                session = self.0.id,
                "session task panicked; closing the session"
            );
        }
        self.0
            .set_closed(CloseInfo::connection_lost("session task ended".into()));
    }
}

fn deliver(session: &SessionShared, early: Early) {
    match early {
        Early::Bi(s, r) => session.push_bi(RawSend::Quic(s), RawRecv::Quic(r)),
        Early::Uni(r) => session.push_uni(RawRecv::Quic(r)),
        Early::Datagram(d) => session.push_datagram(d),
    }
}

/// Writes what it can of `buf` without waiting; true once everything is written.
pub(crate) fn try_write_now(
    send: &mut quinn::SendStream,
    buf: &mut Bytes,
) -> Result<bool, quinn::WriteError> {
    let waker = std::task::Waker::noop();
    let mut cx = Context::from_waker(waker);
    while !buf.is_empty() {
        let poll = {
            let fut = send.write(buf);
            std::pin::pin!(fut).poll(&mut cx)
        };
        match poll {
            Poll::Ready(Ok(n)) => buf.advance(n),
            Poll::Ready(Err(e)) => return Err(e),
            Poll::Pending => return Ok(false),
        }
    }
    Ok(true)
}

/// Writes `buf` within `deadline`; on expiry the stream is reset. Returns whether it was
/// all written.
pub(crate) async fn write_within(
    send: &mut quinn::SendStream,
    buf: Bytes,
    deadline: Duration,
) -> bool {
    match tokio::time::timeout(deadline, send.write_all(&buf)).await {
        Ok(Ok(())) => true,
        Ok(Err(_)) => false,
        Err(_) => {
            let _ = send.reset(code(h3::REQUEST_CANCELLED.into()));
            false
        }
    }
}

/// Sends `buf` and then FIN, without making the caller wait: what cannot be written at once
/// is written by a task, which resets the stream if the client withholds credit past
/// `deadline`.
pub(crate) fn send_and_finish(
    runtime: &tokio::runtime::Handle,
    mut send: quinn::SendStream,
    mut buf: Bytes,
    deadline: Duration,
) {
    match try_write_now(&mut send, &mut buf) {
        Ok(true) => {
            let _ = send.finish();
        }
        Ok(false) => {
            runtime.spawn(async move {
                if write_within(&mut send, buf, deadline).await {
                    let _ = send.finish();
                }
            });
        }
        Err(_) => {}
    }
}

/// Watches a session's CONNECT stream for capsules and the application's commands, until
/// the session ends one way or another.
async fn drive_session(
    shared: &SessionShared,
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
    mut commands: tokio::sync::mpsc::UnboundedReceiver<Command>,
    response: Bytes,
    early_capsules: Vec<u8>,
    timeout: Duration,
) {
    if !response.is_empty() && !write_within(&mut send, response, timeout).await {
        debug!(
            session = shared.id,
            "client did not take the response in time"
        );
        shared.set_closed(CloseInfo {
            code: 0,
            reason: "the client did not accept the response in time".into(),
            initiator: CloseInitiator::Connection,
        });
        let _ = recv.stop(code(h3::REQUEST_CANCELLED.into()));
        return;
    }
    let mut reader = CapsuleReader::default();
    reader.push(&early_capsules);
    let mut commands_open = true;
    let mut flushing = false;
    loop {
        // Capsules already buffered first: the client may have closed before we started.
        loop {
            match reader.next() {
                Ok(Some(Capsule::Close { code, reason })) => {
                    shared.set_closed(CloseInfo {
                        code,
                        reason,
                        initiator: CloseInitiator::Remote,
                    });
                    let _ = send.finish();
                    return;
                }
                Ok(Some(Capsule::Drain)) => shared.set_draining(),
                Ok(Some(Capsule::Unknown)) => {}
                Ok(None) => break,
                Err(e) => {
                    debug!(session = shared.id, "malformed capsule: {e}");
                    shared.set_closed(CloseInfo {
                        code: 0,
                        reason: format!("protocol error: {e}"),
                        initiator: CloseInitiator::Remote,
                    });
                    let _ = send.reset(code(h3::MESSAGE_ERROR.into()));
                    let _ = recv.stop(code(h3::MESSAGE_ERROR.into()));
                    return;
                }
            }
        }
        tokio::select! {
            cmd = commands.recv(), if commands_open && !flushing => match cmd {
                Some(Command::Drain) => {
                    let mut buf = Vec::new();
                    capsule::encode(&Capsule::Drain, &mut buf);
                    if !write_within(&mut send, buf.into(), timeout).await {
                        shared.set_closed(CloseInfo {
                            code: 0,
                            reason: "the client did not accept the drain capsule in time".into(),
                            initiator: CloseInitiator::Connection,
                        });
                        return;
                    }
                }
                Some(Command::CloseWhenFlushed) => flushing = true,
                Some(Command::Close { code, reason }) => {
                    return close_session(shared, send, recv, code, reason, timeout).await;
                }
                None => commands_open = false,
            },
            () = shared.flushed(), if flushing => {
                return close_session(shared, send, recv, 0, String::new(), timeout).await;
            }
            () = tokio::time::sleep(FLUSH_TIMEOUT), if flushing => {
                debug!(session = shared.id, "finished streams not acknowledged in time");
                return close_session(shared, send, recv, 0, String::new(), timeout).await;
            }
            chunk = recv.read_chunk(16 * 1024, true) => match chunk {
                Ok(Some(chunk)) => reader.push(&chunk.bytes),
                Ok(None) => {
                    shared.set_closed(CloseInfo {
                        code: 0,
                        reason: String::new(),
                        initiator: CloseInitiator::Remote,
                    });
                    let _ = send.finish();
                    return;
                }
                Err(quinn::ReadError::ConnectionLost(e)) => {
                    shared.set_closed(CloseInfo::from_connection_error(&e));
                    return;
                }
                Err(e) => {
                    shared.set_closed(CloseInfo {
                        code: 0,
                        reason: format!("CONNECT stream aborted: {e}"),
                        initiator: CloseInitiator::Remote,
                    });
                    let _ = send.reset(code(h3::REQUEST_INCOMPLETE.into()));
                    return;
                }
            },
        }
    }
}

/// Sends CLOSE_WEBTRANSPORT_SESSION and FIN (within the deadline), then gives the client a
/// moment to answer with its own FIN so our STOP_SENDING does not race the capsule.
async fn close_session(
    shared: &SessionShared,
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
    code: u32,
    reason: String,
    timeout: Duration,
) {
    shared.set_closed(CloseInfo {
        code,
        reason: reason.clone(),
        initiator: CloseInitiator::Local,
    });
    let mut buf = Vec::new();
    capsule::encode(&Capsule::Close { code, reason }, &mut buf);
    if write_within(&mut send, buf.into(), timeout).await {
        let _ = send.finish();
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            while let Ok(Some(_)) = recv.read_chunk(4096, true).await {}
        })
        .await;
    }
}

/// Reads one QUIC variable-length integer; `Ok(None)` on a clean end of stream first.
async fn read_varint(recv: &mut quinn::RecvStream) -> Result<Option<u64>, ()> {
    let mut first = [0u8; 1];
    match recv.read_exact(&mut first).await {
        Ok(()) => {}
        Err(quinn::ReadExactError::FinishedEarly(0)) => return Ok(None),
        Err(_) => return Err(()),
    }
    let len = 1usize << (first[0] >> 6);
    let mut buf = [0u8; 8];
    buf[0] = first[0];
    if len > 1 {
        recv.read_exact(&mut buf[1..len]).await.map_err(|_| ())?;
    }
    Ok(crate::varint::decode(&buf[..len]).map(|(v, _)| v))
}

/// Serves one incoming connection until it closes.
pub(crate) async fn run(incoming: quinn::Incoming, server: Arc<ServerShared>, slot: ConnSlot) {
    let _slot = slot;
    let remote = incoming.remote_address();
    let conn = match incoming.await {
        Ok(conn) => conn,
        Err(e) => {
            server.counters.handshake_failed(remote, &e);
            return;
        }
    };
    let shared = Arc::new(ConnShared {
        conn: conn.clone(),
        runtime: server.runtime.clone(),
        state: Mutex::new(ConnState {
            sessions: HashMap::new(),
            requested: HashSet::new(),
            parsing: HashSet::new(),
            highest_bidi: None,
            buffered: HashMap::new(),
            buffered_streams: 0,
            buffered_datagrams: 0,
            refusals: Allowance::new(server.limits.max_refused_requests),
            critical: HashSet::new(),
            window_raised: false,
            http_exchanges: 0,
            goaway: None,
        }),
        peer: watch::channel(None).0,
        active: watch::channel(0).0,
        server,
    });
    // Our control stream must stay open for the connection's lifetime.
    let control = async {
        let mut control = conn.open_uni().await.ok()?;
        control
            .write_all(&shared.server.settings_bytes)
            .await
            .ok()?;
        send_goaway_on_drain(&shared, &mut control).await;
        Some(control)
    };
    let (_control, (), (), (), ()) = tokio::join!(
        control,
        accept_bi_loop(&shared),
        accept_uni_loop(&shared),
        datagram_loop(&shared),
        close_when_sessionless(&shared),
    );
    // The tasks of this connection hold it; make sure buffered streams and their memory
    // go now rather than when the last task notices.
    let items: Vec<Early> = {
        let mut st = shared.state();
        let ids: Vec<u64> = st.buffered.keys().copied().collect();
        ids.into_iter()
            .flat_map(|id| ConnShared::take_buffered(&mut st, id))
            .collect()
    };
    drop(items);
    debug!(remote = %conn.remote_address(), "connection closed: {:?}", conn.close_reason());
}

/// Once the server drains or closes, tells the client with GOAWAY (RFC 9114 §5.2) that
/// requests on streams above the last one accepted will not be processed, so new requests
/// and sessions go on a new connection (to another fleet member, where a balancer sends it).
///
/// A connection that carries WebTransport sessions gets its GOAWAY only when the last one
/// ends: draft-ietf-webtrans-http3 lets a session go on after GOAWAY, but Chromium ends
/// every session of the connection when GOAWAY arrives. Those sessions are told to wrap up
/// with the DRAIN capsule instead.
async fn send_goaway_on_drain(shared: &ConnShared, control: &mut quinn::SendStream) {
    let mut winding_down = shared.server.winding_down();
    if *winding_down.borrow_and_update() {
        // Born during a drain: it still serves ordinary HTTP and answers new sessions 503,
        // which a client reports better than a rejected stream.
        return;
    }
    tokio::select! {
        _ = shared.conn.closed() => return,
        r = winding_down.wait_for(|w| *w) => if r.is_err() { return },
    }
    let mut active = shared.active.subscribe();
    tokio::select! {
        _ = shared.conn.closed() => return,
        r = active.wait_for(|n| *n == 0) => if r.is_err() { return },
    }
    let id = {
        let mut st = shared.state();
        let id = st.highest_bidi.map_or(0, |h| h + 4);
        st.goaway = Some(id);
        id
    };
    let mut body = Vec::with_capacity(8);
    crate::varint::put(&mut body, id);
    let mut goaway = Vec::with_capacity(10);
    frame::put_header(&mut goaway, frame::GOAWAY, body.len());
    goaway.extend_from_slice(&body);
    trace!(id, "GOAWAY");
    let _ = control.write_all(&goaway).await;
}

/// Closes the connection once it has carried no session and no pending request for
/// `sessionless_timeout`: keep-alives keep sessions alive, not idle connections.
async fn close_when_sessionless(shared: &ConnShared) {
    let mut active = shared.active.subscribe();
    let timeout = shared.server.limits.sessionless_timeout;
    loop {
        tokio::select! {
            _ = shared.conn.closed() => return,
            r = active.wait_for(|n| *n == 0) => if r.is_err() { return },
        }
        tokio::select! {
            _ = shared.conn.closed() => return,
            _ = active.wait_for(|n| *n > 0) => continue,
            () = tokio::time::sleep(timeout) => {
                debug!(remote = %shared.conn.remote_address(), "no session; closing");
                shared.conn.close(h3::NO_ERROR.into(), b"no session");
                return;
            }
        }
    }
}

async fn accept_bi_loop(shared: &Arc<ConnShared>) {
    while let Ok((send, recv)) = shared.conn.accept_bi().await {
        let id: u64 = recv.id().into();
        {
            let mut st = shared.state();
            st.highest_bidi = Some(id);
            st.parsing.insert(id);
        }
        let shared = shared.clone();
        tokio::spawn(async move { handle_bi(shared, send, recv).await });
    }
}

async fn accept_uni_loop(shared: &Arc<ConnShared>) {
    while let Ok(recv) = shared.conn.accept_uni().await {
        let shared = shared.clone();
        tokio::spawn(async move { handle_uni(shared, recv).await });
    }
}

async fn datagram_loop(shared: &Arc<ConnShared>) {
    while let Ok(datagram) = shared.conn.read_datagram().await {
        let Some((quarter, n)) = crate::varint::decode(&datagram) else {
            continue;
        };
        let Some(session_id) = quarter.checked_mul(4) else {
            continue;
        };
        // A copy, so that a queued datagram does not pin the whole receive buffer it was
        // cut from.
        let payload = Bytes::copy_from_slice(&datagram[n..]);
        shared.route(session_id, Early::Datagram(payload));
    }
}

async fn handle_uni(shared: Arc<ConnShared>, mut recv: quinn::RecvStream) {
    // No time limit here: a browser may open its QPACK streams long before it writes
    // their type, and dropping such a stream sends STOP_SENDING on a critical stream,
    // which the browser answers by closing the connection. The client's uni-stream
    // limit bounds how many can wait, and a stream that has sent nothing holds nothing.
    let typ = match read_varint(&mut recv).await {
        Ok(Some(t)) => t,
        _ => return,
    };
    match typ {
        0x00 | 0x02 | 0x03 => {
            if !shared.state().critical.insert(typ) {
                shared.conn.close(
                    h3::STREAM_CREATION_ERROR.into(),
                    b"second control or QPACK stream",
                );
                return;
            }
            if typ == 0x00 {
                read_control_stream(&shared, recv).await;
                return;
            }
            // QPACK encoder/decoder streams: with a zero-capacity table an encoder stream
            // may carry nothing but Set Dynamic Table Capacity 0, and a decoder stream
            // nothing at all that we need; read them so the client's credit never stalls.
            loop {
                match recv.read_chunk(4096, true).await {
                    Ok(Some(_)) => {}
                    Ok(None) | Err(quinn::ReadError::Reset(_)) => {
                        shared
                            .conn
                            .close(h3::CLOSED_CRITICAL_STREAM.into(), b"QPACK stream closed");
                        return;
                    }
                    Err(_) => return,
                }
            }
        }
        0x54 => {
            let deadline = shared.server.limits.request_timeout;
            if let Ok(Ok(Some(session_id))) =
                tokio::time::timeout(deadline, read_varint(&mut recv)).await
            {
                shared.route(session_id, Early::Uni(recv));
            }
        }
        0x01 => {
            // Only a server may open push streams (RFC 9114 §6.2.2).
            shared.conn.close(
                h3::STREAM_CREATION_ERROR.into(),
                b"push stream from a client",
            );
        }
        _ => {
            // Unknown stream types are not for us (RFC 9114 §6.2).
            let _ = recv.stop(h3::STREAM_CREATION_ERROR.into());
        }
    }
}

async fn read_control_stream(shared: &ConnShared, mut recv: quinn::RecvStream) {
    let mut decoder = FrameDecoder::default();
    let mut first = true;
    loop {
        loop {
            let frame = match decoder.next(|_| Some(MAX_CONTROL_FRAME)) {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(e) => {
                    debug!("control stream: {e}");
                    shared
                        .conn
                        .close(h3::EXCESSIVE_LOAD.into(), b"control frame too large");
                    return;
                }
            };
            if first {
                first = false;
                if frame.typ != frame::SETTINGS {
                    shared
                        .conn
                        .close(h3::MISSING_SETTINGS.into(), b"missing SETTINGS");
                    return;
                }
                match PeerSettings::from_payload(&frame.payload) {
                    Ok(peer) => {
                        shared.peer.send_replace(Some(peer));
                    }
                    Err(e) => {
                        debug!("client SETTINGS: {e}");
                        shared
                            .conn
                            .close(h3::SETTINGS_ERROR.into(), b"malformed SETTINGS");
                        return;
                    }
                }
                continue;
            }
            match frame.typ {
                frame::DATA | frame::HEADERS | frame::SETTINGS | frame::PUSH_PROMISE => {
                    shared.conn.close(
                        h3::FRAME_UNEXPECTED.into(),
                        b"frame not allowed on control stream",
                    );
                    return;
                }
                t if frame::is_http2_reserved(t) => {
                    shared
                        .conn
                        .close(h3::FRAME_UNEXPECTED.into(), b"HTTP/2 frame type");
                    return;
                }
                frame::GOAWAY => {
                    // The client will open no more requests; sessions carry on.
                    trace!("client GOAWAY");
                }
                // CANCEL_PUSH, MAX_PUSH_ID (no pushes here), GREASE, unknown: ignored.
                _ => {}
            }
        }
        match recv.read_chunk(16 * 1024, true).await {
            Ok(Some(chunk)) => decoder.push(&chunk.bytes),
            Ok(None) | Err(quinn::ReadError::Reset(_)) => {
                shared
                    .conn
                    .close(h3::CLOSED_CRITICAL_STREAM.into(), b"control stream closed");
                return;
            }
            Err(_) => return,
        }
    }
}

/// Removes a bidirectional stream from the parsing set however its handling ends.
struct Parsing<'a> {
    conn: &'a Arc<ConnShared>,
    id: u64,
    done: bool,
}

impl Drop for Parsing<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.conn.leave_pending(self.id);
        }
    }
}

async fn handle_bi(shared: Arc<ConnShared>, send: quinn::SendStream, mut recv: quinn::RecvStream) {
    let id: u64 = recv.id().into();
    let mut parsing = Parsing {
        conn: &shared,
        id,
        done: false,
    };
    let deadline = shared.server.limits.request_timeout;
    let head = tokio::time::timeout(deadline, read_head(&mut recv)).await;
    let head = match head {
        Ok(Ok(head)) => head,
        Ok(Err(HeadError::Stream)) => return,
        Ok(Err(HeadError::Status(status))) => {
            debug!(status, "malformed request");
            shared.note_refusal();
            return respond(&shared, send, status);
        }
        Ok(Err(HeadError::Connection(code, why))) => {
            shared.conn.close(code.into(), why.as_bytes());
            return;
        }
        Err(_) => {
            let mut send = send;
            let _ = send.reset(code(h3::REQUEST_INCOMPLETE.into()));
            let _ = recv.stop(code(h3::REQUEST_INCOMPLETE.into()));
            return;
        }
    };
    match head {
        Head::WebTransportStream(session_id) => {
            drop(parsing);
            shared.route(session_id, Early::Bi(send, recv));
        }
        Head::Request(..) if shared.state().goaway.is_some_and(|g| id >= g) => {
            // After our GOAWAY: unprocessed, so the client can safely send it again on a
            // new connection.
            let mut send = send;
            let _ = send.reset(code(h3::REQUEST_REJECTED.into()));
            let _ = recv.stop(code(h3::REQUEST_REJECTED.into()));
        }
        Head::Request(fields, rest) => {
            if let Some(service) = super::exchange::service_for(&shared, &fields) {
                // Not a session: streams naming this ID are refused from now on.
                drop(parsing);
                super::exchange::serve(shared, service, send, recv, fields, rest).await;
            } else {
                handle_request(&shared, &mut parsing, send, recv, fields, rest).await;
            }
        }
    }
}

enum Head {
    /// A WebTransport bidirectional stream (0x41) of this session.
    WebTransportStream(u64),
    /// A request's decoded header fields, and bytes read after them (early capsules).
    Request(Vec<(String, String)>, Bytes),
}

enum HeadError {
    /// The stream ended or was reset; nothing to answer.
    Stream,
    /// Answer with this status.
    Status(u16),
    /// Close the connection with this HTTP/3 error.
    Connection(u32, &'static str),
}

/// Reads a request stream up to its HEADERS frame, or a WebTransport stream's header.
/// Varints are read byte by byte until the stream's kind is known, so that no byte of a
/// WebTransport stream's payload is consumed here.
async fn read_head(recv: &mut quinn::RecvStream) -> Result<Head, HeadError> {
    let typ = match read_varint(recv).await {
        Ok(Some(t)) => t,
        _ => return Err(HeadError::Stream),
    };
    if typ == 0x41 {
        return match read_varint(recv).await {
            Ok(Some(id)) => Ok(Head::WebTransportStream(id)),
            _ => Err(HeadError::Stream),
        };
    }
    let mut decoder = FrameDecoder::default();
    let mut prefix = Vec::new();
    crate::varint::put(&mut prefix, typ);
    decoder.push(&prefix);
    let forbidden = |t: u64| t == frame::DATA || (0x02..=0x0d).contains(&t);
    loop {
        loop {
            let next = decoder.next(|t| match t {
                frame::HEADERS => Some(MAX_HEADERS_LEN),
                t if forbidden(t) => Some(0),
                _ => None,
            });
            let frame = match next {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(e) if e.typ == frame::HEADERS => return Err(HeadError::Status(431)),
                Err(_) => {
                    return Err(HeadError::Connection(
                        h3::FRAME_UNEXPECTED,
                        "frame not allowed before HEADERS",
                    ))
                }
            };
            match frame.typ {
                frame::HEADERS => {
                    let rest = decoder.take_buffered();
                    return match qpack::decode_field_section(
                        &frame.payload,
                        MAX_HEADERS_LEN as usize,
                    ) {
                        Ok(fields) => Ok(Head::Request(fields, rest)),
                        Err(qpack::QpackError::TooLarge) => Err(HeadError::Status(431)),
                        Err(e) if e.is_malformed_message() => Err(HeadError::Status(400)),
                        Err(_) => Err(HeadError::Connection(
                            h3::QPACK_DECOMPRESSION_FAILED,
                            "QPACK decompression failed",
                        )),
                    };
                }
                t if forbidden(t) => {
                    return Err(HeadError::Connection(
                        h3::FRAME_UNEXPECTED,
                        "frame not allowed before HEADERS",
                    ))
                }
                // GREASE and unknown frame types before HEADERS are skipped.
                _ => {}
            }
        }
        match recv.read_chunk(4096, true).await {
            Ok(Some(c)) => decoder.push(&c.bytes),
            _ => return Err(HeadError::Stream),
        }
    }
}

fn respond(shared: &ConnShared, send: quinn::SendStream, status: u16) {
    let mut block = Vec::new();
    super::session_request::encode_response(status, &[], &mut block);
    send_and_finish(
        &shared.runtime,
        send,
        block.into(),
        shared.server.limits.response_timeout,
    );
}

async fn handle_request(
    shared: &Arc<ConnShared>,
    parsing: &mut Parsing<'_>,
    send: quinn::SendStream,
    recv: quinn::RecvStream,
    fields: Vec<(String, String)>,
    early_capsules: Bytes,
) {
    let server = &shared.server;
    let request = match parse_connect(&fields) {
        Ok(r) => r,
        Err(rejection) => {
            debug!(%rejection, "request refused");
            shared.note_refusal();
            return respond(shared, send, rejection.status);
        }
    };
    // Extended CONNECT needs the client's SETTINGS (RFC 9220 §3; the dialect and datagram
    // support come from them); packets may arrive out of order, so wait a little.
    let mut peer = shared.peer.subscribe();
    let settings = tokio::time::timeout(server.limits.request_timeout, async {
        peer.wait_for(Option::is_some)
            .await
            .map(|p| p.clone().unwrap_or_default())
    })
    .await;
    let Ok(Ok(peer)) = settings else {
        shared
            .conn
            .close(h3::MISSING_SETTINGS.into(), b"request before SETTINGS");
        return;
    };
    let session_id: u64 = recv.id().into();
    let limit = if peer.draft13_or_later {
        1
    } else {
        server.limits.max_sessions_per_connection as usize
    };
    let mut ip_token = None;
    let admitted = server
        .admission(&request.authority, request.origin.as_deref())
        .await;
    let status = if admitted.is_some() {
        admitted
    } else {
        let mut st = shared.state();
        if st.sessions.len() + st.requested.len() >= limit {
            Some(429)
        } else if let Some(token) = server.reserve_ip_session(shared.remote_ip()) {
            ip_token = Some(token);
            st.parsing.remove(&session_id);
            st.requested.insert(session_id);
            shared.update_active(&st);
            parsing.done = true;
            None
        } else {
            Some(429)
        }
    };
    debug!(session_id, path = %request.path, ?status, "session request");
    if let Some(status) = status {
        server.refused(status, &request.path, shared.conn.remote_address());
        shared.note_refusal();
        return respond(shared, send, status);
    }
    let mut path = request.path;
    let attempt = crate::request::take_attempt(&mut path);
    let request = SessionRequest {
        head: RequestHead {
            id: session_id,
            path,
            attempt,
            authority: request.authority,
            origin: request.origin,
            headers: request.headers,
            protocols: request.subprotocols,
            remote: shared.conn.remote_address(),
            version: http::Version::HTTP_3,
            transport: Transport::WebTransport,
        },
        inner: Box::new(H3Request {
            conn: shared.clone(),
            streams: Some((send, recv)),
            early_capsules: early_capsules.to_vec(),
            draft02: request.draft02,
            ip: ip_token,
        }),
    };
    if let Err((request, status)) = server.dispatch(request) {
        request.reject_in_background(status);
    }
}
