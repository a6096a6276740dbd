//! QMux (draft-ietf-quic-qmux-02) sessions over a WebSocket: QUIC's streams, flow control,
//! resets, stop-sending, datagrams and close carried in WebSocket binary messages, one QMux
//! record per message (the framing @moq/qmux and the `qmux` crate use). A QMux session is a
//! [`Session`](crate::Session) like one over HTTP/3; application code runs on it unchanged.
//!
//! [`proto`] is the sans-IO state machine; this module drives it: one task per session
//! reads and writes the WebSocket, and stream handles lock the machine to read and write.

pub mod proto;

use std::{
    collections::HashMap,
    future::poll_fn,
    net::SocketAddr,
    sync::{Arc, Mutex, Weak},
    task::{Poll, Waker},
    time::Duration,
};

use bytes::Bytes;
use futures_util::StreamExt;
use tokio::{sync::Notify, time::Instant};
use tokio_tungstenite::tungstenite::{self, protocol::frame::coding::CloseCode, Message};
use tracing::debug;

use self::proto::{Connection, Dir, Event, ReadOutcome, Side, StreamId, VarInt};
use crate::{
    close::{CloseInfo, CloseInitiator},
    ws::{
        writer::{sleep_until, Writer},
        Timing,
    },
};

/// The session above a QMux connection: what the driver hands up. The transport-neutral
/// session implements it, so this module never names the session's types.
pub(crate) trait SessionEvents: Send + Sync {
    /// The client opened a bidirectional stream.
    fn incoming_bi(&self, send: QSend, recv: QRecv);
    /// The client opened a unidirectional stream.
    fn incoming_uni(&self, recv: QRecv);
    /// A datagram arrived.
    fn datagram(&self, payload: Bytes);
    /// The session ended; returns whether this was its first end.
    fn closed(&self, info: CloseInfo) -> bool;
}

/// The largest QMux record (one WebSocket message) this server accepts.
pub(crate) const MAX_RECORD: u64 = 64 * 1024;

/// The machine's configuration from the server's limits: the same windows and stream
/// counts a QUIC connection gets.
pub(crate) fn config(limits: &crate::Limits) -> proto::Config {
    proto::Config {
        initial_max_data: u64::from(limits.connection_receive_window),
        initial_max_stream_data_bidi_local: u64::from(limits.stream_receive_window),
        initial_max_stream_data_bidi_remote: u64::from(limits.stream_receive_window),
        initial_max_stream_data_uni: u64::from(limits.stream_receive_window),
        initial_max_streams_bidi: u64::from(limits.max_bidi_streams),
        initial_max_streams_uni: u64::from(limits.max_uni_streams),
        max_datagram_frame_size: MAX_RECORD,
        max_record_size: MAX_RECORD,
        // Our records may be as large as the client accepts, so a datagram we can take we
        // can also send back.
        max_send_record_size: MAX_RECORD,
        ..proto::Config::default()
    }
}

/// The WebSocket subprotocol versions this server speaks, most preferred first.
pub(crate) const VERSIONS: [&str; 2] = ["qmux-02", "qmux-01"];

/// What a client offered in `Sec-WebSocket-Protocol`, read as QMux.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Offer {
    /// The QMux version tokens offered bare (`qmux-02`), in the client's order.
    pub bare: Vec<String>,
    /// Application protocols offered as `<version>.<protocol>`, in the client's order,
    /// each with the versions it was offered with.
    pub protocols: Vec<(String, Vec<String>)>,
}

impl Offer {
    /// Reads the offered subprotocol tokens; `None` when none of them is QMux.
    pub fn parse(tokens: &[String]) -> Option<Self> {
        let mut offer = Offer::default();
        for t in tokens {
            if VERSIONS.contains(&t.as_str()) {
                offer.bare.push(t.clone());
            } else if let Some((version, app)) = t.split_once('.') {
                if VERSIONS.contains(&version) && !app.is_empty() {
                    match offer.protocols.iter_mut().find(|(a, _)| a == app) {
                        Some((_, v)) => v.push(version.to_owned()),
                        None => offer
                            .protocols
                            .push((app.to_owned(), vec![version.to_owned()])),
                    }
                }
            }
        }
        (!offer.bare.is_empty() || !offer.protocols.is_empty()).then_some(offer)
    }

    /// The `Sec-WebSocket-Protocol` value to answer with: our preferred version with the
    /// chosen application protocol, or bare when none was chosen. `None` when the client
    /// did not offer that combination.
    pub fn answer(&self, protocol: Option<&str>) -> Option<String> {
        match protocol {
            Some(p) => {
                let (_, versions) = self.protocols.iter().find(|(a, _)| a == p)?;
                let v = VERSIONS.iter().find(|v| versions.iter().any(|o| o == *v))?;
                Some(format!("{v}.{p}"))
            }
            None => VERSIONS
                .iter()
                .find(|v| self.bare.iter().any(|b| b == *v))
                .map(|v| (*v).to_owned()),
        }
    }

    /// The application protocols offered, in the client's order.
    pub fn app_protocols(&self) -> Vec<String> {
        self.protocols.iter().map(|(a, _)| a.clone()).collect()
    }
}

/// Per-stream wakers of tasks waiting on the state machine.
#[derive(Default)]
struct Waiters {
    read: Option<Waker>,
    write: Option<Waker>,
    stopped: Vec<Waker>,
}

struct State {
    conn: Connection,
    waiters: HashMap<StreamId, Waiters>,
    /// STOP_SENDING codes of streams whose send handle is still alive: the machine resets
    /// a stopped stream at once, and the handle must still report why.
    stops: HashMap<StreamId, Option<VarInt>>,
    open: [Vec<Waker>; 2],
    /// Set when the session is over; later operations fail with it.
    ended: Option<String>,
    rtt: Duration,
    ping_sent: Option<(u64, Instant)>,
}

fn wake(w: &mut Option<Waker>) {
    if let Some(w) = w.take() {
        w.wake();
    }
}

/// The state one QMux session's handles and driver share.
pub(crate) struct QmuxShared {
    state: Mutex<State>,
    /// Something may be ready to transmit.
    transmit: Notify,
    remote: SocketAddr,
}

impl QmuxShared {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn new(config: proto::Config, remote: SocketAddr) -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(State {
                conn: Connection::new(Side::Server, config),
                waiters: HashMap::new(),
                stops: HashMap::new(),
                open: [Vec::new(), Vec::new()],
                ended: None,
                rtt: Duration::ZERO,
                ping_sent: None,
            }),
            transmit: Notify::new(),
            remote,
        })
    }

    pub(crate) fn remote_addr(&self) -> SocketAddr {
        self.remote
    }

    /// Opens a stream, waiting for the client's stream credit.
    pub(crate) async fn open(self: &Arc<Self>, dir: Dir) -> Result<StreamId, String> {
        let id = poll_fn(|cx| {
            let mut st = self.state();
            if let Some(why) = &st.ended {
                return Poll::Ready(Err(why.clone()));
            }
            match st.conn.open(dir) {
                Ok(id) => Poll::Ready(Ok(id)),
                Err(proto::OpenError::Blocked) => {
                    st.open[dir as usize].push(cx.waker().clone());
                    Poll::Pending
                }
                Err(proto::OpenError::ConnectionClosed) => {
                    Poll::Ready(Err("session closed".to_owned()))
                }
            }
        })
        .await?;
        self.transmit.notify_one();
        Ok(id)
    }

    pub(crate) fn max_datagram_size(&self) -> usize {
        self.state().conn.max_datagram_size().unwrap_or(0)
    }

    pub(crate) fn send_datagram(&self, data: Bytes) -> Result<(), proto::DatagramError> {
        let r = self.state().conn.send_datagram(data);
        if r.is_ok() {
            self.transmit.notify_one();
        }
        r
    }

    pub(crate) fn close(&self, code: u32, reason: &str) {
        self.state()
            .conn
            .close(VarInt::from_u32(code), reason.as_bytes());
        self.transmit.notify_one();
    }

    pub(crate) fn stats(&self) -> (Duration, proto::ConnectionStats, u64) {
        let st = self.state();
        let record = st
            .conn
            .peer_params()
            .map_or(proto::DEFAULT_MAX_RECORD_SIZE, |p| p.max_record_size);
        (st.rtt, st.conn.stats(), record)
    }
}

/// Why a stream operation failed, in QMux terms (codes are application codes as is).
#[derive(Debug)]
pub(crate) enum QError {
    Stopped(u64),
    Reset(u64),
    Closed,
    Ended(String),
}

/// The sending half of a QMux stream.
pub(crate) struct QSend {
    shared: Arc<QmuxShared>,
    id: StreamId,
    done: bool,
}

impl std::fmt::Debug for QSend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QSend").field("id", &self.id.0).finish()
    }
}

impl QSend {
    pub(crate) fn new(shared: Arc<QmuxShared>, id: StreamId) -> Self {
        shared.state().stops.insert(id, None);
        Self {
            shared,
            id,
            done: false,
        }
    }

    pub(crate) fn id(&self) -> u64 {
        self.id.0
    }

    pub(crate) async fn write(&mut self, buf: &[u8]) -> Result<usize, QError> {
        poll_fn(|cx| self.poll_write(cx.waker(), buf)).await
    }

    /// One attempt at a write, registering `waker` while the stream has no credit.
    pub(crate) fn poll_write(&mut self, waker: &Waker, buf: &[u8]) -> Poll<Result<usize, QError>> {
        let mut st = self.shared.state();
        if let Some(why) = &st.ended {
            return Poll::Ready(Err(QError::Ended(why.clone())));
        }
        let r = match st.conn.write(self.id, buf) {
            Ok(0) if !buf.is_empty() => {
                st.waiters.entry(self.id).or_default().write = Some(waker.clone());
                return Poll::Pending;
            }
            Ok(n) => Ok(n),
            Err(proto::WriteError::Stopped(code)) => Err(QError::Stopped(code.into_inner())),
            Err(proto::WriteError::ClosedStream) => Err(match st.stops.get(&self.id) {
                Some(Some(code)) => QError::Stopped(code.into_inner()),
                _ => QError::Closed,
            }),
            Err(proto::WriteError::ConnectionClosed) => Err(QError::Ended("session closed".into())),
        };
        drop(st);
        if r.is_ok() {
            self.shared.transmit.notify_one();
        }
        Poll::Ready(r)
    }

    pub(crate) fn finish(&mut self) -> Result<(), QError> {
        self.shared
            .state()
            .conn
            .finish(self.id)
            .map_err(|_| QError::Closed)?;
        self.done = true;
        self.shared.transmit.notify_one();
        Ok(())
    }

    pub(crate) fn reset(&mut self, code: u32) -> Result<(), QError> {
        self.shared
            .state()
            .conn
            .reset(self.id, VarInt::from_u32(code))
            .map_err(|_| QError::Closed)?;
        self.done = true;
        self.shared.transmit.notify_one();
        Ok(())
    }

    pub(crate) fn set_priority(&self, priority: i32) -> Result<(), QError> {
        self.shared
            .state()
            .conn
            .set_priority(self.id, priority)
            .map_err(|_| QError::Closed)
    }

    /// Resolves once everything is handed to the transport (`None`) or the peer stopped
    /// the stream (`Some(code)`).
    pub(crate) async fn stopped(&self) -> Result<Option<u64>, QError> {
        poll_fn(|cx| {
            let mut st = self.shared.state();
            if let Some(Some(code)) = st.stops.get(&self.id) {
                return Poll::Ready(Ok(Some(code.into_inner())));
            }
            match st.conn.send_outcome(self.id) {
                Some(outcome) => Poll::Ready(Ok(outcome.map(VarInt::into_inner))),
                None if st.ended.is_some() => {
                    Poll::Ready(Err(QError::Ended(st.ended.clone().unwrap_or_default())))
                }
                None => {
                    st.waiters
                        .entry(self.id)
                        .or_default()
                        .stopped
                        .push(cx.waker().clone());
                    Poll::Pending
                }
            }
        })
        .await
    }

    /// Whether everything has been delivered already (without waiting).
    pub(crate) fn is_flushed(&self) -> bool {
        self.shared.state().conn.send_outcome(self.id).is_some()
    }
}

impl Drop for QSend {
    fn drop(&mut self) {
        let mut st = self.shared.state();
        st.stops.remove(&self.id);
        // As with QUIC streams: a half left open is finished, so what was written goes.
        if !self.done {
            let _ = st.conn.finish(self.id);
            drop(st);
            self.shared.transmit.notify_one();
        }
    }
}

/// The receiving half of a QMux stream.
pub(crate) struct QRecv {
    shared: Arc<QmuxShared>,
    id: StreamId,
    done: bool,
}

impl std::fmt::Debug for QRecv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QRecv").field("id", &self.id.0).finish()
    }
}

impl QRecv {
    pub(crate) fn new(shared: Arc<QmuxShared>, id: StreamId) -> Self {
        Self {
            shared,
            id,
            done: false,
        }
    }

    pub(crate) fn id(&self) -> u64 {
        self.id.0
    }

    /// The next chunk of at most `max` bytes; `None` at the end.
    pub(crate) async fn read_chunk(&mut self, max: usize) -> Result<Option<Bytes>, QError> {
        let r = poll_fn(|cx| self.poll_read_chunk(cx.waker(), max)).await;
        if matches!(r, Ok(None) | Err(QError::Reset(_))) {
            self.done = true;
        }
        r
    }

    /// One attempt at a read, registering `waker` when nothing is there yet.
    pub(crate) fn poll_read_chunk(
        &mut self,
        waker: &Waker,
        max: usize,
    ) -> Poll<Result<Option<Bytes>, QError>> {
        let mut st = self.shared.state();
        match st.conn.read(self.id, max.max(1)) {
            Ok(ReadOutcome::Data(b)) => {
                drop(st);
                // Reading may have freed credit worth announcing.
                self.shared.transmit.notify_one();
                Poll::Ready(Ok(Some(b)))
            }
            Ok(ReadOutcome::Finished) => Poll::Ready(Ok(None)),
            Ok(ReadOutcome::Reset(code)) => Poll::Ready(Err(QError::Reset(code.into_inner()))),
            Ok(ReadOutcome::Blocked) => {
                if let Some(why) = &st.ended {
                    return Poll::Ready(Err(QError::Ended(why.clone())));
                }
                st.waiters.entry(self.id).or_default().read = Some(waker.clone());
                Poll::Pending
            }
            Err(proto::ReadError::ClosedStream) => Poll::Ready(Err(QError::Closed)),
            Err(proto::ReadError::ConnectionClosed) => Poll::Ready(Err(QError::Ended(
                st.ended.clone().unwrap_or_else(|| "session closed".into()),
            ))),
        }
    }

    pub(crate) fn stop(&mut self, code: u32) -> Result<(), QError> {
        self.shared
            .state()
            .conn
            .stop(self.id, VarInt::from_u32(code))
            .map_err(|_| QError::Closed)?;
        self.done = true;
        self.shared.transmit.notify_one();
        Ok(())
    }
}

impl Drop for QRecv {
    fn drop(&mut self) {
        if !self.done {
            let _ = self.shared.state().conn.stop(self.id, VarInt::from_u32(0));
            self.shared.transmit.notify_one();
        }
    }
}

/// Hands the machine's events to waiting handles and to the session. Called with the lock
/// held; returns what must be delivered to the session after it is released.
fn dispatch_events(st: &mut State) -> Vec<Delivery> {
    let mut out = Vec::new();
    while let Some(event) = st.conn.poll_event() {
        match event {
            Event::Connected => {
                // Opens that waited for the client's limits may go now.
                for list in &mut st.open {
                    list.drain(..).for_each(Waker::wake);
                }
            }
            Event::NewStream { id, dir } => out.push(Delivery::Stream(id, dir)),
            Event::Readable(id) => {
                if let Some(w) = st.waiters.get_mut(&id) {
                    wake(&mut w.read);
                }
            }
            Event::Writable(id) => {
                if let Some(w) = st.waiters.get_mut(&id) {
                    wake(&mut w.write);
                }
            }
            Event::Stopped { id, code } => {
                // Only streams with a live handle keep the code.
                if let Some(slot) = st.stops.get_mut(&id) {
                    *slot = Some(code);
                }
                if let Some(w) = st.waiters.get_mut(&id) {
                    wake(&mut w.write);
                    w.stopped.drain(..).for_each(Waker::wake);
                }
            }
            Event::Reset { id, .. } => {
                if let Some(w) = st.waiters.get_mut(&id) {
                    wake(&mut w.read);
                }
            }
            Event::StreamsAvailable(dir) => {
                st.open[dir as usize].drain(..).for_each(Waker::wake);
            }
            Event::Datagram(d) => out.push(Delivery::Datagram(d)),
            Event::Pong(seq) => {
                if let Some((sent, at)) = st.ping_sent {
                    if seq >= sent {
                        st.rtt = at.elapsed();
                        st.ping_sent = None;
                    }
                }
            }
            Event::Closed {
                code,
                reason,
                application,
                remote,
            } => {
                let reason = String::from_utf8_lossy(&reason).into_owned();
                let info = if application {
                    CloseInfo {
                        code: u32::try_from(code.into_inner()).unwrap_or(0),
                        reason,
                        initiator: if remote {
                            CloseInitiator::Remote
                        } else {
                            CloseInitiator::Local
                        },
                    }
                } else {
                    CloseInfo {
                        code: 0,
                        reason: format!("protocol error {:#x}: {reason}", code.into_inner()),
                        initiator: CloseInitiator::Remote,
                    }
                };
                end(st, "session closed");
                out.push(Delivery::Closed(info));
            }
        }
    }
    out
}

/// Marks the session over and wakes every waiter so that each sees it.
fn end(st: &mut State, why: &str) {
    if st.ended.is_none() {
        st.ended = Some(why.to_owned());
    }
    for w in st.waiters.values_mut() {
        wake(&mut w.read);
        wake(&mut w.write);
        w.stopped.drain(..).for_each(Waker::wake);
    }
    for list in &mut st.open {
        list.drain(..).for_each(Waker::wake);
    }
}

enum Delivery {
    Stream(StreamId, Dir),
    Datagram(Bytes),
    Closed(CloseInfo),
}

fn deliver(shared: &Arc<QmuxShared>, session: &dyn SessionEvents, items: Vec<Delivery>) {
    for item in items {
        match item {
            Delivery::Stream(id, Dir::Bi) => session.incoming_bi(
                QSend::new(shared.clone(), id),
                QRecv::new(shared.clone(), id),
            ),
            Delivery::Stream(id, Dir::Uni) => session.incoming_uni(QRecv::new(shared.clone(), id)),
            Delivery::Datagram(d) => session.datagram(d),
            Delivery::Closed(info) => {
                session.closed(info);
            }
        }
    }
}

/// Runs a QMux session over an accepted WebSocket's two halves until it ends.
///
/// Writes go through a [`Writer`] task, so a client that stops reading cannot stop this
/// loop: the idle timeout, keep-alive pings, the application's close and the server's
/// shutdown keep working, and a write that misses its deadline ends the session. A client
/// that sends no transport parameters within `timing.params` ends it too; `no_params` is
/// told why.
pub(crate) async fn drive<K, S>(
    shared: Arc<QmuxShared>,
    session: Weak<dyn SessionEvents>,
    sink: K,
    mut stream: S,
    timing: Timing,
    no_params: impl FnOnce(&str),
) where
    K: futures_util::Sink<Message, Error = tungstenite::Error> + Unpin + Send + 'static,
    S: futures_util::Stream<Item = Result<Message, tungstenite::Error>> + Unpin + Send,
{
    let writer = Writer::spawn(sink, timing.write);
    let mut last_heard = Instant::now();
    let mut next_ping = timing.keep_alive.map(|k| Instant::now() + k);
    let mut params_deadline = Some(Instant::now() + timing.params);
    let mut no_params = Some(no_params);
    // A record polled from the machine that did not fit in the writer's queue yet.
    let mut held: Option<Vec<u8>> = None;
    let lost = |why: String| {
        let mut st = shared.state();
        end(&mut st, &why);
        drop(st);
        if let Some(s) = session.upgrade() {
            s.closed(CloseInfo::connection_lost(why));
        }
    };
    let finished_by = loop {
        // Everything the machine has to say goes to the writer first, as far as it has room.
        let (deliveries, closed) = {
            let mut st = shared.state();
            while let Some(r) = held.take().or_else(|| st.conn.poll_transmit()) {
                if let Err(Message::Binary(r)) = writer.try_send(Message::Binary(r.into())) {
                    held = Some(r.into());
                    break;
                }
            }
            // Transmission may have finished streams: wake those waiting on delivery.
            for w in st.waiters.values_mut() {
                w.stopped.drain(..).for_each(Waker::wake);
            }
            st.waiters
                .retain(|_, w| w.read.is_some() || w.write.is_some());
            if params_deadline.is_some() && st.conn.peer_params().is_some() {
                params_deadline = None;
            }
            (
                dispatch_events(&mut st),
                st.conn.is_closed() && held.is_none(),
            )
        };
        if let Some(s) = session.upgrade() {
            deliver(&shared, &*s, deliveries);
        }
        if closed {
            // Our close (or the client's) is queued: end the WebSocket too, and wait a
            // bounded time for the client's close frame, discarding what comes before it.
            let _ = writer.try_send(Message::Close(Some(tungstenite::protocol::CloseFrame {
                code: CloseCode::Normal,
                reason: "".into(),
            })));
            let by = Instant::now() + Duration::from_secs(2);
            let _ = tokio::time::timeout_at(by, async {
                while let Some(Ok(m)) = stream.next().await {
                    if m.is_close() {
                        break;
                    }
                }
            })
            .await;
            let mut st = shared.state();
            end(&mut st, "session closed");
            break by;
        }
        let idle_deadline = timing.idle.map(|i| last_heard + i);
        tokio::select! {
            msg = stream.next() => match msg {
                Some(Ok(Message::Binary(record))) => {
                    last_heard = Instant::now();
                    let deliveries = {
                        let mut st = shared.state();
                        if let Err(e) = st.conn.handle_record(&record) {
                            debug!("QMux protocol error: {e}");
                        }
                        dispatch_events(&mut st)
                    };
                    if let Some(s) = session.upgrade() {
                        deliver(&shared, &*s, deliveries);
                    }
                }
                Some(Ok(Message::Text(_))) => {
                    shared.state().conn.abort(proto::ConnectionError {
                        code: proto::TransportErrorCode::PROTOCOL_VIOLATION,
                        frame_type: proto::FrameType::PADDING,
                        reason: "text message on a QMux WebSocket".into(),
                    });
                }
                Some(Ok(Message::Close(frame))) => {
                    let why = match frame {
                        Some(f) => format!("WebSocket closed ({}): {}", u16::from(f.code), f.reason),
                        None => "WebSocket closed".to_owned(),
                    };
                    lost(why);
                    break Instant::now() + Duration::from_secs(1);
                }
                Some(Ok(_)) => last_heard = Instant::now(), // ping and pong
                Some(Err(e)) => {
                    lost(format!("WebSocket failed: {e}"));
                    break Instant::now() + Duration::from_secs(1);
                }
                None => {
                    lost("connection lost".into());
                    break Instant::now();
                }
            },
            () = shared.transmit.notified() => {}
            () = writer.room(), if held.is_some() => {}
            why = writer.failed() => {
                lost(why);
                break Instant::now();
            }
            () = sleep_until(next_ping) => {
                let mut st = shared.state();
                let seq = st.conn.ping();
                if st.ping_sent.is_none() {
                    st.ping_sent = Some((seq, Instant::now()));
                }
                next_ping = timing.keep_alive.map(|k| Instant::now() + k);
            }
            () = sleep_until(params_deadline) => {
                let why = "the client sent no QMux transport parameters in time";
                if let Some(f) = no_params.take() {
                    f(why);
                }
                lost(why.into());
                break Instant::now() + Duration::from_secs(1);
            }
            () = sleep_until(idle_deadline) => {
                lost("idle timeout".into());
                break Instant::now() + Duration::from_secs(1);
            }
        }
    };
    writer.finish(finished_by).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn offers_read_like_the_moq_clients_write_them() {
        let offer = Offer::parse(&tokens(&[
            "qmux-01.chat",
            "qmux-02.chat",
            "qmux-02",
            "qmux-01",
            "qmux-00",
            "webtransport",
        ]))
        .unwrap();
        assert_eq!(offer.app_protocols(), ["chat"]);
        assert_eq!(offer.answer(Some("chat")).as_deref(), Some("qmux-02.chat"));
        assert_eq!(offer.answer(None).as_deref(), Some("qmux-02"));
        assert_eq!(offer.answer(Some("other")), None);
        assert!(Offer::parse(&tokens(&["chat", "webtransport"])).is_none());
        let only_app = Offer::parse(&tokens(&["qmux-01.x"])).unwrap();
        assert_eq!(only_app.answer(None), None);
        assert_eq!(only_app.answer(Some("x")).as_deref(), Some("qmux-01.x"));
    }
}
