'use strict';
// WebSocketSession: a plain WebSocket accepted on a route that takes them, shaped like the
// WHATWG WebSocketStream (opened, readable, writable, closed, close()).

const { translate, rethrow } = require('./errors.js');
const { describe, checkInt, checkString, checkObject, asyncDispose } = require('./check.js');
const { pulled } = require('./streams.js');

// Messages taken or queued in a row without a native promise. Each of those settles in a
// later turn of the event loop; a run of synchronous ones settles in microtasks only, so
// after this many the next goes through a promise and other work gets its turn.
const FAST_STREAK = 32;

/** Counts synchronous receives and sends since the last native promise. */
class Streak {
  length = 0;

  /** Whether the next one may be synchronous. */
  go() {
    return ++this.length <= FAST_STREAK;
  }
}

/**
 * A plain WebSocket, shaped like the WHATWG WebSocketStream: `opened`, then `readable`
 * (strings and Uint8Arrays) and `writable` (strings, ArrayBuffers, typed arrays) with real
 * backpressure, `closed` ({ closeCode, reason }) and `close({ closeCode, reason })`. Also
 * an async iterable of messages.
 */
class WebSocketSession {
  #native;
  #readable;
  #writable;
  #streak = new Streak();

  constructor(nativeWs, url) {
    this.#native = nativeWs;
    this.url = url;
    /** Already resolved: { protocol, extensions }. */
    this.opened = Promise.resolve({ protocol: nativeWs.protocol ?? '', extensions: '' });
    /** Resolves with { closeCode, reason, initiator } however the WebSocket ends. */
    this.closed = nativeWs.closed().then((c) => ({ closeCode: c.closeCode, reason: c.reason, initiator: c.initiator }), rethrow);
  }

  /** The request path, including the query. */
  get path() {
    return this.#native.path;
  }
  /** The subprotocol chosen at accept, or ''. */
  get protocol() {
    return this.#native.protocol ?? '';
  }
  /** Always 'websocket'. */
  get transport() {
    return 'websocket';
  }
  /** The client's IP address. */
  get remoteAddress() {
    return this.#native.remoteAddress;
  }
  /** The client's TCP port. */
  get remotePort() {
    return this.#native.remotePort;
  }

  /** Messages from the client: strings (text) and Uint8Arrays (binary). */
  get readable() {
    const n = this.#native;
    const streak = this.#streak;
    this.#readable ??= pulled(
      () => {
        streak.length = 0;
        return n.recv();
      },
      (m, c) => c.enqueue(m.text ?? new Uint8Array(m.binary.buffer, m.binary.byteOffset, m.binary.byteLength)),
      0,
      // A message already waiting is taken without a promise from the native side.
      () => (streak.go() ? n.tryRecv() : null),
    );
    return this.#readable;
  }

  /** Messages to the client: a write resolves once the message is queued for the socket. */
  get writable() {
    const n = this.#native;
    const streak = this.#streak;
    this.#writable ??= new WritableStream(
      {
        async write(chunk) {
          // Queued at once when there is room; otherwise (and every FAST_STREAK messages,
          // see Streak) through the native promise, which waits for room.
          let text = null;
          let bytes = null;
          if (typeof chunk === 'string') text = chunk;
          else if (chunk instanceof ArrayBuffer) bytes = new Uint8Array(chunk);
          else if (ArrayBuffer.isView(chunk)) bytes = new Uint8Array(chunk.buffer, chunk.byteOffset, chunk.byteLength);
          else throw new TypeError(`a WebSocket message is a string, ArrayBuffer or typed array, not ${describe(chunk)}`);
          if (streak.go() && (text !== null ? n.trySendText(text) : n.trySendBinary(bytes))) return;
          streak.length = 0;
          if (text !== null) await n.sendText(text).catch(rethrow);
          else await n.sendBinary(Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength)).catch(rethrow);
        },
        close() {
          n.close(1000, '');
        },
        abort() {
          n.close(1000, '');
        },
      },
      { highWaterMark: 1 },
    );
    return this.#writable;
  }

  /** Sends one message (string or bytes); resolves once it is queued. */
  async send(message) {
    const w = this.writable.getWriter();
    try {
      await w.write(message);
    } finally {
      w.releaseLock();
    }
  }

  /** Closes with { closeCode (1000..1003, 1007..1014 or 3000..4999, default 1000), reason }. */
  close(closeInfo) {
    let code = 1000;
    let reason = '';
    if (closeInfo !== undefined) {
      checkObject('closeInfo', closeInfo);
      if (closeInfo.closeCode !== undefined) code = checkInt('closeInfo.closeCode', closeInfo.closeCode, 0, 65535);
      if (closeInfo.reason !== undefined) reason = checkString('closeInfo.reason', closeInfo.reason);
    }
    try {
      this.#native.close(code, reason);
    } catch (err) {
      throw translate(err);
    }
  }

  /** `await using ws = await request.acceptWebSocket()`: closes with 1000 and waits for the end. */
  async [asyncDispose]() {
    try {
      this.#native.close(1000, '');
    } catch {
      // Already closed.
    }
    await this.closed;
  }

  async *[Symbol.asyncIterator]() {
    const reader = this.readable.getReader();
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) return;
        yield value;
      }
    } finally {
      reader.releaseLock();
    }
  }
}

module.exports = { WebSocketSession };
