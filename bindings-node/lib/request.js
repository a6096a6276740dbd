'use strict';
// Requests: SessionRequest (an extended CONNECT or WebSocket request waiting for accept(),
// acceptWebSocket() or reject()), the options of accepting, the ACCEPTED slot route() reads
// when a handler throws, and RequestStream (the requests for one path).

const { rethrow } = require('./errors.js');
const { checkInt, checkString, checkObject } = require('./check.js');
const { WebTransportSession } = require('./session.js');
const { WebSocketSession } = require('./websocket.js');

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

module.exports = { ACCEPTED, SessionRequest, RequestStream };
