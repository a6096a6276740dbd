'use strict';
// Sessions: WebTransportSession (shaped like the browser's WebTransport object), its
// DatagramDuplexStream, the SessionWaker that keeps one native wait per session for
// everything it can deliver, and the options of the streams a session opens.

const native = require('./native.js');
const { translate, rethrow } = require('./errors.js');
const { checkInt, checkString, checkObject, toBuffer, MAX_U32, asyncDispose } = require('./check.js');
const {
  INTERNAL,
  checkSendOrder,
  pulled,
  WebTransportReceiveStream,
  WebTransportSendStream,
  WebTransportBidirectionalStream,
} = require('./streams.js');

/** Most datagrams one native call hands over. */
const DATAGRAM_BATCH = 64;

// What NativeSession.ready() waits for and reports.
const {
  bi: READY_BI,
  uni: READY_UNI,
  datagram: READY_DATAGRAM,
  closed: READY_CLOSED,
  draining: READY_DRAINING,
} = native.readinessBits();

/**
 * One native wait per session for everything it can deliver: incoming streams, datagrams,
 * its end and a drain. Each pending native call holds a threadsafe function and a runtime
 * task (about 3 KiB), so an idle session keeps one instead of one per kind. `wait(kind)`
 * resolves once that kind is ready (or the session has ended); the caller then takes what
 * is ready with a synchronous try, and waits again if someone else took it first.
 */
class SessionWaker {
  #native;
  #want = 0;
  #asked = 0;
  #scheduled = false;
  #ended = false;
  /** Resolvers by kind bit. */
  #waiters = new Map();

  constructor(nativeSession) {
    this.#native = nativeSession;
  }

  /** Resolves `true` when `kind` is ready, `false` if the session ended without it. */
  wait(kind) {
    if (this.#ended) return Promise.resolve(kind !== READY_DRAINING);
    return new Promise((resolve, reject) => {
      let list = this.#waiters.get(kind);
      if (list === undefined) this.#waiters.set(kind, (list = []));
      list.push({ resolve, reject });
      this.#want |= kind;
      if (this.#asked !== 0) {
        // A wait is pending without this kind: widen it in place (a new wait would cost a
        // threadsafe function and a task).
        if ((this.#want & ~this.#asked) !== 0) {
          this.#asked = this.#want;
          this.#native.setInterest(this.#asked);
        }
      } else {
        this.#askSoon();
      }
    });
  }

  /**
   * Asks once the current turn's promise reactions have run: the kinds a handler asks for
   * together, and the consumers a wake-up fed coming back for more, share one native wait
   * instead of each widening the last.
   */
  #askSoon() {
    if (this.#scheduled) return;
    this.#scheduled = true;
    setImmediate(() => {
      this.#scheduled = false;
      this.#ask();
    });
  }

  #ask() {
    if (this.#want === 0 || this.#asked !== 0) return;
    this.#asked = this.#want;
    this.#native.setInterest(this.#asked);
    this.#native.ready().then(
      (bits) => {
        this.#asked = 0;
        if (bits & READY_CLOSED) this.#end(bits);
        else this.#wake(bits);
        this.#askSoon();
      },
      (err) => {
        this.#asked = 0;
        const error = translate(err);
        for (const list of this.#waiters.values()) for (const w of list) w.reject(error);
        this.#waiters.clear();
        this.#want = 0;
      },
    );
  }

  #wake(bits) {
    for (const [kind, list] of this.#waiters) {
      if ((bits & kind) === 0) continue;
      this.#waiters.delete(kind);
      this.#want &= ~kind;
      for (const w of list) w.resolve(true);
    }
  }

  #end(bits) {
    this.#ended = true;
    this.#want = 0;
    const waiters = this.#waiters;
    this.#waiters = new Map();
    for (const [kind, list] of waiters) {
      // A drain that did not come before the end never comes.
      const ready = kind !== READY_DRAINING || (bits & READY_DRAINING) !== 0;
      for (const w of list) w.resolve(ready);
    }
  }
}

/**
 * Takes the next item with `take()` (undefined: none yet; null: the session ended),
 * waiting on the session's waker for `kind` while there is none.
 */
function nextOf(waker, kind, take) {
  const again = () => {
    const item = take();
    return item === undefined ? waker.wait(kind).then(again) : item;
  };
  return waker.wait(kind).then(again);
}

/**
 * Enqueues a batch of datagrams as the native module packs them: each behind its length
 * in two bytes, little-endian. The datagrams are views of the batch's one buffer.
 */
function unpackDatagrams(batch, controller) {
  let at = 0;
  while (at < batch.byteLength) {
    const length = batch[at] | (batch[at + 1] << 8);
    controller.enqueue(new Uint8Array(batch.buffer, batch.byteOffset + at + 2, length));
    at += 2 + length;
  }
}

/** Datagrams of one session (W3C WebTransportDatagramDuplexStream). */
class DatagramDuplexStream {
  #session;
  #readable;
  #writable;

  #waker;

  constructor(nativeSession, waker) {
    this.#session = nativeSession;
    this.#waker = waker;
  }

  /** Incoming datagrams as a ReadableStream of Uint8Array; ends when the session ends. */
  get readable() {
    const s = this.#session;
    const take = () => s.tryRecvDatagrams(DATAGRAM_BATCH);
    this.#readable ??= pulled(() => nextOf(this.#waker, READY_DATAGRAM, take), unpackDatagrams, 1, take);
    return this.#readable;
  }

  /** The default writable (created on first use by createWritable()). */
  get writable() {
    if (!this.#writable) this.#writable = this.createWritable();
    return this.#writable;
  }

  /**
   * A WritableStream of datagrams. A write hands the datagram to QUIC at once and resolves;
   * when the outgoing buffer is full the oldest queued datagram is dropped, as datagrams
   * may be. One larger than maxDatagramSize errors the stream with ERR_DATAGRAM_TOO_LARGE
   * at its write (use send() to try sizes without losing the stream). Writes are not
   * gathered into batches: a batch leaves in a burst, and Firefox keeps only ten unread
   * incoming datagrams, dropping the rest.
   */
  createWritable() {
    const s = this.#session;
    return new WritableStream(
      {
        write(chunk) {
          try {
            s.sendDatagramNow(toBuffer('datagram', chunk));
          } catch (err) {
            throw translate(err);
          }
        },
      },
      { highWaterMark: 1 },
    );
  }

  /**
   * Sends one datagram, waiting while the outgoing buffer is full; rejects
   * (ERR_DATAGRAM_TOO_LARGE, ...) without side effects.
   */
  send(data) {
    let buf;
    try {
      buf = toBuffer('data', data);
    } catch (e) {
      return Promise.reject(e);
    }
    return this.#session.sendDatagram(buf).catch(rethrow);
  }

  /** The largest payload that fits in one datagram right now. */
  get maxDatagramSize() {
    return this.#session.maxDatagramSize;
  }
}

/** An accepted session, shaped like the browser's WebTransport object. */
class WebTransportSession {
  #native;
  #bidi;
  #uni;
  #ready;
  #draining;

  #waker;

  constructor(nativeSession) {
    this.#native = nativeSession;
    this.#waker = new SessionWaker(nativeSession);
    // Made at once, unlike draining: nearly every application awaits it.
    /** Resolves with { closeCode, reason, initiator } however the session ends. */
    this.closed = this.#waker.wait(READY_CLOSED).then(() => {
      // Set by the time the end is reported; the fallback is for a session torn down
      // without its close being recorded.
      const i = nativeSession.closeInfo ?? { closeCode: 0, reason: '', initiator: 'connection' };
      return { closeCode: i.closeCode, reason: i.reason, initiator: i.initiator };
    });
    this.datagrams = new DatagramDuplexStream(nativeSession, this.#waker);
  }

  /** Already resolved: a session exists only once accepted. */
  get ready() {
    this.#ready ??= Promise.resolve();
    return this.#ready;
  }

  /** Resolves when the client asks to drain the session (stays pending otherwise). */
  get draining() {
    // The session's one native wait reports a drain (also one that came earlier) once
    // something asks; a session that ends undrained leaves this pending.
    this.#draining ??= this.#waker
      .wait(READY_DRAINING)
      .then((d) => (d ? undefined : new Promise(() => {})));
    return this.#draining;
  }

  /** The session ID (the CONNECT stream's QUIC ID). */
  get id() {
    return this.#native.id;
  }
  /** The request path, including the query. */
  get path() {
    return this.#native.path;
  }
  /** The subprotocol chosen at accept, or '' (as in the browser API). */
  get protocol() {
    return this.#native.protocol ?? '';
  }
  /**
   * What carries the session: 'webtransport' (HTTP/3) or 'qmux' (over a WebSocket, for
   * clients without WebTransport; datagrams are reliable there).
   */
  get transport() {
    return this.#native.transport;
  }
  /** The client's IP address. */
  get remoteAddress() {
    return this.#native.remoteAddress;
  }
  /** The client's port. */
  get remotePort() {
    return this.#native.remotePort;
  }

  /** Client-opened bidirectional streams: a ReadableStream of WebTransportBidirectionalStream. */
  get incomingBidirectionalStreams() {
    const s = this.#native;
    const take = () => s.tryAcceptBi();
    this.#bidi ??= pulled(
      () => nextOf(this.#waker, READY_BI, take),
      (b, c) => c.enqueue(new WebTransportBidirectionalStream(INTERNAL, b)),
      0,
      take,
    );
    return this.#bidi;
  }

  /** Client-opened unidirectional streams: a ReadableStream of WebTransportReceiveStream. */
  get incomingUnidirectionalStreams() {
    const s = this.#native;
    const take = () => s.tryAcceptUni();
    this.#uni ??= pulled(
      () => nextOf(this.#waker, READY_UNI, take),
      (r, c) => c.enqueue(new WebTransportReceiveStream(INTERNAL, r)),
      0,
      take,
    );
    return this.#uni;
  }

  /** Opens a bidirectional stream toward the client. */
  async createBidirectionalStream(options) {
    const sendOrder = streamOptions(options);
    const b = await this.#native.openBi().catch(rethrow);
    return new WebTransportBidirectionalStream(INTERNAL, b, sendOrder);
  }

  /** Opens a unidirectional stream toward the client; resolves to its WebTransportSendStream. */
  async createUnidirectionalStream(options) {
    const sendOrder = streamOptions(options);
    const send = await this.#native.openUni().catch(rethrow);
    return new WebTransportSendStream(INTERNAL, send, sendOrder);
  }

  /** Closes the session with CLOSE_WEBTRANSPORT_SESSION { closeCode, reason }. */
  close(closeInfo) {
    let code = 0;
    let reason = '';
    if (closeInfo !== undefined) {
      checkObject('closeInfo', closeInfo);
      if (closeInfo.closeCode !== undefined) code = checkInt('closeInfo.closeCode', closeInfo.closeCode, 0, MAX_U32);
      if (closeInfo.reason !== undefined) reason = checkString('closeInfo.reason', closeInfo.reason);
    }
    this.#native.close(code, reason);
  }

  /** Asks the client to wrap up (DRAIN_WEBTRANSPORT_SESSION) without closing. */
  drain() {
    this.#native.drain();
  }

  /** `await using session = await request.accept()`: closes with code 0 and waits for the end. */
  async [asyncDispose]() {
    this.close();
    await this.closed;
  }

  /**
   * Connection statistics (shared by every session on the same QUIC connection), with the
   * W3C WebTransportConnectionStats members quinn can fill; the others stay undefined.
   */
  async getStats() {
    const s = this.#native.stats();
    return {
      timestamp: Date.now(),
      bytesSent: s.bytesSent,
      bytesReceived: s.bytesReceived,
      bytesLost: s.bytesLost,
      packetsSent: s.packetsSent,
      packetsReceived: s.packetsReceived,
      packetsLost: s.packetsLost,
      smoothedRtt: s.smoothedRtt,
      minRtt: s.minRtt ?? undefined,
      congestionWindow: s.congestionWindow,
      mtu: s.mtu,
      datagrams: { droppedIncoming: s.datagramsDropped },
    };
  }
}

/** The sendOrder of WebTransportSendStreamOptions (0 when absent, as in the browser). */
function streamOptions(options) {
  if (options === undefined) return 0;
  checkObject('options', options);
  if (options.sendGroup !== undefined && options.sendGroup !== null) {
    throw new TypeError('options.sendGroup is not supported; only null may be given');
  }
  if (options.sendOrder === undefined || options.sendOrder === null) return 0;
  return checkSendOrder('options.sendOrder', options.sendOrder);
}

module.exports = { DatagramDuplexStream, WebTransportSession };
