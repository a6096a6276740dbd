'use strict';
// Errors: WebTransportError, and the translation of the native module's errors (a JSON
// record behind NATIVE_PREFIX) into a WebTransportError or a coded Error, including the
// net-shaped EADDRINUSE of a bind failure; codeOf() reads the stream error code of an
// abort or cancel reason.

const os = require('node:os');
const { MAX_U32 } = require('./check.js');

const NATIVE_PREFIX = 'ferrovia:';

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

module.exports = { WebTransportError, PLAIN_CODES, translate, rethrow, addressInUse, codeOf };
