//! WebSocket handshakes that another HTTP server (Express, Fastify, `node:http2`)
//! received: the core checks and routes them; the facade writes the answer and pipes the
//! upgraded socket's bytes through here.

use std::{net::SocketAddr, sync::Mutex};

use ferrovia::{Handshake, HandshakeOutcome, Server, UpgradedWebSocket};
use napi::bindgen_prelude::Buffer;
use napi_derive::napi;
use tokio::io::{AsyncReadExt, AsyncWriteExt, ReadHalf, WriteHalf};

use crate::{error, request::NativeHeader};

/// A handshake as the other server parsed it.
#[napi(object)]
pub struct NativeHandshake {
    /// `GET` (HTTP/1.1) or `CONNECT` (HTTP/2).
    pub method: String,
    /// Whether it came over HTTP/2 (RFC 8441).
    pub http2: bool,
    /// HTTP/2's `:protocol`.
    pub protocol: Option<String>,
    /// Path and query.
    pub path: String,
    /// `Host` or `:authority`.
    pub authority: String,
    /// Headers, names lowercase.
    pub headers: Vec<NativeHeader>,
    /// The client's IP address.
    pub remote_address: String,
    /// The client's port.
    pub remote_port: u32,
    /// Whether the connection is encrypted.
    pub secure: bool,
}

/// What to answer.
#[napi(object)]
pub struct NativeHandshakeOutcome {
    /// The status: 101/200 to upgrade, or a refusal.
    pub status: u32,
    /// Response headers.
    pub headers: Vec<NativeHeader>,
    /// A refusal's body.
    pub body: String,
    /// Whether to upgrade (then `take_socket` gives the pipe).
    pub upgrade: bool,
}

/// The accepted session's end of the upgraded connection: bytes from the other server's
/// socket go in with `write`, bytes for it come out of `read`.
#[napi]
pub struct NativeSocketPipe {
    pending: Mutex<Option<UpgradedWebSocket>>,
    reader: tokio::sync::Mutex<Option<ReadHalf<tokio::io::DuplexStream>>>,
    writer: tokio::sync::Mutex<Option<WriteHalf<tokio::io::DuplexStream>>>,
}

/// Runs a handshake through the server's routes.
pub(crate) async fn handshake(
    server: &Server,
    h: NativeHandshake,
) -> napi::Result<(NativeHandshakeOutcome, Option<NativeSocketPipe>)> {
    let ip = h.remote_address.parse().map_err(|_| {
        error::invalid(format!(
            "remote address {:?} is not an IP address",
            h.remote_address
        ))
    })?;
    let port =
        u16::try_from(h.remote_port).map_err(|_| error::invalid("remote port out of range"))?;
    let outcome = server
        .websocket_handshake(Handshake {
            method: h.method,
            http2: h.http2,
            protocol: h.protocol,
            path: h.path,
            authority: h.authority,
            headers: h.headers.into_iter().map(|x| (x.name, x.value)).collect(),
            remote_addr: SocketAddr::new(ip, port),
            secure: h.secure,
        })
        .await;
    let pairs = |v: Vec<(String, String)>| {
        v.into_iter()
            .map(|(name, value)| NativeHeader { name, value })
            .collect()
    };
    Ok(match outcome {
        HandshakeOutcome::Respond {
            status,
            headers,
            body,
        } => (
            NativeHandshakeOutcome {
                status: u32::from(status),
                headers: pairs(headers),
                body: body.to_owned(),
                upgrade: false,
            },
            None,
        ),
        HandshakeOutcome::Upgrade {
            status,
            headers,
            socket,
        } => (
            NativeHandshakeOutcome {
                status: u32::from(status),
                headers: pairs(headers),
                body: String::new(),
                upgrade: true,
            },
            Some(NativeSocketPipe {
                pending: Mutex::new(Some(socket)),
                reader: tokio::sync::Mutex::new(None),
                writer: tokio::sync::Mutex::new(None),
            }),
        ),
    })
}

#[napi]
impl NativeSocketPipe {
    /// Starts the session on the pipe; call once the response has been written.
    #[napi]
    pub async fn start(&self) -> napi::Result<()> {
        let socket = self
            .pending
            .lock()
            .ok()
            .and_then(|mut p| p.take())
            .ok_or_else(|| error::invalid("the pipe was already started"))?;
        // Enough to keep a stream of records moving; the other server's socket and this
        // pipe each push back when full.
        let (ours, theirs) = tokio::io::duplex(256 * 1024);
        tokio::spawn(socket.run(theirs));
        let (r, w) = tokio::io::split(ours);
        *self.reader.lock().await = Some(r);
        *self.writer.lock().await = Some(w);
        Ok(())
    }

    /// Bytes the client sent; resolves once the session has taken them.
    #[napi]
    pub async fn write(&self, data: Buffer) -> napi::Result<()> {
        let mut w = self.writer.lock().await;
        let w = w
            .as_mut()
            .ok_or_else(|| error::invalid("the pipe is not started"))?;
        w.write_all(&data)
            .await
            .map_err(|e| error::invalid(format!("the session is gone: {e}")))
    }

    /// The client finished sending.
    #[napi]
    pub async fn end(&self) {
        if let Some(w) = self.writer.lock().await.as_mut() {
            let _ = w.shutdown().await;
        }
    }

    /// Bytes for the client; `null` once the session is done with the connection.
    #[napi]
    pub async fn read(&self) -> napi::Result<Option<Buffer>> {
        let mut r = self.reader.lock().await;
        let r = r
            .as_mut()
            .ok_or_else(|| error::invalid("the pipe is not started"))?;
        let mut buf = vec![0u8; 64 * 1024];
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => Ok(None),
            Ok(n) => {
                buf.truncate(n);
                Ok(Some(buf.into()))
            }
        }
    }
}
