//! Sans-IO state machine for QMux (draft-ietf-quic-qmux-02): QUIC v1 streams,
//! flow control and datagrams carried as QUIC frames inside QMux records over a
//! reliable, ordered transport (WebSocket messages or a byte stream).
//!
//! The crate does no I/O and reads no clock. A driver feeds received records to
//! [`Connection::handle_record`], sends whatever [`Connection::poll_transmit`]
//! returns, and reacts to [`Connection::poll_event`].
//!
//! Framing: on WebSocket (the moq-dev variant) each binary message is one record
//! *without* the Size prefix, which is exactly what `poll_transmit` returns and
//! `handle_record` takes. On a raw byte stream, split input with
//! [`RecordReader`] and prefix output with [`write_record`].
//!
//! ```
//! use ferrovia::wire::qmux::{Config, Connection, Dir, Event, ReadOutcome, Side};
//!
//! // Stand-in for a WebSocket: each record travels as one binary message.
//! fn pump(from: &mut Connection, to: &mut Connection) {
//!     while let Some(message) = from.poll_transmit() {
//!         to.handle_record(&message).unwrap();
//!     }
//! }
//! let mut client = Connection::new(Side::Client, Config::default());
//! let mut server = Connection::new(Side::Server, Config::default());
//! pump(&mut client, &mut server);
//! pump(&mut server, &mut client); // both sides now know each other's limits
//!
//! let id = client.open(Dir::Bi).unwrap();
//! assert_eq!(client.write(id, b"hello").unwrap(), 5);
//! client.finish(id).unwrap();
//! pump(&mut client, &mut server);
//!
//! assert_eq!(server.poll_event(), Some(Event::Connected));
//! assert_eq!(server.poll_event(), Some(Event::NewStream { id, dir: Dir::Bi }));
//! assert_eq!(server.poll_event(), Some(Event::Readable(id)));
//! assert_eq!(server.read(id, 1024), Ok(ReadOutcome::Data("hello".into())));
//! assert_eq!(server.read(id, 1024), Ok(ReadOutcome::Finished));
//! ```

mod conn;
mod frame;
mod params;
mod record;

#[cfg(test)]
mod moq_capture;

use std::fmt;

pub use crate::varint::{VarInt, VarIntBoundsExceeded};
pub use conn::{
    ClosedStream, Config, Connection, ConnectionError, ConnectionStats, DatagramError, Event,
    OpenError, ReadError, ReadOutcome, WriteError,
};
pub use frame::{decode_record, Frame, FrameError, FrameIter, FrameType, StreamFrame};
pub use params::{ParamsError, TransportParameters, DEFAULT_MAX_RECORD_SIZE, MAX_RECORD_SIZE_ID};
pub use record::{write_record, RecordError, RecordReader};

/// Which end of the underlying transport we are; decides stream ID parity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Side {
    /// The endpoint that opened the transport (the WebSocket client).
    Client,
    /// The endpoint that accepted the transport.
    Server,
}

impl Side {
    fn bit(self) -> u64 {
        match self {
            Side::Client => 0,
            Side::Server => 1,
        }
    }
}

impl std::ops::Not for Side {
    type Output = Side;
    fn not(self) -> Side {
        match self {
            Side::Client => Side::Server,
            Side::Server => Side::Client,
        }
    }
}

/// Stream directionality.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Dir {
    /// Data flows both ways.
    Bi,
    /// Data flows only from the initiator.
    Uni,
}

impl Dir {
    fn index(self) -> usize {
        self as usize
    }
}

/// A QUIC stream ID: the two low bits carry initiator and direction (RFC 9000 §2.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StreamId(pub u64);

impl StreamId {
    /// The `index`-th stream of direction `dir` opened by `initiator`.
    pub fn new(initiator: Side, dir: Dir, index: u64) -> Self {
        StreamId(index << 2 | (dir as u64) << 1 | initiator.bit())
    }

    /// Which side opened the stream.
    pub fn initiator(self) -> Side {
        if self.0 & 1 == 0 {
            Side::Client
        } else {
            Side::Server
        }
    }

    /// Whether the stream is bidirectional or unidirectional.
    pub fn dir(self) -> Dir {
        if self.0 & 2 == 0 {
            Dir::Bi
        } else {
            Dir::Uni
        }
    }

    /// Position among the streams of the same initiator and direction.
    pub fn index(self) -> u64 {
        self.0 >> 2
    }
}

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A QUIC transport error code (RFC 9000 §20.1), as carried in CONNECTION_CLOSE 0x1c.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TransportErrorCode(pub u64);

macro_rules! error_codes {
    ($($name:ident = $val:expr,)*) => {
        impl TransportErrorCode {
            $(#[doc = concat!("`", stringify!($name), "` from RFC 9000 §20.1.")]
            pub const $name: Self = TransportErrorCode($val);)*
        }
        impl fmt::Display for TransportErrorCode {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                match self.0 {
                    $($val => f.write_str(stringify!($name)),)*
                    x => write!(f, "error {x:#x}"),
                }
            }
        }
    };
}

error_codes! {
    NO_ERROR = 0x00,
    INTERNAL_ERROR = 0x01,
    FLOW_CONTROL_ERROR = 0x03,
    STREAM_LIMIT_ERROR = 0x04,
    STREAM_STATE_ERROR = 0x05,
    FINAL_SIZE_ERROR = 0x06,
    FRAME_ENCODING_ERROR = 0x07,
    TRANSPORT_PARAMETER_ERROR = 0x08,
    PROTOCOL_VIOLATION = 0x0a,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_id_bits() {
        let id = StreamId::new(Side::Server, Dir::Uni, 5);
        assert_eq!(id.0, 23);
        assert_eq!(
            (id.initiator(), id.dir(), id.index()),
            (Side::Server, Dir::Uni, 5)
        );
        assert_eq!(StreamId(0).initiator(), Side::Client);
        assert_eq!(StreamId(0).dir(), Dir::Bi);
        assert_eq!(StreamId(2).dir(), Dir::Uni);
    }

    #[test]
    fn error_code_names() {
        assert_eq!(
            TransportErrorCode::FLOW_CONTROL_ERROR.to_string(),
            "FLOW_CONTROL_ERROR"
        );
        assert_eq!(TransportErrorCode(0x99).to_string(), "error 0x99");
    }
}
