//! HTTP/3 error codes (RFC 9114 §8.1, RFC 9204 §6) this server sends.

pub(crate) const NO_ERROR: u32 = 0x100;
pub(crate) const INTERNAL_ERROR: u32 = 0x102;
pub(crate) const STREAM_CREATION_ERROR: u32 = 0x103;
pub(crate) const CLOSED_CRITICAL_STREAM: u32 = 0x104;
pub(crate) const FRAME_UNEXPECTED: u32 = 0x105;
pub(crate) const EXCESSIVE_LOAD: u32 = 0x107;
pub(crate) const ID_ERROR: u32 = 0x108;
pub(crate) const SETTINGS_ERROR: u32 = 0x109;
pub(crate) const MISSING_SETTINGS: u32 = 0x10a;
pub(crate) const REQUEST_REJECTED: u32 = 0x10b;
pub(crate) const REQUEST_CANCELLED: u32 = 0x10c;
pub(crate) const REQUEST_INCOMPLETE: u32 = 0x10d;
pub(crate) const MESSAGE_ERROR: u32 = 0x10e;
pub(crate) const QPACK_DECOMPRESSION_FAILED: u32 = 0x200;

/// An error code as quinn takes it.
pub(crate) fn code(v: u64) -> quinn::VarInt {
    quinn::VarInt::from_u64(v).unwrap_or(quinn::VarInt::MAX)
}
