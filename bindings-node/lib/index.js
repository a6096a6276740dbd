'use strict';
// The Node.js face of Ferrovia: W3C WebTransport shapes (ReadableStream, WritableStream,
// promises) on the server side, over the promise-returning native classes. Everything
// here is translation and argument checking; protocol behaviour lives in the Rust core.

const { Duplex, Readable, Writable } = require('node:stream');
const native = require('./native.js');
const fleet = require('./fleet.js');
const diagnosticsChannel = require('node:diagnostics_channel');
const fs = require('node:fs');
const os = require('node:os');
const pathModule = require('node:path');

// ---------------------------------------------------------------------------------------
// The server's own log events

const LOG_LEVELS = ['off', 'error', 'warn', 'info', 'debug', 'trace'];
/** Every server log event is published here as { level, target, message, fields, line }. */
const logChannel = diagnosticsChannel.channel('ferrovia:log');

function publishLog(record) {
  const event = {
    level: record.level,
    target: record.target,
    message: record.message,
    fields: Object.fromEntries(record.fields),
    line: record.line,
  };
  if (logChannel.hasSubscribers) logChannel.publish(event);
  // Nobody listens: warnings and errors still reach stderr, as Python's last-resort
  // handler does for its loggers.
  else if (event.level === 'error' || event.level === 'warn') console.warn(`ferrovia ${event.level}: ${event.line}`);
}

let logLevel = 'warn';

/** Forwards the server's events at `level` and above ('warn' unless a server asked otherwise). */
function setLogLevel(level) {
  logLevel = level;
  native.forwardLogs(level, (record) => publishLog(record));
}

/** Publishes an event of the facade itself (a certificate reload) like the core's own. */
function logEvent(level, target, message, fields) {
  if (LOG_LEVELS.indexOf(level) > LOG_LEVELS.indexOf(logLevel)) return;
  const pairs = Object.entries(fields);
  const line = pairs.length ? `${message} ${pairs.map(([k, v]) => `${k}=${v}`).join(' ')}` : message;
  publishLog({ level, target, message, fields: pairs, line });
}

/** Largest chunk one native read returns. */
const READ_CHUNK = 256 * 1024;
/** Most datagrams one native call hands over. */
const DATAGRAM_BATCH = 64;
const MAX_U32 = 0xffffffff;
const NATIVE_PREFIX = 'ferrovia:';
/** The explicit-resource-management symbol (`await using`); Node 20 names it the same way. */
const asyncDispose = Symbol.asyncDispose ?? Symbol.for('nodejs.asyncDispose');

// ---------------------------------------------------------------------------------------
// Errors

/**
 * A WebTransport failure: `source` is 'stream' or 'session'; `streamErrorCode` carries
 * the peer's reset or stop-sending code; `code` is a stable machine-readable name.
 */
class WebTransportError extends Error {
  constructor(message = '', options = {}) {
    super(message);
    this.name = 'WebTransportError';
    this.source = options.source === 'session' ? 'session' : 'stream';
    this.streamErrorCode = Number.isInteger(options.streamErrorCode) ? options.streamErrorCode : null;
    if (options.code !== undefined) this.code = options.code;
    if (options.closeCode !== undefined) this.closeCode = options.closeCode;
    if (options.reason !== undefined) this.reason = options.reason;
  }
}

// Codes that describe a server or request problem rather than a transport one.
const PLAIN_CODES = new Set([
  'ERR_ADDRESS_IN_USE',
  'ERR_BIND',
  'ERR_CERTIFICATE',
  'ERR_INVALID_CONFIG',
  'ERR_REUSE_PORT',
  'ERR_NO_RUNTIME',
  'ERR_ROUTE_TAKEN',
  'ERR_SERVER_CLOSED',
  'ERR_INVALID_STATUS',
  'ERR_PROTOCOL_NOT_OFFERED',
  'ERR_INVALID_HEADER',
  'ERR_REQUEST_ANSWERED',
  'ERR_INVALID_ARGUMENT',
  'ERR_WRONG_TRANSPORT',
  'ERR_PROTOCOL_REQUIRED',
  'ERR_INVALID_CLOSE_CODE',
  'ERR_MESSAGE_TOO_LARGE',
  'ERR_MESSAGE_TRUNCATED',
  'ERR_WEBSOCKET_CLOSED',
  // Answering a request: the client left, or the session limit was reached meanwhile.
  'ERR_CONNECTION_LOST',
  'ERR_TOO_MANY_SESSIONS',
  // Reading an ordinary HTTP request body in a `fetch` handler.
  'ERR_BODY_TOO_LARGE',
  'ERR_BODY_TIMEOUT',
  'ERR_BODY_ABORTED',
  'ERR_BODY',
]);

// The record fields that are not copied onto the error as they are.
const RECORD_FIELDS = new Set(['code', 'message', 'source']);

/**
 * A bind failure shaped like `net`'s: `code: 'EADDRINUSE'`, `errno`, `syscall`, `address`
 * and `port`, with Ferrovia's own name kept as `ferroviaCode`.
 */
function addressInUse(e, message) {
  e.code = 'EADDRINUSE';
  e.ferroviaCode = 'ERR_ADDRESS_IN_USE';
  e.errno = -os.constants.errno.EADDRINUSE;
  e.syscall = 'bind';
  // "cannot bind UDP 127.0.0.1:4433: ..." or "cannot bind TCP [::]:4433: ..."
  const m = /cannot bind (UDP|TCP) \[?([^\s\]]*?)\]?:(\d+):/.exec(message);
  if (m) {
    e.address = m[2];
    e.port = Number(m[3]);
    e.transport = m[1].toLowerCase();
  }
}

/** Turns an error from the native module into a WebTransportError or a coded Error. */
function translate(err) {
  if (!err || typeof err.message !== 'string') return err;
  if (!err.message.startsWith(NATIVE_PREFIX)) {
    // Anything else from native code is a bug (a caught panic); keep it recognisable.
    if (err.code === 'GenericFailure' || err.code === undefined) {
      const e = new Error(`ferrovia internal error: ${err.message}`);
      e.code = 'ERR_FERROVIA_INTERNAL';
      return e;
    }
    return err;
  }
  let rec;
  try {
    rec = JSON.parse(err.message.slice(NATIVE_PREFIX.length));
  } catch {
    return err;
  }
  let e;
  if (PLAIN_CODES.has(rec.code)) {
    e = new Error(rec.message);
    e.code = rec.code;
    for (const key of Object.keys(rec)) if (!RECORD_FIELDS.has(key)) e[key] = rec[key];
    if (rec.code === 'ERR_ADDRESS_IN_USE') addressInUse(e, rec.message);
  } else {
    e = new WebTransportError(rec.message, rec);
    if (rec.size !== undefined) e.size = rec.size;
    if (rec.maxDatagramSize !== undefined) e.maxDatagramSize = rec.maxDatagramSize;
  }
  return e;
}

const rethrow = (err) => {
  throw translate(err);
};

/** The stream error code carried by an abort/cancel reason (0 when it has none). */
function codeOf(reason) {
  const c = typeof reason === 'number' ? reason : reason && reason.streamErrorCode;
  return Number.isInteger(c) && c >= 0 && c <= MAX_U32 ? c : 0;
}

// ---------------------------------------------------------------------------------------
// Argument checks

const { describe, checkInt } = require('./check.js');

function checkString(name, v) {
  if (typeof v !== 'string') throw new TypeError(`${name} must be a string, got ${describe(v)}`);
  return v;
}

function checkObject(name, v) {
  if (v === null || typeof v !== 'object' || Array.isArray(v)) {
    throw new TypeError(`${name} must be an object, got ${describe(v)}`);
  }
  return v;
}

/** Checks `watch` of a certificate: a boolean, and only beside certFile and keyFile. */
function checkWatch(name, cert) {
  if (cert.watch === undefined) return false;
  if (typeof cert.watch !== 'boolean') throw new TypeError(`${name}.watch must be a boolean, got ${describe(cert.watch)}`);
  if (cert.watch && (cert.certFile === undefined || cert.cert !== undefined || cert.key !== undefined)) {
    throw new TypeError(`${name}.watch needs certFile and keyFile`);
  }
  return cert.watch;
}

/** Checks an AbortSignal option the way Node's own APIs do. */
function checkSignal(name, signal) {
  if (signal === null || typeof signal !== 'object' || !('aborted' in signal) || typeof signal.addEventListener !== 'function') {
    throw new TypeError(`${name} must be an AbortSignal, got ${describe(signal)}`);
  }
  return signal;
}

/** The error of an operation stopped by an AbortSignal, as Node's own APIs make it. */
function abortError(signal) {
  const e = new Error('The operation was aborted', { cause: signal.reason });
  e.name = 'AbortError';
  e.code = 'ABORT_ERR';
  return e;
}

/** Reads a PEM certificate chain and key from files (ERR_CERTIFICATE when one cannot be read). */
function readPemFiles(certFile, keyFile) {
  const read = (file) => {
    try {
      return fs.readFileSync(file, 'utf8');
    } catch (err) {
      const e = new Error(`cannot read ${file}: ${err.message}`, { cause: err });
      e.code = 'ERR_CERTIFICATE';
      throw e;
    }
  };
  return { cert: read(certFile), key: read(keyFile) };
}

/** Quiet time after the last change to a watched certificate file before it is reloaded. */
const CERT_RELOAD_DELAY = 200;
/** Polling interval where the file system cannot report changes. */
const CERT_POLL_INTERVAL = 1000;
const CERT_LOG_TARGET = 'ferrovia::certificate';

/**
 * Calls `install(cert, key)` with the files' PEM text whenever either file changes (after
 * CERT_RELOAD_DELAY of quiet). The directories are watched, so a file replaced by rename
 * (or a Kubernetes secret's symlink swap) is seen too. A pair that fails to load (a file
 * half written, a key that does not match) is logged and the current certificate stays;
 * the next change tries again. Nothing here keeps the process alive. Returns { close() }.
 */
function watchCertificate(certFile, keyFile, install) {
  let closed = false;
  let timer = null;
  let tried = null; // the texts last tried, installed or not
  const fields = { cert_file: certFile, key_file: keyFile };
  const reload = () => {
    timer = null;
    if (closed) return;
    let pem;
    try {
      pem = readPemFiles(certFile, keyFile);
    } catch (err) {
      logEvent('warn', CERT_LOG_TARGET, 'certificate reload failed; the current certificate stays', { ...fields, error: err.message });
      return;
    }
    if (tried && tried.cert === pem.cert && tried.key === pem.key) return;
    tried = pem;
    try {
      const sha256 = install(pem.cert, pem.key);
      logEvent('info', CERT_LOG_TARGET, 'certificate reloaded', { ...fields, sha256 });
    } catch (err) {
      logEvent('warn', CERT_LOG_TARGET, 'certificate reload failed; the current certificate stays', { ...fields, error: err.message });
    }
  };
  const changed = () => {
    if (closed) return;
    if (timer) clearTimeout(timer);
    timer = setTimeout(reload, CERT_RELOAD_DELAY);
    timer.unref();
  };
  const files = [...new Set([pathModule.resolve(certFile), pathModule.resolve(keyFile)])];
  const watchers = [];
  let polling = false;
  const poll = () => {
    if (polling) return;
    polling = true;
    for (const file of files) {
      fs.watchFile(file, { persistent: false, interval: CERT_POLL_INTERVAL }, changed);
    }
    watchers.push({ close: () => files.forEach((file) => fs.unwatchFile(file, changed)) });
  };
  try {
    for (const dir of new Set(files.map((f) => pathModule.dirname(f)))) {
      const w = fs.watch(dir, { persistent: false }, changed);
      w.on('error', () => {
        // The directory went away or cannot be watched any more: poll the files instead.
        w.close();
        if (!closed) poll();
      });
      watchers.push(w);
    }
  } catch {
    poll();
  }
  return {
    close() {
      closed = true;
      if (timer) clearTimeout(timer);
      for (const w of watchers.splice(0)) w.close();
    },
  };
}

function pemText(name, v) {
  if (typeof v === 'string') return v;
  if (v instanceof Uint8Array) return Buffer.from(v.buffer, v.byteOffset, v.byteLength).toString('utf8');
  throw new TypeError(`${name} must be a PEM string or Buffer, got ${describe(v)}`);
}

/** A Buffer view of bytes given as ArrayBuffer or ArrayBufferView (no copy). */
function toBuffer(name, chunk) {
  if (Buffer.isBuffer(chunk)) return chunk;
  if (ArrayBuffer.isView(chunk)) return Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength);
  if (chunk instanceof ArrayBuffer || (typeof SharedArrayBuffer !== 'undefined' && chunk instanceof SharedArrayBuffer)) {
    return Buffer.from(chunk);
  }
  throw new TypeError(`${name} must be a Uint8Array, ArrayBufferView or ArrayBuffer, got ${describe(chunk)}`);
}

const LIMIT_NAMES = [
  'maxSessions',
  'maxSessionsPerConnection',
  'maxBidiStreams',
  'maxUniStreams',
  'streamReceiveWindow',
  'connectionReceiveWindow',
  'sendWindow',
  'datagramQueue',
  'maxBufferedStreams',
  'maxBufferedDatagrams',
  'requestQueue',
  'maxSessionsPerIp',
  'maxConnections',
  'maxConnectionsPerIp',
  'retryThreshold',
  'datagramQueueBytes',
  'maxRefusedRequests',
  'requestTimeout',
  'responseTimeout',
  'sessionlessTimeout',
  'maxRequestBody',
  'handlerTimeout',
  'maxMessageSize',
  'maxConcurrentRequests',
  'writeTimeout',
];

const KNOWN_OPTIONS = new Set([
  'fetch',
  'client',
  'signal',
  'logLevel',
  'tcp',
  'host',
  'port',
  'certificate',
  'names',
  'origins',
  'idleTimeout',
  'keepAlive',
  'congestionControl',
  'limits',
  'reusePort',
  'connectionIds',
  'fleetSecret',
]);

function nativeOptions(options) {
  const o = options === undefined ? {} : checkObject('options', options);
  for (const key of Object.keys(o)) {
    if (!KNOWN_OPTIONS.has(key)) throw new TypeError(`unknown option ${JSON.stringify(key)}`);
  }
  const out = { host: '::', port: 4433 };
  if (o.host !== undefined) {
    out.host = checkString('options.host', o.host);
    if (!/^[0-9a-fA-F.:]+$/.test(out.host)) {
      throw new RangeError(`options.host must be an IP address such as '::' or '127.0.0.1', got ${JSON.stringify(out.host)}`);
    }
  }
  if (o.port !== undefined) out.port = checkInt('options.port', o.port, 0, 65535);

  const cert = o.certificate === undefined ? 'self-signed' : o.certificate;
  if (cert === 'self-signed') {
    if (o.names !== undefined) {
      if (!Array.isArray(o.names) || o.names.length === 0) throw new TypeError('options.names must be a non-empty array of strings');
      out.names = o.names.map((n, i) => checkString(`options.names[${i}]`, n));
    }
  } else if (typeof cert === 'string') {
    throw new RangeError(`options.certificate must be 'self-signed', { cert, key } or { certFile, keyFile }, got ${JSON.stringify(cert)}`);
  } else {
    checkObject('options.certificate', cert);
    if (cert.cert !== undefined || cert.key !== undefined) {
      out.certPem = pemText('options.certificate.cert', cert.cert);
      out.keyPem = pemText('options.certificate.key', cert.key);
    } else if (cert.certFile !== undefined || cert.keyFile !== undefined) {
      out.certFile = checkString('options.certificate.certFile', cert.certFile);
      out.keyFile = checkString('options.certificate.keyFile', cert.keyFile);
    } else {
      throw new TypeError('options.certificate must have cert and key (PEM) or certFile and keyFile');
    }
    checkWatch('options.certificate', cert);
    if (o.names !== undefined) throw new TypeError('options.names only applies to a self-signed certificate');
  }

  if (o.origins !== undefined) {
    if (o.origins === 'same-host' || o.origins === 'any') out.originPolicy = o.origins;
    else if (Array.isArray(o.origins)) {
      out.originPolicy = 'list';
      out.allowedOrigins = o.origins.map((v, i) => checkString(`options.origins[${i}]`, v));
    } else {
      throw new TypeError(`options.origins must be 'same-host', 'any' or an array of origins, got ${describe(o.origins)}`);
    }
  }
  if (o.idleTimeout !== undefined) out.idleTimeoutMs = checkInt('options.idleTimeout', o.idleTimeout, 0, 2 ** 31);
  if (o.keepAlive !== undefined) out.keepAliveMs = checkInt('options.keepAlive', o.keepAlive, 0, 2 ** 31);
  if (o.congestionControl !== undefined) {
    const cc = checkString('options.congestionControl', o.congestionControl);
    if (!['cubic', 'newreno', 'bbr'].includes(cc)) {
      throw new RangeError(`options.congestionControl must be 'cubic', 'newreno' or 'bbr', got ${JSON.stringify(cc)}`);
    }
    out.congestionController = cc;
  }
  if (o.tcp !== undefined && o.tcp !== true) {
    if (o.tcp === false) out.tcp = 'off';
    else {
      checkObject('options.tcp', o.tcp);
      for (const key of Object.keys(o.tcp)) {
        if (!['host', 'port', 'behindTlsProxy', 'trustedProxies'].includes(key)) throw new TypeError(`unknown option tcp.${key}`);
      }
      out.tcp = o.tcp.behindTlsProxy === true ? 'plain-behind-tls-proxy' : 'tls';
      if (o.tcp.behindTlsProxy !== undefined && typeof o.tcp.behindTlsProxy !== 'boolean') {
        throw new TypeError('options.tcp.behindTlsProxy must be a boolean');
      }
      if (o.tcp.trustedProxies !== undefined) {
        if (o.tcp.behindTlsProxy !== true) {
          throw new TypeError('options.tcp.trustedProxies applies only with behindTlsProxy: true');
        }
        if (!Array.isArray(o.tcp.trustedProxies)) {
          throw new TypeError(`options.tcp.trustedProxies must be an array of addresses or CIDR ranges, got ${describe(o.tcp.trustedProxies)}`);
        }
        out.trustedProxies = o.tcp.trustedProxies.map((r, i) => checkString(`options.tcp.trustedProxies[${i}]`, r));
      }
      if (o.tcp.host !== undefined) out.tcpHost = checkString('options.tcp.host', o.tcp.host);
      if (o.tcp.port !== undefined) out.tcpPort = checkInt('options.tcp.port', o.tcp.port, 0, 65535);
      if (o.tcp.port === undefined && o.tcp.behindTlsProxy !== true) {
        throw new TypeError('options.tcp needs a port (or true for the UDP port, false for none)');
      }
    }
  }
  if (o.limits !== undefined) {
    checkObject('options.limits', o.limits);
    out.limits = {};
    for (const key of Object.keys(o.limits)) {
      if (!LIMIT_NAMES.includes(key)) throw new TypeError(`unknown option limits.${key}`);
      const max = key === 'sendWindow' || key === 'maxRequestBody' || key === 'maxMessageSize' ? Number.MAX_SAFE_INTEGER : MAX_U32;
      // A retry threshold of 0 means: always ask for address validation.
      const min = key === 'retryThreshold' ? 0 : 1;
      out.limits[key] = checkInt(`options.limits.${key}`, o.limits[key], min, max);
    }
  }
  fleet.fleetOptions(o, out);
  return out;
}

// ---------------------------------------------------------------------------------------
// Streams

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

// ---------------------------------------------------------------------------------------
// Messages on a stream

const DEFAULT_MAX_MESSAGE_SIZE = 1 << 20;
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
 * `bufferedAmount` counts what was sent but not yet taken, so a broadcaster can tell a
 * member that reads nothing. A send nobody awaits never becomes an unhandled rejection:
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

  /** Bytes of messages given to `send()` that the stream has not taken yet. */
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
    if (this.#reading) throw new TypeError('this MessageStream is already being read');
    const reader = this.#readable.getReader();
    this.#reading = true;
    const decoder = new native.NativeMessageDecoder(this.#maxMessageSize);
    const text = this.#text ? new TextDecoder('utf-8', { fatal: true }) : null;
    let ended = false;
    try {
      for (;;) {
        const { value, done } = await reader.read();
        let batch;
        try {
          if (done) {
            decoder.finish();
            ended = true;
            return;
          }
          batch = decoder.push(value);
        } catch (err) {
          throw translate(err);
        }
        for (const m of batch) yield text ? text.decode(m) : m;
      }
    } finally {
      if (!ended) await reader.cancel().catch(() => {});
      reader.releaseLock();
    }
  }

  /** Sends one message (string as UTF-8, or bytes); resolves once the stream took it. */
  async send(message) {
    const bytes = typeof message === 'string' ? utf8.encode(message) : toBuffer('message', message);
    const writer = this.#getWriter();
    const frame = native.encodeMessageFrame(bytes);
    this.#buffered += frame.byteLength;
    const written = writer.write(frame).finally(() => {
      this.#buffered -= frame.byteLength;
    });
    written.catch(() => {});
    return written;
  }

  /** Finishes the writable side (FIN) after the messages sent. */
  async close() {
    return this.#getWriter().close();
  }

  /** Resets the writable side; the reason's `streamErrorCode` (else 0) reaches the peer. Never rejects. */
  async abort(reason) {
    // Never rejects: a stream that already failed has nothing left to reset.
    return this.#getWriter().abort(reason).catch(() => {});
  }
}

// ---------------------------------------------------------------------------------------
// Session

// What NativeSession.ready() waits for and reports.
const READY_BI = 1;
const READY_UNI = 2;
const READY_DATAGRAM = 4;
const READY_CLOSED = 8;
const READY_DRAINING = 16;

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
        // A wait is pending without this kind: have it return so the next one asks for all.
        if ((this.#want & ~this.#asked) !== 0) this.#native.interrupt();
      } else {
        this.#askSoon();
      }
    });
  }

  /**
   * Asks once the current turn's promise reactions have run: the kinds a handler asks for
   * together, and the consumers a wake-up fed coming back for more, share one native wait
   * instead of each interrupting the last.
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
    this.#native.ready(this.#asked).then(
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

// ---------------------------------------------------------------------------------------
// Requests and the server

function acceptOptions(options) {
  let protocol;
  let headers;
  if (options !== undefined) {
    checkObject('options', options);
    if (options.protocol !== undefined && options.protocol !== null) protocol = checkString('options.protocol', options.protocol);
    if (options.headers !== undefined) {
      const entries = Array.isArray(options.headers) ? options.headers : Object.entries(checkObject('options.headers', options.headers));
      headers = entries.map((e, i) => {
        if (!Array.isArray(e) || e.length !== 2) throw new TypeError(`options.headers[${i}] must be a [name, value] pair`);
        return { name: checkString(`options.headers[${i}] name`, e[0]).toLowerCase(), value: checkString(`options.headers[${i}] value`, String(e[1])) };
      });
    }
  }
  return { protocol, headers };
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
    this.#readable ??= pulled(
      () => n.recv(),
      (m, c) => c.enqueue(m.text ?? new Uint8Array(m.binary.buffer, m.binary.byteOffset, m.binary.byteLength)),
      0,
    );
    return this.#readable;
  }

  /** Messages to the client: a write resolves once the message is queued for the socket. */
  get writable() {
    const n = this.#native;
    this.#writable ??= new WritableStream(
      {
        async write(chunk) {
          if (typeof chunk === 'string') await n.sendText(chunk).catch(rethrow);
          else if (chunk instanceof ArrayBuffer) await n.sendBinary(Buffer.from(chunk)).catch(rethrow);
          else if (ArrayBuffer.isView(chunk)) await n.sendBinary(Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength)).catch(rethrow);
          else throw new TypeError(`a WebSocket message is a string, ArrayBuffer or typed array, not ${describe(chunk)}`);
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

/** What a request's accept() returned, for route() to close when its handler throws. */
const ACCEPTED = Symbol('accepted');

/** A session request (extended CONNECT) waiting for accept() or reject(). */
class SessionRequest {
  #native;
  [ACCEPTED] = null;

  constructor(nativeRequest) {
    this.#native = nativeRequest;
    const raw = nativeRequest.headers.map((h) => [h.name, h.value]);
    /** Every regular header as [name, value] pairs in arrival order (pseudo-headers are `path` and `authority`). */
    this.rawHeaders = raw;
    /** Headers by lower-case name; repeated headers are joined with ', '. */
    this.headers = {};
    for (const [name, value] of raw) {
      this.headers[name] = name in this.headers ? `${this.headers[name]}, ${value}` : value;
    }
    this.path = nativeRequest.path;
    this.authority = nativeRequest.authority;
    this.origin = nativeRequest.origin ?? null;
    this.subprotocols = nativeRequest.subprotocols;
    this.remoteAddress = nativeRequest.remoteAddress;
    this.remotePort = nativeRequest.remotePort;
    /** 'webtransport' (HTTP/3), 'qmux' (a WebSocket carrying a session) or 'websocket'. */
    this.transport = nativeRequest.transport;
    /** The HTTP version the request came over: '3.0', '2.0' or '1.1'. */
    this.httpVersion = nativeRequest.httpVersion;
  }

  /** https://authority/path?query as the client asked for it. */
  get url() {
    return `https://${this.authority}${this.path}`;
  }

  /** Whether accept() or reject() was already called successfully. */
  get answered() {
    return this.#native.answered;
  }

  /**
   * Accepts the session (200), optionally choosing one of `subprotocols` and adding
   * response headers ({ name: value } or [name, value] pairs). A plain WebSocket request
   * (`transport === 'websocket'`) is accepted with acceptWebSocket() instead.
   */
  async accept(options) {
    const { protocol, headers } = acceptOptions(options);
    const s = await this.#native.accept(protocol, headers).catch(rethrow);
    return (this[ACCEPTED] = new WebTransportSession(s));
  }

  /**
   * Accepts a plain WebSocket request (on a route that takes them: `webSockets: true`),
   * optionally choosing one of `subprotocols` and adding response headers.
   */
  async acceptWebSocket(options) {
    const { protocol, headers } = acceptOptions(options);
    const ws = await this.#native.acceptWebSocket(protocol, headers).catch(rethrow);
    return (this[ACCEPTED] = new WebSocketSession(ws, this.url.replace(/^https:/, 'wss:')));
  }

  /**
   * Rejects the session with an HTTP status in 300..599 (default 404) and optional
   * response headers (`{ headers: { 'www-authenticate': 'Bearer' } }` or [name, value]
   * pairs). A bad status or header throws without answering.
   */
  async reject(status = 404, options) {
    checkInt('status', status, 300, 599);
    const { headers } = acceptOptions(options);
    await this.#native.reject(status, headers).catch(rethrow);
  }
}

/** Requests for one path, as an async iterable; close() releases the path. */
class RequestStream {
  #route;
  #closed = false;

  constructor(nativeRoute) {
    this.#route = nativeRoute;
    this.path = nativeRoute.path;
  }

  /** The next request, or null once the route or the server is closed. */
  async next() {
    if (this.#closed) return null;
    const r = await this.#route.accept();
    return r === null ? null : new SessionRequest(r);
  }

  /** Releases the path: new requests for it get 404. */
  close() {
    this.#closed = true;
    this.#route.close();
  }

  async *[Symbol.asyncIterator]() {
    try {
      for (;;) {
        const r = await this.next();
        if (r === null) return;
        yield r;
      }
    } finally {
      this.close();
    }
  }
}

// ---------------------------------------------------------------------------------------
// Ordinary HTTP: the `fetch` handler

const NO_BODY_METHODS = new Set(['GET', 'HEAD']);
// Requests taken from the native queue per crossing: a burst costs one promise, not one each.
const ACCEPT_BATCH = 64;
// A response body read whole before the head goes out is sent with it in one native call
// when it ends within this many bytes; a longer or slower one streams.
const WHOLE_BODY_LIMIT = 64 * 1024;

/** Pulls ordinary requests and answers each through `handler` (WHATWG Request → Response). */
function serveFetch(requests, handler) {
  const failed = (err) => console.error('ferrovia: fetch handler failed:', err);
  (async () => {
    for (;;) {
      const batch = await requests.acceptMany(ACCEPT_BATCH);
      if (batch.length === 0) return;
      for (let i = 0; i < batch.length; i++) answerFetch(batch[i], handler).catch(failed);
    }
  })().catch((err) => console.error('ferrovia: fetch loop failed:', err));
}

const CLIENT_PATH = '/ferrovia/client.js';
let connectorSource = null;

/** The path of the `client` option: true for the default one, a path, or null for none. */
function clientPathOf(client) {
  if (client === undefined || client === false) return null;
  if (client === true) return CLIENT_PATH;
  if (typeof client === 'string' && client.startsWith('/')) return client;
  throw new TypeError(`options.client must be a boolean or a path starting with '/', got ${describe(client)}`);
}

/**
 * A fetch handler answering GET and HEAD on `clientPath` with the browser connector and
 * the server's certificate hashes (`export const serverCertificateHashes`), and the rest
 * with `handler` (404 without one).
 */
function withClient(nativeServer, clientPath, handler) {
  return (request, info) => {
    if ((request.method === 'GET' || request.method === 'HEAD') && new URL(request.url).pathname === clientPath) {
      connectorSource ??= fs.readFileSync(pathModule.join(__dirname, 'client.mjs'), 'utf8');
      return new Response(nativeServer.clientModule(connectorSource), {
        // The hashes change when the certificate is renewed.
        headers: { 'content-type': 'text/javascript; charset=utf-8', 'cache-control': 'no-cache' },
      });
    }
    return handler ? handler(request, info) : new Response(null, { status: 404 });
  };
}

function requestOf(exchange, head) {
  const method = head.method;
  let body = null;
  if (!NO_BODY_METHODS.has(method)) {
    body = new ReadableStream({
      async pull(controller) {
        try {
          const chunk = await exchange.readBody();
          if (chunk === null) controller.close();
          else controller.enqueue(new Uint8Array(chunk.buffer, chunk.byteOffset, chunk.byteLength));
        } catch (err) {
          controller.error(translate(err));
        }
      },
      cancel() {
        return exchange.discardBody();
      },
    });
  }
  // Name/value pairs go straight into the Request's own header list.
  const flat = head.headers;
  const headers = new Array(flat.length >> 1);
  for (let i = 0, j = 0; i < flat.length; i += 2, j++) headers[j] = [flat[i], flat[i + 1]];
  return new Request(head.url, { method, headers, body, duplex: 'half' });
}

// Settles once the event loop has turned: a body read that has not settled by then waits on
// something outside this tick (a stream still being produced), so the head goes out without it.
const NEXT_TURN = Symbol('next turn');
let nextTurn = null;
function turned() {
  if (nextTurn === null) {
    nextTurn = new Promise((resolve) =>
      setImmediate(() => {
        nextTurn = null;
        resolve(NEXT_TURN);
      }),
    );
  }
  return nextTurn;
}

function chunkOf(value) {
  if (value instanceof Uint8Array) return value;
  throw new TypeError(`a response body chunk must be a Uint8Array, got ${describe(value)}`);
}

async function answerFetch(exchange, handler) {
  let responded = false;
  let reader = null;
  try {
    const head = exchange.head;
    const request = requestOf(exchange, head);
    const info = { remoteAddress: head.remoteAddress ?? null, remotePort: head.remotePort ?? null, httpVersion: head.httpVersion };
    const isHead = head.method === 'HEAD';
    const response = await handler(request, info);
    if (!(response instanceof Response)) {
      throw new TypeError(`the fetch handler must return a Response, got ${describe(response)}`);
    }
    const headers = [];
    for (const [name, value] of response.headers) headers.push(name, value);
    if (response.body === null) {
      responded = true;
      exchange.respond(response.status, headers, false);
      return;
    }
    // Read what the body has ready within this turn of the event loop (all of a body made
    // from bytes, a string or JSON): a body that ends there goes out with the head in one
    // call; otherwise the head goes out now and the rest streams with backpressure.
    reader = response.body.getReader();
    const ready = [];
    let readySize = 0;
    let pending = reader.read();
    for (;;) {
      const r = await Promise.race([pending, turned()]);
      if (r === NEXT_TURN) break;
      pending = null;
      if (r.done) {
        responded = true;
        if (isHead) {
          // The head a GET would get, with the length of the body it would carry.
          if (!response.headers.has('content-length')) headers.push('content-length', String(readySize));
          exchange.respond(response.status, headers, false);
          return;
        }
        const whole = ready.length === 1 ? ready[0] : ready.length === 0 ? undefined : Buffer.concat(ready, readySize);
        exchange.respond(response.status, headers, false, whole);
        return;
      }
      const chunk = chunkOf(r.value);
      ready.push(chunk);
      readySize += chunk.byteLength;
      if (readySize > WHOLE_BODY_LIMIT) break;
      pending = reader.read();
    }
    responded = true;
    if (isHead) {
      // A HEAD response carries no body: the head goes out alone, the body is dropped.
      reader.cancel().catch(() => {});
      exchange.respond(response.status, headers, false);
      return;
    }
    if (!exchange.respond(response.status, headers, true)) {
      await reader.cancel().catch(() => {});
      return;
    }
    try {
      for (const chunk of ready) await exchange.write(chunk);
      for (;;) {
        const { done, value } = await (pending ?? reader.read());
        pending = null;
        if (done) break;
        await exchange.write(chunkOf(value));
      }
      exchange.end();
    } catch (err) {
      // The client left (write failed) or the body failed: cut the response off.
      reader.cancel().catch(() => {});
      await exchange.abort(String(err?.message ?? err));
    }
  } catch (err) {
    if (!responded) {
      reader?.cancel().catch(() => {});
      try {
        exchange.respond(500, ['content-type', 'text/plain; charset=utf-8'], false, Buffer.from('internal server error\n'));
      } catch {
        // Already answered (the handler timeout passed).
      }
    }
    throw err;
  }
}

/** A WebTransport server. Create one with `await Server.listen(options)`. */
class Server {
  #native;
  #routes = new Set();
  #keepAlive;
  #closing = null;
  #certWatcher = null;
  #unlisten = null;

  constructor(nativeServer, secret) {
    if (secret !== LISTEN) throw new TypeError('use `await Server.listen(options)` to create a Server');
    this.#native = nativeServer;
    // A listening server keeps the process alive, like net.Server; close() releases it.
    this.#keepAlive = setInterval(() => {}, 2 ** 30);
  }

  /**
   * Binds a server. Options: host ('::'), port (4433; 0 picks one), certificate
   * ('self-signed' | { cert, key } | { certFile, keyFile }), names (self-signed names),
   * origins ('same-host' | 'any' | string[]), idleTimeout and keepAlive (ms, 0 = off),
   * congestionControl ('cubic' | 'newreno' | 'bbr'), limits ({ maxSessions, ... }),
   * signal (an AbortSignal that closes the server). `certificate: { certFile, keyFile,
   * watch: true }` reloads the certificate when the files change.
   */
  static async listen(options) {
    const opts = nativeOptions(options);
    const signal = options?.signal === undefined ? undefined : checkSignal('options.signal', options.signal);
    if (signal?.aborted) throw abortError(signal);
    const logLevel = options?.logLevel ?? 'warn';
    if (!LOG_LEVELS.includes(logLevel)) {
      throw new TypeError(`options.logLevel must be one of ${LOG_LEVELS.map((l) => `'${l}'`).join(', ')}, got ${describe(logLevel)}`);
    }
    setLogLevel(logLevel);
    const fetchHandler = options?.fetch;
    if (fetchHandler !== undefined && typeof fetchHandler !== 'function') {
      throw new TypeError(`options.fetch must be a function (request, info) => Response, got ${describe(fetchHandler)}`);
    }
    const clientPath = clientPathOf(options?.client);
    const n = await native.listen(opts).catch(rethrow);
    const server = new Server(n, LISTEN);
    if (signal?.aborted) {
      await server.close({ grace: 0 }).catch(() => {});
      throw abortError(signal);
    }
    if (clientPath) serveFetch(n.enableHttp(1024), withClient(n, clientPath, fetchHandler));
    else if (fetchHandler) serveFetch(n.enableHttp(1024), fetchHandler);
    if (options?.certificate?.watch === true) server.#watchCertificate(opts.certFile, opts.keyFile);
    if (signal) {
      // Like net.Server.listen({ signal }): aborting closes the server.
      const onAbort = () => server.close().catch(() => {});
      signal.addEventListener('abort', onAbort, { once: true });
      server.#unlisten = () => signal.removeEventListener('abort', onAbort);
    }
    return server;
  }

  /** Installs a PEM pair for new connections; returns the new certificate's hex SHA-256. */
  #install(cert, key) {
    try {
      this.#native.setCertificate(cert, key);
    } catch (err) {
      throw translate(err);
    }
    return Buffer.from(this.#native.certificateSha256).toString('hex');
  }

  #watchCertificate(certFile, keyFile) {
    this.#certWatcher?.close();
    this.#certWatcher = this.#closing ? null : watchCertificate(certFile, keyFile, (cert, key) => this.#install(cert, key));
  }

  /** The bound UDP port. */
  get port() {
    return this.#native.port;
  }
  /** The bound IP address. */
  get host() {
    return this.#native.host;
  }
  /** { address, port } of the bound socket. */
  address() {
    return { address: this.#native.host, port: this.#native.port };
  }

  /**
   * [{ algorithm: 'sha-256', value: Uint8Array }] for the browser's serverCertificateHashes:
   * the current certificate's and, in the day before a self-signed certificate is renewed,
   * the next one's too, so a page given the whole list keeps connecting after the switch.
   */
  get certificateHashes() {
    return this.#native.certificateHashes.map((b) => ({ algorithm: 'sha-256', value: new Uint8Array(b.buffer, b.byteOffset, b.byteLength) }));
  }

  /** The current certificate: { sha256 (hex), spkiSha256 (base64), pem }. */
  get certificate() {
    return {
      sha256: Buffer.from(this.#native.certificateSha256).toString('hex'),
      spkiSha256: this.#native.certificateSpki,
      pem: this.#native.certificatePem,
    };
  }

  /**
   * Replaces the certificate for new connections: `{ cert, key }` (PEM text or bytes) or
   * `{ certFile, keyFile }` (PEM files, read now), with `watch: true` to reload the files
   * whenever they change. A certificate set here stops the watching of earlier files. On
   * failure (ERR_CERTIFICATE) nothing changes.
   */
  setCertificate(certificate) {
    checkObject('certificate', certificate);
    const watch = checkWatch('certificate', certificate);
    let pem;
    if (certificate.cert === undefined && certificate.key === undefined && (certificate.certFile !== undefined || certificate.keyFile !== undefined)) {
      const certFile = checkString('certificate.certFile', certificate.certFile);
      const keyFile = checkString('certificate.keyFile', certificate.keyFile);
      pem = readPemFiles(certFile, keyFile);
      this.#install(pem.cert, pem.key);
      if (watch) this.#watchCertificate(certFile, keyFile);
      else this.#stopWatching();
      return;
    }
    this.#install(pemText('certificate.cert', certificate.cert), pemText('certificate.key', certificate.key));
    this.#stopWatching();
  }

  #stopWatching() {
    this.#certWatcher?.close();
    this.#certWatcher = null;
  }

  /** Sessions open right now (plain WebSockets included). */
  get sessionCount() {
    return this.#native.sessionCount;
  }

  /** QUIC and TCP connections open right now. */
  get connectionCount() {
    return this.#native.connectionCount;
  }

  /**
   * Starts a drain, as before a deploy: new session and WebSocket requests get 503, open
   * sessions are asked to drain (the page's `WebTransport.draining` resolves) and go on
   * until they end. The socket stays bound and `fetch` keeps answering. `drained()`
   * resolves once the last session has ended; `close()` ends what is left.
   */
  drain() {
    this.#native.drain();
  }

  /** Whether `drain()` was called. */
  get draining() {
    return this.#native.draining;
  }

  /** Resolves once no session or WebSocket is open. */
  drained() {
    return this.#native.drained();
  }

  /**
   * The server's counters: connections and sessions open now, and totals of what it
   * admitted, refused and answered itself (`requestsRefused` by status). Each refusal is
   * also published on the `ferrovia:log` diagnostics channel (level 'info') with its
   * reason. `stats().toPrometheus()` is the text for a /metrics route.
   */
  stats() {
    let s;
    try {
      s = this.#native.stats();
    } catch (err) {
      throw translate(err);
    }
    const text = s.prometheus;
    return {
      connections: s.connections,
      sessions: s.sessions,
      connectionsAccepted: s.connectionsAccepted,
      connectionsRefused: s.connectionsRefused,
      handshakesFailed: s.handshakesFailed,
      sessionsAccepted: s.sessionsAccepted,
      sessionsFailedToStart: s.sessionsFailedToStart,
      httpRequests: s.httpRequests,
      requestsRefused: Object.fromEntries(s.requestsRefused.map(([status, count]) => [status, count])),
      toPrometheus: () => text,
    };
  }

  /**
   * The TCP port of the WebSocket and QMux side (the UDP port unless `tcp` says
   * otherwise), or null when `tcp: false`.
   */
  get tcpPort() {
    return this.#native.tcpPort ?? null;
  }

  /**
   * Session requests as an async iterable: for one path (exact match, query ignored) when
   * `path` is given, otherwise for every path that has no route of its own. Paths nobody
   * listens for are answered with 404.
   */
  requests(path, options) {
    let webSockets = false;
    if (options !== undefined) {
      checkObject('options', options);
      for (const key of Object.keys(options)) {
        if (key !== 'webSockets') throw new TypeError(`unknown option ${JSON.stringify(key)}`);
      }
      if (options.webSockets !== undefined && typeof options.webSockets !== 'boolean') {
        throw new TypeError('options.webSockets must be a boolean');
      }
      webSockets = options.webSockets === true;
    }
    if (path === undefined) {
      if (webSockets) throw new TypeError('webSockets needs a path: plain WebSockets only go to routes that ask for them');
      const n = this.#native;
      // Queue unrouted requests now: the first native accept() is polled on another
      // thread a moment later, and a request arriving in between would get 404.
      n.queueUnrouted();
      return {
        async *[Symbol.asyncIterator]() {
          for (;;) {
            const r = await n.accept();
            if (r === null) return;
            yield new SessionRequest(r);
          }
        },
      };
    }
    checkString('path', path);
    let route;
    try {
      route = this.#native.route(path, webSockets);
    } catch (err) {
      throw translate(err);
    }
    const stream = new RequestStream(route);
    this.#routes.add(stream);
    return stream;
  }

  /**
   * Calls `handler(request)` for every request to `path`. If the handler throws or
   * rejects, `onError` (default: console.error) sees the error, and the request gets 500
   * if it was not answered yet; a session it accepted is closed (code 0, reason
   * 'internal error'; a plain WebSocket with 1011), as the Python package does. Returns the
   * RequestStream; close() it to stop routing.
   */
  route(path, handler, { onError = (e) => console.error('ferrovia: route handler failed:', e), webSockets } = {}) {
    if (typeof handler !== 'function') throw new TypeError(`handler must be a function, got ${describe(handler)}`);
    if (typeof onError !== 'function') throw new TypeError('onError must be a function');
    const stream = this.requests(path, webSockets === undefined ? undefined : { webSockets });
    (async () => {
      for await (const request of stream) {
        Promise.resolve()
          .then(() => handler(request))
          .catch((err) => {
            const accepted = request[ACCEPTED];
            if (accepted instanceof WebSocketSession) accepted.close({ closeCode: 1011, reason: 'internal error' });
            else if (accepted) accepted.close({ closeCode: 0, reason: 'internal error' });
            else if (!request.answered) request.reject(500).catch(() => {});
            onError(err);
          });
      }
    })().catch(onError);
    return stream;
  }

  /**
   * Carries a WebSocket upgrade that another HTTP/1.1 server received (the 'upgrade' event
   * of `node:http`, Express or Fastify, as `ws`'s noServer mode does): the request goes
   * through this server's routes, origin policy and limits, so QMux sessions and plain
   * WebSockets come out of the same `requests(path)` / `route()` as on Ferrovia's own port.
   * Resolves once the request is answered (refused, or upgraded and running).
   */
  async handleUpgrade(req, socket, head) {
    const h = {
      method: req.method,
      http2: false,
      path: req.url,
      authority: req.headers.host ?? '',
      headers: rawPairs(req.rawHeaders),
      remoteAddress: stripV4Mapped(socket.remoteAddress ?? '127.0.0.1'),
      remotePort: socket.remotePort ?? 0,
      secure: !!socket.encrypted || req.headers['x-forwarded-proto'] === 'https',
    };
    const result = await this.#native.websocketHandshake(h).catch(rethrow);
    const { status, headers, body, upgrade } = result.outcome;
    const lines = [`HTTP/1.1 ${status} ${STATUS_TEXT[status] ?? 'Status'}`];
    for (const { name, value } of headers) lines.push(`${name}: ${value}`);
    if (!upgrade) {
      lines.push('content-type: text/plain; charset=utf-8', `content-length: ${Buffer.byteLength(body)}`, 'connection: close');
      socket.end(`${lines.join('\r\n')}\r\n\r\n${body}`);
      return;
    }
    socket.write(`${lines.join('\r\n')}\r\n\r\n`);
    await pipeSocket(result.takePipe(), socket, head);
  }

  /**
   * Carries an HTTP/2 extended CONNECT (RFC 8441) that a `node:http2` server received
   * (create it with `settings: { enableConnectProtocol: true }` and call this from its
   * 'stream' event when `headers[':protocol'] === 'websocket'`).
   */
  async handleStream(stream, headers) {
    const session = stream.session;
    const h = {
      method: headers[':method'],
      http2: true,
      protocol: headers[':protocol'],
      path: headers[':path'] ?? '/',
      authority: headers[':authority'] ?? '',
      headers: Object.entries(headers)
        .filter(([k]) => !k.startsWith(':'))
        .flatMap(([k, v]) => (Array.isArray(v) ? v.map((x) => ({ name: k, value: String(x) })) : [{ name: k, value: String(v) }])),
      remoteAddress: stripV4Mapped(session?.socket?.remoteAddress ?? '127.0.0.1'),
      remotePort: session?.socket?.remotePort ?? 0,
      secure: !!session?.encrypted,
    };
    const result = await this.#native.websocketHandshake(h).catch(rethrow);
    const { status, headers: out, body, upgrade } = result.outcome;
    const response = { ':status': status };
    for (const { name, value } of out) response[name] = value;
    if (!upgrade) {
      response['content-type'] = 'text/plain; charset=utf-8';
      stream.respond(response);
      stream.end(body);
      return;
    }
    stream.respond(response);
    await pipeSocket(result.takePipe(), stream, Buffer.alloc(0));
  }

  /**
   * Shuts down: stops accepting, asks sessions to drain, waits up to `grace` ms
   * (default 2000) for them to end, then closes the rest. Iterators of requests end.
   */
  close({ grace = 2000 } = {}) {
    checkInt('grace', grace, 0, 2 ** 31);
    if (!this.#closing) {
      this.#stopWatching();
      this.#unlisten?.();
      this.#unlisten = null;
      for (const r of this.#routes) r.close();
      this.#routes.clear();
      this.#closing = this.#native.close(grace).then(
        () => clearInterval(this.#keepAlive),
        (err) => {
          clearInterval(this.#keepAlive);
          throw translate(err);
        },
      );
    }
    return this.#closing;
  }

  /** `await using server = await Server.listen(...)`: closes the server (default grace). */
  [asyncDispose]() {
    return this.close();
  }
}

const LISTEN = Symbol('listen');

const STATUS_TEXT = require('node:http').STATUS_CODES;

function rawPairs(raw) {
  const out = [];
  for (let i = 0; i + 1 < raw.length; i += 2) out.push({ name: raw[i].toLowerCase(), value: raw[i + 1] });
  return out;
}

function stripV4Mapped(ip) {
  return ip.startsWith('::ffff:') && ip.includes('.') ? ip.slice(7) : ip;
}

/** Moves bytes between another server's socket (or HTTP/2 stream) and the session. */
async function pipeSocket(pipe, socket, head) {
  await pipe.start().catch(rethrow);
  let writing = Promise.resolve();
  const toSession = (chunk) => {
    socket.pause();
    writing = writing
      .then(() => pipe.write(chunk))
      .then(() => socket.resume(), () => socket.destroy());
  };
  if (head && head.length) toSession(head);
  socket.on('data', toSession);
  socket.on('end', () => {
    writing = writing.then(() => pipe.end());
  });
  socket.on('error', () => {});
  for (;;) {
    const chunk = await pipe.read().catch(() => null);
    if (chunk === null) break;
    if (!socket.write(chunk)) {
      // Whichever comes first removes both listeners: a socket that fills up many times
      // must not gather a 'close' listener per wait.
      await new Promise((resolve) => {
        const done = () => {
          socket.off('drain', done);
          socket.off('close', done);
          resolve();
        };
        socket.once('drain', done);
        socket.once('close', done);
      });
    }
    if (socket.destroyed) break;
  }
  if (!socket.destroyed) socket.end();
}

/**
 * Generates a self-signed ECDSA P-256 certificate (valid 13 days, within the 14 days
 * browsers accept for serverCertificateHashes) for `names` (default localhost, 127.0.0.1,
 * ::1). Returns { cert, key } as PEM plus its hashes.
 */
function generateCertificate({ names = ['localhost', '127.0.0.1', '::1'] } = {}) {
  if (!Array.isArray(names) || names.length === 0) throw new TypeError('names must be a non-empty array of strings');
  names.forEach((n, i) => checkString(`names[${i}]`, n));
  let c;
  try {
    c = native.selfSignedCertificate(names);
  } catch (err) {
    throw translate(err);
  }
  return {
    cert: c.certPem,
    key: c.keyPem,
    sha256: Buffer.from(c.sha256).toString('hex'),
    spkiSha256: c.spkiSha256,
    certificateHashes: [{ algorithm: 'sha-256', value: new Uint8Array(c.sha256) }],
  };
}

/**
 * Runs `count` worker processes of the module `script` on one port and returns their
 * Workers handle (see fleet.js and docs/node.md).
 */
function runWorkers(count, script, options) {
  return fleet.runWorkers(count, script, options, translate);
}

module.exports = {
  runWorkers,
  Workers: fleet.Workers,
  currentWorker: fleet.currentWorker,
  Server,
  SessionRequest,
  RequestStream,
  WebTransportSession,
  WebSocketSession,
  DatagramDuplexStream,
  WebTransportBidirectionalStream,
  WebTransportSendStream,
  WebTransportReceiveStream,
  WebTransportError,
  MessageStream,
  toDuplex,
  generateCertificate,
};
Object.defineProperty(module.exports, '__native', { value: native, enumerable: false });
