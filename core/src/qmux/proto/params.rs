//! QMux transport parameters (draft-ietf-quic-qmux-02 §5), carried in the
//! QX_TRANSPORT_PARAMETERS frame with the RFC 9000 §18 TLV encoding.

use thiserror::Error;

use crate::varint::{self, Reader};

/// Default and minimum `max_record_size` (draft §5.2): a 2-byte Size plus 16382
/// bytes of frames fills one 16 KiB TLS record.
pub const DEFAULT_MAX_RECORD_SIZE: u64 = 16382;

/// Codepoint of the `max_record_size` transport parameter.
pub const MAX_RECORD_SIZE_ID: u64 = 0x0571_c594_29cd_0845;

const MAX_IDLE_TIMEOUT: u64 = 0x01;
const INITIAL_MAX_DATA: u64 = 0x04;
const INITIAL_MAX_STREAM_DATA_BIDI_LOCAL: u64 = 0x05;
const INITIAL_MAX_STREAM_DATA_BIDI_REMOTE: u64 = 0x06;
const INITIAL_MAX_STREAM_DATA_UNI: u64 = 0x07;
const INITIAL_MAX_STREAMS_BIDI: u64 = 0x08;
const INITIAL_MAX_STREAMS_UNI: u64 = 0x09;
const MAX_DATAGRAM_FRAME_SIZE: u64 = 0x20;
/// The IANA-registered codepoint from draft-ietf-quic-reliable-stream-reset-09
/// on (drafts -07/-08 used 0x17f7586d2cb571); moq `qmux` uses 0x1d as well.
const RESET_STREAM_AT: u64 = 0x1d;

/// Stream counts above 2^60 would overflow stream IDs (RFC 9000 §4.6).
pub(crate) const MAX_STREAM_COUNT: u64 = 1 << 60;

/// The parameters one endpoint declares. Absent flow-control parameters mean 0
/// (RFC 9000 §18.2), so a peer that omits them allows no streams and no data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransportParameters {
    /// Idle timeout in milliseconds; 0 means none.
    pub max_idle_timeout: u64,
    /// Connection-level receive window.
    pub initial_max_data: u64,
    /// Per-stream receive window for bidi streams the sender of these parameters opens.
    pub initial_max_stream_data_bidi_local: u64,
    /// Per-stream receive window for bidi streams the receiver of these parameters opens.
    pub initial_max_stream_data_bidi_remote: u64,
    /// Per-stream receive window for uni streams.
    pub initial_max_stream_data_uni: u64,
    /// How many bidi streams the receiver of these parameters may open.
    pub initial_max_streams_bidi: u64,
    /// How many uni streams the receiver of these parameters may open.
    pub initial_max_streams_uni: u64,
    /// Largest DATAGRAM frame accepted (RFC 9221); 0 means no datagrams.
    pub max_datagram_frame_size: u64,
    /// Largest record Frames field accepted (draft §5.2).
    pub max_record_size: u64,
    /// Whether RESET_STREAM_AT frames are accepted.
    pub reset_stream_at: bool,
}

impl Default for TransportParameters {
    fn default() -> Self {
        TransportParameters {
            max_idle_timeout: 0,
            initial_max_data: 0,
            initial_max_stream_data_bidi_local: 0,
            initial_max_stream_data_bidi_remote: 0,
            initial_max_stream_data_uni: 0,
            initial_max_streams_bidi: 0,
            initial_max_streams_uni: 0,
            max_datagram_frame_size: 0,
            max_record_size: DEFAULT_MAX_RECORD_SIZE,
            reset_stream_at: false,
        }
    }
}

/// Why a transport parameter block was rejected; all map to TRANSPORT_PARAMETER_ERROR.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ParamsError {
    /// A parameter's ID, length or value ran past the end of the block.
    #[error("transport parameters truncated")]
    Truncated,
    /// A QUIC v1 parameter that QMux prohibits (draft §5.1).
    #[error("prohibited transport parameter {0:#x}")]
    Prohibited(u64),
    /// The same parameter appeared twice (RFC 9000 §7.4).
    #[error("duplicate transport parameter {0:#x}")]
    Duplicate(u64),
    /// A known parameter carried a malformed or out-of-range value.
    #[error("invalid value for transport parameter {0:#x}")]
    InvalidValue(u64),
}

impl TransportParameters {
    /// Appends the TLV encoding. Parameters equal to their default are omitted,
    /// which keeps the first record small and is what the receiver assumes anyway.
    pub fn encode(&self, buf: &mut Vec<u8>) {
        let ints = [
            (MAX_IDLE_TIMEOUT, self.max_idle_timeout),
            (INITIAL_MAX_DATA, self.initial_max_data),
            (
                INITIAL_MAX_STREAM_DATA_BIDI_LOCAL,
                self.initial_max_stream_data_bidi_local,
            ),
            (
                INITIAL_MAX_STREAM_DATA_BIDI_REMOTE,
                self.initial_max_stream_data_bidi_remote,
            ),
            (
                INITIAL_MAX_STREAM_DATA_UNI,
                self.initial_max_stream_data_uni,
            ),
            (INITIAL_MAX_STREAMS_BIDI, self.initial_max_streams_bidi),
            (INITIAL_MAX_STREAMS_UNI, self.initial_max_streams_uni),
            (MAX_DATAGRAM_FRAME_SIZE, self.max_datagram_frame_size),
        ];
        for (id, v) in ints {
            if v != 0 {
                put_int(buf, id, v);
            }
        }
        if self.max_record_size != DEFAULT_MAX_RECORD_SIZE {
            put_int(buf, MAX_RECORD_SIZE_ID, self.max_record_size);
        }
        if self.reset_stream_at {
            varint::put(buf, RESET_STREAM_AT);
            varint::put(buf, 0);
        }
    }

    /// Encoded length of [`encode`](Self::encode)'s output.
    pub fn encoded_len(&self) -> usize {
        let mut buf = Vec::new();
        self.encode(&mut buf);
        buf.len()
    }

    /// Parses a parameter block, enforcing the QMux allow-list. Unknown IDs
    /// (extensions and the reserved greasing range) are skipped, as §5.1 requires.
    pub fn decode(block: &[u8]) -> Result<Self, ParamsError> {
        let mut params = TransportParameters::default();
        let mut r = Reader::new(block);
        // Only the ten known IDs are tracked for duplicates; a Vec beats a set at this size.
        let mut seen = Vec::new();
        while !r.is_empty() {
            let id = r.varint().map_err(|_| ParamsError::Truncated)?;
            let len = r.varint().map_err(|_| ParamsError::Truncated)?;
            let value = usize::try_from(len)
                .ok()
                .and_then(|len| r.take(len).ok())
                .ok_or(ParamsError::Truncated)?;
            let slot = match id {
                MAX_IDLE_TIMEOUT => &mut params.max_idle_timeout,
                INITIAL_MAX_DATA => &mut params.initial_max_data,
                INITIAL_MAX_STREAM_DATA_BIDI_LOCAL => {
                    &mut params.initial_max_stream_data_bidi_local
                }
                INITIAL_MAX_STREAM_DATA_BIDI_REMOTE => {
                    &mut params.initial_max_stream_data_bidi_remote
                }
                INITIAL_MAX_STREAM_DATA_UNI => &mut params.initial_max_stream_data_uni,
                INITIAL_MAX_STREAMS_BIDI => &mut params.initial_max_streams_bidi,
                INITIAL_MAX_STREAMS_UNI => &mut params.initial_max_streams_uni,
                MAX_DATAGRAM_FRAME_SIZE => &mut params.max_datagram_frame_size,
                MAX_RECORD_SIZE_ID => &mut params.max_record_size,
                RESET_STREAM_AT => {
                    if seen.contains(&id) {
                        return Err(ParamsError::Duplicate(id));
                    }
                    seen.push(id);
                    if !value.is_empty() {
                        return Err(ParamsError::InvalidValue(id));
                    }
                    params.reset_stream_at = true;
                    continue;
                }
                // original_destination_connection_id, stateless_reset_token,
                // max_udp_payload_size, ack_delay_exponent .. retry_source_connection_id.
                0x00 | 0x02 | 0x03 | 0x0a..=0x10 => return Err(ParamsError::Prohibited(id)),
                _ => continue,
            };
            if seen.contains(&id) {
                return Err(ParamsError::Duplicate(id));
            }
            seen.push(id);
            let mut vr = Reader::new(value);
            *slot = vr.varint().map_err(|_| ParamsError::InvalidValue(id))?;
            if !vr.is_empty() {
                return Err(ParamsError::InvalidValue(id));
            }
        }
        let streams_ok = params.initial_max_streams_bidi <= MAX_STREAM_COUNT
            && params.initial_max_streams_uni <= MAX_STREAM_COUNT;
        if !streams_ok {
            let id = if params.initial_max_streams_bidi > MAX_STREAM_COUNT {
                INITIAL_MAX_STREAMS_BIDI
            } else {
                INITIAL_MAX_STREAMS_UNI
            };
            return Err(ParamsError::InvalidValue(id));
        }
        if params.max_record_size < DEFAULT_MAX_RECORD_SIZE {
            return Err(ParamsError::InvalidValue(MAX_RECORD_SIZE_ID));
        }
        Ok(params)
    }
}

fn put_int(buf: &mut Vec<u8>, id: u64, v: u64) {
    varint::put(buf, id);
    varint::put(buf, varint::size(v) as u64);
    varint::put(buf, v);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn full() -> TransportParameters {
        TransportParameters {
            max_idle_timeout: 30_000,
            initial_max_data: 1 << 20,
            initial_max_stream_data_bidi_local: 1,
            initial_max_stream_data_bidi_remote: 2,
            initial_max_stream_data_uni: 3,
            initial_max_streams_bidi: 100,
            initial_max_streams_uni: MAX_STREAM_COUNT,
            max_datagram_frame_size: 65535,
            max_record_size: 1 << 20,
            reset_stream_at: true,
        }
    }

    #[test]
    fn round_trip() {
        for p in [full(), TransportParameters::default()] {
            let mut buf = Vec::new();
            p.encode(&mut buf);
            assert_eq!(buf.len(), p.encoded_len());
            assert_eq!(TransportParameters::decode(&buf), Ok(p));
        }
    }

    #[test]
    fn defaults_when_absent() {
        let p = TransportParameters::decode(&[]).unwrap();
        assert_eq!(p.max_record_size, DEFAULT_MAX_RECORD_SIZE);
        assert_eq!(p.initial_max_data, 0);
        assert!(!p.reset_stream_at);
    }

    #[test]
    fn prohibited() {
        for id in [0x00, 0x02, 0x03, 0x0a, 0x0b, 0x0c, 0x0d, 0x0e, 0x0f, 0x10] {
            let mut buf = Vec::new();
            put_int(&mut buf, id, 1);
            assert_eq!(
                TransportParameters::decode(&buf),
                Err(ParamsError::Prohibited(id))
            );
        }
    }

    #[test]
    fn unknown_and_grease_ignored() {
        let mut buf = Vec::new();
        // Reserved greasing ID 31*N+27 and an arbitrary extension with a blob value.
        varint::put(&mut buf, 31 * 5 + 27);
        varint::put(&mut buf, 3);
        buf.extend_from_slice(b"abc");
        put_int(&mut buf, 0x3d4f_9c2a_8b1e_6075, 9);
        put_int(&mut buf, INITIAL_MAX_DATA, 77);
        let p = TransportParameters::decode(&buf).unwrap();
        assert_eq!(p.initial_max_data, 77);
    }

    #[test]
    fn invalid_values() {
        let bad = |id, v| {
            let mut buf = Vec::new();
            put_int(&mut buf, id, v);
            TransportParameters::decode(&buf)
        };
        assert_eq!(
            bad(MAX_RECORD_SIZE_ID, 16381),
            Err(ParamsError::InvalidValue(MAX_RECORD_SIZE_ID))
        );
        assert!(bad(MAX_RECORD_SIZE_ID, 16382).is_ok());
        assert_eq!(
            bad(INITIAL_MAX_STREAMS_UNI, MAX_STREAM_COUNT + 1),
            Err(ParamsError::InvalidValue(INITIAL_MAX_STREAMS_UNI))
        );
        // reset_stream_at must be empty; integer values must fill their length exactly.
        assert_eq!(
            bad(RESET_STREAM_AT, 1),
            Err(ParamsError::InvalidValue(RESET_STREAM_AT))
        );
        let mut buf = Vec::new();
        varint::put(&mut buf, INITIAL_MAX_DATA);
        varint::put(&mut buf, 2);
        buf.extend_from_slice(&[0x05, 0x00]);
        assert_eq!(
            TransportParameters::decode(&buf),
            Err(ParamsError::InvalidValue(INITIAL_MAX_DATA))
        );
    }

    #[test]
    fn duplicate_and_truncated() {
        let mut buf = Vec::new();
        put_int(&mut buf, INITIAL_MAX_DATA, 1);
        put_int(&mut buf, INITIAL_MAX_DATA, 2);
        assert_eq!(
            TransportParameters::decode(&buf),
            Err(ParamsError::Duplicate(INITIAL_MAX_DATA))
        );
        let mut buf = Vec::new();
        put_int(&mut buf, INITIAL_MAX_DATA, 1 << 20);
        buf.pop();
        assert_eq!(
            TransportParameters::decode(&buf),
            Err(ParamsError::Truncated)
        );
    }
}
