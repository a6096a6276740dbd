//! QUIC variable-length integers (RFC 9000 §16), the one codec every layer uses (HTTP/3
//! frames and capsules, QMux, messages on a stream), and a minimal slice reader.

use std::fmt;

use bytes::BufMut;
use thiserror::Error;

/// An integer below 2^62, the range a QUIC varint can carry. Used for
/// application error codes so an out-of-range code cannot reach the wire.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct VarInt(u64);

/// Returned when a value does not fit in a QUIC varint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[error("value exceeds 2^62-1")]
pub struct VarIntBoundsExceeded;

impl VarInt {
    /// Largest encodable value, 2^62-1.
    pub const MAX: VarInt = VarInt((1 << 62) - 1);

    /// Any `u32` fits.
    pub const fn from_u32(v: u32) -> Self {
        VarInt(v as u64)
    }

    /// Checked conversion from `u64`.
    pub fn from_u64(v: u64) -> Result<Self, VarIntBoundsExceeded> {
        if v <= Self::MAX.0 {
            Ok(VarInt(v))
        } else {
            Err(VarIntBoundsExceeded)
        }
    }

    /// The value as `u64`.
    pub const fn into_inner(self) -> u64 {
        self.0
    }
}

impl From<u32> for VarInt {
    fn from(v: u32) -> Self {
        VarInt::from_u32(v)
    }
}

impl TryFrom<u64> for VarInt {
    type Error = VarIntBoundsExceeded;
    fn try_from(v: u64) -> Result<Self, Self::Error> {
        VarInt::from_u64(v)
    }
}

impl From<VarInt> for u64 {
    fn from(v: VarInt) -> u64 {
        v.0
    }
}

impl fmt::Display for VarInt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Encoded size of `v` in bytes.
pub const fn size(v: u64) -> usize {
    if v < 1 << 6 {
        1
    } else if v < 1 << 14 {
        2
    } else if v < 1 << 30 {
        4
    } else {
        8
    }
}

/// Appends `v` in the shortest encoding. Callers only pass values that were
/// decoded from the wire or checked against `VarInt::MAX`, so overflow is a bug.
///
/// # Panics
///
/// When `v` is 2^62 or more, which no varint can hold.
pub fn put(buf: &mut impl BufMut, v: u64) {
    assert!(v <= VarInt::MAX.0, "varint out of range: {v}");
    match size(v) {
        1 => buf.put_u8(v as u8),
        2 => buf.put_u16(0x4000 | v as u16),
        4 => buf.put_u32(0x8000_0000 | v as u32),
        _ => buf.put_u64(0xc000_0000_0000_0000 | v),
    }
}

/// Decodes a varint from the front of `buf`: its value and the bytes it took, or `None`
/// when `buf` is too short.
pub fn decode(buf: &[u8]) -> Option<(u64, usize)> {
    let first = *buf.first()?;
    let len = 1usize << (first >> 6);
    let bytes = buf.get(..len)?;
    let mut v = u64::from(first & 0x3f);
    for b in &bytes[1..] {
        v = (v << 8) | u64::from(*b);
    }
    Some((v, len))
}

/// The input ended before the value did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct UnexpectedEnd;

/// Forward-only reader over a borrowed slice.
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Reader { buf }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    pub(crate) fn remaining(&self) -> usize {
        self.buf.len()
    }

    pub(crate) fn varint(&mut self) -> Result<u64, UnexpectedEnd> {
        let (v, len) = decode(self.buf).ok_or(UnexpectedEnd)?;
        self.take(len)?;
        Ok(v)
    }

    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8], UnexpectedEnd> {
        if self.buf.len() < n {
            return Err(UnexpectedEnd);
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }

    pub(crate) fn peek(&self) -> Option<u8> {
        self.buf.first().copied()
    }

    /// Skips `n` bytes (at most what is left).
    pub(crate) fn skip(&mut self, n: usize) {
        self.buf = &self.buf[n.min(self.buf.len())..];
    }

    /// Everything that is left; used by frames that run to the record end.
    pub(crate) fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_boundaries() {
        for v in [
            0,
            63,
            64,
            16383,
            16384,
            (1 << 30) - 1,
            1 << 30,
            VarInt::MAX.0,
        ] {
            let mut buf = Vec::new();
            put(&mut buf, v);
            assert_eq!(buf.len(), size(v));
            let mut r = Reader::new(&buf);
            assert_eq!(r.varint(), Ok(v));
            assert!(r.is_empty());
        }
    }

    #[test]
    fn rfc9000_examples() {
        // RFC 9000 §A.1 sample encodings.
        let cases: [(&[u8], u64); 4] = [
            (
                &[0xc2, 0x19, 0x7c, 0x5e, 0xff, 0x14, 0xe8, 0x8c],
                151_288_809_941_952_652,
            ),
            (&[0x9d, 0x7f, 0x3e, 0x7d], 494_878_333),
            (&[0x7b, 0xbd], 15_293),
            (&[0x40, 0x25], 37), // non-minimal encodings decode too
        ];
        for (bytes, v) in cases {
            assert_eq!(Reader::new(bytes).varint(), Ok(v));
        }
    }

    #[test]
    fn truncated() {
        assert_eq!(Reader::new(&[]).varint(), Err(UnexpectedEnd));
        assert_eq!(Reader::new(&[0x80, 1, 2]).varint(), Err(UnexpectedEnd));
    }

    #[test]
    fn bounds() {
        assert!(VarInt::from_u64(1 << 62).is_err());
        assert_eq!(VarInt::from_u64(7).unwrap().into_inner(), 7);
    }
}
