'use strict';
// The server: Server (listen, routes and requests, certificates, drain, stats, close),
// handleUpgrade()/handleStream() with pipeSocket() for upgrades another HTTP server
// received, and runWorkers() for a fleet of worker processes on one port.

const native = require('./native.js');
const fleet = require('./fleet.js');
const { LOG_LEVELS, setLogLevel } = require('./log.js');
const { translate, rethrow } = require('./errors.js');
const { describe, checkInt, checkString, checkObject, checkSignal, abortError, asyncDispose } = require('./check.js');
const { checkWatch, readPemFiles, watchCertificate, pemText } = require('./certificate.js');
const { nativeOptions } = require('./options.js');
const { ACCEPTED, SessionRequest, RequestStream } = require('./request.js');
const { WebSocketSession } = require('./websocket.js');
const { serveFetch, clientPathOf, withClient } = require('./http.js');
const { installGlobalResponse } = require('./web.js');

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
    const override = options?.overrideGlobalObjects ?? true;
    if (typeof override !== 'boolean') {
      throw new TypeError(`options.overrideGlobalObjects must be a boolean, got ${describe(override)}`);
    }
    const n = await native.listen(opts).catch(rethrow);
    const server = new Server(n, LISTEN);
    if (signal?.aborted) {
      await server.close({ grace: 0 }).catch(() => {});
      throw abortError(signal);
    }
    if (override && (clientPath || fetchHandler)) installGlobalResponse();
    if (clientPath) serveFetch(n, withClient(n, clientPath, fetchHandler));
    else if (fetchHandler) serveFetch(n, fetchHandler);
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
 * Runs `count` worker processes of the module `script` on one port and returns their
 * Workers handle (see fleet.js and docs/node.md).
 */
function runWorkers(count, script, options) {
  return fleet.runWorkers(count, script, options, translate);
}

module.exports = { Server, runWorkers };
