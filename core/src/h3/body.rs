//! The rest of an HTTP/3 request stream after its HEADERS frame (RFC 9114 §4.1): DATA
//! payloads come out as slices of what arrived, without a whole frame ever being buffered;
//! trailers and unknown frame types are skipped; frames that do not belong on a request
//! stream are errors.

use bytes::{Buf, Bytes, BytesMut};

use super::frame;

/// What does not belong in a request body.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BodyDecodeError {
    /// A frame type that is not allowed on a request stream, or DATA after trailers
    /// (H3_FRAME_UNEXPECTED).
    #[error("frame {0:#x} is not allowed in a request body")]
    FrameUnexpected(u64),
    /// Trailers larger than the limit.
    #[error("trailers of {0} bytes exceed the limit")]
    TrailersTooLarge(u64),
    /// The stream ended in the middle of a frame (H3_FRAME_ERROR).
    #[error("the stream ended inside a frame")]
    Truncated,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Reading a frame's type and length.
    Header,
    /// Passing through this many more DATA payload bytes.
    Data(u64),
    /// Discarding this many more bytes of a frame we do not keep.
    Skip(u64),
}

/// Decodes the frames of a request body.
#[derive(Debug)]
pub struct BodyDecoder {
    state: State,
    header: BytesMut,
    trailers_seen: bool,
    max_trailers: u64,
}

impl BodyDecoder {
    /// A decoder that accepts trailers of up to `max_trailers` bytes (and skips them).
    pub fn new(max_trailers: u64) -> Self {
        Self {
            state: State::Header,
            header: BytesMut::new(),
            trailers_seen: false,
            max_trailers,
        }
    }

    /// Feeds bytes that arrived; DATA payload in them is appended to `out`.
    pub fn push(&mut self, mut chunk: Bytes, out: &mut Vec<Bytes>) -> Result<(), BodyDecodeError> {
        while !chunk.is_empty() {
            match self.state {
                State::Data(left) => {
                    let n = (left as usize).min(chunk.len());
                    out.push(chunk.split_to(n));
                    self.state = Self::after(left - n as u64, true);
                }
                State::Skip(left) => {
                    let n = (left as usize).min(chunk.len());
                    chunk.advance(n);
                    self.state = Self::after(left - n as u64, false);
                }
                State::Header => {
                    // A frame header is at most 16 bytes (two 8-byte varints).
                    let take = chunk.len().min(16 - self.header.len());
                    self.header.extend_from_slice(&chunk[..take]);
                    let Some((typ, a)) = crate::varint::decode(&self.header) else {
                        chunk.advance(take);
                        continue;
                    };
                    let Some((len, b)) = crate::varint::decode(&self.header[a..]) else {
                        chunk.advance(take);
                        continue;
                    };
                    // Bytes of this chunk beyond the header go back to the chunk.
                    let used_from_chunk = a + b - (self.header.len() - take);
                    chunk.advance(used_from_chunk);
                    self.header.clear();
                    self.state = self.frame(typ, len)?;
                }
            }
        }
        Ok(())
    }

    /// The stream ended: it must end between frames.
    pub fn finish(&self) -> Result<(), BodyDecodeError> {
        if self.state == State::Header && self.header.is_empty() {
            Ok(())
        } else {
            Err(BodyDecodeError::Truncated)
        }
    }

    fn after(left: u64, data: bool) -> State {
        match (left, data) {
            (0, _) => State::Header,
            (n, true) => State::Data(n),
            (n, false) => State::Skip(n),
        }
    }

    fn frame(&mut self, typ: u64, len: u64) -> Result<State, BodyDecodeError> {
        match typ {
            frame::DATA if self.trailers_seen => Err(BodyDecodeError::FrameUnexpected(typ)),
            frame::DATA => Ok(Self::after(len, true)),
            frame::HEADERS if self.trailers_seen => Err(BodyDecodeError::FrameUnexpected(typ)),
            frame::HEADERS => {
                if len > self.max_trailers {
                    return Err(BodyDecodeError::TrailersTooLarge(len));
                }
                self.trailers_seen = true;
                Ok(Self::after(len, false))
            }
            frame::CANCEL_PUSH
            | frame::SETTINGS
            | frame::PUSH_PROMISE
            | frame::GOAWAY
            | frame::MAX_PUSH_ID => Err(BodyDecodeError::FrameUnexpected(typ)),
            t if frame::is_http2_reserved(t) => Err(BodyDecodeError::FrameUnexpected(t)),
            // GREASE and extensions: skipped.
            _ => Ok(Self::after(len, false)),
        }
    }
}

/// Encodes the header of a DATA frame of `len` bytes.
pub fn data_frame_header(len: usize, out: &mut Vec<u8>) {
    frame::put_header(out, frame::DATA, len);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(typ: u64, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        frame::put_frame(&mut out, typ, payload);
        out
    }

    fn decode(wire: &[u8], chunk: usize) -> Result<Vec<u8>, BodyDecodeError> {
        let mut d = BodyDecoder::new(1024);
        let mut out = Vec::new();
        for part in wire.chunks(chunk) {
            d.push(Bytes::copy_from_slice(part), &mut out)?;
        }
        d.finish()?;
        Ok(out.concat())
    }

    #[test]
    fn data_comes_out_whole_however_the_stream_is_chunked() {
        let big: Vec<u8> = (0..70_000u32).map(|i| (i % 251) as u8).collect();
        let mut wire = frame(frame::DATA, b"hello ");
        wire.extend(frame(0x21, &[9; 300])); // GREASE
        wire.extend(frame(frame::DATA, &big));
        wire.extend(frame(frame::DATA, b""));
        wire.extend(frame(frame::HEADERS, b"trailers"));
        let mut want = b"hello ".to_vec();
        want.extend(&big);
        for chunk in [1, 2, 3, 7, 1000, 1 << 20] {
            assert_eq!(decode(&wire, chunk).unwrap(), want, "chunk {chunk}");
        }
    }

    #[test]
    fn frames_that_do_not_belong_are_errors() {
        for typ in [
            frame::SETTINGS,
            frame::GOAWAY,
            frame::CANCEL_PUSH,
            frame::MAX_PUSH_ID,
            0x02,
        ] {
            let wire = frame(typ, b"x");
            assert_eq!(decode(&wire, 5), Err(BodyDecodeError::FrameUnexpected(typ)));
        }
        let mut after_trailers = frame(frame::HEADERS, b"t");
        after_trailers.extend(frame(frame::DATA, b"late"));
        assert_eq!(
            decode(&after_trailers, 3),
            Err(BodyDecodeError::FrameUnexpected(frame::DATA))
        );
        assert_eq!(
            decode(&frame(frame::HEADERS, &[0; 2000]), 100),
            Err(BodyDecodeError::TrailersTooLarge(2000))
        );
        let whole = frame(frame::DATA, b"cut short");
        assert_eq!(decode(&whole[..5], 2), Err(BodyDecodeError::Truncated));
        assert_eq!(decode(&whole[..1], 1), Err(BodyDecodeError::Truncated));
    }
}
