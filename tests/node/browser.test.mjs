// The Node package, driven by headless Chromium and Firefox: servers start in this process
// through the public API (`import { Server } from 'ferrovia'`), pages connect to them.
//
//   node --test --test-concurrency=1 tests/node/

import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { finished } from 'node:stream/promises';
import { after, before, describe, test } from 'node:test';

import { Server, WebTransportError, toDuplex } from 'ferrovia';

import { BROWSERS, closeAll, withPage } from '../browser/harness.mjs';

const T = 60000;
const sha256 = (buf) => createHash('sha256').update(buf).digest('hex');

let server;
let hash;
const handlers = new Map(); // first path segment -> async (request) => void
let seq = 0;

/** Registers a one-off handler and returns the URL that reaches it. */
function route(handler, { query = '' } = {}) {
  const name = `/t${++seq}`;
  handlers.set(name, handler);
  return `https://localhost:${server.port}${name}${query}`;
}

before(async () => {
  // Chromium fails createBidirectionalStream() at once when the connection has no stream
  // credit left, rather than waiting for more: the 200-stream test needs more than the
  // default 100 concurrent streams.
  server = await Server.listen({ port: 0, limits: { maxBidiStreams: 256 } });
  hash = server.certificate.sha256;
  (async () => {
    for await (const request of server.requests()) {
      const h = handlers.get(new URL(request.url).pathname);
      if (!h) {
        request.reject(404).catch(() => {});
        continue;
      }
      h(request).catch((err) => console.error('handler failed:', err));
    }
  })();
});

after(async () => {
  await closeAll();
  await server?.close({ grace: 200 });
});

/** Collects a ReadableStream into one Buffer. */
async function collect(readable) {
  const chunks = [];
  for await (const c of readable) chunks.push(c);
  return Buffer.concat(chunks);
}

/** A deferred value the server side of a test fills in. */
function deferred() {
  let resolve;
  let reject;
  const promise = new Promise((a, b) => {
    resolve = a;
    reject = b;
  });
  return { promise, resolve, reject };
}

const within = (p, ms, what) =>
  Promise.race([p, new Promise((_, rej) => setTimeout(() => rej(new Error(`${what}: nothing within ${ms} ms`)), ms).unref())]);

for (const browser of BROWSERS) {
  describe(browser, () => {
    test('request: path, headers, origin; bidi echo through the W3C streams', { timeout: T }, () =>
      withPage(browser, async (page) => {
        const seen = deferred();
        const url = route(async (request) => {
          seen.resolve({
            path: request.path,
            origin: request.origin,
            authority: request.authority,
            headers: request.headers,
            raw: request.rawHeaders,
            url: request.url,
          });
          const session = await request.accept();
          for await (const { readable, writable } of session.incomingBidirectionalStreams) {
            readable.pipeTo(writable).catch(() => {});
          }
        }, { query: '?a=1&b=two' });
        const r = await page.evaluate(
          async ({ url, hash }) => {
            const t = await wt.connect(url, hash);
            const s = await t.createBidirectionalStream();
            const data = wt.randomBytes(300000);
            const [, got] = await Promise.all([wt.writeAll(s.writable, data), wt.readAll(s.readable)]);
            const out = { sent: await wt.sha256Hex(data), got: await wt.sha256Hex(got) };
            t.close();
            return out;
          },
          { url, hash },
        );
        assert.equal(r.got, r.sent, 'echoed bytes hash');
        const info = await seen.promise;
        assert.match(info.path, /^\/t\d+\?a=1&b=two$/);
        assert.equal(info.origin, page.origin);
        assert.equal(info.authority, `localhost:${server.port}`);
        assert.equal(info.headers.origin, page.origin);
        assert.ok(info.raw.some(([n, v]) => n === 'origin' && v === page.origin), 'rawHeaders has origin');
        assert.ok(!info.raw.some(([n]) => n.startsWith(':')), 'pseudo-headers are not in rawHeaders');
        assert.equal(info.url, `https://localhost:${server.port}${info.path}`);
      }));

    test('64 MiB through one stream, checked by SHA-256 on both sides', { timeout: 180000 }, () =>
      withPage(browser, async (page) => {
        const serverHash = deferred();
        const url = route(async (request) => {
          const session = await request.accept();
          const reader = session.incomingBidirectionalStreams.getReader();
          const { value } = await reader.read();
          const h = createHash('sha256');
          let n = 0;
          const tap = new TransformStream({
            transform(chunk, controller) {
              h.update(chunk);
              n += chunk.byteLength;
              controller.enqueue(chunk);
            },
            flush() {
              serverHash.resolve({ n, hex: h.digest('hex') });
            },
          });
          await value.readable.pipeThrough(tap).pipeTo(value.writable);
        });
        const r = await page.evaluate(
          async ({ url, hash }) => {
            const t = await wt.connect(url, hash);
            const s = await t.createBidirectionalStream();
            const size = 64 << 20;
            const data = wt.randomBytes(size);
            const [, got] = await Promise.all([
              wt.writeAll(s.writable, data, true, 256 * 1024),
              wt.readAll(s.readable, 150000, '64 MiB echo'),
            ]);
            const out = { sent: await wt.sha256Hex(data), got: await wt.sha256Hex(got), length: got.byteLength };
            t.close();
            return out;
          },
          { url, hash },
        );
        const s = await serverHash.promise;
        assert.equal(s.n, 64 << 20, 'bytes the server received');
        assert.equal(s.hex, r.sent, 'server-side SHA-256 equals what the page sent');
        assert.equal(r.length, 64 << 20);
        assert.equal(r.got, r.sent, 'echo SHA-256');
      }));

    test('200 concurrent bidirectional streams, each echoed intact', { timeout: T }, () =>
      withPage(browser, async (page) => {
        let streams = 0;
        const url = route(async (request) => {
          const session = await request.accept();
          for await (const { readable, writable } of session.incomingBidirectionalStreams) {
            streams++;
            readable.pipeTo(writable).catch(() => {});
          }
        });
        const r = await page.evaluate(
          async ({ url, hash }) => {
            const t = await wt.connect(url, hash);
            const one = async (i) => {
              const s = await t.createBidirectionalStream();
              const data = wt.randomBytes(1000 + i * 37);
              const [, got] = await Promise.all([wt.writeAll(s.writable, data), wt.readAll(s.readable, 30000, 'stream ' + i)]);
              return (await wt.sha256Hex(data)) === (await wt.sha256Hex(got));
            };
            const results = await Promise.all(Array.from({ length: 200 }, (_, i) => one(i)));
            t.close();
            return { ok: results.filter(Boolean).length };
          },
          { url, hash },
        );
        assert.equal(r.ok, 200, 'streams echoed intact');
        assert.equal(streams, 200, 'streams the server saw');
      }));

    test('unidirectional streams both ways and server-opened bidi', { timeout: T }, () =>
      withPage(browser, async (page) => {
        const got = deferred();
        const url = route(async (request) => {
          const session = await request.accept();
          const reader = session.incomingUnidirectionalStreams.getReader();
          const { value } = await reader.read();
          const data = await collect(value);
          got.resolve(sha256(data));
          const w = (await session.createUnidirectionalStream()).getWriter();
          await w.write(data);
          await w.close();
          const bidi = await session.createBidirectionalStream({ sendOrder: 5 });
          const bw = bidi.writable.getWriter();
          await bw.write(new TextEncoder().encode('ping from node'));
          await bw.close();
          const reply = await collect(bidi.readable);
          got.reply = reply.toString();
        });
        const r = await page.evaluate(
          async ({ url, hash }) => {
            const t = await wt.connect(url, hash);
            const data = wt.randomBytes(200000);
            const w = await t.createUnidirectionalStream();
            await wt.writeAll(w, data);
            const { value: uni } = await t.incomingUnidirectionalStreams.getReader().read();
            const back = await wt.readAll(uni);
            const { value: bidi } = await t.incomingBidirectionalStreams.getReader().read();
            const text = wt.decode(await wt.readAll(bidi.readable));
            await wt.writeAll(bidi.writable, wt.encode('pong: ' + text));
            await wt.sleep(200);
            const out = { sent: await wt.sha256Hex(data), back: await wt.sha256Hex(back), text };
            t.close();
            return out;
          },
          { url, hash },
        );
        assert.equal(await got.promise, r.sent, 'server received the uni stream intact');
        assert.equal(r.back, r.sent, 'page received the server uni stream intact');
        assert.equal(r.text, 'ping from node');
        assert.equal(got.reply, 'pong: ping from node');
      }));

    test('datagrams both ways; oversized datagrams fail clearly and the session goes on', { timeout: T }, () =>
      withPage(browser, async (page) => {
        const result = deferred();
        const url = route(async (request) => {
          const session = await request.accept();
          const max = session.datagrams.maxDatagramSize;
          let tooLarge;
          try {
            // Path MTU discovery may raise the limit at any moment: go far beyond it.
            await session.datagrams.send(new Uint8Array(70000));
          } catch (e) {
            tooLarge = e;
          }
          const writer = session.datagrams.writable.getWriter();
          let n = 0;
          for await (const d of session.datagrams.readable) {
            n++;
            await writer.write(d);
          }
          result.resolve({ max, tooLarge, n });
        });
        const r = await page.evaluate(
          async ({ url, hash }) => {
            const t = await wt.connect(url, hash);
            const writer = t.datagrams.writable.getWriter();
            const reader = t.datagrams.readable.getReader();
            const got = new Set();
            const reading = (async () => {
              for (;;) {
                const { value, done } = await reader.read();
                if (done) return;
                got.add(wt.decode(value));
              }
            })().catch(() => {});
            // Each round starts at another datagram: a browser whose incoming queue is full
            // drops the newest, so a burst in the same order would lose the same tail each
            // time.
            for (let round = 0; round < 5 && got.size < 40; round++) {
              for (let k = 0; k < 50; k++) await writer.write(wt.encode('dgram-' + ((k + round * 17) % 50)));
              await wt.sleep(300);
            }
            const size = got.size;
            reader.cancel().catch(() => {});
            t.close();
            return { size };
          },
          { url, hash },
        );
        const s = await within(result.promise, 10000, 'server datagram loop end');
        assert.ok(r.size >= 40, `page received ${r.size} of 50 distinct echoed datagrams`);
        assert.ok(s.n >= 40, `server received ${s.n} datagrams`);
        assert.ok(s.max > 1000 && s.max < 1500, `maxDatagramSize ${s.max}`);
        assert.ok(s.tooLarge instanceof WebTransportError, 'oversized datagram rejects with WebTransportError');
        assert.equal(s.tooLarge.code, 'ERR_DATAGRAM_TOO_LARGE');
        assert.equal(s.tooLarge.size, 70000);
        assert.ok(s.tooLarge.maxDatagramSize >= s.max, `maxDatagramSize ${s.tooLarge.maxDatagramSize} >= ${s.max}`);
      }));

    test('datagram writable: a burst written in one turn arrives whole; an oversized write fails at its own write', { timeout: T }, () =>
      withPage(browser, async (page) => {
        const result = deferred();
        const url = route(async (request) => {
          const session = await request.accept();
          // The page's first datagram says it is reading.
          const reader = session.datagrams.readable.getReader();
          await reader.read();
          const writer = session.datagrams.writable.getWriter();
          // The page says 'all' once it has seen every one of the burst.
          let all = false;
          (async () => {
            for (;;) {
              const { value, done } = await reader.read();
              if (done || new TextDecoder().decode(value) === 'all') break;
            }
            all = true;
          })().catch(() => {});
          // Ten writes in one turn of the event loop, none awaited before the next: every
          // write resolves and every datagram leaves. Ten, because Firefox queues at most
          // ten incoming datagrams and drops the oldest (a burst of twenty always loses
          // nine there); datagrams may be lost anyway, so the burst is repeated until the
          // page has seen each once.
          let rounds = 0;
          while (!all && rounds < 8) {
            rounds++;
            const writes = [];
            for (let i = 0; i < 10; i++) writes.push(writer.write(new TextEncoder().encode(`burst-${i}`)));
            await Promise.all(writes);
            for (let t = 0; t < 20 && !all; t++) await new Promise((r) => setTimeout(r, 25));
          }
          let tooLarge;
          try {
            await writer.write(new Uint8Array(70000));
          } catch (e) {
            tooLarge = e;
          }
          const closed = await writer.closed.then(() => 'open', (e) => e);
          result.resolve({ tooLarge, closed, rounds, all });
          await session.closed;
        });
        const r = await page.evaluate(
          async ({ url, hash }) => {
            const t = await wt.connect(url, hash);
            const reader = t.datagrams.readable.getReader();
            const writer = t.datagrams.writable.getWriter();
            await writer.write(wt.encode('ready'));
            const got = new Set();
            const deadline = Date.now() + 8000;
            while (got.size < 10 && Date.now() < deadline) {
              const r = await wt.timeout(reader.read(), 8000, 'datagram').catch(() => ({ done: true }));
              if (r.done) break;
              got.add(wt.decode(r.value));
            }
            if (got.size === 10) await writer.write(wt.encode('all'));
            await wt.sleep(200);
            t.close();
            return { got: [...got] };
          },
          { url, hash },
        );
        const s = await within(result.promise, 10000, 'server burst end');
        assert.equal(r.got.length, 10, `page received ${r.got.length} of 10: ${r.got.join(',')}`);
        assert.ok(s.all, `the page's 'all' reached the server (after ${s.rounds} rounds)`);
        assert.ok(r.got.every((d) => /^burst-\d+$/.test(d)), r.got.join(','));
        assert.ok(s.tooLarge instanceof WebTransportError, `oversized write rejects: ${s.tooLarge}`);
        assert.equal(s.tooLarge.code, 'ERR_DATAGRAM_TOO_LARGE');
        assert.equal(s.tooLarge.size, 70000);
        assert.equal(s.closed, s.tooLarge, 'the writable is errored with that error');
      }));

    test('close code and reason: server to browser, browser to server', { timeout: T }, () =>
      withPage(browser, async (page) => {
        const url1 = route(async (request) => {
          const session = await request.accept();
          await new Promise((r) => setTimeout(r, 200));
          session.close({ closeCode: 4242, reason: 'bye from node ✓' });
        });
        const fromBrowser = deferred();
        const url2 = route(async (request) => {
          const session = await request.accept();
          fromBrowser.resolve(await session.closed);
        });
        const r = await page.evaluate(
          async ({ url1, url2, hash }) => {
            const t1 = await wt.connect(url1, hash);
            const closed = await wt.timeout(t1.closed, 10000, 'closed');
            const t2 = await wt.connect(url2, hash);
            await wt.sleep(100);
            t2.close({ closeCode: 777, reason: 'bye from the page' });
            return { closeCode: closed.closeCode, reason: closed.reason };
          },
          { url1, url2, hash },
        );
        assert.deepEqual(r, { closeCode: 4242, reason: 'bye from node ✓' });
        const info = await within(fromBrowser.promise, 10000, 'server closed');
        assert.deepEqual(info, { closeCode: 777, reason: 'bye from the page', initiator: 'remote' });
      }));

    test('reset and stop-sending codes both ways', { timeout: T }, () =>
      withPage(browser, async (page) => {
        const serverSide = deferred();
        const url = route(async (request) => {
          const session = await request.accept();
          const incoming = session.incomingBidirectionalStreams.getReader();
          // 1: the page resets its send side with 21 and stops ours with 22.
          const { value: a } = await incoming.read();
          const out = {};
          try {
            await collect(a.readable);
            out.readError = 'none: the stream ended normally';
          } catch (e) {
            out.readError = { name: e.name, code: e.code, streamErrorCode: e.streamErrorCode, source: e.source };
          }
          const w = a.writable.getWriter();
          try {
            for (let i = 0; i < 100; i++) {
              await w.write(new Uint8Array(1000));
              await new Promise((r) => setTimeout(r, 20));
            }
          } catch (e) {
            out.writeError = { name: e.name, code: e.code, streamErrorCode: e.streamErrorCode };
          }
          // 2: the server resets its send side with 31; 3: the server stops the page with 41.
          const { value: b } = await incoming.read();
          await b.writable.getWriter().abort(new WebTransportError('server abort', { streamErrorCode: 31 }));
          const { value: c } = await incoming.read();
          await c.readable.cancel({ streamErrorCode: 41 });
          serverSide.resolve(out);
        });
        const r = await page.evaluate(
          async ({ url, hash }) => {
            const t = await wt.connect(url, hash);
            const a = await t.createBidirectionalStream();
            const aw = a.writable.getWriter();
            await aw.write(wt.encode('x'));
            await wt.sleep(100);
            await aw.abort(wt.streamError(21));
            await a.readable.cancel(wt.streamError(22));
            const b = await t.createBidirectionalStream();
            const bw = b.writable.getWriter();
            await bw.write(wt.encode('x'));
            const br = b.readable.getReader();
            const bRead = await wt.outcome((async () => { for (;;) { if ((await br.read()).done) return 'FIN'; } })(), 10000, 'reader of b');
            const c = await t.createBidirectionalStream();
            const cw = c.writable.getWriter();
            let cWrite = { ok: true };
            for (let i = 0; i < 100 && cWrite.ok; i++) {
              cWrite = await wt.outcome(cw.write(wt.encode('y')), 5000, 'writer of c');
              await wt.sleep(30);
            }
            t.close();
            return { bRead, cWrite };
          },
          { url, hash },
        );
        const s = await within(serverSide.promise, 15000, "server side of the reset test");
        assert.equal(s.readError?.code, 'ERR_STREAM_RESET', `server read error ${JSON.stringify(s.readError)}`);
        assert.equal(s.readError.streamErrorCode, 21);
        assert.equal(s.readError.name, 'WebTransportError');
        assert.equal(s.readError.source, 'stream');
        assert.equal(r.bRead.ok, false, 'page reader errors after the server reset');
        assert.equal(r.cWrite.ok, false, 'page writer errors after the server stop-sending');
        if (browser === 'chromium') {
          // Firefox 153 sends no STOP_SENDING when a reader is cancelled, and reports some
          // resets as a TypeError without a code; Chromium 156 reports a stop-sending as a
          // NetworkError without a code. Each direction is asserted where a browser shows it.
          assert.equal(s.writeError?.code, 'ERR_STREAM_STOPPED', `server write error ${JSON.stringify(s.writeError)}`);
          assert.equal(s.writeError.streamErrorCode, 22);
          assert.equal(r.bRead.error.streamErrorCode, 31, `page reader error ${JSON.stringify(r.bRead.error)}`);
        } else {
          // Firefox 153 usually reports the stop-sending with its code; once in a loaded
          // fresh-clone run it reported the same write as `AbortError: error writing data`
          // with no code (not reproduced in 11 runs here, 5 of them under CPU load). A code,
          // when there is one, must be 41.
          const e = r.cWrite.error;
          if (e.streamErrorCode === undefined) {
            assert.equal(e.name, 'AbortError', `page writer error ${JSON.stringify(e)}`);
            console.log(`# firefox reported the stop-sending without its code: ${JSON.stringify(e)}`);
          } else {
            assert.equal(e.streamErrorCode, 41, `page writer error ${JSON.stringify(e)}`);
          }
          if (r.bRead.error.streamErrorCode !== undefined) assert.equal(r.bRead.error.streamErrorCode, 31);
        }
      }));

    test('reject with 403, unrouted path 404, origin policy', { timeout: T }, () =>
      withPage(browser, async (page) => {
        const url403 = route((request) => request.reject(403));
        const strict = await Server.listen({ port: 0, origins: ['https://only.example'] });
        const strictRequests = [];
        (async () => {
          for await (const req of strict.requests()) {
            strictRequests.push(req.path);
            await req.accept();
          }
        })();
        try {
          const r = await page.evaluate(
            async ({ url403, url404, urlStrict, hash, hashStrict }) => {
              const fail = async (url, h) => wt.outcome(wt.create(url, h).ready, 10000, 'ready');
              return {
                r403: await fail(url403, hash),
                r404: await fail(url404, hash),
                strict: await fail(urlStrict, hashStrict),
              };
            },
            {
              url403,
              url404: `https://localhost:${server.port}/nobody-here`,
              urlStrict: `https://localhost:${strict.port}/x`,
              hash,
              hashStrict: strict.certificate.sha256,
            },
          );
          for (const k of ['r403', 'r404', 'strict']) assert.equal(r[k].ok, false, `${k}: ready must reject`);
          assert.deepEqual(strictRequests, [], 'a request from a disallowed origin never reaches the application');
        } finally {
          await strict.close({ grace: 100 });
        }
      }));

    test('request misuse fails clearly and keeps the request usable', { timeout: T }, () =>
      withPage(browser, async (page) => {
        const out = deferred();
        const url = route(async (request) => {
          const r = {};
          await request.reject(200).catch((e) => (r.status = `${e.name}: ${e.message}`));
          await request.accept({ protocol: 'not-offered' }).catch((e) => (r.protocol = e.code));
          await request.accept({ headers: { 'bad header': 'x' } }).catch((e) => (r.header = e.code));
          r.answeredBefore = request.answered;
          const session = await request.accept({ headers: { 'x-served-by': 'ferrovia' } });
          r.answeredAfter = request.answered;
          await request.accept().catch((e) => (r.twice = e.code));
          await request.reject(403).catch((e) => (r.rejectAfter = e.code));
          out.resolve(r);
          session.close({ closeCode: 3, reason: 'ok' });
        });
        const reason = await page.evaluate(
          async ({ url, hash }) => {
            const t = await wt.connect(url, hash);
            return (await wt.timeout(t.closed, 10000, 'closed')).reason;
          },
          { url, hash },
        );
        assert.equal(reason, 'ok', 'the session accepted after the failed attempts works');
        const r = await out.promise;
        assert.match(r.status, /^RangeError: status must be an integer in 300\.\.599/);
        assert.equal(r.protocol, 'ERR_PROTOCOL_NOT_OFFERED');
        assert.equal(r.header, 'ERR_INVALID_HEADER');
        assert.equal(r.answeredBefore, false);
        assert.equal(r.answeredAfter, true);
        assert.equal(r.twice, 'ERR_REQUEST_ANSWERED');
        assert.equal(r.rejectAfter, 'ERR_REQUEST_ANSWERED');
      }));

    test('a throwing route handler answers 500; a vanished client ends its session', { timeout: T }, async () => {
      const errors = [];
      const closed = deferred();
      const second = await Server.listen({ port: 0 });
      try {
        second.route('/boom', () => {
          throw new Error('handler bug');
        }, { onError: (e) => errors.push(e.message) });
        second.route('/stay', async (request) => {
          const session = await request.accept();
          closed.resolve(await session.closed);
        });
        const h = second.certificate.sha256;
        await withPage(browser, async (page) => {
          const r = await page.evaluate(
            async ({ boom, stay, h }) => {
              const failed = await wt.outcome(wt.create(boom, h).ready, 10000, 'ready');
              await wt.connect(stay, h);
              return { failed: !failed.ok };
            },
            { boom: `https://localhost:${second.port}/boom`, stay: `https://localhost:${second.port}/stay`, h },
          );
          assert.equal(r.failed, true, 'the page sees the handshake fail');
          // The page (and with it the connection) goes away without closing the session.
        });
        const info = await within(closed.promise, 20000, 'closed after the page went away');
        assert.ok(['remote', 'connection'].includes(info.initiator), JSON.stringify(info));
        assert.deepEqual(errors, ['handler bug']);
        assert.equal(second.sessionCount, 0);
      } finally {
        await second.close({ grace: 100 });
      }
    });

    test('two servers in one process serve one page at once', { timeout: T }, () =>
      withPage(browser, async (page) => {
        const second = await Server.listen({ port: 0 });
        second.route('/hello', async (request) => {
          const session = await request.accept();
          const w = (await session.createUnidirectionalStream()).getWriter();
          await w.write(new TextEncoder().encode('from second'));
          await w.close();
        });
        const url1 = route(async (request) => {
          const session = await request.accept();
          const w = (await session.createUnidirectionalStream()).getWriter();
          await w.write(new TextEncoder().encode('from first'));
          await w.close();
        });
        try {
          const r = await page.evaluate(
            async ({ url1, url2, h1, h2 }) => {
              const read = async (url, h) => {
                const t = await wt.connect(url, h);
                const { value } = await t.incomingUnidirectionalStreams.getReader().read();
                return wt.decode(await wt.readAll(value));
              };
              return Promise.all([read(url1, h1), read(url2, h2)]);
            },
            { url1, url2: `https://localhost:${second.port}/hello`, h1: hash, h2: second.certificate.sha256 },
          );
          assert.deepEqual(r, ['from first', 'from second']);
          assert.notEqual(second.port, server.port);
        } finally {
          await second.close({ grace: 100 });
        }
      }));

    test('toDuplex: a Node Duplex over a browser stream', { timeout: T }, () =>
      withPage(browser, async (page) => {
        const url = route(async (request) => {
          const session = await request.accept();
          const { value } = await session.incomingBidirectionalStreams.getReader().read();
          const duplex = toDuplex(value);
          // Upper-cases what arrives and sends it back, in Node stream style.
          for await (const chunk of duplex.iterator({ destroyOnReturn: false })) duplex.write(Buffer.from(chunk.toString('latin1').toUpperCase(), 'latin1'));
          duplex.end();
          await finished(duplex);
        });
        const text = await page.evaluate(
          async ({ url, hash }) => {
            const t = await wt.connect(url, hash);
            const s = await t.createBidirectionalStream();
            const [, got] = await Promise.all([wt.writeAll(s.writable, wt.encode('hello duplex')), wt.readAll(s.readable)]);
            t.close();
            return wt.decode(got);
          },
          { url, hash },
        );
        assert.equal(text, 'HELLO DUPLEX');
      }));

    test('stats, drain and a panic in native code that does not stop the server', { timeout: T }, () =>
      withPage(browser, async (page) => {
        const out = deferred();
        const url = route(async (request) => {
          const session = await request.accept();
          const { value } = await session.incomingBidirectionalStreams.getReader().read();
          await value.readable.pipeTo(value.writable);
          const stats = await session.getStats();
          let panic;
          try {
            await (await import('ferrovia')).default.__native.__panicAsync();
          } catch (e) {
            panic = e;
          }
          session.drain();
          out.resolve({ stats, panic });
        });
        const later = route(async (request) => {
          const session = await request.accept();
          session.close({ closeCode: 5, reason: 'still serving' });
        });
        const r = await page.evaluate(
          async ({ url, hash, later }) => {
            const t = await wt.connect(url, hash);
            const s = await t.createBidirectionalStream();
            const [, got] = await Promise.all([wt.writeAll(s.writable, wt.randomBytes(50000)), wt.readAll(s.readable)]);
            await wt.sleep(300);
            // After the panic the same server must still accept a new session.
            const t2 = await wt.connect(later, hash);
            const closed = await wt.timeout(t2.closed, 10000, 'closed of the second session');
            t.close();
            return { echoed: got.byteLength, t2: closed.reason };
          },
          { url, hash, later },
        );
        const s = await out.promise;
        assert.equal(r.echoed, 50000);
        assert.equal(r.t2, 'still serving', 'a new session after the panic is accepted and closed normally');
        assert.ok(s.stats.bytesReceived >= 50000, `bytesReceived ${s.stats.bytesReceived}`);
        // Sent bytes may still sit in the send buffer when the stats are read.
        assert.ok(s.stats.bytesSent > 0 && s.stats.packetsSent > 0, `bytesSent ${s.stats.bytesSent}`);
        assert.ok(s.stats.smoothedRtt >= 0 && s.stats.smoothedRtt < 1000, `rtt ${s.stats.smoothedRtt}`);
        assert.ok(s.panic instanceof Error, 'the panic became a rejected promise');
        assert.match(String(s.panic.message), /deliberate panic/);
      }));
  });
}
