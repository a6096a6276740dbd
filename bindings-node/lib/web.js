'use strict';
// Lightweight WHATWG Request and Response for the fetch handler.
//
// Node's own Request and Response (undici) cost more to build than the rest of a small
// request's path through the server: a Response made from a string builds a ReadableStream,
// validates its headers into a header list, and must then be read back through a reader.
// Most handlers only look at a request's method, URL and headers and answer a string or
// bytes. So the request the handler gets, and the responses it makes while the server runs
// with `overrideGlobalObjects` (the default), keep just those parts, and build the full
// object the moment anything else is asked of them: behaviour is Node's own, the cost is
// paid only by code that needs it. Both pass `instanceof Request` / `instanceof Response`.

const GlobalRequest = globalThis.Request;
const GlobalResponse = globalThis.Response;
const GlobalHeaders = globalThis.Headers;

/** The full Request or Response, once built. */
const FULL = Symbol('ferrovia.full');
/** A light Response's parts: { status, body, headers, type }. */
const PARTS = Symbol('ferrovia.parts');

// Body-reading methods, the same on Request and Response.
const BODY_METHODS = ['arrayBuffer', 'blob', 'bytes', 'clone', 'formData', 'json', 'text'];

/** Defines on `proto` each getter and body method as asked of the full object `full(this)`. */
function delegate(proto, full, getters) {
  for (const name of getters) {
    Object.defineProperty(proto, name, { get() { return full(this)[name]; }, configurable: true });
  }
  for (const name of BODY_METHODS) {
    Object.defineProperty(proto, name, {
      value: function () {
        return full(this)[name]();
      },
      writable: true,
      configurable: true,
    });
  }
}

// ---- Request ----

const URL_ = Symbol('url');
const METHOD = Symbol('method');
const FLAT = Symbol('flat headers');
const HEADERS = Symbol('headers');
const BODY = Symbol('body');

/**
 * A request as the fetch handler receives it: method, URL and headers are read without
 * building Node's Request; any other member builds it once and answers from it.
 */
function FetchRequest(url, method, flatHeaders, makeBody) {
  this[URL_] = url;
  this[METHOD] = method;
  this[FLAT] = flatHeaders;
  // null for a request without a body (GET, HEAD), else a function making its stream.
  this[BODY] = makeBody;
  this[HEADERS] = undefined;
  this[FULL] = undefined;
}

function headersOf(flat) {
  const h = new GlobalHeaders();
  for (let i = 0; i < flat.length; i += 2) h.append(flat[i], flat[i + 1]);
  return h;
}

function fullRequest(r) {
  if (r[FULL] === undefined) {
    const body = r[BODY] === null ? null : r[BODY]();
    r[FULL] = new GlobalRequest(r[URL_], { method: r[METHOD], headers: requestHeaders(r), body, duplex: 'half' });
  }
  return r[FULL];
}

function requestHeaders(r) {
  return (r[HEADERS] ??= headersOf(r[FLAT]));
}

Object.setPrototypeOf(FetchRequest.prototype, GlobalRequest.prototype);
Object.defineProperties(FetchRequest.prototype, {
  method: { get() { return this[METHOD]; }, configurable: true },
  url: { get() { return this[URL_]; }, configurable: true },
  // The same Headers object before and after the full Request is built.
  headers: { get() { return requestHeaders(this); }, configurable: true },
  body: { get() { return this[BODY] === null ? null : fullRequest(this).body; }, configurable: true },
  bodyUsed: { get() { return this[BODY] === null ? false : fullRequest(this).bodyUsed; }, configurable: true },
});
delegate(FetchRequest.prototype, fullRequest, [
  'cache', 'credentials', 'destination', 'duplex', 'integrity', 'isHistoryNavigation',
  'isReloadNavigation', 'keepalive', 'mode', 'redirect', 'referrer', 'referrerPolicy', 'signal',
]);
Object.defineProperty(FetchRequest.prototype, Symbol.for('nodejs.util.inspect.custom'), {
  value(depth, options, inspect) {
    return `Request ${inspect({ method: this.method, url: this.url, headers: this.headers }, { ...options, depth: depth == null ? null : depth - 1 })}`;
  },
});

// ---- Response ----

// Statuses whose responses carry no body (Fetch standard, "null body status").
const NULL_BODY_STATUS = new Set([101, 103, 204, 205, 304]);
const TEXT_TYPE = 'text/plain;charset=UTF-8';

/**
 * A Response kept as its status, headers and a string or bytes body when made from those
 * (with no status text); anything else is Node's own Response, built at once.
 */
class FetchResponse {
  constructor(body = null, init = undefined) {
    const status = init?.status;
    const light =
      (body === null || typeof body === 'string' || body instanceof Uint8Array) &&
      (init === undefined || (typeof init === 'object' && init !== null && !(init instanceof GlobalResponse) && init.statusText === undefined)) &&
      (status === undefined || (Number.isInteger(status) && status >= 200 && status <= 599 && (body === null || !NULL_BODY_STATUS.has(status))));
    if (!light) {
      // Node's own constructor checks, converts and throws as it always does.
      this[FULL] = new GlobalResponse(body, init);
      this[PARTS] = undefined;
      return;
    }
    // Headers are checked now, as Node's constructor would; the common case has none.
    const headers = init?.headers === undefined ? null : new GlobalHeaders(init.headers);
    this[PARTS] = { status: status ?? 200, body, headers, type: typeof body === 'string' ? TEXT_TYPE : null };
    this[FULL] = undefined;
  }

  static [Symbol.hasInstance](value) {
    // Node's own responses (from fetch(), Response.error()) are Responses too.
    if (this === FetchResponse) return value instanceof GlobalResponse;
    return Function.prototype[Symbol.hasInstance].call(this, value);
  }

  static json(data, init = undefined) {
    const body = JSON.stringify(data);
    if (body === undefined) throw new TypeError('Value is not JSON serializable');
    const r = new FetchResponse(body, init);
    if (r[PARTS] === undefined) return GlobalResponse.json(data, init);
    r[PARTS].type = 'application/json';
    return r;
  }

  get headers() {
    const p = this[PARTS];
    if (p === undefined) return fullResponse(this).headers;
    p.headers ??= new GlobalHeaders();
    if (p.type !== null) {
      if (!p.headers.has('content-type')) p.headers.set('content-type', p.type);
      p.type = null;
    }
    return p.headers;
  }

  get status() {
    const p = this[PARTS];
    return p === undefined ? fullResponse(this).status : p.status;
  }

  get ok() {
    const s = this.status;
    return s >= 200 && s <= 299;
  }
}

function fullResponse(r) {
  // Node's own Response reached through this prototype (Response.prototype.text.call(r)).
  if (!(PARTS in r)) return r;
  if (r[FULL] === undefined) {
    const p = r[PARTS];
    r[FULL] = new GlobalResponse(p.body, { status: p.status, headers: r.headers });
  }
  return r[FULL];
}

Object.setPrototypeOf(FetchResponse, GlobalResponse);
Object.setPrototypeOf(FetchResponse.prototype, GlobalResponse.prototype);
delegate(FetchResponse.prototype, fullResponse, ['body', 'bodyUsed', 'redirected', 'statusText', 'type', 'url']);
Object.defineProperty(FetchResponse.prototype, Symbol.for('nodejs.util.inspect.custom'), {
  value(depth, options, inspect) {
    return `Response ${inspect({ status: this.status, headers: this.headers }, { ...options, depth: depth == null ? null : depth - 1 })}`;
  },
});

/**
 * What the server sends for `response` without reading a stream: `{ status, headers,
 * body }` (headers as names and values alternating, body a string, bytes or null), or
 * undefined when the body must be read (a full Response, or one whose body was touched).
 */
function lightParts(response) {
  const p = response[PARTS];
  if (p === undefined || response[FULL] !== undefined) return undefined;
  const flat = [];
  if (p.headers !== null) {
    for (const [name, value] of response.headers) flat.push(name, value);
  } else if (p.type !== null) {
    flat.push('content-type', p.type);
  }
  return { status: p.status, headers: flat, body: p.body };
}

let installed = false;

/** Makes `Response` in this process the light one (once; `overrideGlobalObjects: false` never calls it). */
function installGlobalResponse() {
  if (installed || globalThis.Response !== GlobalResponse) return;
  installed = true;
  Object.defineProperty(globalThis, 'Response', { value: FetchResponse, writable: true, configurable: true, enumerable: false });
}

module.exports = { FetchRequest, FetchResponse, lightParts, installGlobalResponse };
