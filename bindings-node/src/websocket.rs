//! A plain WebSocket session.

use ferrovia::{CloseInitiator, WebSocket, WebSocketClose, WebSocketError, WebSocketMessage};
use napi::bindgen_prelude::{Buffer, Uint8Array};
use napi_derive::napi;

use crate::error;

/// One message: `text` or `binary`.
#[napi(object)]
pub struct NativeMessage {
    /// A text message.
    pub text: Option<String>,
    /// A binary message.
    pub binary: Option<Buffer>,
}

/// How a WebSocket closed.
#[napi(object)]
pub struct NativeWebSocketClose {
    /// The close code (1005 without one, 1006 when the connection dropped).
    pub close_code: u32,
    /// The reason.
    pub reason: String,
    /// `local`, `remote` or `connection`.
    pub initiator: String,
}

impl From<WebSocketClose> for NativeWebSocketClose {
    fn from(c: WebSocketClose) -> Self {
        Self {
            close_code: u32::from(c.code),
            reason: c.reason,
            initiator: match c.initiator {
                CloseInitiator::Local => "local",
                CloseInitiator::Remote => "remote",
                CloseInitiator::Connection => "connection",
            }
            .into(),
        }
    }
}

/// An accepted plain WebSocket.
#[napi]
pub struct NativeWebSocket {
    ws: WebSocket,
}

impl NativeWebSocket {
    pub(crate) fn new(ws: WebSocket) -> Self {
        Self { ws }
    }
}

#[napi]
impl NativeWebSocket {
    /// The request path, including the query.
    #[napi(getter, catch_unwind)]
    pub fn path(&self) -> String {
        self.ws.path().to_owned()
    }

    /// The subprotocol chosen at accept, if any.
    #[napi(getter, catch_unwind)]
    pub fn protocol(&self) -> Option<String> {
        self.ws.protocol().map(str::to_owned)
    }

    /// The client's IP address.
    #[napi(getter, catch_unwind)]
    pub fn remote_address(&self) -> String {
        self.ws.remote_addr().ip().to_string()
    }

    /// The client's TCP port.
    #[napi(getter, catch_unwind)]
    pub fn remote_port(&self) -> u32 {
        u32::from(self.ws.remote_addr().port())
    }

    /// The next message; `null` once the WebSocket closed cleanly.
    #[napi]
    pub async fn recv(&self) -> napi::Result<Option<NativeMessage>> {
        match self.ws.recv().await {
            Ok(m) => Ok(m.map(native_message)),
            Err(e) => Err(error::from_websocket(e)),
        }
    }

    /// A message already waiting, without a promise; `null` when none is (or the
    /// WebSocket ended: `recv()` then says how).
    #[napi(catch_unwind)]
    pub fn try_recv(&self) -> Option<NativeMessage> {
        self.ws.try_recv().map(native_message)
    }

    /// Queues a text message if there is room now; false when the queue is full or the
    /// send would fail (`sendText()` then waits or says why).
    #[napi(catch_unwind)]
    pub fn try_send_text(&self, text: String) -> bool {
        matches!(self.ws.try_send(WebSocketMessage::Text(text)), Ok(None))
    }

    /// Queues a binary message if there is room now; false as for `trySendText()`.
    #[napi(catch_unwind)]
    pub fn try_send_binary(&self, data: Uint8Array) -> bool {
        let data = bytes::Bytes::copy_from_slice(&data);
        matches!(self.ws.try_send(WebSocketMessage::Binary(data)), Ok(None))
    }

    /// Sends a text message; resolves once it is queued (backpressure).
    #[napi]
    pub async fn send_text(&self, text: String) -> napi::Result<()> {
        self.ws
            .send(WebSocketMessage::Text(text))
            .await
            .map_err(error::from_websocket)
    }

    /// Sends a binary message; resolves once it is queued (backpressure).
    #[napi]
    pub async fn send_binary(&self, data: Buffer) -> napi::Result<()> {
        self.ws
            .send(WebSocketMessage::Binary(data.to_vec().into()))
            .await
            .map_err(error::from_websocket)
    }

    /// Closes with a code (1000 or 3000..=4999) and a reason.
    #[napi(catch_unwind)]
    pub fn close(&self, code: u32, reason: String) -> napi::Result<()> {
        let code = u16::try_from(code)
            .map_err(|_| error::from_websocket(WebSocketError::InvalidCloseCode(u16::MAX)))?;
        self.ws.close(code, &reason).map_err(error::from_websocket)
    }

    /// Resolves once the WebSocket has closed.
    #[napi]
    pub async fn closed(&self) -> NativeWebSocketClose {
        self.ws.closed().await.into()
    }
}

fn native_message(message: WebSocketMessage) -> NativeMessage {
    match message {
        WebSocketMessage::Text(t) => NativeMessage {
            text: Some(t),
            binary: None,
        },
        WebSocketMessage::Binary(b) => NativeMessage {
            text: None,
            binary: Some(b.to_vec().into()),
        },
    }
}
