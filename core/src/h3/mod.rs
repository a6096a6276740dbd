//! WebTransport over HTTP/3 (draft-ietf-webtrans-http3) on QUIC: the connection task and
//! the sans-IO codecs it reads the wire with.

pub mod body;
pub mod capsule;
pub(crate) mod conn;
pub mod connect;
pub(crate) mod connection;
pub(crate) mod error_code;
pub mod exchange;
pub mod frame;
pub mod qpack;
pub(crate) mod session_request;
pub mod settings;
