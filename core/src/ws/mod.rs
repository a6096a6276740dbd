//! Plain WebSocket sessions (RFC 6455, over HTTP/1.1 or, per RFC 8441, HTTP/2): a
//! message-oriented session for clients that bring their own protocol (Centrifugo- or
//! Socket.IO-style), offered on routes that ask for it.
//!
//! The codec is tokio-tungstenite: it checks masking (1002), UTF-8 in text (1007) and
//! message and frame sizes (1009), and answers pings; the task in this module owns the
//! socket, keeps it alive with pings, and hands messages to [`WebSocket`] through bounded
//! queues, so a reader that stops reading stops the client (TCP backpressure).

pub(crate) mod deflate;
pub mod handshake;
pub(crate) mod writer;

use std::{
    net::SocketAddr,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex, Weak,
    },
    time::Duration,
};

use bytes::Bytes;
use futures_util::StreamExt;
use tokio::{
    sync::{mpsc, watch, Notify},
    time::Instant,
};
use tokio_tungstenite::tungstenite::{
    self,
    error::{CapacityError, ProtocolError},
    protocol::{frame::coding::CloseCode, CloseFrame},
};

use crate::close::CloseInitiator;

/// A message on a plain WebSocket.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    /// A text message (valid UTF-8).
    Text(String),
    /// A binary message.
    Binary(Bytes),
}

impl Message {
    /// Its size in bytes (UTF-8 for text).
    pub fn len(&self) -> usize {
        match self {
            Message::Text(t) => t.len(),
            Message::Binary(b) => b.len(),
        }
    }

    /// Whether it is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn into_wire(self) -> tungstenite::Message {
        match self {
            Message::Text(t) => tungstenite::Message::Text(t.into()),
            Message::Binary(b) => tungstenite::Message::Binary(b),
        }
    }
}

/// How a WebSocket ended: the close code and reason of the Close frame (1005 and empty
/// when the frame had none, 1006 when the connection dropped without one).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WebSocketClose {
    /// The close code (RFC 6455 §7.4).
    pub code: u16,
    /// The reason, at most 123 bytes.
    pub reason: String,
    /// Who ended it.
    pub initiator: CloseInitiator,
}

/// Why a WebSocket operation failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WebSocketError {
    /// The WebSocket has closed; the close says how.
    #[error("WebSocket closed with {}: {}", .0.code, .0.reason)]
    Closed(WebSocketClose),
    /// A close code that may not be sent: RFC 6455 lets an endpoint send 1000..=1003 and
    /// 1007..=1014 (the registered codes) and 3000..=4999; 1004..=1006 and 1015 are never
    /// sent, they only describe what happened.
    #[error("invalid close code {0}: use 1000..=1003, 1007..=1014 or 3000..=4999")]
    InvalidCloseCode(u16),
    /// A message larger than the configured limit.
    #[error("message of {size} bytes exceeds the limit of {max}")]
    TooLarge {
        /// The message size.
        size: usize,
        /// The limit.
        max: usize,
    },
}

impl WebSocketError {
    /// A stable, machine-readable name for this error, shared by the language bindings.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Closed(_) => "ERR_WEBSOCKET_CLOSED",
            Self::InvalidCloseCode(_) => "ERR_INVALID_CLOSE_CODE",
            Self::TooLarge { .. } => "ERR_MESSAGE_TOO_LARGE",
        }
    }
}

/// How long a close waits for the client's answering Close frame.
const CLOSE_WAIT: Duration = Duration::from_secs(2);

/// The longest close reason a Close frame can carry (125 bytes of payload, 2 of code).
const MAX_CLOSE_REASON: usize = 123;

fn truncate(reason: &str) -> &str {
    let mut end = reason.len().min(MAX_CLOSE_REASON);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    &reason[..end]
}

/// Bytes of received messages that may wait for the application before the socket stops
/// reading (one message is always let in, so a socket holds at most this plus one message
/// of up to the limit, plus the one the codec is assembling).
const QUEUE_BYTES: usize = 1024 * 1024;

/// Messages that may wait for the application, whatever their size.
const QUEUE_MESSAGES: usize = 16;

/// What a WebSocket's handles share with its task.
pub(crate) struct WsShared {
    outgoing: mpsc::Sender<tungstenite::Message>,
    incoming: tokio::sync::Mutex<mpsc::Receiver<Message>>,
    /// Bytes in `incoming`, and a wake-up for the task when the application took some.
    queued_bytes: AtomicUsize,
    room: Notify,
    /// The first close asked for (by the application or the server's shutdown). Kept apart
    /// from the outgoing queue so that a full queue never loses it.
    close_request: watch::Sender<Option<(u16, String)>>,
    closed: watch::Sender<Option<WebSocketClose>>,
    pub(crate) path: String,
    pub(crate) protocol: Option<String>,
    remote: SocketAddr,
    max_message: usize,
    /// Releases the session's slots, before `closed` resolves.
    on_close: Mutex<Option<Box<dyn FnOnce() + Send>>>,
}

impl WsShared {
    fn set_closed(&self, info: WebSocketClose) {
        if self.closed.borrow().is_some() {
            return;
        }
        if let Some(f) = self
            .on_close
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            f();
        }
        self.closed.send_if_modified(|slot| {
            if slot.is_none() {
                *slot = Some(info);
                true
            } else {
                false
            }
        });
    }

    /// Starts closing with `code` and `reason` (the server shutting down, say); only the
    /// first close counts.
    pub(crate) fn close(&self, code: u16, reason: &str) {
        self.close_request.send_if_modified(|slot| {
            if slot.is_some() {
                return false;
            }
            *slot = Some((code, truncate(reason).to_owned()));
            true
        });
    }

    /// Counts a received message's bytes into the queue toward the application.
    fn queue(&self, len: usize) {
        self.queued_bytes.fetch_add(len, Ordering::AcqRel);
    }

    /// The application took a message of `len` bytes.
    fn dequeue(&self, len: usize) {
        self.queued_bytes.fetch_sub(len, Ordering::AcqRel);
        self.room.notify_one();
    }

    /// Whether the queue toward the application may take another message.
    fn has_room(&self) -> bool {
        self.queued_bytes.load(Ordering::Acquire) < QUEUE_BYTES
    }
}

/// The pieces a WebSocket needs before its socket exists.
pub(crate) struct Pending {
    pub(crate) shared: Arc<WsShared>,
    outgoing: mpsc::Receiver<tungstenite::Message>,
    incoming: mpsc::Sender<Message>,
}

impl WsShared {
    /// Runs `f` once, before `closed` resolves (releases the session's slots).
    pub(crate) fn on_close(&self, f: Box<dyn FnOnce() + Send>) {
        *self.on_close.lock().unwrap_or_else(|e| e.into_inner()) = Some(f);
    }
}

impl Pending {
    /// The upgrade never completed: the WebSocket ends as dropped.
    pub(crate) fn fail(self, why: String) {
        self.shared.set_closed(WebSocketClose {
            code: 1006,
            reason: why,
            initiator: CloseInitiator::Connection,
        });
    }

    /// The server refused the WebSocket after `accept` (a limit): it ends with `code`.
    pub(crate) fn fail_with(self, code: u16, why: &str) {
        self.shared.set_closed(WebSocketClose {
            code,
            reason: why.to_owned(),
            initiator: CloseInitiator::Local,
        });
    }
}

/// Makes a WebSocket whose task starts once the upgraded socket is there.
pub(crate) fn pending(
    path: String,
    protocol: Option<String>,
    remote: SocketAddr,
    max_message: usize,
) -> Pending {
    // A few messages each way: enough to overlap work, few enough that a stalled reader
    // stalls the client instead of growing a queue.
    let (out_tx, out_rx) = mpsc::channel(QUEUE_MESSAGES);
    let (in_tx, in_rx) = mpsc::channel(QUEUE_MESSAGES);
    let shared = Arc::new(WsShared {
        outgoing: out_tx,
        incoming: tokio::sync::Mutex::new(in_rx),
        queued_bytes: AtomicUsize::new(0),
        room: Notify::new(),
        close_request: watch::channel(None).0,
        closed: watch::channel(None).0,
        path,
        protocol,
        remote,
        max_message,
        on_close: Mutex::new(None),
    });
    Pending {
        shared,
        outgoing: out_rx,
        incoming: in_tx,
    }
}

/// A plain WebSocket session. Cheap to clone; it closes with 1000 once every clone is
/// dropped.
#[derive(Clone)]
pub struct WebSocket {
    handle: Arc<WsHandle>,
}

struct WsHandle(Arc<WsShared>);

impl Drop for WsHandle {
    fn drop(&mut self) {
        self.0.close(1000, "");
    }
}

impl std::fmt::Debug for WebSocket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebSocket")
            .field("path", &self.shared().path)
            .finish_non_exhaustive()
    }
}

impl WebSocket {
    pub(crate) fn new(shared: Arc<WsShared>) -> Self {
        Self {
            handle: Arc::new(WsHandle(shared)),
        }
    }

    fn shared(&self) -> &WsShared {
        &self.handle.0
    }

    /// The request path (with query) the WebSocket was opened with.
    pub fn path(&self) -> &str {
        &self.shared().path
    }

    /// The subprotocol chosen when it was accepted, if any.
    pub fn protocol(&self) -> Option<&str> {
        self.shared().protocol.as_deref()
    }

    /// The client's address.
    pub fn remote_addr(&self) -> SocketAddr {
        self.shared().remote
    }

    fn closed_error(&self) -> WebSocketError {
        let requested = self.shared().close_request.borrow().clone();
        WebSocketError::Closed(
            self.shared()
                .closed
                .borrow()
                .clone()
                .or(requested.map(|(code, reason)| WebSocketClose {
                    code,
                    reason,
                    initiator: CloseInitiator::Local,
                }))
                .unwrap_or(WebSocketClose {
                    code: 1006,
                    reason: String::new(),
                    initiator: CloseInitiator::Connection,
                }),
        )
    }

    /// The next message; `Ok(None)` once the WebSocket closed cleanly (see
    /// [`closed`](Self::closed) for the code), an error if it failed.
    pub async fn recv(&self) -> Result<Option<Message>, WebSocketError> {
        let mut rx = self.shared().incoming.lock().await;
        match rx.recv().await {
            Some(m) => {
                self.shared().dequeue(m.len());
                Ok(Some(m))
            }
            None => match self.shared().closed.borrow().clone() {
                Some(c) if c.initiator != CloseInitiator::Connection => Ok(None),
                _ => Err(self.closed_error()),
            },
        }
    }

    /// A message already waiting, without waiting for one: `None` when none is (or the
    /// WebSocket ended; [`recv`](Self::recv) then says how). A language binding takes
    /// buffered messages this way without a round trip through its event loop.
    pub fn try_recv(&self) -> Option<Message> {
        let mut rx = self.shared().incoming.try_lock().ok()?;
        let m = rx.try_recv().ok()?;
        self.shared().dequeue(m.len());
        Some(m)
    }

    /// Queues a message if the outgoing queue has room, without waiting: `Ok(None)` once
    /// queued, `Ok(Some(message))` handing it back when the queue is full (then
    /// [`send`](Self::send) waits for room), an error as [`send`](Self::send) would give.
    pub fn try_send(&self, message: Message) -> Result<Option<Message>, WebSocketError> {
        self.sendable(&message)?;
        let permit = match self.shared().outgoing.try_reserve() {
            Ok(permit) => permit,
            Err(mpsc::error::TrySendError::Full(())) => return Ok(Some(message)),
            Err(mpsc::error::TrySendError::Closed(())) => return Err(self.closed_error()),
        };
        permit.send(message.into_wire());
        Ok(None)
    }

    /// Whether `message` may be sent: within the size limit, and the WebSocket not closing.
    fn sendable(&self, message: &Message) -> Result<(), WebSocketError> {
        let size = message.len();
        if size > self.shared().max_message {
            return Err(WebSocketError::TooLarge {
                size,
                max: self.shared().max_message,
            });
        }
        if self.shared().closed.borrow().is_some() || self.shared().close_request.borrow().is_some()
        {
            return Err(self.closed_error());
        }
        Ok(())
    }

    /// Sends a message, waiting while the outgoing queue is full (backpressure).
    pub async fn send(&self, message: Message) -> Result<(), WebSocketError> {
        self.sendable(&message)?;
        let m = message.into_wire();
        self.shared()
            .outgoing
            .send(m)
            .await
            .map_err(|_| self.closed_error())
    }

    /// Closes with `code` (1000 for a normal close, a registered code such as 1001 going
    /// away, 1008 policy violation or 1011 internal error, or 3000..=4999 for the
    /// application) and a reason (truncated to 123 bytes). Later calls do nothing.
    pub fn close(&self, code: u16, reason: &str) -> Result<(), WebSocketError> {
        if !matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999) {
            return Err(WebSocketError::InvalidCloseCode(code));
        }
        self.shared().close(code, reason);
        Ok(())
    }

    /// Resolves once the WebSocket has closed, however it closed.
    pub async fn closed(&self) -> WebSocketClose {
        let mut rx = self.shared().closed.subscribe();
        let r = rx.wait_for(Option::is_some).await;
        match r {
            Ok(c) => c.clone().unwrap_or_else(unreachable_close),
            Err(_) => unreachable_close(),
        }
    }

    /// How it closed, if it has.
    pub fn close_info(&self) -> Option<WebSocketClose> {
        self.shared().closed.borrow().clone()
    }
}

fn unreachable_close() -> WebSocketClose {
    WebSocketClose {
        code: 1006,
        reason: String::new(),
        initiator: CloseInitiator::Connection,
    }
}

/// The close code for a codec error, as RFC 6455 §7.4.1 assigns them.
pub(crate) fn close_code_for(e: &tungstenite::Error) -> u16 {
    match e {
        tungstenite::Error::Utf8(_) => 1007,
        tungstenite::Error::Capacity(CapacityError::MessageTooLong { .. }) => 1009,
        tungstenite::Error::Protocol(ProtocolError::UnmaskedFrameFromClient) => 1002,
        tungstenite::Error::Protocol(_) => 1002,
        _ => 1011,
    }
}

/// How a TCP-side session's WebSocket is kept alive and given up on.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Timing {
    /// Ping this often (QX_PING over QMux, which also measures the round-trip time).
    pub(crate) keep_alive: Option<Duration>,
    /// Close when nothing arrives for this long.
    pub(crate) idle: Option<Duration>,
    /// A write toward the client must complete within this time.
    pub(crate) write: Duration,
    /// A QMux client must send its transport parameters within this time.
    pub(crate) params: Duration,
}

/// A message as it goes to the writer: compressed (RSV1 set) when permessage-deflate was
/// agreed and it is worth it.
fn pack(codec: &mut Option<deflate::Codec>, m: tungstenite::Message) -> tungstenite::Message {
    use tungstenite::protocol::frame::{
        coding::{Data, OpCode},
        Frame,
    };
    let Some(codec) = codec else { return m };
    let (payload, kind) = match &m {
        tungstenite::Message::Text(t) => (t.as_str().as_bytes(), Data::Text),
        tungstenite::Message::Binary(b) => (&b[..], Data::Binary),
        _ => return m,
    };
    match codec.compress(payload) {
        Some(packed) => {
            let mut frame = Frame::message(packed, OpCode::Data(kind), true);
            frame.header_mut().rsv1 = true;
            tungstenite::Message::Frame(frame)
        }
        None => m,
    }
}

/// A received binary message as the application gets it: inflated (and, for text, checked
/// as UTF-8) when it came compressed; otherwise the close code and reason to end with.
fn unpack(
    codec: &mut Option<deflate::Codec>,
    b: Bytes,
    max: usize,
) -> Result<Message, (u16, &'static str)> {
    let Some(codec) = codec else {
        return Ok(Message::Binary(b));
    };
    let Some((compressed, text)) = codec.next_start() else {
        return Err((1011, "compression state out of step"));
    };
    if !compressed {
        return Ok(Message::Binary(b));
    }
    match codec.inflate(&b, max) {
        Ok(v) if text => String::from_utf8(v)
            .map(Message::Text)
            .map_err(|_| (1007, "invalid UTF-8 in a compressed text message")),
        Ok(v) => Ok(Message::Binary(v.into())),
        Err(deflate::InflateError::TooLarge) => Err((1009, "message inflates past the limit")),
        Err(deflate::InflateError::Corrupt) => Err((1007, "invalid deflate data")),
    }
}

/// Runs a plain WebSocket until it ends; `codec` is its permessage-deflate state, if agreed.
pub(crate) async fn drive<K, S>(
    pending: Pending,
    sink: K,
    mut stream: S,
    timing: Timing,
    mut codec: Option<deflate::Codec>,
) where
    K: futures_util::Sink<tungstenite::Message, Error = tungstenite::Error>
        + Unpin
        + Send
        + 'static,
    S: futures_util::Stream<Item = Result<tungstenite::Message, tungstenite::Error>> + Unpin + Send,
{
    let Pending {
        shared,
        mut outgoing,
        incoming,
    } = pending;
    let writer = writer::Writer::spawn(sink, timing.write);
    let mut close_requests = shared.close_request.subscribe();
    let mut last_heard = Instant::now();
    let mut next_ping = timing.keep_alive.map(|k| Instant::now() + k);
    // Set when this side started closing: the code, the reason, whether the Close frame has
    // been queued, and the moment past which the client's answer is no longer awaited
    // (absolute: nothing the client sends moves it).
    let mut closing: Option<(u16, String, bool, Instant)> = None;
    let mut incoming = Some(incoming);
    let weak: Weak<WsShared> = Arc::downgrade(&shared);
    let lost = |reason: String| WebSocketClose {
        code: 1006,
        reason,
        initiator: CloseInitiator::Connection,
    };
    let outcome: WebSocketClose = loop {
        if closing.is_none() {
            if let Some((code, reason)) = close_requests.borrow_and_update().clone() {
                // Nothing more goes to the application, and nothing new comes from it
                // (what it sent before closing is still queued and goes out first); the
                // close handshake follows.
                incoming = None;
                outgoing.close();
                closing = Some((code, reason, false, Instant::now() + CLOSE_WAIT));
                next_ping = None;
            }
        }
        if let Some((code, reason, queued @ false, _)) = &mut closing {
            // Messages whose `send` resolved before the close go out before the Close frame.
            let mut drained = false;
            while writer.has_room() {
                match outgoing.try_recv() {
                    Ok(m) => {
                        let _ = writer.try_send(pack(&mut codec, m));
                    }
                    Err(_) => {
                        drained = true;
                        break;
                    }
                }
            }
            let frame = CloseFrame {
                code: CloseCode::from(*code),
                reason: reason.clone().into(),
            };
            if drained
                && writer
                    .try_send(tungstenite::Message::Close(Some(frame)))
                    .is_ok()
            {
                *queued = true;
            }
        }
        let close_unqueued = matches!(closing, Some((_, _, false, _)));
        let deadline = match &closing {
            Some((.., by)) => Some(*by),
            None => timing.idle.map(|i| last_heard + i),
        };
        let room = shared.has_room();
        let reading =
            closing.is_some() || (room && incoming.as_ref().is_some_and(|tx| tx.capacity() > 0));
        let sending = closing.is_none() && writer.has_room();
        tokio::select! {
            msg = stream.next(), if reading => match msg {
                Some(Ok(tungstenite::Message::Text(t))) => {
                    last_heard = Instant::now();
                    // An uncompressed text message: its start is passed over.
                    if let Some(c) = &codec {
                        let _ = c.next_start();
                    }
                    if let Some(tx) = &incoming {
                        shared.queue(t.len());
                        let _ = tx.try_send(Message::Text(t.as_str().to_owned()));
                    }
                }
                Some(Ok(tungstenite::Message::Binary(b))) => {
                    last_heard = Instant::now();
                    match unpack(&mut codec, b, shared.max_message) {
                        Ok(m) => {
                            if let Some(tx) = &incoming {
                                shared.queue(m.len());
                                let _ = tx.try_send(m);
                            }
                        }
                        Err((code, reason)) => {
                            let _ = writer.try_send(tungstenite::Message::Close(Some(CloseFrame {
                                code: CloseCode::from(code),
                                reason: reason.into(),
                            })));
                            break WebSocketClose { code, reason: reason.to_owned(), initiator: CloseInitiator::Remote };
                        }
                    }
                }
                Some(Ok(tungstenite::Message::Close(frame))) => {
                    // tungstenite queues its answer to the client's close; `finish` below
                    // flushes it.
                    let (code, reason) = frame.map_or((1005, String::new()), |f| {
                        (u16::from(f.code), f.reason.as_str().to_owned())
                    });
                    break match closing.take() {
                        Some((code, reason, ..)) => WebSocketClose { code, reason, initiator: CloseInitiator::Local },
                        None => WebSocketClose { code, reason, initiator: CloseInitiator::Remote },
                    };
                }
                Some(Ok(_)) => last_heard = Instant::now(), // ping, pong, raw frames
                Some(Err(e)) => {
                    let code = close_code_for(&e);
                    let reason = e.to_string();
                    let _ = writer.try_send(tungstenite::Message::Close(Some(CloseFrame {
                        code: CloseCode::from(code),
                        reason: truncate(&reason).to_owned().into(),
                    })));
                    break WebSocketClose { code, reason, initiator: CloseInitiator::Remote };
                }
                None => break lost("connection lost".into()),
            },
            out = outgoing.recv(), if sending => {
                if let Some(m) = out {
                    // `sending` checked for room, and only this task queues messages.
                    let _ = writer.try_send(pack(&mut codec, m));
                }
            }
            () = writer.room(), if (!sending && closing.is_none()) || close_unqueued => {}
            () = shared.room.notified(), if !reading => {}
            // The sender lives in `shared`, which this task holds: this cannot fail.
            _ = close_requests.changed(), if closing.is_none() => {}
            why = writer.failed() => break lost(why),
            () = writer::sleep_until(next_ping) => {
                let _ = writer.try_send(tungstenite::Message::Ping(Bytes::new()));
                next_ping = timing.keep_alive.map(|k| Instant::now() + k);
            }
            () = writer::sleep_until(deadline) => {
                match closing.take() {
                    Some((code, reason, ..)) => break WebSocketClose { code, reason, initiator: CloseInitiator::Local },
                    None => {
                        let _ = writer.try_send(tungstenite::Message::Close(Some(CloseFrame {
                            code: CloseCode::Away,
                            reason: "idle timeout".into(),
                        })));
                        break lost("idle timeout".into());
                    }
                }
            }
        }
    };
    drop(incoming);
    // The session is over for the application now: its slots go before the socket's last
    // bytes (bounded) do.
    if let Some(shared) = weak.upgrade() {
        shared.set_closed(outcome);
    }
    writer.finish(Instant::now() + Duration::from_secs(1)).await;
}
