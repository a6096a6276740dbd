//! # Ferrovia
//!
//! An HTTP/3 WebTransport server on tokio, quinn and rustls, speaking every dialect that
//! shipping browsers use (Chrome, Firefox, Safari).
//!
//! ```no_run
//! use ferrovia::{Certificate, Server, ServerConfig};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let cert = Certificate::self_signed(&["localhost"])?;
//! println!("serverCertificateHashes: {}", cert.sha256_hex());
//! let server = Server::bind(ServerConfig::new("127.0.0.1:4433".parse()?, cert))?;
//! while let Some(request) = server.accept().await {
//!     let session = request.accept().await?;
//!     tokio::spawn(async move {
//!         while let Ok((mut send, mut recv)) = session.accept_bi().await {
//!             let data = recv.read_to_end(1 << 20).await?;
//!             send.write_all(&data).await?;
//!             send.finish()?;
//!         }
//!         Ok::<_, ferrovia::StreamError>(())
//!     });
//! }
//! # Ok(()) }
//! ```
//!
//! The crate never builds a tokio runtime of its own: [`Server::bind`] runs on the runtime
//! it is called from.

#![warn(missing_docs)]

mod certificate;
mod close;
mod config;
mod error;
pub mod fleet;
mod h3;
pub mod log;
pub mod message;
mod origin;
mod qmux;
mod request;
mod server;
mod service;
mod session;
mod sfv;
mod shared;
mod stats;
mod stream;
mod tcp;
mod transport;
mod varint;
mod ws;

/// The sans-IO codecs that read what a peer sends, exposed for fuzzing and wire-level
/// tests. Not part of the stable API: names and signatures may change in any release.
#[doc(hidden)]
pub mod wire {
    pub use crate::h3::{body, capsule, connect, exchange, frame, qpack, settings};
    /// QUIC variable-length integers.
    pub mod varint {
        pub use crate::varint::{decode, put, size, VarInt};
    }
    /// QMux records, frames and the connection state machine.
    pub mod qmux {
        pub use crate::qmux::proto::*;
    }
    /// The WebSocket opening handshake.
    pub mod websocket {
        pub use crate::ws::handshake::*;
    }
    /// permessage-deflate: negotiation, the codec, and the scanner under the frame codec.
    pub mod websocket_deflate {
        pub use crate::ws::deflate::{
            negotiate, Codec, DeflateParams, InflateError, StartScanner, WebSocketCompression,
        };
    }
    /// Origin and authority checks.
    pub mod origin {
        pub use crate::origin::*;
    }
    /// Structured field values (RFC 8941).
    pub mod sfv {
        pub use crate::sfv::*;
    }
}

pub use certificate::Certificate;
pub use close::{CloseInfo, CloseInitiator};
pub use config::{
    CongestionController, InvalidIpRange, IpRange, Limits, SelfSignedRenewal, ServerConfig,
    TcpListen,
};
pub use error::{CertificateError, RequestError, ServerError, SessionError, StreamError};
pub use origin::{AsyncOriginCheck, OriginCheck, OriginPolicy};
pub use request::SessionRequest;
pub use server::{Route, Server};
pub use service::{
    Body, BodyError, BodySender, HttpExchange, HttpHandler, HttpInbox, HttpRequests, HttpResponder,
    HttpService, ResponseFuture,
};
pub use session::{Interest, Readiness};
pub use session::{Session, SessionStats};
pub use stats::ServerStats;
pub use stream::{
    error_from_http3, error_to_http3, MessageReader, RecvStream, SendStream,
    WT_BUFFERED_STREAM_REJECTED, WT_SESSION_GONE,
};
pub use tcp::{Handshake, HandshakeOutcome, HostMessage, UpgradedWebSocket};
pub use transport::Transport;
pub use ws::deflate::WebSocketCompression;
pub use ws::{Message as WebSocketMessage, WebSocket, WebSocketClose, WebSocketError};
