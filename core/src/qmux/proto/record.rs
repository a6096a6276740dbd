//! Size-prefixed QMux records (draft §3.2) for byte-stream transports.
//!
//! WebSocket carries one record per message without the Size prefix, so this is
//! only needed when the machine runs over TCP/TLS/Unix sockets.

use bytes::{Buf, Bytes, BytesMut};
use thiserror::Error;

use crate::varint::{self, Reader};

/// A record header announced more bytes than we accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum RecordError {
    /// Size exceeds our `max_record_size`; close with FRAME_ENCODING_ERROR.
    #[error("record of {size} bytes exceeds max_record_size {max}")]
    TooLarge {
        /// Announced Frames length.
        size: u64,
        /// Our advertised limit.
        max: u64,
    },
}

/// Splits an incoming byte stream into records.
///
/// Memory stays bounded by one record plus whatever the driver pushes at once:
/// an oversize Size is rejected as soon as the header is complete, before any of
/// its payload is buffered.
#[derive(Debug)]
pub struct RecordReader {
    buf: BytesMut,
    max_record_size: u64,
}

impl RecordReader {
    /// A reader enforcing our advertised `max_record_size`.
    pub fn new(max_record_size: u64) -> Self {
        RecordReader {
            buf: BytesMut::new(),
            max_record_size,
        }
    }

    /// Appends bytes read from the transport.
    pub fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// Bytes held that do not yet form a complete record.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Returns the next complete record's Frames field, if one is buffered.
    pub fn next_record(&mut self) -> Result<Option<Bytes>, RecordError> {
        let mut r = Reader::new(&self.buf);
        let Ok(size) = r.varint() else {
            return Ok(None);
        };
        if size > self.max_record_size {
            return Err(RecordError::TooLarge {
                size,
                max: self.max_record_size,
            });
        }
        let header = self.buf.len() - r.remaining();
        // size <= max_record_size, which the driver chose to fit memory, so the cast holds.
        let size = size as usize;
        if r.remaining() < size {
            // Reserve once for the whole record instead of growing per push.
            self.buf.reserve(header + size - self.buf.len());
            return Ok(None);
        }
        self.buf.advance(header);
        Ok(Some(self.buf.split_to(size).freeze()))
    }
}

/// Appends `frames` as one Size-prefixed record.
pub fn write_record(frames: &[u8], out: &mut Vec<u8>) {
    varint::put(out, frames.len() as u64);
    out.extend_from_slice(frames);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_records_across_pushes() {
        let mut stream = Vec::new();
        write_record(b"abc", &mut stream);
        write_record(&[7; 300], &mut stream);
        write_record(b"", &mut stream);
        let mut rd = RecordReader::new(16382);
        let mut got = Vec::new();
        // Feed one byte at a time: headers and payloads split everywhere.
        for b in &stream {
            rd.push(std::slice::from_ref(b));
            while let Some(rec) = rd.next_record().unwrap() {
                got.push(rec);
            }
        }
        assert_eq!(
            got,
            vec![
                Bytes::from_static(b"abc"),
                Bytes::from(vec![7; 300]),
                Bytes::new()
            ]
        );
        assert_eq!(rd.buffered(), 0);
    }

    #[test]
    fn rejects_oversize_before_buffering_payload() {
        let mut rd = RecordReader::new(16382);
        rd.push(&[0x80, 0x00, 0x40, 0x00]); // Size = 16384
        assert_eq!(
            rd.next_record(),
            Err(RecordError::TooLarge {
                size: 16384,
                max: 16382
            })
        );
        let mut rd = RecordReader::new(16382);
        rd.push(&[0x7f, 0xfe]); // Size = 16382 is fine
        assert_eq!(rd.next_record(), Ok(None));
    }
}
