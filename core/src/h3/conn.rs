//! The state the tasks serving one HTTP/3 connection share (`ConnShared`): its sessions,
//! the requests and streams waiting for them, the refusal allowance, GOAWAY; each accepted
//! session's driver (its CONNECT stream: capsules in, close and drain out); and the
//! bounded writes every task uses toward the client.

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
    error_code::{self, code},
    settings::PeerSettings,
};
use crate::{
    close::{CloseInfo, CloseInitiator},
    session::{Backend, Command, Session, SessionShared, FLUSH_TIMEOUT},
    shared::{Allowance, IpSessionToken, ServerShared, SessionSlot},
    stream::{RawRecv, RawSend, WT_BUFFERED_STREAM_REJECTED, WT_SESSION_GONE},
};

/// Upper bound on a request's HEADERS frame; browsers send well under 2 KiB.
pub(crate) const MAX_HEADERS_LEN: u64 = 16 * 1024;
/// Upper bound on a control-stream frame we keep (SETTINGS, GOAWAY and friends).
pub(crate) const MAX_CONTROL_FRAME: u64 = 16 * 1024;
/// Early CONNECT-stream bytes (capsules before the session was accepted) kept at most.
pub(crate) const MAX_EARLY_CAPSULE_BYTES: usize = 8 * 1024;

/// Something that arrived for a session before the application accepted it.
pub(crate) enum Early {
    Bi(quinn::SendStream, quinn::RecvStream),
    Uni(quinn::RecvStream),
    Datagram(Bytes),
}

pub(crate) fn refuse(early: Early, why: u64) {
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

pub(crate) struct ConnState {
    pub(crate) sessions: HashMap<u64, Arc<SessionShared>>,
    /// CONNECT streams waiting for the application.
    pub(crate) requested: HashSet<u64>,
    /// Client bidirectional streams whose first bytes are not classified yet.
    pub(crate) parsing: HashSet<u64>,
    /// The highest client bidirectional stream accepted so far: a session ID at or below
    /// it that is neither open, requested nor parsing is gone for good.
    pub(crate) highest_bidi: Option<u64>,
    pub(crate) buffered: HashMap<u64, Vec<Early>>,
    pub(crate) buffered_streams: usize,
    pub(crate) buffered_datagrams: usize,
    pub(crate) refusals: Allowance,
    pub(crate) critical: HashSet<u64>,
    pub(crate) window_raised: bool,
    /// Ordinary HTTP requests being answered.
    pub(crate) http_exchanges: usize,
    /// The stream ID our GOAWAY named, once sent: requests on streams at or above it are
    /// rejected unprocessed, so the client may retry them elsewhere.
    pub(crate) goaway: Option<u64>,
}

/// State shared by the tasks serving one connection.
pub(crate) struct ConnShared {
    pub(crate) conn: quinn::Connection,
    pub(crate) server: Arc<ServerShared>,
    pub(crate) runtime: tokio::runtime::Handle,
    pub(crate) state: Mutex<ConnState>,
    pub(crate) peer: watch::Sender<Option<PeerSettings>>,
    /// Sessions plus pending requests, watched by the sessionless timer.
    pub(crate) active: watch::Sender<usize>,
}

/// How a session of this connection tells the connection it is gone.
pub(crate) struct SessionEnd {
    pub(crate) conn: Arc<ConnShared>,
    pub(crate) session_id: u64,
    pub(crate) slot: Option<SessionSlot>,
    pub(crate) ip: Option<IpSessionToken>,
}

impl SessionEnd {
    pub(crate) fn run(mut self) {
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
    pub(crate) fn state(&self) -> std::sync::MutexGuard<'_, ConnState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn update_active(&self, st: &ConnState) {
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
            self.conn.close(
                error_code::EXCESSIVE_LOAD.into(),
                b"too many refused requests",
            );
        }
    }

    /// Hands a stream or datagram to its session, buffers it until the session is
    /// accepted, or refuses it.
    pub(crate) fn route(self: &Arc<Self>, session_id: u64, early: Early) {
        if !session_id.is_multiple_of(4) {
            // Only client-initiated bidirectional streams can be CONNECT streams.
            self.conn
                .close(error_code::ID_ERROR.into(), b"invalid session id");
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

    pub(crate) fn take_buffered(st: &mut ConnState, session_id: u64) -> Vec<Early> {
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
    pub(crate) fn leave_pending(&self, session_id: u64) {
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
pub(crate) struct DriverGuard(Arc<SessionShared>);

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

pub(crate) fn deliver(session: &SessionShared, early: Early) {
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
            let _ = send.reset(code(error_code::REQUEST_CANCELLED.into()));
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
pub(crate) async fn drive_session(
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
        let _ = recv.stop(code(error_code::REQUEST_CANCELLED.into()));
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
                    let _ = send.reset(code(error_code::MESSAGE_ERROR.into()));
                    let _ = recv.stop(code(error_code::MESSAGE_ERROR.into()));
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
                    let _ = send.reset(code(error_code::REQUEST_INCOMPLETE.into()));
                    return;
                }
            },
        }
    }
}

/// Sends CLOSE_WEBTRANSPORT_SESSION and FIN (within the deadline), then gives the client a
/// moment to answer with its own FIN so our STOP_SENDING does not race the capsule.
pub(crate) async fn close_session(
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
pub(crate) async fn read_varint(recv: &mut quinn::RecvStream) -> Result<Option<u64>, ()> {
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
