//! Messages on a stream: the core's decoder and encoder (`ferrovia::message`), so the
//! framing is written once. The facade reads a stream's chunks and hands each to `push`,
//! which returns the messages it completed, at most `MAX_MESSAGE_BATCH` at a time (`take_batch`
//! returns the rest): one call per batch, not per message.

use ferrovia::message::{encode_message, MessageDecoder, MAX_MESSAGE_BATCH};
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

    /// Takes the next chunk of the stream; returns the first batch of messages completed.
    #[napi(catch_unwind)]
    pub fn push(&mut self, chunk: &[u8]) -> napi::Result<Vec<Buffer>> {
        self.inner.push(chunk);
        self.take_batch()
    }

    /// The next batch of whole messages already pushed; empty when there are none. A
    /// failure comes after the messages before it.
    #[napi(catch_unwind)]
    pub fn take_batch(&mut self) -> napi::Result<Vec<Buffer>> {
        let batch = self
            .inner
            .decode_batch(MAX_MESSAGE_BATCH)
            .map_err(error::from_stream)?;
        Ok(batch.into_iter().map(|m| Vec::from(m).into()).collect())
    }

    /// Checks the end of the stream: throws when it came inside a message.
    #[napi(catch_unwind)]
    pub fn finish(&self) -> napi::Result<()> {
        self.inner.finish().map_err(error::from_stream)
    }
}

/// One message as it goes on the stream: its length prefix, then `data`.
#[napi(catch_unwind)]
pub fn encode_message_frame(data: &[u8]) -> Buffer {
    Vec::from(encode_message(data)).into()
}
