'use strict';
// Streams: the W3C WebTransportReceiveStream (a readable byte stream over the native
// receive half), WebTransportSendStream (a WritableStream with sendOrder) and
// WebTransportBidirectionalStream, the INTERNAL token only sessions construct them with,
// the sendOrder helpers, pulled() (a ReadableStream fed by native calls) and toDuplex().

const { Duplex, Readable, Writable } = require('node:stream');
const { translate, rethrow, codeOf } = require('./errors.js');
const { describe, toBuffer } = require('./check.js');

/** Largest chunk one native read returns. */
const READ_CHUNK = 256 * 1024;

/** Only sessions make streams, as in the browser, where the constructors are not exposed. */
const INTERNAL = Symbol('ferrovia.internal');

function illegalConstructor(token) {
  if (token !== INTERNAL) throw new TypeError('Illegal constructor');
}

/** Checks a sendOrder: WebIDL's `long long`, as far as a JavaScript number holds it exactly. */
function checkSendOrder(name, v) {
  if (typeof v !== 'number') throw new TypeError(`${name} must be a number, got ${describe(v)}`);
  if (!Number.isSafeInteger(v)) throw new RangeError(`${name} must be a safe integer, got ${v}`);
  return v;
}

const MIN_PRIORITY = -(2 ** 31);
const MAX_PRIORITY = 2 ** 31 - 1;

/**
 * The core's priority for a sendOrder. QUIC priorities are 32-bit there, so larger orders
 * are clamped: a higher sendOrder is never sent after a lower one, but orders beyond
 * ±2^31 share the end values.
 */
function priorityOf(sendOrder) {
  return Math.min(MAX_PRIORITY, Math.max(MIN_PRIORITY, sendOrder));
}

/**
 * The underlying byte source of a receive stream. The stream has no read-ahead, so the
 * core is read only for a reader's request and QUIC flow control holds the rest back at
 * the sender.
 */
function byteSource(recv) {
  let done = false;
  /** Hands a chunk (or the end, `null`) to the reader that asked. */
  const deliver = (controller, chunk) => {
    // Looked up now: the reader may have been released while a read was pending.
    const request = controller.byobRequest;
    if (chunk === null) {
      done = true;
      controller.close();
      // A pending BYOB read settles (done, with an empty view) only once answered.
      request?.respond(0);
    } else if (request && request.view.byteLength >= chunk.byteLength) {
      request.view.set(chunk);
      request.respond(chunk.byteLength);
    } else {
      // enqueue() takes the whole ArrayBuffer; the native module made it for this chunk.
      controller.enqueue(new Uint8Array(chunk.buffer, chunk.byteOffset, chunk.byteLength));
    }
  };
  return {
    type: 'bytes',
    pull(controller) {
      // A BYOB read asks for no more than its view holds, so the chunk fits there whole.
      const asked = controller.byobRequest;
      const max = asked ? Math.min(asked.view.byteLength, READ_CHUNK) : READ_CHUNK;
      // Data that has already arrived is taken without waiting; only an empty buffer
      // costs a trip through the native thread pool.
      const ready = recv.tryRead(max);
      if (ready != null) return deliver(controller, ready);
      return recv.read(max).then(
        (chunk) => {
          if (!done) deliver(controller, chunk); // else cancelled while the read was pending
        },
        (err) => {
          if (!done) controller.error(translate(err));
          done = true;
        },
      );
    },
    cancel(reason) {
      done = true;
      return recv.stop(codeOf(reason)).catch(rethrow);
    },
  };
}

/**
 * The receiving half of a stream (W3C WebTransportReceiveStream): a readable byte stream,
 * so `getReader({ mode: 'byob' })` reads into the caller's buffers, while the default
 * reader yields Uint8Array chunks.
 */
class WebTransportReceiveStream extends ReadableStream {
  #native;

  constructor(token, recv) {
    illegalConstructor(token);
    super(byteSource(recv), { highWaterMark: 0 });
    this.#native = recv;
  }

  /** `{ bytesReceived, bytesRead }`; bytesReceived is a lower bound (docs/node.md). */
  async getStats() {
    const s = this.#native.stats();
    return { bytesReceived: s.bytesReceived, bytesRead: s.bytesRead };
  }

  get [Symbol.toStringTag]() {
    return 'WebTransportReceiveStream';
  }
}

function sinkFor(send) {
  // Once close() has begun, an abort must not reset the stream: RESET_STREAM after FIN
  // would throw away data the peer has not received yet (Node's Duplex.fromWeb aborts on
  // destroy while close() is still settling).
  let closing = false;
  const reset = (reason) => (closing ? Promise.resolve() : send.reset(codeOf(reason)));
  return {
    start(controller) {
      // The abort signal fires at once, even while a write is in flight (the sink's
      // abort() only runs after that write settles, which under backpressure may be
      // never): reset now so the pending write gives up.
      const signal = controller.signal;
      if (signal) {
        signal.addEventListener('abort', () => reset(signal.reason).catch(() => {}), { once: true });
      }
    },
    write(chunk) {
      const buf = toBuffer('chunk', chunk);
      // What fits in the stream's window goes now; only the rest waits for credit.
      let taken;
      try {
        taken = send.tryWrite(buf);
      } catch (err) {
        throw translate(err);
      }
      if (taken === buf.byteLength) return undefined;
      return send.write(taken === 0 ? buf : buf.subarray(taken)).catch(rethrow);
    },
    close() {
      closing = true;
      return send.finish().catch(rethrow);
    },
    abort(reason) {
      return reset(reason).catch(rethrow);
    },
  };
}

/**
 * The sending half of a stream (W3C WebTransportSendStream): a WritableStream with a
 * mutable `sendOrder` and `getStats()`.
 */
class WebTransportSendStream extends WritableStream {
  #native;
  #sendOrder;

  constructor(token, send, sendOrder = 0) {
    illegalConstructor(token);
    super(sinkFor(send), { highWaterMark: 1 });
    this.#native = send;
    this.#sendOrder = sendOrder;
    if (sendOrder !== 0) send.setPriority(priorityOf(sendOrder));
  }

  /**
   * Higher is sent first, among the streams of the connection. Takes effect at once, also
   * for bytes already written and waiting to be sent.
   */
  get sendOrder() {
    return this.#sendOrder;
  }

  set sendOrder(value) {
    checkSendOrder('sendOrder', value);
    this.#sendOrder = value;
    this.#native.setPriority(priorityOf(value));
  }

  /** Send groups are not supported: always null. */
  get sendGroup() {
    return null;
  }

  set sendGroup(value) {
    if (value !== null && value !== undefined) throw new TypeError('sendGroup is not supported; only null may be set');
  }

  /**
   * `{ bytesWritten, bytesSent, bytesAcknowledged }`; bytesSent is an estimate and
   * bytesAcknowledged is known only once everything is acknowledged (docs/node.md).
   */
  async getStats() {
    const s = this.#native.stats();
    return { bytesWritten: s.bytesWritten, bytesSent: s.bytesSent, bytesAcknowledged: s.bytesAcknowledged };
  }

  get [Symbol.toStringTag]() {
    return 'WebTransportSendStream';
  }
}

/** A bidirectional stream (W3C WebTransportBidirectionalStream): `{ readable, writable }`. */
class WebTransportBidirectionalStream {
  constructor(token, nativeBidi, sendOrder = 0) {
    illegalConstructor(token);
    // Own and enumerable, so that destructuring, spreading and logging see both halves.
    Object.defineProperties(this, {
      readable: { value: new WebTransportReceiveStream(INTERNAL, nativeBidi.takeRecv()), enumerable: true },
      writable: { value: new WebTransportSendStream(INTERNAL, nativeBidi.takeSend(), sendOrder), enumerable: true },
    });
  }
}

/**
 * A ReadableStream fed by a native call that resolves to the next item, or null at the
 * end; `enqueue(item, controller)` puts what the item holds into the stream. The optional
 * `now()` returns an item that is ready without waiting, or null.
 */
function pulled(next, enqueue, highWaterMark, now) {
  return new ReadableStream(
    {
      // A promise chain rather than an async function: one is suspended in every idle
      // session's streams, and a suspended async function costs a generator and its frame.
      pull(controller) {
        // `now()` returns what is ready without waiting (or null/undefined), saving a wait.
        let ready;
        try {
          ready = now?.();
        } catch (err) {
          controller.error(translate(err));
          return undefined;
        }
        if (ready != null) return enqueue(ready, controller);
        return next()
          .then((item) => {
            if (item === null) controller.close();
            else enqueue(item, controller);
          })
          .catch((err) => controller.error(translate(err)));
      },
    },
    { highWaterMark },
  );
}

/**
 * A Node `Duplex` over a bidirectional stream ({ readable, writable }), or a `Readable` /
 * `Writable` over a single ReadableStream / WritableStream. The Duplex is half-open by
 * default (`allowHalfOpen: true`): the peer finishing its side does not end ours.
 */
function toDuplex(stream, options) {
  options = { allowHalfOpen: true, ...options };
  if (stream instanceof ReadableStream) return Readable.fromWeb(stream, options);
  if (stream instanceof WritableStream) return Writable.fromWeb(stream, options);
  if (stream && stream.readable instanceof ReadableStream && stream.writable instanceof WritableStream) {
    return Duplex.fromWeb(stream, options);
  }
  throw new TypeError('toDuplex() takes { readable, writable }, a ReadableStream or a WritableStream');
}

module.exports = {
  INTERNAL,
  checkSendOrder,
  WebTransportReceiveStream,
  WebTransportSendStream,
  WebTransportBidirectionalStream,
  pulled,
  toDuplex,
};
