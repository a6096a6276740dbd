'use strict';
// Argument checks shared by the server and the worker helpers: TypeError for the wrong
// type, RangeError for a value out of range, each naming the argument. Also the bytes
// argument (toBuffer), the AbortSignal option and its AbortError, and two constants the
// facade's modules share (MAX_U32, asyncDispose).

function describe(v) {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'an array';
  return typeof v === 'string' ? `the string ${JSON.stringify(v)}` : `${typeof v} ${String(v)}`;
}

function checkInt(name, v, min, max) {
  if (typeof v !== 'number') throw new TypeError(`${name} must be a number, got ${describe(v)}`);
  if (!Number.isInteger(v) || v < min || v > max) {
    throw new RangeError(`${name} must be an integer in ${min}..${max}, got ${v}`);
  }
  return v;
}

const MAX_U32 = 0xffffffff;
/** The explicit-resource-management symbol (`await using`); Node 20 names it the same way. */
const asyncDispose = Symbol.asyncDispose ?? Symbol.for('nodejs.asyncDispose');

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

/** A Buffer view of bytes given as ArrayBuffer or ArrayBufferView (no copy). */
function toBuffer(name, chunk) {
  if (Buffer.isBuffer(chunk)) return chunk;
  if (ArrayBuffer.isView(chunk)) return Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength);
  if (chunk instanceof ArrayBuffer || (typeof SharedArrayBuffer !== 'undefined' && chunk instanceof SharedArrayBuffer)) {
    return Buffer.from(chunk);
  }
  throw new TypeError(`${name} must be a Uint8Array, ArrayBufferView or ArrayBuffer, got ${describe(chunk)}`);
}

module.exports = { describe, checkInt, checkString, checkObject, checkSignal, abortError, toBuffer, MAX_U32, asyncDispose };
