// Ordinary HTTP through the Node package's `fetch` handler (WHATWG Request → Response): a
// Hono app served unchanged with `fetch: app.fetch`, reached by independent clients on
// every version: Node's own https (HTTP/1.1) and http2 clients, curl, and headless Chromium
// over HTTP/3 (--origin-to-force-quic-on) and Firefox over HTTP/2. 64 MiB go up and down
// by SHA-256; a handler that throws, returns something else or never answers gets
// 500/500/503 and the server goes on; sessions keep working beside it.

import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import http2 from 'node:http2';
import https from 'node:https';
import { after, before, describe, test } from 'node:test';
import { promisify } from 'node:util';

import { Server } from 'ferrovia';
import { Hono } from 'hono';

import { closeBrowsers, openPage } from '../demo/support.mjs';

const T = { timeout: 120000 };
const BIG = 64 * 1024 * 1024;
const sha256 = (b) => createHash('sha256').update(b).digest('hex');

/** Byte i of /download is i % 251. */
function pattern(n) {
  const block = Buffer.alloc(251, 0).map((_, i) => i);
  const out = Buffer.alloc(n);
  for (let i = 0; i < n; i += 251) block.copy(out, i, 0, Math.min(251, n - i));
  return out;
}

function app() {
  const hono = new Hono();
  hono.get('/', (c) => c.html('<!doctype html><title>ferrovia + hono</title><p>hello from hono</p>'));
  hono.get('/json', (c) => c.json({ hello: 'world', method: c.req.method, path: c.req.path, query: c.req.query('q') ?? null }));
  hono.post('/upload', async (c) => {
    const hash = createHash('sha256');
    let bytes = 0;
    for await (const chunk of c.req.raw.body) {
      hash.update(chunk);
      bytes += chunk.byteLength;
    }
    return c.json({ bytes, sha256: hash.digest('hex') });
  });
  hono.get('/download', (c) => {
    const total = Number(c.req.query('bytes'));
    let sent = 0;
    const body = new ReadableStream({
      pull(controller) {
        if (sent >= total) return controller.close();
        const n = Math.min(1 << 16, total - sent);
        const chunk = new Uint8Array(n);
        for (let i = 0; i < n; i++) chunk[i] = (sent + i) % 251;
        sent += n;
        controller.enqueue(chunk);
      },
    });
    return new Response(body, { headers: { 'content-type': 'application/octet-stream', 'content-length': String(total) } });
  });
  hono.get('/cookies', (c) => {
    c.header('set-cookie', 'a=1', { append: true });
    c.header('set-cookie', 'b=2', { append: true });
    return c.text('two cookies');
  });
  hono.get('/boom', () => {
    throw new Error('on purpose');
  });
  return hono;
}

function h1(port, path, { method = 'GET', body } = {}) {
  return new Promise((resolve, reject) => {
    const headers = { host: `localhost:${port}` };
    if (body) headers['content-length'] = String(body.length);
    const req = https.request({ host: '127.0.0.1', port, path, method, rejectUnauthorized: false, servername: 'localhost', headers }, (res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode, headers: res.headers, body: Buffer.concat(chunks), version: res.httpVersion }));
      res.on('error', reject);
    });
    req.on('error', reject);
    if (body) {
      // Streamed in 1 MiB writes, honouring backpressure.
      (async () => {
        for (let i = 0; i < body.length; i += 1 << 20) {
          if (!req.write(body.subarray(i, i + (1 << 20)))) await new Promise((r) => req.once('drain', r));
        }
        req.end();
      })().catch(reject);
    } else req.end();
  });
}

function h2(session, path, { method = 'GET', body } = {}) {
  return new Promise((resolve, reject) => {
    const req = session.request({ ':method': method, ':path': path }, { endStream: !body });
    const chunks = [];
    let headers;
    req.on('response', (h) => (headers = h));
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => resolve({ status: headers[':status'], headers, body: Buffer.concat(chunks) }));
    req.on('error', reject);
    if (body) {
      (async () => {
        for (let i = 0; i < body.length; i += 1 << 20) {
          if (!req.write(body.subarray(i, i + (1 << 20)))) await new Promise((r) => req.once('drain', r));
        }
        req.end();
      })().catch(reject);
    }
  });
}

describe('a Hono app as the fetch handler', () => {
  let server;
  let session;
  before(async () => {
    server = await Server.listen({ host: '::', port: 0, fetch: app().fetch, limits: { maxRequestBody: 128 * 1024 * 1024 } });
    session = http2.connect(`https://localhost:${server.port}`, { rejectUnauthorized: false });
  });
  after(async () => {
    session?.close();
    await closeBrowsers();
    await server?.close();
  });

  test('routes, JSON, errors and repeated headers over HTTP/1.1 and HTTP/2', T, async () => {
    const one = await h1(server.port, '/json?q=1');
    assert.equal(one.status, 200);
    assert.equal(one.version, '1.1');
    assert.deepEqual(JSON.parse(one.body), { hello: 'world', method: 'GET', path: '/json', query: '1' });
    assert.equal(one.headers['alt-svc'], `h3=":${server.port}"; ma=86400`);
    const two = await h2(session, '/json?q=2');
    assert.equal(two.status, 200);
    assert.deepEqual(JSON.parse(two.body), { hello: 'world', method: 'GET', path: '/json', query: '2' });
    assert.match(String(two.headers['content-type']), /application\/json/);
    // Hono's own error and not-found answers pass through unchanged.
    assert.equal((await h2(session, '/boom')).status, 500);
    assert.equal((await h1(server.port, '/nowhere')).status, 404);
    assert.deepEqual((await h1(server.port, '/cookies')).headers['set-cookie'], ['a=1', 'b=2']);
  });

  test('64 MiB up and down by SHA-256 over HTTP/1.1 and HTTP/2', T, async () => {
    const payload = randomBytes(BIG);
    const want = { bytes: BIG, sha256: sha256(payload) };
    assert.deepEqual(JSON.parse((await h1(server.port, '/upload', { method: 'POST', body: payload })).body), want);
    assert.deepEqual(JSON.parse((await h2(session, '/upload', { method: 'POST', body: payload })).body), want);
    const expected = sha256(pattern(BIG));
    assert.equal(sha256((await h1(server.port, `/download?bytes=${BIG}`)).body), expected);
    assert.equal(sha256((await h2(session, `/download?bytes=${BIG}`)).body), expected);
  });

  test('curl over HTTP/2 reads the page', T, async () => {
    const { stdout } = await promisify(execFile)('curl', ['-sk', '--http2', '-w', '\n%{http_code} %{http_version}', `https://127.0.0.1:${server.port}/`]);
    assert.match(stdout, /hello from hono<\/p>\n200 2$/);
  });

  test('chromium over HTTP/3 and firefox over HTTP/2: page, JSON and 16 MiB both ways', T, async () => {
    const spki = server.certificate.spkiSha256;
    for (const [browser, options, protocol] of [
      ['chromium', { trustSpki: spki, chromiumArgs: [`--origin-to-force-quic-on=localhost:${server.port}`] }, 'h3'],
      ['firefox', { trustSpki: spki }, 'h2'],
    ]) {
      const page = await openPage(browser, `https://localhost:${server.port}/`, options);
      try {
        const result = await page.evaluate(async (size) => {
          const hex = (b) => [...new Uint8Array(b)].map((x) => x.toString(16).padStart(2, '0')).join('');
          const json = await (await fetch('/json?q=page')).json();
          const data = crypto.getRandomValues(new Uint8Array(1 << 16));
          const up = new Uint8Array(size);
          for (let i = 0; i < size; i += data.length) up.set(data.subarray(0, Math.min(data.length, size - i)), i);
          const uploaded = await (await fetch('/upload', { method: 'POST', body: up })).json();
          const down = await (await fetch(`/download?bytes=${size}`)).arrayBuffer();
          return {
            navigation: performance.getEntriesByType('navigation')[0].nextHopProtocol,
            text: document.body.textContent,
            json,
            uploaded,
            sent: hex(await crypto.subtle.digest('SHA-256', up)),
            down: down.byteLength,
            downSha: hex(await crypto.subtle.digest('SHA-256', down)),
          };
        }, 16 * 1024 * 1024);
        assert.equal(result.navigation, protocol, browser);
        assert.equal(result.text, 'hello from hono');
        assert.deepEqual(result.json, { hello: 'world', method: 'GET', path: '/json', query: 'page' });
        assert.deepEqual(result.uploaded, { bytes: 16 * 1024 * 1024, sha256: result.sent });
        assert.equal(result.down, 16 * 1024 * 1024);
        assert.equal(result.downSha, sha256(pattern(16 * 1024 * 1024)));
      } finally {
        await page.close();
      }
    }
  });
});

describe('a plain fetch handler: bad answers and bad input', () => {
  let server;
  let seen = [];
  before(async () => {
    const errors = [];
    server = await Server.listen({
      host: '127.0.0.1',
      port: 0,
      limits: { handlerTimeout: 300, maxRequestBody: 1000 },
      fetch: async (request, info) => {
        const path = new URL(request.url).pathname;
        seen.push({ path, info });
        if (path === '/throw') throw new Error('thrown on purpose');
        if (path === '/not-a-response') return 'just text';
        if (path === '/hang') return new Promise(() => {});
        if (path === '/body') {
          try {
            const text = await request.text();
            return new Response(`read ${text.length}`);
          } catch (err) {
            return new Response(err.code ?? String(err), { status: 413 });
          }
        }
        return new Response(`${request.method} ${request.url}`, { headers: { 'x-version': info.httpVersion } });
      },
    });
    void errors;
  });
  after(async () => {
    await server?.close();
  });

  test('throwing, returning a non-Response and hanging get 500, 500 and 503; the server goes on', T, async () => {
    const quiet = console.error;
    console.error = () => {};
    try {
      assert.equal((await h1(server.port, '/throw')).status, 500);
      assert.equal((await h1(server.port, '/not-a-response')).status, 500);
      assert.equal((await h1(server.port, '/hang')).status, 503);
    } finally {
      console.error = quiet;
    }
    const ok = await h1(server.port, '/fine?x=1');
    assert.equal(ok.status, 200);
    assert.equal(ok.body.toString(), `GET https://localhost:${server.port}/fine?x=1`);
    assert.equal(ok.headers['x-version'], '1.1');
    const info = seen.find((s) => s.path === '/fine').info;
    assert.equal(info.remoteAddress, '127.0.0.1');
    assert.ok(info.remotePort > 0);
  });

  test('a body over maxRequestBody: declared is 413 before the handler, streamed fails with ERR_BODY_TOO_LARGE', T, async () => {
    seen = [];
    const declared = await h1(server.port, '/body', { method: 'POST', body: Buffer.alloc(5000, 1) });
    assert.equal(declared.status, 413);
    assert.equal(seen.length, 0, 'the handler never saw it');
    const session = http2.connect(`https://localhost:${server.port}`, { rejectUnauthorized: false });
    try {
      // No content-length: the handler's read fails at the limit.
      const streamed = await h2(session, '/body', { method: 'POST', body: Buffer.alloc(5000, 1) });
      assert.equal(streamed.status, 413);
      assert.equal(streamed.body.toString(), 'ERR_BODY_TOO_LARGE');
      const small = await h2(session, '/body', { method: 'POST', body: Buffer.alloc(500, 0x61) });
      assert.equal(small.body.toString(), 'read 500');
    } finally {
      session.close();
    }
  });

  test('Server.listen refuses a fetch option that is not a function', async () => {
    await assert.rejects(Server.listen({ port: 0, fetch: 'nope' }), /options.fetch must be a function/);
  });
});

describe('the light Request and Response (overrideGlobalObjects)', () => {
  let server;
  const seen = {};
  before(async () => {
    server = await Server.listen({
      host: '127.0.0.1',
      port: 0,
      fetch: async (request) => {
        const path = new URL(request.url).pathname;
        if (path === '/request') {
          seen.request = {
            isRequest: request instanceof Request,
            method: request.method,
            agent: request.headers.get('x-agent'),
            sameHeaders: request.headers === request.headers,
            bodyUsedBefore: request.bodyUsed,
            text: await request.text(),
            bodyUsedAfter: request.bodyUsed,
            headersAfter: request.headers.get('x-agent'),
          };
          return new Response('seen');
        }
        if (path === '/text') return new Response('plain text');
        if (path === '/json') return Response.json({ a: [1, 2] }, { status: 201, headers: { 'x-a': '1' } });
        if (path === '/json-typed') return Response.json({ b: 1 }, { headers: { 'content-type': 'application/vnd.api+json' } });
        if (path === '/bytes') return new Response(new Uint8Array([1, 2, 3]));
        if (path === '/empty') return new Response(null, { status: 204, headers: { 'x-empty': 'yes' } });
        if (path === '/late-header') {
          const r = new Response('late');
          r.headers.set('x-late', 'set after');
          return r;
        }
        if (path === '/status-text') return new Response('with text', { status: 202, statusText: 'Accepted Indeed' });
        if (path === '/read-first') {
          // Reading it builds Node's own Response; what it answers is unchanged.
          const r = Response.json({ c: 3 });
          seen.cloned = await r.clone().json();
          return r;
        }
        if (path === '/node-response') {
          const r = await fetch('data:text/plain,from%20data');
          seen.nodeIsResponse = r instanceof Response;
          return r;
        }
        if (path === '/bad-status') return new Response('x', { status: 99 });
        return new Response(null, { status: 404 });
      },
    });
  });
  after(async () => {
    await server?.close();
  });

  test('the handler reads method, headers and body of its Request as Node would give them', T, async () => {
    const port = server.port;
    const r = await new Promise((resolve, reject) => {
      const body = Buffer.from('posted body');
      const req = https.request(
        { host: '127.0.0.1', port, path: '/request', method: 'POST', rejectUnauthorized: false, headers: { 'x-agent': 'test', 'content-length': body.length } },
        (res) => {
          res.resume();
          res.on('end', () => resolve(res.statusCode));
        },
      );
      req.on('error', reject);
      req.end(body);
    });
    assert.equal(r, 200);
    assert.deepEqual(seen.request, {
      isRequest: true,
      method: 'POST',
      agent: 'test',
      sameHeaders: true,
      bodyUsedBefore: false,
      text: 'posted body',
      bodyUsedAfter: true,
      headersAfter: 'test',
    });
  });

  test('string, JSON, bytes, empty and changed responses reach the client as Node would send them', T, async () => {
    const session = http2.connect(`https://localhost:${server.port}`, { rejectUnauthorized: false });
    try {
      const text = await h2(session, '/text');
      assert.equal(text.headers['content-type'], 'text/plain;charset=UTF-8');
      assert.equal(text.body.toString(), 'plain text');
      const json = await h2(session, '/json');
      assert.equal(json.status, 201);
      assert.equal(json.headers['content-type'], 'application/json');
      assert.equal(json.headers['x-a'], '1');
      assert.deepEqual(JSON.parse(json.body), { a: [1, 2] });
      assert.equal((await h2(session, '/json-typed')).headers['content-type'], 'application/vnd.api+json');
      const bytes = await h2(session, '/bytes');
      assert.equal(bytes.headers['content-type'], undefined);
      assert.deepEqual([...bytes.body], [1, 2, 3]);
      const empty = await h2(session, '/empty');
      assert.equal(empty.status, 204);
      assert.equal(empty.headers['x-empty'], 'yes');
      assert.equal(empty.body.length, 0);
      assert.equal((await h2(session, '/late-header')).headers['x-late'], 'set after');
      const withText = await h2(session, '/status-text');
      assert.equal(withText.status, 202);
      assert.equal(withText.body.toString(), 'with text');
      const readFirst = await h2(session, '/read-first');
      assert.deepEqual(JSON.parse(readFirst.body), { c: 3 });
      assert.deepEqual(seen.cloned, { c: 3 });
      const fromNode = await h2(session, '/node-response');
      assert.equal(fromNode.body.toString(), 'from data');
      assert.equal(seen.nodeIsResponse, true);
      // Node's own constructor still refuses what it refuses: the handler threw, 500.
      const quiet = console.error;
      console.error = () => {};
      try {
        assert.equal((await h2(session, '/bad-status')).status, 500);
      } finally {
        console.error = quiet;
      }
      // HEAD: the length a GET would carry, no body.
      const head = await h2(session, '/text', { method: 'HEAD' });
      assert.equal(head.headers['content-length'], String('plain text'.length));
      assert.equal(head.body.length, 0);
    } finally {
      session.close();
    }
  });

  test('overrideGlobalObjects: false leaves the global Response alone; the default replaces it', T, async () => {
    const script = (override) => `
      const before = globalThis.Response;
      const { Server } = await import('ferrovia');
      const server = await Server.listen({ host: '127.0.0.1', port: 0, fetch: () => new Response('x'), ${override} });
      const replaced = globalThis.Response !== before;
      await server.close();
      process.stdout.write(JSON.stringify({ replaced, isResponse: new Response('y') instanceof before }));`;
    const run = async (override) => {
      const { stdout } = await promisify(execFile)(process.execPath, ['--input-type=module', '-e', script(override)], { cwd: process.cwd() });
      return JSON.parse(stdout);
    };
    assert.deepEqual(await run('overrideGlobalObjects: false'), { replaced: false, isResponse: true });
    assert.deepEqual(await run(''), { replaced: true, isResponse: true });
    await assert.rejects(Server.listen({ port: 0, fetch: () => null, overrideGlobalObjects: 'yes' }), /overrideGlobalObjects must be a boolean/);
  });
});
