'use strict';
// Ordinary HTTP: the `fetch` handler path. serveFetch() takes requests from the native
// inbox and answers each through the handler (WHATWG Request to Response), streaming or
// sending the body whole; withClient() serves the browser connector beside the handler.

const fs = require('node:fs');
const pathModule = require('node:path');
const { translate } = require('./errors.js');
const { describe } = require('./check.js');
const { FetchRequest, lightParts } = require('./web.js');

const NO_BODY_METHODS = new Set(['GET', 'HEAD']);
// Requests waiting for the handler past which more get 503.
const QUEUE_CAPACITY = 1024;
// A response body read whole before the head goes out is sent with it in one native call
// when it ends within this many bytes; a longer or slower one streams.
const WHOLE_BODY_LIMIT = 64 * 1024;

/**
 * Answers every ordinary request of `nativeServer` through `handler` (WHATWG Request →
 * Response). The server calls back once per batch of waiting requests; each call takes the
 * whole batch in one native call.
 */
function serveFetch(nativeServer, handler) {
  const failed = (err) => console.error('ferrovia: fetch handler failed:', err);
  let inbox = null;
  const wake = () => {
    let batch;
    try {
      batch = inbox.take();
    } catch (err) {
      // Never thrown into the event loop from a native callback: the process goes on.
      console.error('ferrovia: taking requests failed:', err);
      return;
    }
    if (batch === null) return;
    for (let i = 0; i < batch.length; i++) answerFetch(batch[i], handler).catch(failed);
  };
  inbox = nativeServer.enableHttp(QUEUE_CAPACITY, wake);
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

function bodyOf(exchange) {
  return () =>
    new ReadableStream({
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

function requestOf(exchange, head) {
  const method = head.method;
  return new FetchRequest(head.url, method, head.headers, NO_BODY_METHODS.has(method) ? null : bodyOf(exchange));
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

function hasHeader(flat, name) {
  for (let i = 0; i < flat.length; i += 2) if (flat[i] === name) return true;
  return false;
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
    const light = lightParts(response);
    if (light !== undefined) {
      // A string, bytes or no body: sent with the head in one call, no stream read.
      responded = true;
      const body = light.body;
      if (isHead) {
        if (body !== null && !hasHeader(light.headers, 'content-length')) {
          light.headers.push('content-length', String(typeof body === 'string' ? Buffer.byteLength(body) : body.byteLength));
        }
        exchange.respond(light.status, light.headers, false);
      } else {
        exchange.respond(light.status, light.headers, false, body ?? undefined);
      }
      return;
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
