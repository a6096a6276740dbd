'use strict';
// Ordinary HTTP: the `fetch` handler path. serveFetch() pulls requests from the native
// queue and answers each through the handler (WHATWG Request to Response), streaming or
// sending the body whole; withClient() serves the browser connector beside the handler.

const fs = require('node:fs');
const pathModule = require('node:path');
const { translate } = require('./errors.js');
const { describe } = require('./check.js');

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

module.exports = { serveFetch, clientPathOf, withClient };
