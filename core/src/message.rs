//! Messages on a stream, sans-IO.
//!
//! A WebTransport stream carries bytes, not messages; applications that exchange messages
//! (chat lines, JSON records, game inputs) each invent a framing. Ferrovia offers one, the
//! same in Rust, Node, Python and the browser connector: every message is a QUIC
//! variable-length integer (RFC 9000 §16) giving its length in bytes, then that many bytes.
//! A message may be empty; the stream's FIN ends the sequence, and a FIN inside a message
//! is an error (the sender stopped halfway).
//!
//! The decoder bounds its memory by the receiver's largest message: a length above it is
//! refused as soon as the length arrives, before any of the message is buffered.

use bytes::{Buf, Bytes, BytesMut};

use crate::varint;
use crate::StreamError;

/// The largest message a receiver takes unless told otherwise: 1 MiB.
pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 1 << 20;

/// How much [`RecvStream::read_messages`](crate::RecvStream::read_messages) reads from the
/// stream at a time, whatever length a message announces.
pub const MESSAGE_READ_SIZE: usize = 64 * 1024;

/// The most messages one batch holds ([`MessageDecoder::decode_batch`],
/// [`RecvStream::read_messages`](crate::RecvStream::read_messages)), so a stream of tiny
/// messages cannot make one call hold an unbounded list.
pub const MAX_MESSAGE_BATCH: usize = 1024;

/// Splits a stream's bytes into messages. Push what arrived with
/// [`push`](Self::push), take whole messages with [`decode`](Self::decode), and call
/// [`finish`](Self::finish) at the end of the stream.
#[derive(Debug)]
pub struct MessageDecoder {
    buf: BytesMut,
    max: usize,
    /// The length of the message being received, once its prefix has arrived.
    want: Option<usize>,
    failed: Option<StreamError>,
}

impl MessageDecoder {
    /// A decoder that refuses messages longer than `max_message_size` bytes.
    pub fn new(max_message_size: usize) -> Self {
        Self {
            buf: BytesMut::new(),
            max: max_message_size,
            want: None,
            failed: None,
        }
    }

    /// The largest message this decoder takes.
    pub fn max_message_size(&self) -> usize {
        self.max
    }

    /// Bytes held for a message that has not fully arrived.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// How many more bytes the message being received needs (at least 1).
    pub fn wanted(&self) -> usize {
        match self.want {
            Some(n) => n.saturating_sub(self.buf.len()).max(1),
            None => 1,
        }
    }

    /// Appends bytes that arrived on the stream.
    pub fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// The next whole message, `Ok(None)` when more bytes are needed.
    ///
    /// Fails with [`StreamError::MessageTooLarge`] when a length prefix exceeds the
    /// decoder's maximum; the decoder then keeps failing with that error.
    pub fn decode(&mut self) -> Result<Option<Bytes>, StreamError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        let want = match self.want {
            Some(n) => n,
            None => {
                let Some((len, used)) = varint::decode(&self.buf) else {
                    return Ok(None);
                };
                let len = usize::try_from(len).unwrap_or(usize::MAX);
                if len > self.max {
                    let e = StreamError::MessageTooLarge {
                        size: len,
                        max: self.max,
                    };
                    self.failed = Some(e.clone());
                    self.buf = BytesMut::new();
                    return Err(e);
                }
                self.buf.advance(used);
                self.want = Some(len);
                len
            }
        };
        if self.buf.len() < want {
            return Ok(None);
        }
        self.want = None;
        Ok(Some(self.buf.split_to(want).freeze()))
    }

    /// Up to `max` whole messages from what was pushed. A failure comes after the whole
    /// messages before it: with messages in hand the batch is returned and the (sticky)
    /// error waits for the next call.
    pub fn decode_batch(&mut self, max: usize) -> Result<Vec<Bytes>, StreamError> {
        let mut out = Vec::new();
        while out.len() < max {
            match self.decode() {
                Ok(Some(m)) => out.push(m),
                Ok(None) => break,
                Err(_) if !out.is_empty() => break,
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    /// Checks the end of the stream: fails with [`StreamError::MessageTruncated`] when it
    /// came inside a message.
    pub fn finish(&self) -> Result<(), StreamError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        match self.want {
            None if self.buf.is_empty() => Ok(()),
            want => Err(StreamError::MessageTruncated {
                received: self.buf.len(),
                expected: want,
            }),
        }
    }
}

/// One message as it goes on the stream: its length prefix, then `payload`.
pub fn encode_message(payload: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(payload.len() + 8);
    varint::put(&mut out, payload.len() as u64);
    out.extend_from_slice(payload);
    out.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(d: &mut MessageDecoder) -> Vec<Bytes> {
        let mut out = Vec::new();
        while let Some(m) = d.decode().unwrap() {
            out.push(m);
        }
        out
    }

    #[test]
    fn messages_come_out_whole_whatever_the_chunking() {
        let sizes = [0usize, 1, 63, 64, 300, 16_383, 16_384, 70_000];
        let mut wire = Vec::new();
        for (i, n) in sizes.iter().enumerate() {
            wire.extend_from_slice(&encode_message(&vec![i as u8; *n]));
        }
        for chunk in [1usize, 2, 7, 1000, wire.len()] {
            let mut d = MessageDecoder::new(DEFAULT_MAX_MESSAGE_SIZE);
            let mut got = Vec::new();
            for part in wire.chunks(chunk) {
                d.push(part);
                got.extend(decode_all(&mut d));
            }
            d.finish().unwrap();
            assert_eq!(got.len(), sizes.len(), "chunk {chunk}");
            for (i, (m, n)) in got.iter().zip(sizes).enumerate() {
                assert_eq!(m.len(), n);
                assert!(m.iter().all(|b| *b == i as u8));
            }
        }
    }

    #[test]
    fn a_long_message_is_refused_from_its_prefix_alone() {
        let mut d = MessageDecoder::new(1000);
        // A 4-byte prefix announcing 10 MiB, and nothing after it.
        let mut prefix = BytesMut::new();
        varint::put(&mut prefix, 10 << 20);
        d.push(&prefix);
        let e = d.decode().unwrap_err();
        assert_eq!(
            e,
            StreamError::MessageTooLarge {
                size: 10 << 20,
                max: 1000
            }
        );
        assert_eq!(e.code(), "ERR_MESSAGE_TOO_LARGE");
        assert_eq!(d.buffered(), 0);
        assert!(d.decode().is_err() && d.finish().is_err());
        // Exactly the maximum is fine.
        let mut d = MessageDecoder::new(1000);
        d.push(&encode_message(&[7; 1000]));
        assert_eq!(d.decode().unwrap().unwrap().len(), 1000);
    }

    #[test]
    fn whole_messages_come_before_a_failure_and_batches_are_bounded() {
        let mut d = MessageDecoder::new(100);
        let mut wire = Vec::new();
        for _ in 0..5 {
            wire.extend_from_slice(&encode_message(b"ok"));
        }
        let mut prefix = BytesMut::new();
        varint::put(&mut prefix, 1000);
        wire.extend_from_slice(&prefix);
        d.push(&wire);
        assert_eq!(d.decode_batch(3).unwrap().len(), 3);
        assert_eq!(d.decode_batch(100).unwrap().len(), 2);
        assert!(matches!(
            d.decode_batch(100),
            Err(StreamError::MessageTooLarge { size: 1000, .. })
        ));
    }

    #[test]
    fn an_end_inside_a_message_is_an_error() {
        let wire = encode_message(b"hello");
        let mut d = MessageDecoder::new(100);
        d.push(&wire[..3]);
        assert_eq!(d.decode().unwrap(), None);
        assert_eq!(d.wanted(), 3);
        assert_eq!(
            d.finish().unwrap_err(),
            StreamError::MessageTruncated {
                received: 2,
                expected: Some(5)
            }
        );
        // Half a length prefix.
        let mut d = MessageDecoder::new(100_000);
        d.push(&encode_message(&[0; 20_000])[..1]);
        assert_eq!(d.decode().unwrap(), None);
        assert!(matches!(
            d.finish().unwrap_err(),
            StreamError::MessageTruncated { expected: None, .. }
        ));
    }
}
