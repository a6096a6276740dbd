'use strict';
// MessageStream: messages on a stream instead of bytes, each behind its length as a QUIC
// varint (the framing ferrovia/client speaks), decoded and encoded by the native module.

const native = require('./native.js');
const { translate } = require('./errors.js');
const { describe, checkInt, checkObject, toBuffer } = require('./check.js');

const DEFAULT_MAX_MESSAGE_SIZE = 1 << 20;
// What a queued message costs beyond its bytes (the writer's queue entry and promises):
// `bufferedAmount` counts each message as at least this much.
const MESSAGE_COST = 64;

/** The first batch of messages `chunk` completed, or (chunk null) the next batch. */
function nextBatch(decoder, chunk) {
  try {
    return chunk === null ? decoder.takeBatch() : decoder.push(chunk);
  } catch (err) {
    throw translate(err);
  }
}
const utf8 = new TextEncoder();

/**
 * Messages on a stream instead of bytes: each message goes as its length (a QUIC varint)
 * and then its bytes, the framing `ferrovia/client` speaks in the browser. Wraps a
 * bidirectional stream (`{ readable, writable }`), or one ReadableStream or WritableStream.
 *
 *   const messages = new MessageStream(stream, { text: true });
 *   for await (const m of messages) await messages.send(`echo: ${m}`);
 *
 * Reading locks the readable; a message longer than `maxMessageSize` (1 MiB unless set)
 * throws ERR_MESSAGE_TOO_LARGE before any of it is buffered, and a stream that ends inside
 * a message throws ERR_MESSAGE_TRUNCATED. Leaving the loop early (or an error) stops the
 * peer's sending (STOP_SENDING 0). `send()` resolves once the stream took the message;
 * `bufferedAmount` counts what was sent but not yet taken (each message as at least 64
 * bytes), so a broadcaster can tell a member that reads nothing. A send nobody awaits never becomes an unhandled rejection:
 * a failure shows in the next awaited send and in `closed`.
 */
class MessageStream {
  #readable = null;
  #writable = null;
  #writer = null;
  #reading = false;
  #maxMessageSize;
  #text;
  #buffered = 0;

  constructor(stream, options = {}) {
    checkObject('options', options);
    const { maxMessageSize = DEFAULT_MAX_MESSAGE_SIZE, text = false } = options;
    checkInt('maxMessageSize', maxMessageSize, 0, Number.MAX_SAFE_INTEGER);
    if (typeof text !== 'boolean') throw new TypeError(`text must be a boolean, got ${describe(text)}`);
    if (stream instanceof ReadableStream) this.#readable = stream;
    else if (stream instanceof WritableStream) this.#writable = stream;
    else if (stream && (stream.readable instanceof ReadableStream || stream.writable instanceof WritableStream)) {
      if (stream.readable instanceof ReadableStream) this.#readable = stream.readable;
      if (stream.writable instanceof WritableStream) this.#writable = stream.writable;
    } else {
      throw new TypeError(`MessageStream takes { readable, writable }, a ReadableStream or a WritableStream, got ${describe(stream)}`);
    }
    this.#maxMessageSize = maxMessageSize;
    this.#text = text;
  }

  /** The largest message this side reads. */
  get maxMessageSize() {
    return this.#maxMessageSize;
  }

  /** Bytes of messages given to `send()` that the stream has not taken yet, each counted as at least 64. */
  get bufferedAmount() {
    return this.#buffered;
  }

  /** Resolves once the writable side is closed; rejects when it failed. */
  get closed() {
    return this.#getWriter().closed;
  }

  #getWriter() {
    if (!this.#writable) throw new TypeError('this MessageStream has no writable side');
    if (!this.#writer) {
      this.#writer = this.#writable.getWriter();
      this.#writer.closed.catch(() => {});
    }
    return this.#writer;
  }

  /** The messages as they arrive: Uint8Array, or string with `{ text: true }`. */
  async *[Symbol.asyncIterator]() {
    if (!this.#readable) throw new TypeError('this MessageStream has no readable side');
    if (this.#reading) throw new TypeError('this MessageStream is being read, or was read, already');
    const reader = this.#readable.getReader();
    this.#reading = true;
    const decoder = new native.NativeMessageDecoder(this.#maxMessageSize);
    const text = this.#text ? new TextDecoder('utf-8', { fatal: true, ignoreBOM: true }) : null;
    let ended = false;
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) {
          try {
            decoder.finish();
          } catch (err) {
            throw translate(err);
          }
          ended = true;
          return;
        }
        // At most MAX_MESSAGE_BATCH messages per native call, so a chunk of tiny messages
        // never becomes one huge array.
        for (let batch = nextBatch(decoder, value); batch.length > 0; batch = nextBatch(decoder, null)) {
          for (const m of batch) yield text ? text.decode(m) : m;
        }
      }
    } finally {
      if (!ended) await reader.cancel().catch(() => {});
      reader.releaseLock();
    }
  }

  /**
   * Sends one message (a string goes as UTF-8); resolves once the stream took it. The
   * promise is handled already: left unawaited, a failure is no unhandled rejection.
   */
  send(message) {
    const bytes = typeof message === 'string' ? utf8.encode(message) : toBuffer('message', message);
    const writer = this.#getWriter();
    const frame = native.encodeMessageFrame(bytes);
    const cost = Math.max(frame.byteLength, MESSAGE_COST);
    this.#buffered += cost;
    const written = writer.write(frame).finally(() => {
      this.#buffered -= cost;
    });
    written.catch(() => {});
    return written;
  }

  /** Finishes the writable side (FIN) after the messages sent. */
  async close() {
    return this.#getWriter().close();
  }

  /** Resets the writable side with the reason's `streamErrorCode` (else 0); never rejects. */
  abort(reason) {
    // A stream that already failed has nothing left to reset.
    return this.#getWriter().abort(reason).catch(() => {});
  }

}

module.exports = { MessageStream };
