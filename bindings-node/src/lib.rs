//! Node.js binding of Ferrovia (napi-rs).
//!
//! This crate only translates: JavaScript values to core types, core results to Promises,
//! core errors to JavaScript errors whose message carries a JSON record (`ferrovia:{...}`)
//! that the JavaScript facade (`bindings-node/lib`) turns into `WebTransportError`s with a
//! stable `code`. The W3C shapes (ReadableStream, WritableStream, async iterables) are
//! built in the facade on top of the plain promise-returning classes exported here.

#![deny(clippy::all)]

mod error;
mod exchange;
mod fleet;
mod log;
mod message;
mod request;
mod server;
mod session;
mod stream;
mod upgrade;
mod websocket;

pub use exchange::{NativeHttpExchange, NativeHttpInbox};
pub use fleet::{open_reuse_port_group, NativeConnectionIds, NativeReusePortGroup, NativeWorker};
pub use log::{forward_logs, NativeLogRecord};
pub use message::{encode_message_frame, NativeMessageDecoder};
pub use request::{NativeHeader, NativeRequest};
pub use server::{
    listen, self_signed_certificate, NativeCertificate, NativeListenOptions, NativeRoute,
    NativeServer, NativeServerStats,
};
pub use session::{
    readiness_bits, NativeCloseInfo, NativeReadinessBits, NativeSession, NativeStats,
};
pub use stream::{
    NativeBidiStream, NativeRecvStats, NativeRecvStream, NativeSendStats, NativeSendStream,
};
pub use upgrade::{NativeHandshake, NativeHandshakeOutcome, NativeSocketPipe};
pub use websocket::{NativeMessage, NativeWebSocket, NativeWebSocketClose};

use napi_derive::napi;

/// Panics on purpose, so tests can check that a panic inside the native module becomes a
/// JavaScript exception instead of aborting the process.
#[napi(catch_unwind, js_name = "__panicSync")]
pub fn panic_sync() {
    panic!("deliberate panic (sync) for testing");
}

/// Like [`panic_sync`], inside a future: the returned Promise must reject.
#[napi(js_name = "__panicAsync")]
pub async fn panic_async() -> napi::Result<()> {
    tokio::task::yield_now().await;
    panic!("deliberate panic (async) for testing");
}
