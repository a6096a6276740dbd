//! The capsule protocol (RFC 9297) on a session's CONNECT stream: capsules travel inside
//! HTTP/3 DATA frames, and WebTransport uses them to close and drain sessions.

use bytes::{Buf, BufMut, BytesMut};
use web_transport_proto::{Frame, VarInt};

/// CLOSE_WEBTRANSPORT_SESSION.
pub const CLOSE_WEBTRANSPORT_SESSION: u64 = 0x2843;
/// DRAIN_WEBTRANSPORT_SESSION.
pub const DRAIN_WEBTRANSPORT_SESSION: u64 = 0x78ae;
/// The longest close reason the protocol allows, in bytes.
pub const MAX_REASON_LEN: usize = 1024;
/// Larger capsules are refused so a peer cannot make us buffer without bound.
const MAX_CAPSULE_LEN: u64 = 64 * 1024;

/// A capsule the session layer acts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Capsule {
    Close {
        code: u32,
        reason: String,
    },
    Drain,
    /// Any other type; ignored as the capsule protocol requires.
    Unknown,
}

/// Malformed capsule data on a CONNECT stream.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum CapsuleError {
    #[error("capsule of {0} bytes exceeds the limit")]
    TooLarge(u64),
    #[error("close capsule shorter than its 4-byte code")]
    ShortClose,
    #[error("close reason longer than 1024 bytes")]
    ReasonTooLong,
    #[error("close reason is not UTF-8")]
    ReasonNotUtf8,
    #[error("unexpected HTTP/3 frame {0:#x} on the CONNECT stream")]
    UnexpectedFrame(u64),
}

/// Truncates `reason` to at most [`MAX_REASON_LEN`] bytes on a character boundary, as the
/// W3C API does for `close({ reason })`.
pub(crate) fn truncate_reason(reason: &str) -> &str {
    if reason.len() <= MAX_REASON_LEN {
        return reason;
    }
    let mut end = MAX_REASON_LEN;
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    &reason[..end]
}

/// Encodes a capsule wrapped in one HTTP/3 DATA frame.
pub(crate) fn encode(capsule: &Capsule, out: &mut impl BufMut) {
    let mut body = Vec::new();
    match capsule {
        Capsule::Close { code, reason } => {
            let reason = truncate_reason(reason);
            put_varint(&mut body, CLOSE_WEBTRANSPORT_SESSION);
            put_varint(&mut body, 4 + reason.len() as u64);
            body.put_u32(*code);
            body.put_slice(reason.as_bytes());
        }
        Capsule::Drain => {
            put_varint(&mut body, DRAIN_WEBTRANSPORT_SESSION);
            put_varint(&mut body, 0);
        }
        Capsule::Unknown => return,
    }
    Frame::DATA.encode(out);
    put_varint(out, body.len() as u64);
    out.put_slice(&body);
}

fn put_varint(out: &mut impl BufMut, v: u64) {
    // Every value we write is far below 2^62.
    if let Ok(v) = VarInt::from_u64(v) {
        v.encode(out);
    }
}

/// Reassembles capsules from the bytes of a CONNECT stream after its HEADERS frame.
#[derive(Default)]
pub(crate) struct CapsuleReader {
    raw: BytesMut,
    capsules: BytesMut,
    data_left: u64,
    skip_left: u64,
}

impl CapsuleReader {
    /// Adds bytes read from the stream.
    pub(crate) fn push(&mut self, data: &[u8]) {
        self.raw.extend_from_slice(data);
    }

    /// The next complete capsule, or `Ok(None)` when more bytes are needed.
    pub(crate) fn next(&mut self) -> Result<Option<Capsule>, CapsuleError> {
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
            if self.capsules.len() as u64 > MAX_CAPSULE_LEN + 16 {
                return Err(CapsuleError::TooLarge(self.capsules.len() as u64));
            }
            return Ok(true);
        }
        if self.skip_left > 0 {
            let n = (self.skip_left as usize).min(self.raw.len());
            self.raw.advance(n);
            self.skip_left -= n as u64;
            return Ok(true);
        }
        let mut peek = &self.raw[..];
        let Ok(typ) = VarInt::decode(&mut peek) else {
            return Ok(false);
        };
        let Ok(len) = VarInt::decode(&mut peek) else {
            return Ok(false);
        };
        let consumed = self.raw.len() - peek.len();
        self.raw.advance(consumed);
        let typ = typ.into_inner();
        let len = len.into_inner();
        match typ {
            0x00 => self.data_left = len,
            // SETTINGS, GOAWAY, reserved HTTP/2 types and friends never belong here.
            0x02..=0x0d => return Err(CapsuleError::UnexpectedFrame(typ)),
            // Trailers, GREASE and unknown frame types carry nothing for us.
            _ => self.skip_left = len,
        }
        Ok(true)
    }

    fn next_capsule(&mut self) -> Result<Option<Capsule>, CapsuleError> {
        let mut peek = &self.capsules[..];
        let Ok(typ) = VarInt::decode(&mut peek) else {
            return Ok(None);
        };
        let Ok(len) = VarInt::decode(&mut peek) else {
            return Ok(None);
        };
        let len = len.into_inner();
        if len > MAX_CAPSULE_LEN {
            return Err(CapsuleError::TooLarge(len));
        }
        if (peek.len() as u64) < len {
            return Ok(None);
        }
        let header = self.capsules.len() - peek.len();
        self.capsules.advance(header);
        let mut body = self.capsules.split_to(len as usize);
        let capsule = match typ.into_inner() {
            CLOSE_WEBTRANSPORT_SESSION => {
                if body.len() < 4 {
                    return Err(CapsuleError::ShortClose);
                }
                let code = body.get_u32();
                if body.len() > MAX_REASON_LEN {
                    return Err(CapsuleError::ReasonTooLong);
                }
                let reason =
                    String::from_utf8(body.to_vec()).map_err(|_| CapsuleError::ReasonNotUtf8)?;
                Capsule::Close { code, reason }
            }
            DRAIN_WEBTRANSPORT_SESSION => Capsule::Drain,
            _ => Capsule::Unknown,
        };
        Ok(Some(capsule))
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
        put_varint(&mut caps, CLOSE_WEBTRANSPORT_SESSION);
        put_varint(&mut caps, 6);
        caps.put_u32(7);
        caps.put_slice(b"ok");
        let mut wire = Vec::new();
        for (i, part) in caps.chunks(3).enumerate() {
            if i == 1 {
                put_varint(&mut wire, 0x21 + 0x1f); // GREASE frame
                put_varint(&mut wire, 2);
                wire.put_slice(b"zz");
            }
            put_varint(&mut wire, 0);
            put_varint(&mut wire, part.len() as u64);
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
        put_varint(&mut caps, CLOSE_WEBTRANSPORT_SESSION);
        put_varint(&mut caps, 4 + 2000);
        caps.put_u32(1);
        caps.put_slice(&[b'a'; 2000]);
        let mut wire = Vec::new();
        put_varint(&mut wire, 0);
        put_varint(&mut wire, caps.len() as u64);
        wire.put_slice(&caps);
        let mut r = CapsuleReader::default();
        r.push(&wire);
        assert_eq!(r.next(), Err(CapsuleError::ReasonTooLong));

        let mut r = CapsuleReader::default();
        let mut wire = Vec::new();
        put_varint(&mut wire, 0);
        put_varint(&mut wire, 8);
        put_varint(&mut wire, 0x1234);
        put_varint(&mut wire, 1 << 20);
        r.push(&wire);
        assert_eq!(r.next(), Err(CapsuleError::TooLarge(1 << 20)));

        let mut r = CapsuleReader::default();
        let mut wire = Vec::new();
        put_varint(&mut wire, 0x04); // SETTINGS on a request stream
        put_varint(&mut wire, 0);
        r.push(&wire);
        assert_eq!(r.next(), Err(CapsuleError::UnexpectedFrame(4)));
    }

    #[test]
    fn long_reasons_are_truncated_on_a_char_boundary() {
        let s = "é".repeat(600); // 1200 bytes
        let t = truncate_reason(&s);
        assert!(t.len() <= MAX_REASON_LEN && t.len() >= MAX_REASON_LEN - 1);
        assert!(s.starts_with(t));
    }
}
