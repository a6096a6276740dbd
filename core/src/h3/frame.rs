//! HTTP/3 frames (RFC 9114 §7) read from a stream's bytes, sans-IO: push what arrived,
//! take whole frames out. Frames the caller does not need are skipped as they stream past,
//! so a large unknown frame costs no memory.

use crate::varint;
use bytes::{Buf, Bytes, BytesMut};

/// DATA.
pub const DATA: u64 = 0x00;
/// HEADERS.
pub const HEADERS: u64 = 0x01;
/// CANCEL_PUSH.
pub const CANCEL_PUSH: u64 = 0x03;
/// SETTINGS.
pub const SETTINGS: u64 = 0x04;
/// PUSH_PROMISE.
pub const PUSH_PROMISE: u64 = 0x05;
/// GOAWAY.
pub const GOAWAY: u64 = 0x07;
/// MAX_PUSH_ID.
pub const MAX_PUSH_ID: u64 = 0x0d;

/// Whether `typ` is a frame type reserved from HTTP/2 that must never appear (RFC 9114 §7.2.8).
pub fn is_http2_reserved(typ: u64) -> bool {
    matches!(typ, 0x02 | 0x06 | 0x08 | 0x09)
}

/// Appends a frame's type and payload length; the payload follows.
pub fn put_header(out: &mut impl bytes::BufMut, typ: u64, len: usize) {
    varint::put(out, typ);
    varint::put(out, len as u64);
}

/// Appends a whole frame.
pub fn put_frame(out: &mut impl bytes::BufMut, typ: u64, payload: &[u8]) {
    put_header(out, typ, payload.len());
    out.put_slice(payload);
}

/// A frame taken from a [`FrameDecoder`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// The frame type.
    pub typ: u64,
    /// The payload; empty for a frame that was skipped.
    pub payload: Bytes,
    /// Whether the payload was skipped instead of buffered.
    pub skipped: bool,
}

/// A frame the caller asked to keep is larger than allowed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("frame {typ:#x} of {len} bytes exceeds the limit of {max}")]
pub struct FrameTooLarge {
    /// The frame type.
    pub typ: u64,
    /// Its declared length.
    pub len: u64,
    /// The limit.
    pub max: u64,
}

/// Reassembles frames from stream bytes however they are chunked.
#[derive(Debug, Default)]
pub struct FrameDecoder {
    buf: BytesMut,
    /// Type and bytes still to drop of a frame being skipped.
    skipping: Option<(u64, u64)>,
}

impl FrameDecoder {
    /// Adds bytes read from the stream.
    pub fn push(&mut self, data: &[u8]) {
        if let Some((typ, left)) = self.skipping {
            let n = (left as usize).min(data.len());
            self.skipping = Some((typ, left - n as u64));
            self.buf.extend_from_slice(&data[n..]);
        } else {
            self.buf.extend_from_slice(data);
        }
    }

    /// Takes the bytes buffered after the last frame returned (none while skipping).
    pub fn take_buffered(&mut self) -> Bytes {
        if self.skipping.is_some() {
            return Bytes::new();
        }
        self.buf.split().freeze()
    }

    /// Bytes buffered and not yet returned.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// The next frame. `keep(typ)` returns the largest payload to buffer for that type, or
    /// `None` to skip it (it is then returned, empty, once fully skipped). A kept frame over
    /// its limit is an error. `Ok(None)` means more bytes are needed.
    pub fn next(
        &mut self,
        keep: impl Fn(u64) -> Option<u64>,
    ) -> Result<Option<Frame>, FrameTooLarge> {
        if let Some((typ, left)) = self.skipping {
            if left > 0 {
                return Ok(None);
            }
            self.skipping = None;
            return Ok(Some(Frame {
                typ,
                payload: Bytes::new(),
                skipped: true,
            }));
        }
        let Some((typ, a)) = varint::decode(&self.buf) else {
            return Ok(None);
        };
        let Some((len, b)) = varint::decode(&self.buf[a..]) else {
            return Ok(None);
        };
        match keep(typ) {
            Some(max) => {
                if len > max {
                    return Err(FrameTooLarge { typ, len, max });
                }
                if ((self.buf.len() - a - b) as u64) < len {
                    return Ok(None);
                }
                self.buf.advance(a + b);
                let payload = self.buf.split_to(len as usize).freeze();
                Ok(Some(Frame {
                    typ,
                    payload,
                    skipped: false,
                }))
            }
            None => {
                self.buf.advance(a + b);
                let n = (len as usize).min(self.buf.len());
                self.buf.advance(n);
                self.skipping = Some((typ, len - n as u64));
                self.next(keep)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(typ: u64, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        put_frame(&mut out, typ, payload);
        out
    }

    #[test]
    fn frames_come_out_whole_however_chunked_and_unknown_ones_are_skipped() {
        let mut wire = frame(0x21, &[7u8; 5000]);
        wire.extend(frame(HEADERS, b"abc"));
        for chunk in [1usize, 2, 7, 4096, 1 << 20] {
            let mut d = FrameDecoder::default();
            let mut got = Vec::new();
            for part in wire.chunks(chunk) {
                d.push(part);
                while let Some(f) = d.next(|t| (t == HEADERS).then_some(100)).unwrap() {
                    got.push(f);
                }
                assert!(d.buffered() < 100, "skipped frames are not buffered");
            }
            assert_eq!(got.len(), 2);
            assert!(got[0].skipped && got[0].typ == 0x21);
            assert_eq!(&got[1].payload[..], b"abc");
        }
    }

    #[test]
    fn kept_frames_over_the_limit_are_errors() {
        let mut d = FrameDecoder::default();
        d.push(&frame(SETTINGS, &[0; 10]));
        assert_eq!(
            d.next(|_| Some(4)),
            Err(FrameTooLarge {
                typ: SETTINGS,
                len: 10,
                max: 4
            })
        );
    }
}
