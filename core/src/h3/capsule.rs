//! The capsule protocol (RFC 9297) on a session's CONNECT stream: capsules travel inside
//! HTTP/3 DATA frames, and WebTransport uses them to close and drain sessions.

use bytes::{Buf, BufMut, BytesMut};
use web_transport_proto::Frame;

use super::frame;
use crate::close::truncate_reason;

/// CLOSE_WEBTRANSPORT_SESSION.
pub const CLOSE_WEBTRANSPORT_SESSION: u64 = 0x2843;
/// DRAIN_WEBTRANSPORT_SESSION.
pub const DRAIN_WEBTRANSPORT_SESSION: u64 = 0x78ae;
pub use crate::close::MAX_REASON_LEN;

/// A capsule the session layer acts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Capsule {
    /// CLOSE_WEBTRANSPORT_SESSION: the application code and UTF-8 reason.
    Close {
        /// The application close code.
        code: u32,
        /// The reason, at most 1024 bytes.
        reason: String,
    },
    /// DRAIN_WEBTRANSPORT_SESSION.
    Drain,
    /// Any other type; ignored as the capsule protocol requires.
    Unknown,
}

/// Malformed capsule data on a CONNECT stream.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CapsuleError {
    /// A CLOSE capsule without room for its code.
    #[error("close capsule shorter than its 4-byte code")]
    ShortClose,
    /// A CLOSE capsule whose reason exceeds 1024 bytes.
    #[error("close reason longer than 1024 bytes")]
    ReasonTooLong,
    /// A CLOSE capsule whose reason is not UTF-8.
    #[error("close reason is not UTF-8")]
    ReasonNotUtf8,
    /// A frame that may not appear on a request stream.
    #[error("unexpected HTTP/3 frame {0:#x} on the CONNECT stream")]
    UnexpectedFrame(u64),
}

/// Encodes a capsule wrapped in one HTTP/3 DATA frame.
pub fn encode(capsule: &Capsule, out: &mut impl BufMut) {
    let mut body = Vec::new();
    match capsule {
        Capsule::Close { code, reason } => {
            let reason = truncate_reason(reason);
            crate::varint::put(&mut body, CLOSE_WEBTRANSPORT_SESSION);
            crate::varint::put(&mut body, 4 + reason.len() as u64);
            body.put_u32(*code);
            body.put_slice(reason.as_bytes());
        }
        Capsule::Drain => {
            crate::varint::put(&mut body, DRAIN_WEBTRANSPORT_SESSION);
            crate::varint::put(&mut body, 0);
        }
        Capsule::Unknown => return,
    }
    Frame::DATA.encode(out);
    crate::varint::put(out, body.len() as u64);
    out.put_slice(&body);
}

/// Reassembles capsules from the bytes of a CONNECT stream after its HEADERS frame, sans-IO.
///
/// Two layers stream through it: HTTP/3 frames (DATA payloads carry the capsules; unknown
/// frames are skipped) and capsules (CLOSE and DRAIN are decoded; every other type is
/// skipped as it arrives). Only a capsule the session acts on is ever buffered whole, so
/// memory stays bounded by one close reason plus what a single `push` delivers, and the
/// result is the same however the input is chunked.
#[derive(Debug, Default)]
pub struct CapsuleReader {
    raw: BytesMut,
    capsules: BytesMut,
    data_left: u64,
    skip_frame_left: u64,
    skip_capsule_left: u64,
}

impl CapsuleReader {
    /// Adds bytes read from the stream.
    pub fn push(&mut self, data: &[u8]) {
        self.raw.extend_from_slice(data);
    }

    /// Bytes held between calls (bounded whatever the peer sends).
    pub fn buffered(&self) -> usize {
        self.raw.len() + self.capsules.len()
    }

    /// The next complete capsule, or `Ok(None)` when more bytes are needed. After an error
    /// the reader must not be used again.
    #[allow(clippy::should_implement_trait)] // fallible, and None means "more bytes", not "done"
    pub fn next(&mut self) -> Result<Option<Capsule>, CapsuleError> {
        loop {
            if let Some(c) = self.next_capsule()? {
                return Ok(Some(c));
            }
            if !self.advance_frames()? {
                return Ok(None);
            }
        }
    }

    /// Moves DATA payload from `raw` into `capsules`; false when nothing could move.
    fn advance_frames(&mut self) -> Result<bool, CapsuleError> {
        if self.raw.is_empty() {
            return Ok(false);
        }
        if self.data_left > 0 {
            let n = (self.data_left as usize).min(self.raw.len());
            let chunk = self.raw.split_to(n);
            self.capsules.extend_from_slice(&chunk);
            self.data_left -= n as u64;
            return Ok(true);
        }
        if self.skip_frame_left > 0 {
            let n = (self.skip_frame_left as usize).min(self.raw.len());
            self.raw.advance(n);
            self.skip_frame_left -= n as u64;
            return Ok(true);
        }
        let Some((typ, a)) = crate::varint::decode(&self.raw) else {
            return Ok(false);
        };
        let Some((len, b)) = crate::varint::decode(&self.raw[a..]) else {
            return Ok(false);
        };
        self.raw.advance(a + b);
        match typ {
            frame::DATA => self.data_left = len,
            // Control-stream frames and HTTP/2's reserved types never belong here.
            frame::CANCEL_PUSH
            | frame::SETTINGS
            | frame::PUSH_PROMISE
            | frame::GOAWAY
            | frame::MAX_PUSH_ID => return Err(CapsuleError::UnexpectedFrame(typ)),
            t if frame::is_http2_reserved(t) => return Err(CapsuleError::UnexpectedFrame(typ)),
            // Trailers, GREASE and unknown frame types carry nothing for us.
            _ => self.skip_frame_left = len,
        }
        Ok(true)
    }

    fn next_capsule(&mut self) -> Result<Option<Capsule>, CapsuleError> {
        loop {
            if self.skip_capsule_left > 0 {
                let n = (self.skip_capsule_left as usize).min(self.capsules.len());
                self.capsules.advance(n);
                self.skip_capsule_left -= n as u64;
                if self.skip_capsule_left > 0 {
                    return Ok(None);
                }
            }
            let Some((typ, a)) = crate::varint::decode(&self.capsules) else {
                return Ok(None);
            };
            let Some((len, b)) = crate::varint::decode(&self.capsules[a..]) else {
                return Ok(None);
            };
            match typ {
                CLOSE_WEBTRANSPORT_SESSION => {
                    if len < 4 {
                        return Err(CapsuleError::ShortClose);
                    }
                    if len > 4 + MAX_REASON_LEN as u64 {
                        return Err(CapsuleError::ReasonTooLong);
                    }
                    if ((self.capsules.len() - a - b) as u64) < len {
                        return Ok(None);
                    }
                    self.capsules.advance(a + b);
                    let mut body = self.capsules.split_to(len as usize);
                    let code = body.get_u32();
                    let reason = String::from_utf8(body.to_vec())
                        .map_err(|_| CapsuleError::ReasonNotUtf8)?;
                    return Ok(Some(Capsule::Close { code, reason }));
                }
                DRAIN_WEBTRANSPORT_SESSION => {
                    self.capsules.advance(a + b);
                    self.skip_capsule_left = len;
                    return Ok(Some(Capsule::Drain));
                }
                _ => {
                    self.capsules.advance(a + b);
                    self.skip_capsule_left = len;
                    if len == 0 {
                        return Ok(Some(Capsule::Unknown));
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_round_trips_byte_by_byte() {
        let mut wire = Vec::new();
        encode(&Capsule::Drain, &mut wire);
        encode(
            &Capsule::Close {
                code: 0xdead_beef,
                reason: "bye ✓".into(),
            },
            &mut wire,
        );
        let mut r = CapsuleReader::default();
        let mut got = Vec::new();
        for b in wire {
            r.push(&[b]);
            while let Some(c) = r.next().unwrap() {
                got.push(c);
            }
        }
        assert_eq!(
            got,
            vec![
                Capsule::Drain,
                Capsule::Close {
                    code: 0xdead_beef,
                    reason: "bye ✓".into()
                }
            ]
        );
    }

    #[test]
    fn capsule_split_across_data_frames_and_grease_frames() {
        let mut caps = Vec::new();
        crate::varint::put(&mut caps, CLOSE_WEBTRANSPORT_SESSION);
        crate::varint::put(&mut caps, 6);
        caps.put_u32(7);
        caps.put_slice(b"ok");
        let mut wire = Vec::new();
        for (i, part) in caps.chunks(3).enumerate() {
            if i == 1 {
                crate::varint::put(&mut wire, 0x21 + 0x1f); // GREASE frame
                crate::varint::put(&mut wire, 2);
                wire.put_slice(b"zz");
            }
            crate::varint::put(&mut wire, 0);
            crate::varint::put(&mut wire, part.len() as u64);
            wire.put_slice(part);
        }
        let mut r = CapsuleReader::default();
        r.push(&wire);
        assert_eq!(
            r.next().unwrap(),
            Some(Capsule::Close {
                code: 7,
                reason: "ok".into()
            })
        );
        assert_eq!(r.next().unwrap(), None);
    }

    #[test]
    fn oversized_and_malformed_capsules_are_errors() {
        let mut caps = Vec::new();
        crate::varint::put(&mut caps, CLOSE_WEBTRANSPORT_SESSION);
        crate::varint::put(&mut caps, 4 + 2000);
        caps.put_u32(1);
        caps.put_slice(&[b'a'; 2000]);
        let mut wire = Vec::new();
        crate::varint::put(&mut wire, 0);
        crate::varint::put(&mut wire, caps.len() as u64);
        wire.put_slice(&caps);
        let mut r = CapsuleReader::default();
        r.push(&wire);
        assert_eq!(r.next(), Err(CapsuleError::ReasonTooLong));

        let mut r = CapsuleReader::default();
        let mut wire = Vec::new();
        crate::varint::put(&mut wire, 0x04); // SETTINGS on a request stream
        crate::varint::put(&mut wire, 0);
        r.push(&wire);
        assert_eq!(r.next(), Err(CapsuleError::UnexpectedFrame(4)));
    }

    #[test]
    fn large_unknown_capsules_stream_past_without_being_buffered() {
        // A 100 KiB capsule of a type we do not act on, spread over two DATA frames, then a
        // CLOSE: the close is found whatever the chunking, and memory stays small.
        let mut caps = Vec::new();
        crate::varint::put(&mut caps, 0x1234);
        crate::varint::put(&mut caps, 100 * 1024);
        caps.extend(std::iter::repeat_n(0xab, 100 * 1024));
        crate::varint::put(&mut caps, CLOSE_WEBTRANSPORT_SESSION);
        crate::varint::put(&mut caps, 5);
        caps.put_u32(9);
        caps.put_slice(b"x");
        let mut wire = Vec::new();
        for part in caps.chunks(70_000) {
            crate::varint::put(&mut wire, 0);
            crate::varint::put(&mut wire, part.len() as u64);
            wire.put_slice(part);
        }
        for chunk in [1usize, 1000, 16 * 1024, 1 << 20] {
            let mut r = CapsuleReader::default();
            let mut got = Vec::new();
            for part in wire.chunks(chunk) {
                r.push(part);
                while let Some(c) = r.next().unwrap() {
                    got.push(c);
                }
                assert!(r.buffered() <= chunk + 1100, "buffered {}", r.buffered());
            }
            assert_eq!(
                got,
                vec![Capsule::Close {
                    code: 9,
                    reason: "x".into()
                }]
            );
        }
    }

    #[test]
    fn long_reasons_are_truncated_on_a_char_boundary() {
        let s = "é".repeat(600); // 1200 bytes
        let t = truncate_reason(&s);
        assert!(t.len() <= MAX_REASON_LEN && t.len() >= MAX_REASON_LEN - 1);
        assert!(s.starts_with(t));
    }
}
