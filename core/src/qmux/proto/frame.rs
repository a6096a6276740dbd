//! The QUIC frames QMux allows (draft-ietf-quic-qmux-02 §4), in RFC 9000 §19
//! encoding, plus the QMux-specific QX_TRANSPORT_PARAMETERS and QX_PING.

use std::fmt;

use bytes::Bytes;
use thiserror::Error;

use super::params::{ParamsError, TransportParameters, MAX_STREAM_COUNT};
use super::{Dir, StreamId, TransportErrorCode};
use crate::varint::{self, Reader, VarInt};

/// A frame type codepoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FrameType(pub u64);

macro_rules! frame_types {
    ($($name:ident = $val:expr,)*) => {
        impl FrameType {
            $(#[doc = concat!("The `", stringify!($name), "` frame type.")]
            pub const $name: Self = FrameType($val);)*
        }
        impl fmt::Display for FrameType {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                match self.0 {
                    $($val => f.write_str(stringify!($name)),)*
                    0x08..=0x0f => f.write_str("STREAM"),
                    x => write!(f, "{x:#x}"),
                }
            }
        }
    };
}

frame_types! {
    PADDING = 0x00,
    PING = 0x01,
    ACK = 0x02,
    ACK_ECN = 0x03,
    RESET_STREAM = 0x04,
    STOP_SENDING = 0x05,
    CRYPTO = 0x06,
    NEW_TOKEN = 0x07,
    STREAM = 0x08,
    MAX_DATA = 0x10,
    MAX_STREAM_DATA = 0x11,
    MAX_STREAMS_BIDI = 0x12,
    MAX_STREAMS_UNI = 0x13,
    DATA_BLOCKED = 0x14,
    STREAM_DATA_BLOCKED = 0x15,
    STREAMS_BLOCKED_BIDI = 0x16,
    STREAMS_BLOCKED_UNI = 0x17,
    NEW_CONNECTION_ID = 0x18,
    RETIRE_CONNECTION_ID = 0x19,
    PATH_CHALLENGE = 0x1a,
    PATH_RESPONSE = 0x1b,
    CONNECTION_CLOSE = 0x1c,
    APPLICATION_CLOSE = 0x1d,
    HANDSHAKE_DONE = 0x1e,
    RESET_STREAM_AT = 0x24,
    DATAGRAM = 0x30,
    DATAGRAM_LEN = 0x31,
    QX_PING = 0x348c_6752_9ef8_c7bd,
    QX_PING_RESPONSE = 0x348c_6752_9ef8_c7be,
    QX_TRANSPORT_PARAMETERS = 0x3f51_5330_0d0a_0d0a,
}

// STREAM type bits (RFC 9000 §19.8).
const STREAM_OFF: u64 = 0x04;
const STREAM_LEN: u64 = 0x02;
const STREAM_FIN: u64 = 0x01;

/// A STREAM frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamFrame {
    /// Stream the data belongs to.
    pub id: StreamId,
    /// Stream offset of the first byte of `data`.
    pub offset: u64,
    /// Whether this frame ends the stream.
    pub fin: bool,
    /// Payload.
    pub data: Bytes,
}

/// One frame. Integer fields must stay below 2^62; everything decoded does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// A run of PADDING bytes, collapsed so a padded record yields one value.
    Padding(usize),
    /// RESET_STREAM: the sender abandons its sending part.
    ResetStream {
        /// Stream being reset.
        id: StreamId,
        /// Application error code.
        error_code: u64,
        /// Final size of the stream.
        final_size: u64,
    },
    /// STOP_SENDING: the receiver asks the sender to reset.
    StopSending {
        /// Stream concerned.
        id: StreamId,
        /// Application error code.
        error_code: u64,
    },
    /// STREAM data.
    Stream(StreamFrame),
    /// MAX_DATA: new connection-level send limit.
    MaxData(u64),
    /// MAX_STREAM_DATA: new per-stream send limit.
    MaxStreamData {
        /// Stream concerned.
        id: StreamId,
        /// New limit (absolute offset).
        max: u64,
    },
    /// MAX_STREAMS: cumulative number of streams the receiver may open.
    MaxStreams {
        /// Which stream type the limit applies to.
        dir: Dir,
        /// Cumulative stream count.
        count: u64,
    },
    /// DATA_BLOCKED: sender is blocked by the connection limit.
    DataBlocked(u64),
    /// STREAM_DATA_BLOCKED: sender is blocked by a stream limit.
    StreamDataBlocked {
        /// Stream concerned.
        id: StreamId,
        /// Limit at which the sender is blocked.
        limit: u64,
    },
    /// STREAMS_BLOCKED: sender wants to open more streams than allowed.
    StreamsBlocked {
        /// Which stream type.
        dir: Dir,
        /// Limit at which the sender is blocked.
        limit: u64,
    },
    /// CONNECTION_CLOSE 0x1c: transport-level close.
    ConnectionClose {
        /// Transport error code.
        error_code: u64,
        /// Type of the frame that triggered the error, or 0.
        frame_type: u64,
        /// Reason phrase.
        reason: Bytes,
    },
    /// CONNECTION_CLOSE 0x1d: application-level close.
    ApplicationClose {
        /// Application error code.
        error_code: u64,
        /// Reason phrase.
        reason: Bytes,
    },
    /// DATAGRAM (RFC 9221). Always encoded with a Length (0x31) because moq
    /// peers and a later coalescing step both want self-delimiting frames.
    Datagram(Bytes),
    /// RESET_STREAM_AT (draft-ietf-quic-reliable-stream-reset).
    ResetStreamAt {
        /// Stream being reset.
        id: StreamId,
        /// Application error code.
        error_code: u64,
        /// Final size of the stream.
        final_size: u64,
        /// Bytes that must still reach the application before the reset.
        reliable_size: u64,
    },
    /// QX_TRANSPORT_PARAMETERS: must be the first frame each way.
    TransportParameters(TransportParameters),
    /// QX_PING request with its sequence number.
    Ping(u64),
    /// QX_PING response echoing a request's sequence number.
    PingResponse(u64),
}

/// Why a record's frames could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum FrameError {
    /// The record ended inside a frame (draft §3.2).
    #[error("truncated {0} frame")]
    Truncated(FrameType),
    /// A QUIC v1 frame that QMux forbids (draft §4).
    #[error("prohibited frame {0}")]
    Prohibited(FrameType),
    /// A frame type this implementation does not know (RFC 9000 §12.4).
    #[error("unknown frame type {0}")]
    Unknown(FrameType),
    /// A field violates the frame's encoding rules.
    #[error("invalid {0} frame: {1}")]
    Invalid(FrameType, &'static str),
    /// The QX_TRANSPORT_PARAMETERS payload was rejected.
    #[error("transport parameters: {0}")]
    TransportParameters(#[from] ParamsError),
}

impl FrameError {
    /// The QUIC error code to close the connection with.
    pub fn code(&self) -> TransportErrorCode {
        match self {
            FrameError::TransportParameters(_) => TransportErrorCode::TRANSPORT_PARAMETER_ERROR,
            _ => TransportErrorCode::FRAME_ENCODING_ERROR,
        }
    }

    /// The offending frame type, for CONNECTION_CLOSE's Frame Type field.
    pub fn frame_type(&self) -> FrameType {
        match self {
            FrameError::Truncated(t)
            | FrameError::Prohibited(t)
            | FrameError::Unknown(t)
            | FrameError::Invalid(t, _) => *t,
            FrameError::TransportParameters(_) => FrameType::QX_TRANSPORT_PARAMETERS,
        }
    }
}

/// Decodes all frames of one record (the Frames field, without Size).
pub fn decode_record(record: &[u8]) -> Result<Vec<Frame>, FrameError> {
    FrameIter::new(record).collect()
}

/// Lazily decodes the frames of one record; stops after the first error.
pub struct FrameIter<'a> {
    r: Reader<'a>,
    failed: bool,
}

impl<'a> FrameIter<'a> {
    /// Iterates over the frames in `record`.
    pub fn new(record: &'a [u8]) -> Self {
        FrameIter {
            r: Reader::new(record),
            failed: false,
        }
    }
}

impl Iterator for FrameIter<'_> {
    type Item = Result<Frame, FrameError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.r.is_empty() {
            return None;
        }
        let res = decode_frame(&mut self.r);
        self.failed = res.is_err();
        Some(res)
    }
}

fn decode_frame(r: &mut Reader<'_>) -> Result<Frame, FrameError> {
    let ty = FrameType(
        r.varint()
            .map_err(|_| FrameError::Truncated(FrameType::PADDING))?,
    );
    let trunc = |_| FrameError::Truncated(ty);
    let stream_id = |r: &mut Reader<'_>| r.varint().map(StreamId).map_err(trunc);
    let count = |r: &mut Reader<'_>| match r.varint().map_err(trunc)? {
        n if n > MAX_STREAM_COUNT => Err(FrameError::Invalid(ty, "stream count above 2^60")),
        n => Ok(n),
    };
    let bytes = |r: &mut Reader<'_>| -> Result<Bytes, FrameError> {
        let len = r.varint().map_err(trunc)?;
        let len = usize::try_from(len).map_err(|_| FrameError::Truncated(ty))?;
        Ok(Bytes::copy_from_slice(r.take(len).map_err(trunc)?))
    };
    Ok(match ty.0 {
        0x00 => {
            // A PADDING run is just zero bytes; collapsing it bounds the Vec that
            // decode_record would otherwise grow by one entry per byte.
            let mut n = 1;
            while r.peek() == Some(0) {
                r.skip(1);
                n += 1;
            }
            Frame::Padding(n)
        }
        0x04 => Frame::ResetStream {
            id: stream_id(r)?,
            error_code: r.varint().map_err(trunc)?,
            final_size: r.varint().map_err(trunc)?,
        },
        0x05 => Frame::StopSending {
            id: stream_id(r)?,
            error_code: r.varint().map_err(trunc)?,
        },
        0x08..=0x0f => {
            let id = stream_id(r)?;
            let offset = if ty.0 & STREAM_OFF != 0 {
                r.varint().map_err(trunc)?
            } else {
                0
            };
            let data = if ty.0 & STREAM_LEN != 0 {
                bytes(r)?
            } else {
                // Without LEN the data runs to the end of the record (draft §3.2).
                Bytes::copy_from_slice(r.rest())
            };
            if offset + data.len() as u64 > VarInt::MAX.into_inner() {
                return Err(FrameError::Invalid(ty, "stream offset beyond 2^62-1"));
            }
            Frame::Stream(StreamFrame {
                id,
                offset,
                fin: ty.0 & STREAM_FIN != 0,
                data,
            })
        }
        0x10 => Frame::MaxData(r.varint().map_err(trunc)?),
        0x11 => Frame::MaxStreamData {
            id: stream_id(r)?,
            max: r.varint().map_err(trunc)?,
        },
        0x12 => Frame::MaxStreams {
            dir: Dir::Bi,
            count: count(r)?,
        },
        0x13 => Frame::MaxStreams {
            dir: Dir::Uni,
            count: count(r)?,
        },
        0x14 => Frame::DataBlocked(r.varint().map_err(trunc)?),
        0x15 => Frame::StreamDataBlocked {
            id: stream_id(r)?,
            limit: r.varint().map_err(trunc)?,
        },
        0x16 => Frame::StreamsBlocked {
            dir: Dir::Bi,
            limit: count(r)?,
        },
        0x17 => Frame::StreamsBlocked {
            dir: Dir::Uni,
            limit: count(r)?,
        },
        0x1c => Frame::ConnectionClose {
            error_code: r.varint().map_err(trunc)?,
            frame_type: r.varint().map_err(trunc)?,
            reason: bytes(r)?,
        },
        0x1d => Frame::ApplicationClose {
            error_code: r.varint().map_err(trunc)?,
            reason: bytes(r)?,
        },
        0x24 => {
            let (id, error_code) = (stream_id(r)?, r.varint().map_err(trunc)?);
            let (final_size, reliable_size) =
                (r.varint().map_err(trunc)?, r.varint().map_err(trunc)?);
            if reliable_size > final_size {
                return Err(FrameError::Invalid(ty, "reliable size above final size"));
            }
            Frame::ResetStreamAt {
                id,
                error_code,
                final_size,
                reliable_size,
            }
        }
        0x30 => Frame::Datagram(Bytes::copy_from_slice(r.rest())),
        0x31 => Frame::Datagram(bytes(r)?),
        0x01..=0x03 | 0x06 | 0x07 | 0x18..=0x1b | 0x1e => return Err(FrameError::Prohibited(ty)),
        _ if ty == FrameType::QX_TRANSPORT_PARAMETERS => {
            Frame::TransportParameters(TransportParameters::decode(&bytes(r)?)?)
        }
        _ if ty == FrameType::QX_PING => Frame::Ping(r.varint().map_err(trunc)?),
        _ if ty == FrameType::QX_PING_RESPONSE => Frame::PingResponse(r.varint().map_err(trunc)?),
        _ => return Err(FrameError::Unknown(ty)),
    })
}

/// Where encoded bytes go: a buffer, or a counter so sizes come from the same code.
trait Sink {
    fn int(&mut self, v: u64);
    fn bytes(&mut self, b: &[u8]);
}

impl Sink for Vec<u8> {
    fn int(&mut self, v: u64) {
        varint::put(self, v);
    }
    fn bytes(&mut self, b: &[u8]) {
        self.extend_from_slice(b);
    }
}

struct Len(usize);

impl Sink for Len {
    fn int(&mut self, v: u64) {
        self.0 += varint::size(v);
    }
    fn bytes(&mut self, b: &[u8]) {
        self.0 += b.len();
    }
}

impl Frame {
    /// Appends the frame's wire encoding.
    pub fn encode(&self, buf: &mut Vec<u8>) {
        self.write(buf);
    }

    /// Size of [`encode`](Self::encode)'s output.
    pub fn encoded_len(&self) -> usize {
        let mut len = Len(0);
        self.write(&mut len);
        len.0
    }

    /// The frame's type codepoint as it would be encoded.
    pub fn ty(&self) -> FrameType {
        FrameType(match self {
            Frame::Padding(_) => 0x00,
            Frame::ResetStream { .. } => 0x04,
            Frame::StopSending { .. } => 0x05,
            Frame::Stream(s) => {
                let off = if s.offset != 0 { STREAM_OFF } else { 0 };
                0x08 | off | STREAM_LEN | if s.fin { STREAM_FIN } else { 0 }
            }
            Frame::MaxData(_) => 0x10,
            Frame::MaxStreamData { .. } => 0x11,
            Frame::MaxStreams { dir, .. } => 0x12 + *dir as u64,
            Frame::DataBlocked(_) => 0x14,
            Frame::StreamDataBlocked { .. } => 0x15,
            Frame::StreamsBlocked { dir, .. } => 0x16 + *dir as u64,
            Frame::ConnectionClose { .. } => 0x1c,
            Frame::ApplicationClose { .. } => 0x1d,
            Frame::Datagram(_) => 0x31,
            Frame::ResetStreamAt { .. } => 0x24,
            Frame::TransportParameters(_) => FrameType::QX_TRANSPORT_PARAMETERS.0,
            Frame::Ping(_) => FrameType::QX_PING.0,
            Frame::PingResponse(_) => FrameType::QX_PING_RESPONSE.0,
        })
    }

    fn write(&self, s: &mut impl Sink) {
        s.int(self.ty().0);
        match self {
            // The type byte already wrote the first zero.
            Frame::Padding(n) => s.bytes(&vec![0; n.saturating_sub(1)]),
            Frame::ResetStream {
                id,
                error_code,
                final_size,
            } => {
                s.int(id.0);
                s.int(*error_code);
                s.int(*final_size);
            }
            Frame::StopSending { id, error_code } => {
                s.int(id.0);
                s.int(*error_code);
            }
            Frame::Stream(f) => {
                s.int(f.id.0);
                if f.offset != 0 {
                    s.int(f.offset);
                }
                // LEN is always set so the frame can share a record with others.
                s.int(f.data.len() as u64);
                s.bytes(&f.data);
            }
            Frame::MaxData(v) | Frame::DataBlocked(v) | Frame::Ping(v) | Frame::PingResponse(v) => {
                s.int(*v)
            }
            Frame::MaxStreamData { id, max: v } | Frame::StreamDataBlocked { id, limit: v } => {
                s.int(id.0);
                s.int(*v);
            }
            Frame::MaxStreams { count: v, .. } | Frame::StreamsBlocked { limit: v, .. } => {
                s.int(*v)
            }
            Frame::ConnectionClose {
                error_code,
                frame_type,
                reason,
            } => {
                s.int(*error_code);
                s.int(*frame_type);
                s.int(reason.len() as u64);
                s.bytes(reason);
            }
            Frame::ApplicationClose { error_code, reason } => {
                s.int(*error_code);
                s.int(reason.len() as u64);
                s.bytes(reason);
            }
            Frame::Datagram(data) => {
                s.int(data.len() as u64);
                s.bytes(data);
            }
            Frame::ResetStreamAt {
                id,
                error_code,
                final_size,
                reliable_size,
            } => {
                s.int(id.0);
                s.int(*error_code);
                s.int(*final_size);
                s.int(*reliable_size);
            }
            Frame::TransportParameters(p) => {
                let mut block = Vec::new();
                p.encode(&mut block);
                s.int(block.len() as u64);
                s.bytes(&block);
            }
        }
    }
}

/// Encoded size of a STREAM frame header carrying `len` bytes at `offset`.
pub(crate) fn stream_header_len(id: StreamId, offset: u64, len: usize) -> usize {
    let off = if offset != 0 { varint::size(offset) } else { 0 };
    1 + varint::size(id.0) + off + varint::size(len as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(f: Frame) {
        let mut buf = Vec::new();
        f.encode(&mut buf);
        assert_eq!(buf.len(), f.encoded_len(), "{f:?}");
        assert_eq!(decode_record(&buf), Ok(vec![f.clone()]), "{f:?}");
        // Every proper prefix is a truncated frame (PADDING runs excepted: any
        // prefix of zeros is itself valid padding).
        if !matches!(f, Frame::Padding(_)) {
            for cut in 1..buf.len() {
                let err = decode_record(&buf[..cut]).unwrap_err();
                assert!(
                    matches!(err, FrameError::Truncated(_)),
                    "{f:?} cut at {cut}: {err:?}"
                );
                assert_eq!(err.code(), TransportErrorCode::FRAME_ENCODING_ERROR);
            }
        }
    }

    fn all_frames() -> Vec<Frame> {
        let id = StreamId(4);
        let big = StreamId(VarInt::MAX.into_inner());
        vec![
            Frame::Padding(1),
            Frame::Padding(300),
            Frame::ResetStream {
                id,
                error_code: 7,
                final_size: 1 << 40,
            },
            Frame::StopSending {
                id: big,
                error_code: u32::MAX as u64,
            },
            Frame::Stream(StreamFrame {
                id,
                offset: 0,
                fin: false,
                data: Bytes::from_static(b"hi"),
            }),
            Frame::Stream(StreamFrame {
                id,
                offset: 99,
                fin: true,
                data: Bytes::new(),
            }),
            Frame::Stream(StreamFrame {
                id,
                offset: 1 << 30,
                fin: false,
                data: vec![7; 20_000].into(),
            }),
            Frame::MaxData(VarInt::MAX.into_inner()),
            Frame::MaxStreamData { id, max: 65536 },
            Frame::MaxStreams {
                dir: Dir::Bi,
                count: 10,
            },
            Frame::MaxStreams {
                dir: Dir::Uni,
                count: MAX_STREAM_COUNT,
            },
            Frame::DataBlocked(5),
            Frame::StreamDataBlocked { id, limit: 6 },
            Frame::StreamsBlocked {
                dir: Dir::Bi,
                limit: 7,
            },
            Frame::StreamsBlocked {
                dir: Dir::Uni,
                limit: 8,
            },
            Frame::ConnectionClose {
                error_code: 0x0a,
                frame_type: 0x08,
                reason: "bad".into(),
            },
            Frame::ApplicationClose {
                error_code: 42,
                reason: Bytes::new(),
            },
            Frame::Datagram(Bytes::from_static(b"dgram")),
            Frame::ResetStreamAt {
                id,
                error_code: 1,
                final_size: 10,
                reliable_size: 4,
            },
            Frame::TransportParameters(TransportParameters {
                initial_max_data: 1 << 20,
                max_datagram_frame_size: 65535,
                reset_stream_at: true,
                ..Default::default()
            }),
            Frame::Ping(0),
            Frame::PingResponse(1 << 50),
        ]
    }

    #[test]
    fn every_frame_round_trips() {
        for f in all_frames() {
            round_trip(f);
        }
    }

    #[test]
    fn coalesced_record() {
        // Adjacent PADDING would merge into one run, so keep a single one.
        let frames: Vec<_> = all_frames().into_iter().skip(1).collect();
        let mut buf = Vec::new();
        for f in &frames {
            f.encode(&mut buf);
        }
        assert_eq!(decode_record(&buf).unwrap(), frames);
    }

    #[test]
    fn stream_type_variants() {
        // All eight STREAM types: OFF/LEN/FIN combinations; no LEN runs to the record end.
        for ty in 0x08u8..=0x0f {
            let mut buf = vec![ty, 0x01];
            if ty & 0x04 != 0 {
                buf.push(0x05);
            }
            if ty & 0x02 != 0 {
                buf.push(0x03);
            }
            buf.extend_from_slice(b"abc");
            let want = StreamFrame {
                id: StreamId(1),
                offset: if ty & 0x04 != 0 { 5 } else { 0 },
                fin: ty & 0x01 != 0,
                data: Bytes::from_static(b"abc"),
            };
            assert_eq!(
                decode_record(&buf),
                Ok(vec![Frame::Stream(want)]),
                "type {ty:#x}"
            );
        }
    }

    #[test]
    fn datagram_without_length_runs_to_end() {
        assert_eq!(
            decode_record(b"\x30xyz"),
            Ok(vec![Frame::Datagram("xyz".into())])
        );
        assert_eq!(
            decode_record(b"\x30"),
            Ok(vec![Frame::Datagram(Bytes::new())])
        );
    }

    #[test]
    fn qx_transport_parameters_magic() {
        let mut buf = Vec::new();
        Frame::TransportParameters(TransportParameters::default()).encode(&mut buf);
        // The codepoint's 8-byte varint encoding; the draft's prose renders it
        // "\xffQMX\r\n\r\n" but 0x3f5153300d0a0d0a actually yields "\xffQS0\r\n\r\n".
        assert_eq!(buf, b"\xffQS0\r\n\r\n\x00");
    }

    #[test]
    fn prohibited_frames() {
        for ty in [0x01u8, 0x02, 0x03, 0x06, 0x07, 0x18, 0x19, 0x1a, 0x1b, 0x1e] {
            let err = decode_record(&[ty, 0, 0, 0, 0, 0]).unwrap_err();
            assert_eq!(err, FrameError::Prohibited(FrameType(ty as u64)));
            assert_eq!(err.code(), TransportErrorCode::FRAME_ENCODING_ERROR);
        }
    }

    #[test]
    fn unknown_frames() {
        assert_eq!(
            decode_record(&[0x21]),
            Err(FrameError::Unknown(FrameType(0x21)))
        );
        // Frames after a bad one are not decoded, and earlier good ones do not hide it.
        assert!(decode_record(&[0x00, 0x10, 0x01, 0x3f]).is_err());
    }

    #[test]
    fn invalid_fields() {
        let mut buf = vec![0x12];
        varint::put(&mut buf, MAX_STREAM_COUNT + 1);
        assert!(matches!(
            decode_record(&buf),
            Err(FrameError::Invalid(FrameType::MAX_STREAMS_BIDI, _))
        ));
        // RESET_STREAM_AT with reliable size above final size.
        assert!(matches!(
            decode_record(&[0x24, 0, 0, 1, 2]),
            Err(FrameError::Invalid(_, _))
        ));
        // STREAM whose end offset passes 2^62-1.
        let mut buf = vec![0x0e, 0x00];
        varint::put(&mut buf, VarInt::MAX.into_inner());
        buf.extend_from_slice(&[0x01, 0xaa]);
        assert!(matches!(
            decode_record(&buf),
            Err(FrameError::Invalid(_, _))
        ));
        // Bad transport parameters map to TRANSPORT_PARAMETER_ERROR.
        let mut buf = Vec::new();
        varint::put(&mut buf, FrameType::QX_TRANSPORT_PARAMETERS.0);
        buf.extend_from_slice(&[0x03, 0x0b, 0x01, 0x05]); // max_ack_delay
        let err = decode_record(&buf).unwrap_err();
        assert_eq!(err.code(), TransportErrorCode::TRANSPORT_PARAMETER_ERROR);
        assert_eq!(err.frame_type(), FrameType::QX_TRANSPORT_PARAMETERS);
    }

    #[test]
    fn padding_runs_collapse() {
        assert_eq!(
            decode_record(&[0, 0, 0, 0x10, 0x01, 0, 0]),
            Ok(vec![
                Frame::Padding(3),
                Frame::MaxData(1),
                Frame::Padding(2)
            ])
        );
    }
}
