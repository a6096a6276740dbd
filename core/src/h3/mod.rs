//! WebTransport over HTTP/3 (draft-ietf-webtrans-http3) on QUIC: the connection task and
//! the sans-IO codecs it reads the wire with.

pub mod body;
pub mod capsule;
pub(crate) mod connection;
pub mod exchange;
pub mod frame;
pub(crate) mod pending;
pub mod qpack;
pub mod request;
pub mod settings;
