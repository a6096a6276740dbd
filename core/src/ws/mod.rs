//! Plain WebSocket sessions (RFC 6455, over HTTP/1.1 or, per RFC 8441, HTTP/2): a
//! message-oriented session for clients that bring their own protocol (Centrifugo- or
//! Socket.IO-style), offered on routes that ask for it.
//!
//! The codec is tokio-tungstenite: it checks masking (1002), UTF-8 in text (1007) and
//! message and frame sizes (1009), and answers pings; the task in this module owns the
//! socket, keeps it alive with pings, and hands messages to [`WebSocket`] through bounded
//! queues, so a reader that stops reading stops the client (TCP backpressure).

pub mod handshake;

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex, Weak},
    time::Duration,
};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use tokio::{
    sync::{mpsc, watch},
    time::Instant,
};
use tokio_tungstenite::tungstenite::{
    self,
    error::{CapacityError, ProtocolError},
    protocol::{frame::coding::CloseCode, CloseFrame},
};

use crate::session::CloseInitiator;

/// A message on a plain WebSocket.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    /// A text message (valid UTF-8).
    Text(String),
    /// A binary message.
    Binary(Bytes),
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

enum Outgoing {
    Message(tungstenite::Message),
    Close(u16, String),
}

/// What a WebSocket's handles share with its task.
pub(crate) struct WsShared {
    outgoing: mpsc::Sender<Outgoing>,
    incoming: tokio::sync::Mutex<mpsc::Receiver<Message>>,
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

    /// Starts closing with `code` and `reason` (the server shutting down, say).
    pub(crate) fn close(&self, code: u16, reason: &str) {
        let _ = self
            .outgoing
            .try_send(Outgoing::Close(code, truncate(reason).to_owned()));
    }
}

/// The pieces a WebSocket needs before its socket exists.
pub(crate) struct Pending {
    pub(crate) shared: Arc<WsShared>,
    outgoing: mpsc::Receiver<Outgoing>,
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
    let (out_tx, out_rx) = mpsc::channel(16);
    let (in_tx, in_rx) = mpsc::channel(16);
    let shared = Arc::new(WsShared {
        outgoing: out_tx,
        incoming: tokio::sync::Mutex::new(in_rx),
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
        WebSocketError::Closed(
            self.shared()
                .closed
                .borrow()
                .clone()
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
            Some(m) => Ok(Some(m)),
            None => match self.shared().closed.borrow().clone() {
                Some(c) if c.initiator != CloseInitiator::Connection => Ok(None),
                _ => Err(self.closed_error()),
            },
        }
    }

    /// Sends a message, waiting while the outgoing queue is full (backpressure).
    pub async fn send(&self, message: Message) -> Result<(), WebSocketError> {
        let size = match &message {
            Message::Text(t) => t.len(),
            Message::Binary(b) => b.len(),
        };
        if size > self.shared().max_message {
            return Err(WebSocketError::TooLarge {
                size,
                max: self.shared().max_message,
            });
        }
        let m = match message {
            Message::Text(t) => tungstenite::Message::Text(t.into()),
            Message::Binary(b) => tungstenite::Message::Binary(b),
        };
        if self.shared().closed.borrow().is_some() {
            return Err(self.closed_error());
        }
        self.shared()
            .outgoing
            .send(Outgoing::Message(m))
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

/// Runs a plain WebSocket until it ends.
pub(crate) async fn drive<K, S>(
    pending: Pending,
    mut sink: K,
    mut stream: S,
    keep_alive: Option<Duration>,
    idle: Option<Duration>,
) where
    K: futures_util::Sink<tungstenite::Message, Error = tungstenite::Error> + Unpin + Send,
    S: futures_util::Stream<Item = Result<tungstenite::Message, tungstenite::Error>> + Unpin + Send,
{
    let Pending {
        shared,
        mut outgoing,
        incoming,
    } = pending;
    let mut last_heard = Instant::now();
    let mut next_ping = keep_alive.map(|k| Instant::now() + k);
    let mut closing: Option<(u16, String)> = None;
    let mut incoming = Some(incoming);
    let weak: Weak<WsShared> = Arc::downgrade(&shared);
    let outcome: WebSocketClose = loop {
        let idle_deadline = idle.map(|i| last_heard + i);
        let reading = incoming.as_ref().is_some_and(|tx| tx.capacity() > 0) || closing.is_some();
        tokio::select! {
            msg = stream.next(), if reading => match msg {
                Some(Ok(tungstenite::Message::Text(t))) => {
                    last_heard = Instant::now();
                    if let Some(tx) = &incoming {
                        let _ = tx.try_send(Message::Text(t.as_str().to_owned()));
                    }
                }
                Some(Ok(tungstenite::Message::Binary(b))) => {
                    last_heard = Instant::now();
                    if let Some(tx) = &incoming {
                        let _ = tx.try_send(Message::Binary(b));
                    }
                }
                Some(Ok(tungstenite::Message::Close(frame))) => {
                    let (code, reason) = frame.map_or((1005, String::new()), |f| {
                        (u16::from(f.code), f.reason.as_str().to_owned())
                    });
                    // tungstenite answers the client's close itself; flush that answer.
                    let _ = tokio::time::timeout(Duration::from_secs(2), sink.flush()).await;
                    let initiator = if closing.is_some() {
                        CloseInitiator::Local
                    } else {
                        CloseInitiator::Remote
                    };
                    let (code, reason) = match &closing {
                        Some((c, r)) => (*c, r.clone()),
                        None => (code, reason),
                    };
                    break WebSocketClose { code, reason, initiator };
                }
                Some(Ok(_)) => last_heard = Instant::now(), // ping, pong, raw frames
                Some(Err(e)) => {
                    let code = close_code_for(&e);
                    let _ = tokio::time::timeout(Duration::from_secs(2), sink.send(tungstenite::Message::Close(Some(CloseFrame {
                        code: CloseCode::from(code),
                        reason: truncate(&e.to_string()).to_owned().into(),
                    })))).await;
                    break WebSocketClose {
                        code,
                        reason: e.to_string(),
                        initiator: CloseInitiator::Remote,
                    };
                }
                None => break WebSocketClose {
                    code: 1006,
                    reason: "connection lost".into(),
                    initiator: CloseInitiator::Connection,
                },
            },
            out = outgoing.recv(), if closing.is_none() => match out {
                Some(Outgoing::Message(m)) => {
                    if let Err(e) = sink.send(m).await {
                        break WebSocketClose {
                            code: 1006,
                            reason: format!("write failed: {e}"),
                            initiator: CloseInitiator::Connection,
                        };
                    }
                }
                Some(Outgoing::Close(code, reason)) => {
                    closing = Some((code, reason.clone()));
                    // Nothing more goes to the application; the close handshake follows.
                    incoming = None;
                    let frame = CloseFrame { code: CloseCode::from(code), reason: reason.into() };
                    if sink.send(tungstenite::Message::Close(Some(frame))).await.is_err() {
                        break WebSocketClose {
                            code,
                            reason: closing.take().map(|c| c.1).unwrap_or_default(),
                            initiator: CloseInitiator::Local,
                        };
                    }
                    // A client that never answers the close is not waited on forever.
                    last_heard = Instant::now();
                    next_ping = None;
                }
                None => {}
            },
            () = crate::qmux::sleep_until(next_ping) => {
                if sink.send(tungstenite::Message::Ping(Bytes::new())).await.is_err() {
                    break WebSocketClose {
                        code: 1006,
                        reason: "connection lost".into(),
                        initiator: CloseInitiator::Connection,
                    };
                }
                next_ping = keep_alive.map(|k| Instant::now() + k);
            }
            () = crate::qmux::sleep_until(if closing.is_some() { Some(last_heard + CLOSE_WAIT) } else { idle_deadline }) => {
                match closing.take() {
                    Some((code, reason)) => break WebSocketClose { code, reason, initiator: CloseInitiator::Local },
                    None => {
                        let _ = tokio::time::timeout(Duration::from_secs(1), sink.send(tungstenite::Message::Close(Some(CloseFrame {
                            code: CloseCode::Away,
                            reason: "idle timeout".into(),
                        })))).await;
                        break WebSocketClose {
                            code: 1006,
                            reason: "idle timeout".into(),
                            initiator: CloseInitiator::Connection,
                        };
                    }
                }
            }
        }
    };
    drop(incoming);
    let _ = tokio::time::timeout(Duration::from_secs(1), sink.close()).await;
    if let Some(shared) = weak.upgrade() {
        shared.set_closed(outcome);
    }
}
