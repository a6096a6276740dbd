//! Messages on a stream: the core's decoder and encoder (`ferrovia::message`), so the
//! framing is written once. The facade reads a stream's chunks and hands each to
//! `push`, which returns every message it completed: one call per chunk, not per message.

use ferrovia::message::{encode_message, MessageDecoder};
use napi::bindgen_prelude::Buffer;
use napi_derive::napi;

use crate::error;

/// Splits a stream's bytes into length-prefixed messages.
#[napi]
pub struct NativeMessageDecoder {
    inner: MessageDecoder,
}

#[napi]
impl NativeMessageDecoder {
    /// A decoder refusing messages longer than `max_message_size` bytes.
    #[napi(constructor, catch_unwind)]
    pub fn new(max_message_size: f64) -> napi::Result<Self> {
        if !(max_message_size.is_finite() && max_message_size >= 0.0) {
            return Err(error::invalid(
                "maxMessageSize must be a non-negative number",
            ));
        }
        Ok(Self {
            inner: MessageDecoder::new(max_message_size as usize),
        })
    }

    /// Takes the next chunk of the stream; returns the messages it completed, in order.
    #[napi(catch_unwind)]
    pub fn push(&mut self, chunk: &[u8]) -> napi::Result<Vec<Buffer>> {
        self.inner.push(chunk);
        let mut out = Vec::new();
        while let Some(m) = self.inner.decode().map_err(error::from_stream)? {
            out.push(Vec::from(m).into());
        }
        Ok(out)
    }

    /// Checks the end of the stream: throws when it came inside a message.
    #[napi(catch_unwind)]
    pub fn finish(&self) -> napi::Result<()> {
        self.inner.finish().map_err(error::from_stream)
    }

    /// How many more bytes the message being received needs (at least 1).
    #[napi(getter, catch_unwind)]
    pub fn wanted(&self) -> f64 {
        self.inner.wanted() as f64
    }
}

/// One message as it goes on the stream: its length prefix, then `data`.
#[napi(catch_unwind)]
pub fn encode_message_frame(data: &[u8]) -> Buffer {
    Vec::from(encode_message(data)).into()
}
