// Ferrovia browser connector (shipped as 'ferrovia/client').
//
// One W3C-WebTransport-shaped object for a page: native WebTransport over HTTP/3 where that
// works, and QMux (draft-ietf-quic-qmux-02) over a WebSocket to the same URL where it does
// not (no WebTransport, a rejected or stalled handshake, Safari). Our own implementation of
// the draft, in the framing Ferrovia and moq use on WebSockets: each binary message is one
// QMux record without its Size prefix. No dependencies and no Node APIs: it runs in browsers
// as is and loads in Node 20 for the codec's unit tests.

const VERSION = 'qmux-02';
const MIN_RECORD = 16382; // draft §5.2: the smallest max_record_size a peer may declare
const RECORD_CAP = 65536; // our own records, and the largest we accept
const TWO32 = 2 ** 32;
const MAX_U62 = (1n << 62n) - 1n;

// QUIC transport error codes (RFC 9000 §20.1) used in CONNECTION_CLOSE 0x1c.
const E = {
  NO_ERROR: 0x0, INTERNAL_ERROR: 0x1, FLOW_CONTROL_ERROR: 0x3, STREAM_LIMIT_ERROR: 0x4,
  STREAM_STATE_ERROR: 0x5, FINAL_SIZE_ERROR: 0x6, FRAME_ENCODING_ERROR: 0x7,
  TRANSPORT_PARAMETER_ERROR: 0x8, PROTOCOL_VIOLATION: 0xa,
};

// The QMux-only frame types need 8-byte varints, beyond Number's exact range.
const QX_TRANSPORT_PARAMETERS = 0x3f5153300d0a0d0an;
const QX_PING = 0x348c67529ef8c7bdn;
const QX_PING_RESPONSE = 0x348c67529ef8c7ben;

/** A violation of the protocol by the peer, closed with CONNECTION_CLOSE 0x1c. */
class QmuxError extends Error {
  constructor(code, reason, frameType = 0) {
    super(reason);
    this.code = code;
    this.frameType = frameType;
  }
}
const truncated = (what) => new QmuxError(E.FRAME_ENCODING_ERROR, `truncated ${what}`);

// ------------------------------------------------------------------------------ varints

/** Encoded size of a QUIC varint (RFC 9000 §16); throws outside 0..2^62-1. */
function varintSize(v) {
  if (typeof v === 'bigint') {
    if (v < 0n || v > MAX_U62) throw new RangeError(`varint out of range: ${v}`);
    return v < 64n ? 1 : v < 16384n ? 2 : v < 1073741824n ? 4 : 8;
  }
  if (!Number.isSafeInteger(v) || v < 0) throw new RangeError(`varint out of range: ${v}`);
  return v < 64 ? 1 : v < 16384 ? 2 : v < 1073741824 ? 4 : 8;
}

/** A growable byte buffer; `len` can be wound back to undo a frame that did not fit. */
class Writer {
  constructor(capacity = 64) {
    this.buf = new Uint8Array(capacity);
    this.len = 0;
  }
  ensure(n) {
    if (this.len + n <= this.buf.length) return;
    const next = new Uint8Array(Math.max(this.buf.length * 2, this.len + n));
    next.set(this.buf.subarray(0, this.len));
    this.buf = next;
  }
  varint(v) {
    const n = varintSize(v);
    this.ensure(n);
    const b = this.buf;
    const p = this.len;
    this.len += n;
    if (n === 8) {
      const hi = typeof v === 'bigint' ? Number(v >> 32n) : Math.floor(v / TWO32);
      const lo = typeof v === 'bigint' ? Number(v & 0xffffffffn) : v % TWO32;
      b[p] = 0xc0 | (hi >>> 24); b[p + 1] = hi >>> 16; b[p + 2] = hi >>> 8; b[p + 3] = hi;
      b[p + 4] = lo >>> 24; b[p + 5] = lo >>> 16; b[p + 6] = lo >>> 8; b[p + 7] = lo;
      return;
    }
    v = Number(v);
    if (n === 1) b[p] = v;
    else if (n === 2) { b[p] = 0x40 | (v >> 8); b[p + 1] = v; }
    else { b[p] = 0x80 | (v >>> 24); b[p + 1] = v >>> 16; b[p + 2] = v >>> 8; b[p + 3] = v; }
  }
  bytes(data) {
    this.ensure(data.length);
    this.buf.set(data, this.len);
    this.len += data.length;
  }
  /** The written bytes (a view, valid until the next write). */
  view() {
    return this.buf.subarray(0, this.len);
  }
}

/** Reads varints and byte runs; values above 2^53-1 come back as BigInt. */
class Reader {
  constructor(bytes) {
    this.b = bytes;
    this.p = 0;
  }
  get left() {
    return this.b.length - this.p;
  }
  varint(what = 'varint') {
    const b = this.b;
    const p = this.p;
    if (p >= b.length) throw truncated(what);
    const n = 1 << (b[p] >> 6);
    if (p + n > b.length) throw truncated(what);
    this.p += n;
    if (n === 1) return b[p] & 0x3f;
    if (n === 2) return ((b[p] & 0x3f) << 8) | b[p + 1];
    const hi = (b[p] & 0x3f) * 2 ** 24 + ((b[p + 1] << 16) | (b[p + 2] << 8) | b[p + 3]);
    if (n === 4) return hi;
    const lo = b[p + 4] * 2 ** 24 + ((b[p + 5] << 16) | (b[p + 6] << 8) | b[p + 7]);
    return hi < 2 ** 21 ? hi * TWO32 + lo : (BigInt(hi) << 32n) | BigInt(lo);
  }
  bytes(n, what = 'bytes') {
    if (typeof n !== 'number' || n > this.left) throw truncated(what);
    const out = this.b.subarray(this.p, this.p + n);
    this.p += n;
    return out;
  }
}

/** Flow-control values past 2^53 mean "unlimited" to us. */
const num = (v) => (typeof v === 'bigint' ? Number.MAX_SAFE_INTEGER : v);

// ------------------------------------------------------------------ transport parameters

const PARAM_IDS = {
  maxIdleTimeout: 0x01,
  initialMaxData: 0x04,
  initialMaxStreamDataBidiLocal: 0x05,
  initialMaxStreamDataBidiRemote: 0x06,
  initialMaxStreamDataUni: 0x07,
  initialMaxStreamsBidi: 0x08,
  initialMaxStreamsUni: 0x09,
  maxDatagramFrameSize: 0x20,
  maxRecordSize: 0x0571c59429cd0845n,
};
const PARAM_RESET_STREAM_AT = 0x1d;
const PARAM_NAMES = new Map(Object.entries(PARAM_IDS).map(([k, v]) => [v, k]));

/** What an absent parameter means: no credit at all (RFC 9000 §18.2), records of 16382. */
function defaultParams() {
  return {
    maxIdleTimeout: 0, initialMaxData: 0, initialMaxStreamDataBidiLocal: 0,
    initialMaxStreamDataBidiRemote: 0, initialMaxStreamDataUni: 0, initialMaxStreamsBidi: 0,
    initialMaxStreamsUni: 0, maxDatagramFrameSize: 0, maxRecordSize: MIN_RECORD, resetStreamAt: false,
  };
}

function encodeParams(params) {
  const p = { ...defaultParams(), ...params };
  const w = new Writer();
  for (const [name, id] of Object.entries(PARAM_IDS)) {
    // Defaults are what the receiver assumes anyway; omitting them keeps the record small.
    if (p[name] === defaultParams()[name]) continue;
    w.varint(id);
    w.varint(varintSize(p[name]));
    w.varint(p[name]);
  }
  if (p.resetStreamAt) {
    w.varint(PARAM_RESET_STREAM_AT);
    w.varint(0);
  }
  return w.view().slice();
}

function decodeParams(bytes) {
  const bad = (why) => new QmuxError(E.TRANSPORT_PARAMETER_ERROR, why, QX_TRANSPORT_PARAMETERS);
  const r = new Reader(bytes);
  const p = defaultParams();
  const seen = new Set();
  try {
    while (r.left) {
      const id = r.varint();
      const value = r.bytes(r.varint());
      const key = typeof id === 'bigint' ? id : BigInt(id);
      if (seen.has(key)) throw bad(`duplicate transport parameter 0x${key.toString(16)}`);
      seen.add(key);
      // QUIC v1 parameters that make no sense without QUIC packets (draft §5.1).
      if (id === 0x00 || id === 0x02 || id === 0x03 || (id >= 0x0a && id <= 0x10)) {
        throw bad(`prohibited transport parameter 0x${id.toString(16)}`);
      }
      if (id === PARAM_RESET_STREAM_AT) {
        if (value.length) throw bad('reset_stream_at carries a value');
        p.resetStreamAt = true;
        continue;
      }
      const name = PARAM_NAMES.get(id);
      if (!name) continue; // unknown and greasing parameters are ignored
      const vr = new Reader(value);
      const v = vr.varint();
      if (vr.left) throw bad(`transport parameter 0x${key.toString(16)} has trailing bytes`);
      if (name.startsWith('initialMaxStreams') && v > 2 ** 60) throw bad('stream count above 2^60');
      p[name] = num(v);
    }
  } catch (e) {
    if (e instanceof QmuxError && e.code === E.FRAME_ENCODING_ERROR) throw bad('transport parameters truncated');
    throw e;
  }
  if (p.maxRecordSize < MIN_RECORD) throw bad('max_record_size below 16382');
  return p;
}

// ---------------------------------------------------------------------------- frames

const utf8 = new TextEncoder();
const fromUtf8 = new TextDecoder();

/** UTF-8 bytes of `s`, cut to `max` bytes at a character boundary. */
function utf8Bytes(s, max = 1024) {
  const b = utf8.encode(String(s ?? ''));
  if (b.length <= max) return b;
  let end = max;
  while (end > 0 && (b[end] & 0xc0) === 0x80) end--;
  return b.subarray(0, end);
}

/** Decodes one frame. STREAM and DATAGRAM payloads are copies the caller may hand out. */
function decodeFrame(r) {
  const start = r.p;
  const ty = r.varint('frame type');
  const v = () => r.varint(`frame 0x${ty.toString(16)}`);
  const blob = () => r.bytes(v(), `frame 0x${ty.toString(16)}`);
  const count = () => {
    const n = v();
    if (n > 2 ** 60) throw new QmuxError(E.FRAME_ENCODING_ERROR, 'stream count above 2^60', ty);
    return n;
  };
  if (typeof ty === 'bigint') {
    if (ty === QX_TRANSPORT_PARAMETERS) return { type: 'transport_parameters', params: decodeParams(blob()) };
    if (ty === QX_PING) return { type: 'ping', seq: v() };
    if (ty === QX_PING_RESPONSE) return { type: 'ping_response', seq: v() };
    throw new QmuxError(E.FRAME_ENCODING_ERROR, `unknown frame type 0x${ty.toString(16)}`, ty);
  }
  if (ty >= 0x08 && ty <= 0x0f) {
    const id = v();
    const offset = ty & 0x04 ? v() : 0;
    // Without LEN the data runs to the end of the record (draft §3.2).
    const data = ty & 0x02 ? blob() : r.bytes(r.left);
    if (typeof id === 'bigint' || typeof offset === 'bigint' || offset + data.length > Number.MAX_SAFE_INTEGER) {
      throw new QmuxError(E.FRAME_ENCODING_ERROR, 'stream ID or offset out of range', ty);
    }
    return { type: 'stream', id, offset, fin: (ty & 0x01) === 1, data: data.slice() };
  }
  switch (ty) {
    case 0x00: {
      while (r.left && r.b[r.p] === 0) r.p++;
      return { type: 'padding', length: r.p - start };
    }
    case 0x04: return { type: 'reset_stream', id: v(), code: v(), finalSize: v() };
    case 0x05: return { type: 'stop_sending', id: v(), code: v() };
    case 0x10: return { type: 'max_data', max: v() };
    case 0x11: return { type: 'max_stream_data', id: v(), max: v() };
    case 0x12: case 0x13: return { type: 'max_streams', uni: ty === 0x13, count: count() };
    case 0x14: return { type: 'data_blocked', limit: v() };
    case 0x15: return { type: 'stream_data_blocked', id: v(), limit: v() };
    case 0x16: case 0x17: return { type: 'streams_blocked', uni: ty === 0x17, limit: count() };
    case 0x1c: return { type: 'connection_close', code: v(), frameType: v(), reason: fromUtf8.decode(blob()) };
    case 0x1d: return { type: 'application_close', code: v(), reason: fromUtf8.decode(blob()) };
    case 0x24: {
      const f = { type: 'reset_stream_at', id: v(), code: v(), finalSize: v(), reliableSize: v() };
      if (f.reliableSize > f.finalSize) throw new QmuxError(E.FRAME_ENCODING_ERROR, 'reliable size above final size', ty);
      return f;
    }
    case 0x30: return { type: 'datagram', data: r.bytes(r.left).slice() };
    case 0x31: return { type: 'datagram', data: blob().slice() };
    // QUIC frames that QMux forbids (draft §4): liveness uses QX_PING, there is no loss to repair.
    case 0x01: case 0x02: case 0x03: case 0x06: case 0x07:
    case 0x18: case 0x19: case 0x1a: case 0x1b: case 0x1e:
      throw new QmuxError(E.FRAME_ENCODING_ERROR, `prohibited frame type 0x${ty.toString(16)}`, ty);
    default:
      throw new QmuxError(E.FRAME_ENCODING_ERROR, `unknown frame type 0x${ty.toString(16)}`, ty);
  }
}

/** Appends one frame. STREAM frames always carry a Length so any frame may follow them. */
function encodeFrame(w, f) {
  switch (f.type) {
    case 'padding': w.ensure(f.length); w.buf.fill(0, w.len, w.len + f.length); w.len += f.length; return;
    case 'reset_stream': w.varint(0x04); w.varint(f.id); w.varint(f.code); w.varint(f.finalSize); return;
    case 'stop_sending': w.varint(0x05); w.varint(f.id); w.varint(f.code); return;
    case 'stream':
      w.varint(0x0a | (f.offset ? 0x04 : 0) | (f.fin ? 0x01 : 0));
      w.varint(f.id);
      if (f.offset) w.varint(f.offset);
      w.varint(f.data.length);
      w.bytes(f.data);
      return;
    case 'max_data': w.varint(0x10); w.varint(f.max); return;
    case 'max_stream_data': w.varint(0x11); w.varint(f.id); w.varint(f.max); return;
    case 'max_streams': w.varint(f.uni ? 0x13 : 0x12); w.varint(f.count); return;
    case 'data_blocked': w.varint(0x14); w.varint(f.limit); return;
    case 'stream_data_blocked': w.varint(0x15); w.varint(f.id); w.varint(f.limit); return;
    case 'streams_blocked': w.varint(f.uni ? 0x17 : 0x16); w.varint(f.limit); return;
    case 'connection_close': case 'application_close': {
      const reason = utf8Bytes(f.reason);
      w.varint(f.type === 'connection_close' ? 0x1c : 0x1d);
      w.varint(f.code);
      if (f.type === 'connection_close') w.varint(f.frameType ?? 0);
      w.varint(reason.length);
      w.bytes(reason);
      return;
    }
    case 'reset_stream_at':
      w.varint(0x24); w.varint(f.id); w.varint(f.code); w.varint(f.finalSize); w.varint(f.reliableSize);
      return;
    case 'datagram': w.varint(0x31); w.varint(f.data.length); w.bytes(f.data); return;
    case 'transport_parameters': {
      const block = encodeParams(f.params);
      w.varint(QX_TRANSPORT_PARAMETERS);
      w.varint(block.length);
      w.bytes(block);
      return;
    }
    case 'ping': w.varint(QX_PING); w.varint(f.seq); return;
    case 'ping_response': w.varint(QX_PING_RESPONSE); w.varint(f.seq); return;
    default: throw new TypeError(`unknown frame type ${f.type}`);
  }
}

/** One record (the Frames field; on a WebSocket the message is the record). */
function encodeRecord(frames) {
  const w = new Writer(256);
  for (const f of frames) encodeFrame(w, f);
  return w.view().slice();
}

function decodeRecord(bytes) {
  const r = new Reader(bytes);
  const frames = [];
  while (r.left) frames.push(decodeFrame(r));
  return frames;
}

/** Size-prefixed records as the draft puts them on a byte stream (not used on WebSockets). */
function encodeSizedRecord(frames) {
  const body = encodeRecord(frames);
  const w = new Writer(body.length + 8);
  w.varint(body.length);
  w.bytes(body);
  return w.view().slice();
}

// ---------------------------------------------------------------------------- errors

class FallbackWebTransportError extends (globalThis.DOMException ?? Error) {
  // Takes both the dictionary form browsers ship and the spec's (message, options).
  constructor(message = '', options = {}) {
    if (message && typeof message === 'object') [message, options] = [message.message ?? '', message];
    super(String(message), 'WebTransportError');
    if (this.name !== 'WebTransportError') this.name = 'WebTransportError';
    this.source = 'stream';
    this.streamErrorCode = options.streamErrorCode ?? null;
  }
}

/** The global WebTransportError where there is one, else our stand-in. */
export const WebTransportError = globalThis.WebTransportError ?? FallbackWebTransportError;

/**
 * A WebTransportError with any source and a full u32 code. Script can only construct
 * source 'stream', and Chromium 156 and Firefox 153 clamp the code to 255, so both are
 * set as own properties when the constructor did not produce them.
 */
function wtError(message, source, code = null) {
  const G = WebTransportError;
  let e;
  for (const make of [() => new G({ message }), () => new G(message)]) {
    try {
      e = make();
      if (e.message === message) break;
    } catch { /* the other signature */ }
  }
  e ??= new FallbackWebTransportError(message);
  if (e.source !== source) Object.defineProperty(e, 'source', { value: source, enumerable: true });
  if (e.streamErrorCode !== code) Object.defineProperty(e, 'streamErrorCode', { value: code, enumerable: true });
  return e;
}

/** The application error code a page passed to abort()/cancel(): a u32, else 0. */
function codeOf(reason) {
  const c = reason?.streamErrorCode;
  return Number.isInteger(c) && c >= 0 && c < TWO32 ? c : 0;
}

function toBytes(chunk) {
  if (chunk instanceof ArrayBuffer) return new Uint8Array(chunk.slice(0));
  if (ArrayBuffer.isView(chunk)) return new Uint8Array(chunk.buffer, chunk.byteOffset, chunk.byteLength).slice();
  throw new TypeError('expected an ArrayBuffer or ArrayBufferView');
}

const describe = (e) => (e && e.message) || String(e);
const never = new Promise(() => {});
function deferred() {
  const d = {};
  d.promise = new Promise((res, rej) => { d.resolve = res; d.reject = rej; });
  d.promise.catch(() => {}); // like WebTransport's own promises: no unhandled-rejection noise
  return d;
}

/** A pull-driven ReadableStream fed by push(); keeps at most `limit` items (oldest dropped). */
class Feed {
  constructor(limit = Infinity) {
    this.items = [];
    this.limit = limit;
    this.wake = null;
    this.done = false;
    this.readable = new ReadableStream({
      start: (c) => { this.c = c; },
      pull: () => {
        if (this.items.length) return this.c.enqueue(this.items.shift());
        return new Promise((r) => { this.wake = r; });
      },
      cancel: () => { this.done = true; this.items = []; },
    }, { highWaterMark: 0 });
  }
  push(item) {
    if (this.done) return false;
    if (this.wake) {
      this.c.enqueue(item);
      this.wake();
      this.wake = null;
    } else {
      this.items.push(item);
      if (this.items.length > this.limit) this.items.shift();
    }
    return true;
  }
  end(error) {
    if (this.done) return;
    this.done = true;
    this.items = [];
    try { error ? this.c.error(error) : this.c.close(); } catch { /* already closed */ }
    this.wake?.();
  }
}

// --------------------------------------------------------------------------- session

const BIDI = 0;
const UNI = 1;

/**
 * A WebTransport-shaped session over QMux on a WebSocket, as the client. Stream IDs,
 * flow control and close follow RFC 9000 as draft-ietf-quic-qmux-02 reuses them.
 */
class QmuxTransport {
  constructor(url, options = {}) {
    const q = options.qmux ?? {};
    const streamWindow = q.maxStreamData ?? 1 << 20;
    this.hwm = q.highWaterMark ?? 256 * 1024;
    this.keepAliveMs = q.keepAlive ?? 10000;
    this.local = {
      ...defaultParams(),
      maxIdleTimeout: q.idleTimeout ?? 30000,
      // As large as the server's own, so streams the page has not read yet (each within its
      // 1 MiB) rarely hold back the rest of the session.
      initialMaxData: q.maxData ?? 16 << 20,
      initialMaxStreamDataBidiLocal: streamWindow,
      initialMaxStreamDataBidiRemote: streamWindow,
      initialMaxStreamDataUni: streamWindow,
      initialMaxStreamsBidi: q.maxStreams ?? 100,
      initialMaxStreamsUni: q.maxStreams ?? 100,
      maxDatagramFrameSize: RECORD_CAP,
      maxRecordSize: RECORD_CAP,
    };
    this.peer = null;
    this.transport = 'qmux';
    this.reliability = 'reliable-only';
    this.protocol = '';
    this.state = 'connecting';
    this.streams = new Map();
    this.opened = [0, 0]; // streams we opened, per direction
    this.peerLimit = [0, 0]; // the peer's MAX_STREAMS for ours
    this.openWaiters = [[], []];
    this.remoteOpened = [0, 0];
    this.remoteLimit = [this.local.initialMaxStreamsBidi, this.local.initialMaxStreamsUni];
    this.remoteLimitSent = [...this.remoteLimit];
    this.peerMaxData = 0; // connection credit the peer gave us
    this.dataSent = 0;
    this.maxData = this.local.initialMaxData; // connection credit we gave
    this.maxDataSent = this.maxData;
    this.dataCounted = 0; // highest received offsets, summed (what the peer used)
    this.dataConsumed = 0; // delivered to the page or discarded
    this.control = []; // RESET_STREAM / STOP_SENDING, in order
    this.creditDue = new Set(); // streams owed MAX_STREAM_DATA
    this.sendQueue = []; // streams with data or FIN to send, round-robin
    this.dgramOut = [];
    this.pingSeq = 0;
    this.pingDue = null;
    this.pongDue = null;
    this.ready_ = deferred();
    this.closed_ = deferred();
    this.ready = this.ready_.promise;
    this.closed = this.closed_.promise;
    this.draining = never; // QMux has no DRAIN
    this.incomingBidi = new Feed();
    this.incomingUni = new Feed();
    this.incomingBidirectionalStreams = this.incomingBidi.readable;
    this.incomingUnidirectionalStreams = this.incomingUni.readable;
    this.dgramIn = new Feed(q.datagramQueue ?? 1024);
    const self = this;
    let writable;
    this.datagrams = {
      readable: this.dgramIn.readable,
      get writable() { return (writable ??= self.datagramWritable()); },
      createWritable: () => this.datagramWritable(),
      get maxDatagramSize() { return self.maxDatagramSize(); },
    };

    const target = new URL(url, globalThis.location?.href);
    if (target.protocol === 'https:') target.protocol = 'wss:';
    else if (target.protocol === 'http:') target.protocol = 'ws:';
    target.hash = '';
    const protocols = [...(options.protocols ?? []).map((p) => `${VERSION}.${p}`), VERSION];
    const WS = q.WebSocket ?? globalThis.WebSocket;
    if (typeof WS !== 'function') throw new TypeError('WebSocket is not available');
    const ws = (this.ws = new WS(target.href, protocols));
    ws.binaryType = 'arraybuffer';
    ws.onopen = () => this.onOpen();
    ws.onmessage = (e) => this.onMessage(e.data);
    ws.onclose = (e) => {
      // 4300..4599 before the session is up: the server refused the request in-band (see
      // refusalError).
      if (e.code >= 4300 && e.code <= 4599 && this.state === 'connecting') {
        this.terminate(null, refusalError(e.code - 4000, e.reason), null);
        return;
      }
      this.lost(`WebSocket closed (${e.code}${e.reason ? `: ${e.reason}` : ''})`);
    };
    ws.onerror = () => {}; // onclose follows with the code
    this.connectTimer = setTimeout(() => this.lost('QMux handshake timed out'), q.connectTimeout ?? 10000);
  }

  // ---------------------------------------------------------------- connection

  onOpen() {
    const p = this.ws.protocol;
    if (p !== VERSION && !p.startsWith(`${VERSION}.`)) {
      this.lost(`the server answered subprotocol ${JSON.stringify(p)}, not ${VERSION}`);
      return;
    }
    this.protocol = p.slice(VERSION.length + 1);
    // Our parameters go first, without waiting for the peer's (draft §4.2).
    this.ws.send(encodeRecord([{ type: 'transport_parameters', params: this.local }]));
  }

  onMessage(data) {
    if (this.state === 'closed') return;
    if (typeof data === 'string') {
      this.fail(new QmuxError(E.PROTOCOL_VIOLATION, 'text message on a QMux WebSocket'));
      return;
    }
    this.lastHeard = Date.now();
    const bytes = new Uint8Array(data);
    try {
      if (bytes.length > this.local.maxRecordSize) throw new QmuxError(E.FRAME_ENCODING_ERROR, 'record exceeds max_record_size');
      const r = new Reader(bytes);
      while (r.left && this.state !== 'closed') this.onFrame(decodeFrame(r));
    } catch (e) {
      this.fail(e instanceof QmuxError ? e : new QmuxError(E.INTERNAL_ERROR, describe(e)));
      return;
    }
    this.flush();
  }

  onFrame(f) {
    if (!this.peer) {
      if (f.type !== 'transport_parameters') throw new QmuxError(E.PROTOCOL_VIOLATION, 'first frame is not QX_TRANSPORT_PARAMETERS');
      this.onParams(f.params);
      return;
    }
    switch (f.type) {
      case 'padding': case 'data_blocked': case 'streams_blocked': case 'stream_data_blocked': case 'ping_response':
        return;
      case 'transport_parameters':
        throw new QmuxError(E.PROTOCOL_VIOLATION, 'second QX_TRANSPORT_PARAMETERS', QX_TRANSPORT_PARAMETERS);
      case 'ping':
        this.pongDue = f.seq; // one response may answer every request so far (§4.3)
        return;
      case 'max_data':
        this.peerMaxData = Math.max(this.peerMaxData, num(f.max));
        return;
      case 'max_streams': {
        const d = f.uni ? UNI : BIDI;
        if (num(f.count) > this.peerLimit[d]) {
          this.peerLimit[d] = num(f.count);
          this.wakeOpeners(d);
        }
        return;
      }
      case 'max_stream_data': {
        const s = this.streamFor(f.id, 'send', 0x11);
        if (s?.send) s.send.max = Math.max(s.send.max, num(f.max));
        return;
      }
      case 'stream': return this.onStream(f);
      case 'reset_stream': case 'reset_stream_at': return this.onReset(f);
      case 'stop_sending': return this.onStopSending(f);
      case 'datagram':
        if (f.data.length + 1 > this.local.maxDatagramFrameSize) throw new QmuxError(E.PROTOCOL_VIOLATION, 'DATAGRAM exceeds max_datagram_frame_size', 0x31);
        this.dgramIn.push(f.data);
        return;
      case 'application_close':
        this.terminate({ closeCode: typeof f.code === 'number' && f.code < TWO32 ? f.code : 0, reason: f.reason }, null, null);
        return;
      case 'connection_close':
        this.terminate(null, wtError(`session closed by the server: transport error 0x${f.code.toString(16)}${f.reason ? `: ${f.reason}` : ''}`, 'session'), null);
        return;
    }
  }

  onParams(p) {
    this.peer = p;
    this.peerLimit = [p.initialMaxStreamsBidi, p.initialMaxStreamsUni];
    this.peerMaxData = p.initialMaxData;
    this.state = 'connected';
    clearTimeout(this.connectTimer);
    this.lastHeard = Date.now();
    const idle = [this.local.maxIdleTimeout, p.maxIdleTimeout].filter((t) => t > 0);
    this.idleTimeout = idle.length ? Math.min(...idle) : 0;
    const every = Math.min(this.keepAliveMs, this.idleTimeout ? this.idleTimeout / 2 : Infinity);
    this.keepAlive = setInterval(() => {
      if (this.idleTimeout && Date.now() - this.lastHeard > this.idleTimeout) {
        this.lost('idle timeout');
        return;
      }
      this.pingDue = this.pingSeq++;
      this.flush();
    }, every);
    this.wakeOpeners(BIDI);
    this.wakeOpeners(UNI);
    this.ready_.resolve();
  }

  /** A protocol violation by the peer: CONNECTION_CLOSE 0x1c, and the session is gone. */
  fail(e) {
    const frame = { type: 'connection_close', code: e.code, frameType: typeof e.frameType === 'bigint' ? e.frameType : e.frameType ?? 0, reason: e.message };
    this.terminate(null, wtError(`QMux protocol error: ${e.message}`, 'session'), frame);
  }

  /** The WebSocket went away without a CONNECTION_CLOSE. */
  lost(why) {
    this.terminate(null, wtError(`session lost: ${why}`, 'session'), null);
  }

  close(info = {}) {
    if (this.state === 'closed') return;
    const closeCode = codeOf({ streamErrorCode: info.closeCode });
    const reason = fromUtf8.decode(utf8Bytes(info.reason ?? ''));
    if (this.state === 'connecting') {
      // W3C: closing before ready is a failed connection.
      this.terminate(null, wtError('session closed before it was ready', 'session'), null);
      return;
    }
    this.terminate({ closeCode, reason }, null, { type: 'application_close', code: closeCode, reason });
  }

  /** Ends the session: with `info` closed resolves, with `error` it rejects. */
  terminate(info, error, frame) {
    if (this.state === 'closed') return;
    this.state = 'closed';
    clearTimeout(this.connectTimer);
    clearTimeout(this.flushTimer);
    clearInterval(this.keepAlive);
    const ws = this.ws;
    if (ws.readyState === 1) {
      // Unsent stream data is abandoned as QUIC does; the close frame goes out at once.
      try {
        if (frame) ws.send(encodeRecord([frame]));
        ws.close(1000);
      } catch { /* already failing */ }
    } else if (ws.readyState === 0) {
      try { ws.close(1000); } catch { /* not open yet */ }
    }
    const err = error ?? wtError('session closed', 'session');
    for (const s of this.streams.values()) {
      if (s.send && !s.send.done) this.failSend(s, err);
      if (s.recv && !s.recv.done) {
        s.recv.done = true;
        try { s.recv.controller.error(err); } catch { /* gone */ }
        s.recv.pull?.();
      }
    }
    this.streams.clear();
    for (const list of this.openWaiters) for (const w of list.splice(0)) w.reject(err);
    for (const d of this.dgramOut.splice(0)) d.reject(err);
    this.incomingBidi.end(error);
    this.incomingUni.end(error);
    this.dgramIn.end(error);
    this.ready_.reject(err);
    if (error) this.closed_.reject(error);
    else this.closed_.resolve(info);
  }

  // ---------------------------------------------------------------- streams

  /**
   * The stream a frame addresses, opening peer streams up to it (RFC 9000 §3.2);
   * undefined for streams already finished and forgotten, whose late frames are moot.
   */
  streamFor(id, half, frameType) {
    if (typeof id === 'bigint') throw new QmuxError(E.STREAM_LIMIT_ERROR, 'stream ID out of range', frameType);
    const ours = id % 2 === 0; // we are the client
    const d = id % 4 >= 2 ? UNI : BIDI;
    const index = Math.floor(id / 4);
    if (d === UNI && ours === (half === 'recv')) throw new QmuxError(E.STREAM_STATE_ERROR, `wrong direction for uni stream ${id}`, frameType);
    if (ours) {
      if (index >= this.opened[d]) throw new QmuxError(E.STREAM_STATE_ERROR, `stream ${id} not opened`, frameType);
    } else {
      if (index >= this.remoteLimit[d]) throw new QmuxError(E.STREAM_LIMIT_ERROR, `stream ${id} beyond our limit`, frameType);
      while (this.remoteOpened[d] <= index) this.acceptStream(d, this.remoteOpened[d]++);
    }
    return this.streams.get(id);
  }

  acceptStream(d, index) {
    const id = index * 4 + 1 + 2 * d;
    const p = this.peer;
    const s = { id, send: null, recv: null };
    this.streams.set(id, s);
    if (d === BIDI) {
      this.makeSend(s, p.initialMaxStreamDataBidiLocal);
      this.makeRecv(s, this.local.initialMaxStreamDataBidiRemote);
      this.incomingBidi.push({ readable: s.recv.readable, writable: s.send.writable });
    } else {
      this.makeRecv(s, this.local.initialMaxStreamDataUni);
      this.incomingUni.push(s.recv.readable);
    }
  }

  async openStream(d) {
    await this.ready;
    while (this.state === 'connected' && this.opened[d] >= this.peerLimit[d]) {
      await new Promise((resolve, reject) => this.openWaiters[d].push({ resolve, reject }));
    }
    if (this.state !== 'connected') throw wtError('session closed', 'session');
    const id = this.opened[d]++ * 4 + 2 * d;
    const s = { id, send: null, recv: null };
    this.streams.set(id, s);
    const p = this.peer;
    this.makeSend(s, d === BIDI ? p.initialMaxStreamDataBidiRemote : p.initialMaxStreamDataUni);
    if (d === BIDI) this.makeRecv(s, this.local.initialMaxStreamDataBidiLocal);
    // An empty STREAM frame opens the stream on the server now, as native WebTransport
    // does: a protocol where the server speaks first must not wait for the page's data.
    this.control.push({ type: 'stream', id, offset: 0, data: new Uint8Array(0), fin: false });
    this.flush();
    return s;
  }

  wakeOpeners(d) {
    for (const w of this.openWaiters[d].splice(0)) w.resolve();
  }

  async createBidirectionalStream() {
    const s = await this.openStream(BIDI);
    return { readable: s.recv.readable, writable: s.send.writable };
  }

  async createUnidirectionalStream() {
    return (await this.openStream(UNI)).send.writable;
  }

  /** Drops a stream once both halves are over; a peer's stream frees a slot for MAX_STREAMS. */
  maybeForget(s) {
    if (s.send && !s.send.done) return;
    // Until the final size is known, the peer may still use connection credit on it.
    if (s.recv && !(s.recv.done && s.recv.finalSize !== null)) return;
    if (!this.streams.delete(s.id)) return;
    if (s.id % 2 === 1) {
      this.remoteLimit[s.id % 4 >= 2 ? UNI : BIDI]++;
      this.flushSoon();
    }
  }

  // ------------------------------------------------------------ sending side

  makeSend(s, max) {
    const snd = (s.send = { max, sent: 0, queue: [], pending: 0, fin: false, done: false, queued: false, error: null });
    snd.writable = new WritableStream({
      start: (c) => {
        snd.controller = c;
        // abort() waits for an in-flight write, which may be waiting for credit; the
        // signal fires at once, so the reset does too.
        c.signal?.addEventListener('abort', () => {
          snd.aborting = true; // the stream is erroring itself; erroring it again trips Node
          this.resetSend(s, codeOf(c.signal.reason));
        });
      },
      write: (chunk) => new Promise((resolve, reject) => {
        if (snd.error || snd.done) return reject(snd.error ?? wtError('stream closed', 'stream'));
        const data = toBytes(chunk);
        if (!data.length) return resolve();
        snd.queue.push({ data, resolve, reject });
        snd.pending += data.length;
        this.queueSend(s);
      }),
      close: () => new Promise((resolve, reject) => {
        if (snd.error || snd.done) return reject(snd.error ?? wtError('stream closed', 'stream'));
        snd.fin = true;
        snd.finWaiter = { resolve, reject };
        this.queueSend(s);
      }),
      abort: (reason) => this.resetSend(s, codeOf(reason)),
    }, { highWaterMark: 1 });
  }

  queueSend(s) {
    if (!s.send.queued) {
      s.send.queued = true;
      this.sendQueue.push(s);
    }
    this.flush();
  }

  /** RESET_STREAM with the bytes sent so far as the final size; queued writes fail. */
  resetSend(s, code, error) {
    const snd = s.send;
    if (snd.done || this.state === 'closed') return;
    this.control.push({ type: 'reset_stream', id: s.id, code, finalSize: snd.sent });
    this.failSend(s, error ?? wtError('stream reset', 'stream', code));
    this.maybeForget(s);
    this.flush();
  }

  failSend(s, err) {
    const snd = s.send;
    snd.done = true;
    snd.error = err;
    for (const q of snd.queue.splice(0)) q.reject(err);
    snd.pending = 0;
    snd.finWaiter?.reject(err);
    if (!snd.aborting) {
      try { snd.controller.error(err); } catch { /* already errored */ }
    }
  }

  onStopSending(f) {
    const s = this.streamFor(f.id, 'send', 0x05);
    if (!s?.send || s.send.done) return;
    const code = num(f.code);
    // RFC 9000 §3.5: answer with RESET_STREAM carrying the same code.
    this.resetSend(s, code, wtError('the server stopped the stream (STOP_SENDING)', 'stream', code));
  }

  // ---------------------------------------------------------- receiving side

  makeRecv(s, window) {
    const r = (s.recv = { window, max: window, received: 0, counted: 0, read: 0, chunks: [], buffered: 0, finalSize: null, done: false, stopped: false, pull: null });
    r.readable = new ReadableStream({
      type: 'bytes',
      start: (c) => { r.controller = c; },
      // Nothing is enqueued ahead of a read: buffered bytes stay ours, within our window,
      // and credit goes back only as the page reads.
      pull: () => new Promise((resolve) => {
        r.pull = resolve;
        this.deliver(s);
      }),
      cancel: (reason) => this.stopRecv(s, codeOf(reason)),
    }, { highWaterMark: 0 });
  }

  onStream(f) {
    const s = this.streamFor(f.id, 'recv', 0x08);
    if (!s?.recv) return;
    const r = s.recv;
    const end = f.offset + f.data.length;
    if (r.finalSize !== null && (end > r.finalSize || (f.fin && end !== r.finalSize))) throw new QmuxError(E.FINAL_SIZE_ERROR, `final size of stream ${f.id} changed`, 0x08);
    if (f.fin && end < r.received) throw new QmuxError(E.FINAL_SIZE_ERROR, `FIN of stream ${f.id} below received data`, 0x08);
    if (end > r.max) throw new QmuxError(E.FLOW_CONTROL_ERROR, `stream ${f.id} exceeds its credit`, 0x08);
    // Draft §4.1: data continues where the last frame ended; repeats are harmless.
    if (f.offset > r.received) throw new QmuxError(E.PROTOCOL_VIOLATION, `gap in stream ${f.id}`, 0x08);
    const fresh = Math.max(0, end - r.counted);
    if (this.dataCounted + fresh > this.maxData) throw new QmuxError(E.FLOW_CONTROL_ERROR, 'connection credit exceeded', 0x08);
    this.dataCounted += fresh;
    r.counted = Math.max(r.counted, end);
    if (f.fin) r.finalSize = end;
    if (end > r.received) {
      const data = f.data.subarray(f.data.length - (end - r.received));
      r.received = end;
      if (r.done) this.consumed(data.length); // stopped: discard, but keep credit flowing
      else {
        r.chunks.push(data);
        r.buffered += data.length;
      }
    }
    this.deliver(s);
    this.maybeForget(s);
  }

  /** Hands the page one chunk if it is reading; ends the readable after the last byte. */
  deliver(s) {
    const r = s.recv;
    if (r.done) return;
    const c = r.controller;
    if (r.pull && r.buffered) {
      const chunk = r.chunks[0];
      const len = chunk.length;
      const req = c.byobRequest;
      let n = len;
      if (req) {
        n = Math.min(n, req.view.byteLength);
        new Uint8Array(req.view.buffer, req.view.byteOffset, n).set(chunk.subarray(0, n));
        req.respond(n);
      } else {
        // Transfers (detaches) the buffer, which holds only this frame's bytes.
        c.enqueue(chunk);
      }
      if (n === len) r.chunks.shift();
      else r.chunks[0] = chunk.subarray(n);
      r.buffered -= n;
      r.read += n;
      this.consumed(n);
      if (r.finalSize === null && r.max - r.read <= r.window / 2) {
        r.max = r.read + r.window;
        this.creditDue.add(s);
      }
      r.pull();
      r.pull = null;
      this.flushSoon();
    }
    if (!r.buffered && r.finalSize !== null && r.read === r.finalSize) {
      r.done = true;
      c.close();
      c.byobRequest?.respond(0);
      r.pull?.();
      r.pull = null;
      this.maybeForget(s);
    }
  }

  /** Re-offers connection credit once half the window has been used. */
  consumed(n) {
    this.dataConsumed += n;
    const window = this.local.initialMaxData;
    if (this.maxData - this.dataConsumed <= window / 2) this.maxData = this.dataConsumed + window;
  }

  onReset(f) {
    const s = this.streamFor(f.id, 'recv', 0x04);
    if (!s?.recv) return;
    const r = s.recv;
    const finalSize = num(f.finalSize);
    if ((r.finalSize !== null && r.finalSize !== finalSize) || finalSize < r.received) throw new QmuxError(E.FINAL_SIZE_ERROR, `reset of stream ${f.id} changes its final size`, 0x04);
    if (finalSize > r.max) throw new QmuxError(E.FLOW_CONTROL_ERROR, `reset of stream ${f.id} exceeds its credit`, 0x04);
    if (r.reset) return;
    r.reset = true;
    const fresh = finalSize - r.counted;
    if (this.dataCounted + fresh > this.maxData) throw new QmuxError(E.FLOW_CONTROL_ERROR, 'connection credit exceeded', 0x04);
    this.dataCounted += fresh;
    r.counted = finalSize;
    r.finalSize = finalSize;
    // Bytes the page will never read give their connection credit back now.
    this.consumed(r.buffered + (finalSize - r.received));
    r.chunks = [];
    r.buffered = 0;
    r.received = finalSize;
    if (!r.done) {
      // W3C: a reset discards what was not read yet and errors the stream.
      r.done = true;
      const code = num(f.code);
      try { r.controller.error(wtError('the server reset the stream (RESET_STREAM)', 'stream', code)); } catch { /* gone */ }
      r.pull?.();
      r.pull = null;
    }
    this.maybeForget(s);
  }

  /** The page cancelled the readable: STOP_SENDING, and whatever still arrives is discarded. */
  stopRecv(s, code) {
    const r = s.recv;
    if (r.done || this.state === 'closed') return;
    r.done = true;
    r.stopped = true;
    this.consumed(r.buffered);
    r.chunks = [];
    r.buffered = 0;
    if (r.finalSize === null) this.control.push({ type: 'stop_sending', id: s.id, code });
    this.maybeForget(s);
    this.flush();
  }

  // ---------------------------------------------------------------- datagrams

  maxDatagramSize() {
    const p = this.peer;
    if (!p || !p.maxDatagramFrameSize) return 0;
    // Sent as 0x31: type byte, length varint, payload, all within one record.
    const limit = Math.min(p.maxDatagramFrameSize, p.maxRecordSize, RECORD_CAP);
    let n = limit - 1 - varintSize(limit);
    while (1 + varintSize(n + 1) + n + 1 <= limit) n++;
    return Math.max(0, n);
  }

  datagramWritable() {
    return new WritableStream({
      write: async (chunk) => {
        const data = toBytes(chunk);
        await this.ready;
        if (this.state !== 'connected') throw wtError('session closed', 'session');
        // W3C drops datagrams above maxDatagramSize without an error.
        if (data.length > this.maxDatagramSize()) return;
        await new Promise((resolve, reject) => {
          this.dgramOut.push({ data, resolve, reject });
          this.flush();
        });
      },
    }, { highWaterMark: 1 });
  }

  // ---------------------------------------------------------------- output

  flushSoon() {
    if (this.flushQueued) return;
    this.flushQueued = true;
    queueMicrotask(() => {
      this.flushQueued = false;
      this.flush();
    });
  }

  /**
   * Sends what may go now. Control frames (credit, resets, pings) always go, so the peer
   * never waits on them behind our data; stream data and datagrams only while the
   * WebSocket's bufferedAmount is under the high-water mark, within the peer's credit.
   * WebSocket has no drain event, so a full buffer is polled.
   */
  flush() {
    clearTimeout(this.flushTimer);
    this.flushTimer = null;
    if (this.state !== 'connected' || this.ws.readyState !== 1) return;
    const max = Math.min(this.peer.maxRecordSize, RECORD_CAP);
    for (;;) {
      const w = new Writer(this.sendQueue.length || this.dgramOut.length ? max : 256);
      this.writeControl(w, max);
      if (this.ws.bufferedAmount < this.hwm) {
        this.writeDatagrams(w, max);
        this.writeStreams(w, max);
      }
      if (!w.len) break;
      this.ws.send(w.view());
    }
    if ((this.dgramOut.length || this.sendQueue.length) && this.ws.bufferedAmount >= this.hwm) {
      this.flushTimer = setTimeout(() => this.flush(), 5);
    }
  }

  /** Appends `frame` unless the record would outgrow `max`. */
  put(w, max, frame) {
    const before = w.len;
    encodeFrame(w, frame);
    if (w.len <= max) return true;
    w.len = before;
    return false;
  }

  writeControl(w, max) {
    if (this.pongDue !== null && this.put(w, max, { type: 'ping_response', seq: this.pongDue })) this.pongDue = null;
    if (this.pingDue !== null && this.put(w, max, { type: 'ping', seq: this.pingDue })) this.pingDue = null;
    if (this.maxData > this.maxDataSent && this.put(w, max, { type: 'max_data', max: this.maxData })) this.maxDataSent = this.maxData;
    for (const d of [BIDI, UNI]) {
      if (this.remoteLimit[d] > this.remoteLimitSent[d] && this.put(w, max, { type: 'max_streams', uni: d === UNI, count: this.remoteLimit[d] })) {
        this.remoteLimitSent[d] = this.remoteLimit[d];
      }
    }
    for (const s of this.creditDue) {
      const r = s.recv;
      // Credit for a stream that is over would be pointless.
      if (r.finalSize === null && !r.done && !this.put(w, max, { type: 'max_stream_data', id: s.id, max: r.max })) return;
      this.creditDue.delete(s);
    }
    while (this.control.length && this.put(w, max, this.control[0])) this.control.shift();
  }

  writeDatagrams(w, max) {
    while (this.dgramOut.length) {
      const d = this.dgramOut[0];
      if (!this.put(w, max, { type: 'datagram', data: d.data })) return;
      this.dgramOut.shift();
      d.resolve();
    }
  }

  /** STREAM frames, one per stream per turn, within stream and connection credit. */
  writeStreams(w, max) {
    let blocked = 0;
    while (blocked < this.sendQueue.length) {
      const s = this.sendQueue.shift();
      const snd = s.send;
      if (snd.done || (!snd.pending && !snd.fin)) {
        snd.queued = false;
        continue;
      }
      const credit = Math.min(snd.max - snd.sent, this.peerMaxData - this.dataSent);
      const room = max - w.len;
      let n = Math.min(snd.pending, credit, room);
      const header = 1 + varintSize(s.id) + (snd.sent ? varintSize(snd.sent) : 0) + varintSize(Math.max(n, 0));
      n = Math.min(n, room - header);
      const fin = snd.fin && n === snd.pending;
      if (n < 0 || (n === 0 && !fin)) {
        this.sendQueue.push(s); // waits for credit or for the next record
        blocked++;
        if (room - header < 1) break;
        continue;
      }
      blocked = 0;
      w.varint(0x0a | (snd.sent ? 0x04 : 0) | (fin ? 0x01 : 0));
      w.varint(s.id);
      if (snd.sent) w.varint(snd.sent);
      w.varint(n);
      w.ensure(n);
      for (let left = n; left > 0;) {
        const q = snd.queue[0];
        const take = Math.min(left, q.data.length);
        w.bytes(take === q.data.length ? q.data : q.data.subarray(0, take));
        left -= take;
        if (take === q.data.length) {
          snd.queue.shift();
          q.resolve(); // the write completes once its last byte is in a record
        } else {
          q.data = q.data.subarray(take);
        }
      }
      snd.sent += n;
      snd.pending -= n;
      this.dataSent += n;
      if (fin) {
        snd.done = true;
        snd.queued = false;
        snd.finWaiter.resolve();
        this.maybeForget(s);
      } else if (snd.pending || snd.fin) {
        this.sendQueue.push(s);
      } else {
        snd.queued = false;
      }
    }
  }
}

// ---------------------------------------------------------------------- the connector

/** True for Safari and every other WebKit-only browser (all iOS browsers). */
function isSafari(ua = globalThis.navigator?.userAgent ?? '') {
  return /AppleWebKit\//.test(ua) && !/(Chrome|Chromium|Edg|Firefox)\//.test(ua);
}

/**
 * Checks `serverCertificateHashes` as the page wrote it. A mistake here is the page's own
 * (a hex string where bytes belong, a wrong algorithm name): it throws, since falling back
 * to QMux would hide it and ship a page that never uses WebTransport.
 */
function checkCertificateHashes(hashes) {
  if (hashes === undefined) return;
  if (!Array.isArray(hashes)) throw new TypeError('serverCertificateHashes must be an array of { algorithm, value }');
  hashes.forEach((h, i) => {
    const where = `serverCertificateHashes[${i}]`;
    if (h === null || typeof h !== 'object') throw new TypeError(`${where} must be { algorithm: 'sha-256', value }`);
    if (h.algorithm !== 'sha-256') {
      throw new TypeError(`${where}.algorithm must be 'sha-256' (exactly), not ${JSON.stringify(h.algorithm)}`);
    }
    const v = h.value;
    if (typeof v === 'string') {
      throw new TypeError(`${where}.value is a string: it must be the hash's 32 bytes (a Uint8Array or ArrayBuffer), so decode the hex or base64 first`);
    }
    const bytes = v instanceof ArrayBuffer ? v.byteLength : ArrayBuffer.isView(v) ? v.byteLength : -1;
    if (bytes !== 32) {
      throw new TypeError(`${where}.value must be the 32 bytes of a SHA-256 (a Uint8Array or ArrayBuffer), got ${bytes < 0 ? typeof v : `${bytes} bytes`}`);
    }
  });
}

const NO_WEBTRANSPORT = 'WebTransport is not available';

/**
 * The error for a request the server refused with an HTTP status. Ferrovia tells the
 * connector's QMux attempt in-band, since a browser shows a page nothing of a refused
 * WebSocket handshake: close code 4000 + status, and the response headers as a JSON list
 * of [name, value] pairs in the reason. `status` and `headers` are on the error.
 */
function refusalError(status, reason) {
  const e = wtError(`the server refused the session: HTTP ${status}`, 'session');
  const headers = {};
  try {
    for (const [name, value] of JSON.parse(reason || '[]')) {
      if (typeof name === 'string' && typeof value === 'string') headers[name.toLowerCase()] = value;
    }
  } catch { /* no headers readable */ }
  Object.defineProperty(e, 'status', { value: status, enumerable: true });
  Object.defineProperty(e, 'headers', { value: headers, enumerable: true });
  return e;
}

/** A random tag for both attempts of one connect() (see the server's `ferrovia-attempt`). */
function attemptTag() {
  const bytes = new Uint8Array(12);
  globalThis.crypto.getRandomValues(bytes);
  return Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
}

/** console.warn once per page for fallbacks, so that a QMux-only deployment is noticed. */
let warnedFallback = false;
function warnFallback(url, reason) {
  if (warnedFallback) return;
  warnedFallback = true;
  globalThis.console?.warn?.(`ferrovia: native WebTransport to ${url} did not work (${reason}); using QMux over a WebSocket instead. transport.fallbackReason says why; see docs/client.md "When it falls back".`);
}

/** The default order of attempts: Safari's WebTransport has flaws users route around. */
function defaultTransports(ua) {
  return isSafari(ua) ? ['qmux', 'webtransport'] : ['webtransport', 'qmux'];
}

/** ReadableStream/WritableStream stand-ins used before the transport is chosen. */
function lateReadable(source) {
  let reader;
  return new ReadableStream({
    async pull(c) {
      reader ??= (await source).getReader();
      const { value, done } = await reader.read();
      if (done) c.close();
      else c.enqueue(value);
    },
    async cancel(reason) {
      reader ??= await source.then((s) => s.getReader(), () => null);
      await reader?.cancel(reason);
    },
  }, { highWaterMark: 0 });
}

function lateWritable(writer, closeThrough = true) {
  return new WritableStream({
    async write(chunk) { await (await writer).write(chunk); },
    async close() { if (closeThrough) await (await writer).close(); },
    async abort(reason) { if (closeThrough) await (await writer).abort(reason); },
  }, { highWaterMark: 1 });
}

/**
 * A WebTransport-shaped session that picks its transport: native WebTransport over HTTP/3,
 * or QMux over a WebSocket to the same URL.
 */
export class FerroviaTransport {
  #impl = null;
  #taggedUrl;
  #chosen;
  #attempts = [];
  #connecting = [];
  #late = {};

  constructor(url, options = {}) {
    const { transports, fallbackAfter = 3000, qmux, ...webTransportOptions } = options;
    let order = [...(transports ?? defaultTransports())];
    for (const t of order) if (t !== 'webtransport' && t !== 'qmux') throw new TypeError(`unknown transport ${JSON.stringify(t)}`);
    // QMux datagrams are reliable, so it cannot meet requireUnreliable.
    if (options.requireUnreliable) order = order.filter((t) => t !== 'qmux');
    if (!order.length) throw new TypeError('no transport to try');
    checkCertificateHashes(options.serverCertificateHashes);
    this.url = new URL(url, globalThis.location?.href).href;
    // Both attempts carry one tag: a server that refused the first answers the second the
    // same way without asking the application again. The server takes it off the path.
    // Appended as text: searchParams would re-encode the page's own query (%20 as +).
    const tagged = new URL(this.url);
    tagged.search = `${tagged.search ? `${tagged.search}&` : '?'}ferrovia-attempt=${attemptTag()}`;
    this.#taggedUrl = tagged.href;
    this.transport = null;
    /** Why native WebTransport was not used, when QMux won after it: null otherwise. */
    this.fallbackReason = null;
    this.#chosen = this.#connect(order, fallbackAfter, webTransportOptions, { ...options, qmux });
    this.#chosen.catch(() => {});
    this.ready = this.#chosen.then(() => undefined);
    this.closed = this.#chosen.then((impl) => impl.closed);
    this.draining = this.#chosen.then((impl) => impl.draining ?? never, () => never);
    this.ready.catch(() => {});
    this.closed.catch(() => {});
    const self = this;
    let writer; // datagram writes share one writer where the native side has no createWritable()
    const sharedWriter = () => (writer ??= this.#chosen.then((i) => i.datagrams.writable.getWriter()));
    this.datagrams = {
      get readable() { return self.#pick('dgramReadable', (i) => i.datagrams.readable, () => lateReadable(self.#chosen.then((i) => i.datagrams.readable))); },
      get writable() { return self.#pick('dgramWritable', (i) => i.datagrams.writable, () => lateWritable(sharedWriter(), false)); },
      createWritable(opts) {
        const i = self.#impl;
        if (i?.datagrams.createWritable) return i.datagrams.createWritable(opts);
        return lateWritable(self.#chosen.then((i) => (i.datagrams.createWritable ? i.datagrams.createWritable(opts).getWriter() : sharedWriter())), false);
      },
      get maxDatagramSize() { return self.#impl?.datagrams.maxDatagramSize ?? 0; },
    };
  }

  /** Once chosen, the transport's own stream; before, a stand-in (kept, so identity holds). */
  #pick(key, direct, late) {
    if (this.#late[key]) return this.#late[key];
    if (this.#impl) return direct(this.#impl);
    return (this.#late[key] = late());
  }

  get incomingBidirectionalStreams() {
    return this.#pick('bidi', (i) => i.incomingBidirectionalStreams, () => lateReadable(this.#chosen.then((i) => i.incomingBidirectionalStreams)));
  }

  get incomingUnidirectionalStreams() {
    return this.#pick('uni', (i) => i.incomingUnidirectionalStreams, () => lateReadable(this.#chosen.then((i) => i.incomingUnidirectionalStreams)));
  }

  get protocol() { return this.#impl?.protocol ?? ''; }
  get reliability() { return this.#impl?.reliability ?? 'pending'; }
  /** How each attempt went: [{ transport, ms, outcome: 'ready' | 'failed' | 'abandoned', error? }]. */
  get attempts() { return this.#attempts.map((a) => ({ ...a })); }
  /** The underlying WebTransport or QMux session, for what this wrapper does not expose. */
  get session() { return this.#impl; }

  async createBidirectionalStream(opts) { return (await this.#chosen).createBidirectionalStream(opts); }
  async createUnidirectionalStream(opts) { return (await this.#chosen).createUnidirectionalStream(opts); }
  async getStats() { return (await this.#chosen).getStats?.() ?? {}; }

  close(info) {
    if (this.#impl) return this.#impl.close(info);
    for (const c of this.#connecting) c.abandon();
    this.#connecting = [];
    this.#abort?.(wtError('session closed before it was ready', 'session'));
  }

  #abort;

  /**
   * Starts the first transport; the next one starts when the current one fails or is not
   * ready within fallbackAfter, and the first to be ready wins (the rest are closed).
   */
  #connect(order, fallbackAfter, wtOptions, options) {
    return new Promise((resolve, reject) => {
      const t0 = Date.now();
      const errors = [];
      let next = 0;
      let settled = false;
      this.#abort = (e) => { if (!settled) { settled = true; reject(e); } };
      const finishIfAllFailed = () => {
        if (settled || next < order.length || this.#connecting.length) return;
        settled = true;
        reject(wtError(`could not connect: ${errors.join('; ')}`, 'session'));
      };
      const start = () => {
        if (settled || next >= order.length) return;
        const kind = order[next++];
        const log = { transport: kind, ms: 0, outcome: 'pending' };
        this.#attempts.push(log);
        let impl;
        try {
          if (kind === 'qmux') impl = new QmuxTransport(this.#taggedUrl, options);
          else if (typeof globalThis.WebTransport !== 'function') throw new Error(NO_WEBTRANSPORT);
          else impl = new globalThis.WebTransport(this.#taggedUrl, wtOptions);
        } catch (e) {
          if (e instanceof TypeError || e?.name === 'SyntaxError' || e?.name === 'NotSupportedError') {
            // The browser refused the page's own arguments: no fallback hides that.
            Object.assign(log, { outcome: 'failed', ms: Date.now() - t0, error: describe(e) });
            for (const c of this.#connecting) c.abandon();
            this.#connecting = [];
            settled = true;
            reject(e);
            return;
          }
          Object.assign(log, { outcome: 'failed', ms: Date.now() - t0, error: describe(e) });
          errors.push(`${kind}: ${describe(e)}`);
          start();
          finishIfAllFailed();
          return;
        }
        impl.ready.catch(() => {});
        impl.closed.catch(() => {});
        const timer = next < order.length ? setTimeout(start, fallbackAfter) : null;
        const entry = {
          abandon: () => {
            clearTimeout(timer);
            if (log.outcome === 'pending') Object.assign(log, { outcome: 'abandoned', ms: Date.now() - t0 });
            try { impl.close(); } catch { /* not open */ }
          },
        };
        this.#connecting.push(entry);
        const drop = () => { this.#connecting = this.#connecting.filter((c) => c !== entry); };
        impl.ready.then(() => {
          drop();
          clearTimeout(timer);
          if (settled) { entry.abandon(); return; }
          settled = true;
          Object.assign(log, { outcome: 'ready', ms: Date.now() - t0 });
          for (const c of this.#connecting) c.abandon();
          this.#connecting = [];
          this.#impl = impl;
          this.transport = kind;
          const native = this.#attempts.find((a) => a.transport === 'webtransport');
          if (kind === 'qmux' && native) {
            this.fallbackReason = native.outcome === 'abandoned'
              ? `not ready within ${fallbackAfter} ms`
              : native.error ?? 'failed';
            // A browser without WebTransport is what QMux is for; anything else is news.
            if (native.error !== NO_WEBTRANSPORT) warnFallback(this.url, this.fallbackReason);
          }
          resolve(impl);
        }, (e) => {
          drop();
          clearTimeout(timer);
          if (log.outcome === 'pending') Object.assign(log, { outcome: 'failed', ms: Date.now() - t0, error: describe(e) });
          if (typeof e?.status === 'number') {
            // The server answered: that is final, whatever other transport is left.
            log.status = e.status;
            if (!settled) {
              settled = true;
              for (const c of this.#connecting) c.abandon();
              this.#connecting = [];
              reject(e);
            }
            return;
          }
          errors.push(`${kind}: ${describe(e)}`);
          start();
          finishIfAllFailed();
        });
      };
      start();
    });
  }
}

// ----------------------------------------------------------------- messages on a stream
//
// The framing Ferrovia's servers read and write with MessageStream: each message is its
// length as a QUIC varint, then its bytes. Written here again only because a page cannot
// load the server's native codec; the server's tests check the two agree.

const DEFAULT_MAX_MESSAGE_SIZE = 1 << 20;
// What a queued message costs beyond its bytes: bufferedAmount counts each message as at
// least this much.
const MESSAGE_COST = 64;

function messageError(code, message, fields) {
  const e = new Error(message);
  e.code = code;
  return Object.assign(e, fields);
}

/** Splits a stream's chunks into messages, refusing any longer than `max` from its prefix. */
class MessageDecoder {
  #max;
  #head = new Uint8Array(8);
  #headLen = 0;
  #body = null;
  #filled = 0;
  #failed = null;

  constructor(max) {
    this.#max = max;
  }

  /** Takes the next chunk; returns the messages it completed, in order. */
  push(chunk) {
    if (this.#failed) throw this.#failed;
    const out = [];
    let p = 0;
    for (;;) {
      if (this.#body === null) {
        if (p >= chunk.length) break;
        this.#head[this.#headLen++] = chunk[p++];
        const need = 1 << (this.#head[0] >> 6);
        if (this.#headLen < need) continue;
        const size = new Reader(this.#head.subarray(0, need)).varint();
        this.#headLen = 0;
        if (typeof size === 'bigint' || size > this.#max) {
          this.#failed = messageError('ERR_MESSAGE_TOO_LARGE', `message of ${size} bytes exceeds the limit of ${this.#max} bytes`, { size: typeof size === 'bigint' ? size : Number(size), max: this.#max });
          // The messages before it come first; the failure with the next call.
          if (out.length > 0) return out;
          throw this.#failed;
        }
        this.#body = new Uint8Array(size);
        this.#filled = 0;
      }
      const n = Math.min(this.#body.length - this.#filled, chunk.length - p);
      this.#body.set(chunk.subarray(p, p + n), this.#filled);
      this.#filled += n;
      p += n;
      if (this.#filled < this.#body.length) break;
      out.push(this.#body);
      this.#body = null;
    }
    return out;
  }

  /** Checks the end of the stream: throws when it came inside a message. */
  finish() {
    if (this.#failed) throw this.#failed;
    if (this.#body === null && this.#headLen === 0) return;
    const received = this.#body === null ? this.#headLen : this.#filled;
    const expected = this.#body === null ? null : this.#body.length;
    throw messageError('ERR_MESSAGE_TRUNCATED', `stream ended inside a message (${received} bytes of ${expected ?? 'a length prefix'} received)`, { received, expected });
  }
}

/** One message as it goes on the stream: its length prefix, then its bytes. */
function encodeMessage(bytes) {
  const w = new Writer(bytes.length + 8);
  w.varint(bytes.length);
  w.bytes(bytes);
  return w.view();
}

/**
 * Messages on a stream instead of bytes, as the server's MessageStream sends and reads
 * them. Wraps a bidirectional stream ({ readable, writable }), or one ReadableStream or
 * WritableStream; works on native WebTransport streams and on the fallback's alike.
 *
 *   const messages = new MessageStream(await transport.createBidirectionalStream(), { text: true });
 *   await messages.send('hello');
 *   for await (const m of messages) console.log(m);
 *
 * Reading locks the readable; a message longer than `maxMessageSize` (1 MiB) throws
 * ERR_MESSAGE_TOO_LARGE, a stream ending inside a message ERR_MESSAGE_TRUNCATED, and leaving
 * the loop early cancels the readable. A send nobody awaits never becomes an unhandled
 * rejection.
 */
export class MessageStream {
  #readable = null;
  #writable = null;
  #writer = null;
  #reading = false;
  #maxMessageSize;
  #text;
  #buffered = 0;

  constructor(stream, options = {}) {
    if (options === null || typeof options !== 'object') throw new TypeError('options must be an object');
    const { maxMessageSize = DEFAULT_MAX_MESSAGE_SIZE, text = false } = options;
    if (!Number.isSafeInteger(maxMessageSize) || maxMessageSize < 0) throw new RangeError(`maxMessageSize must be a non-negative integer, got ${maxMessageSize}`);
    if (typeof text !== 'boolean') throw new TypeError('text must be a boolean');
    if (stream instanceof ReadableStream) this.#readable = stream;
    else if (stream instanceof WritableStream) this.#writable = stream;
    else if (stream && (stream.readable instanceof ReadableStream || stream.writable instanceof WritableStream)) {
      if (stream.readable instanceof ReadableStream) this.#readable = stream.readable;
      if (stream.writable instanceof WritableStream) this.#writable = stream.writable;
    } else {
      throw new TypeError('MessageStream takes { readable, writable }, a ReadableStream or a WritableStream');
    }
    this.#maxMessageSize = maxMessageSize;
    this.#text = text;
  }

  /** The largest message this side reads. */
  get maxMessageSize() {
    return this.#maxMessageSize;
  }

  /** Bytes of messages given to send() that the stream has not taken yet, each counted as at least 64. */
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

  /** The messages as they arrive: Uint8Array, or string with { text: true }. */
  async *[Symbol.asyncIterator]() {
    if (!this.#readable) throw new TypeError('this MessageStream has no readable side');
    if (this.#reading) throw new TypeError('this MessageStream is being read, or was read, already');
    const reader = this.#readable.getReader();
    this.#reading = true;
    const decoder = new MessageDecoder(this.#maxMessageSize);
    const text = this.#text ? new TextDecoder('utf-8', { fatal: true, ignoreBOM: true }) : null;
    let ended = false;
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) {
          decoder.finish();
          ended = true;
          return;
        }
        for (const m of decoder.push(value)) yield text ? text.decode(m) : m;
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
    const bytes = typeof message === 'string' ? utf8.encode(message) : toBytes(message);
    const writer = this.#getWriter();
    const frame = encodeMessage(bytes);
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

/** new FerroviaTransport(url, options), resolved once ready. */
export async function connect(url, options) {
  const t = new FerroviaTransport(url, options);
  await t.ready;
  return t;
}

/** Codec and session internals, exported for tests only; not a stable API. */
export const _internal = {
  VERSION, MIN_RECORD, RECORD_CAP, E, QX_TRANSPORT_PARAMETERS, QX_PING, QX_PING_RESPONSE, QmuxError,
  Writer, Reader, varintSize, encodeFrame, decodeFrame, encodeRecord, decodeRecord, encodeSizedRecord,
  encodeParams, decodeParams, defaultParams, utf8Bytes, wtError, MessageDecoder, encodeMessage, isSafari, defaultTransports, QmuxTransport,
};
