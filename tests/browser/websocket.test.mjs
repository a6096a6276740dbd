// The TCP side from real browsers: native `WebSocket` to the echo example's `/ws` route on
// the same port as its WebTransport endpoint, over TLS with the same certificate (trusted
// by Chromium's SPKI flag and Firefox's acceptInsecureCerts, since serverCertificateHashes
// covers WebTransport only).
//
//   cargo build -p ferrovia --example echo && node --test tests/browser/websocket.test.mjs
//
// Each browser first opens a WebSocket over a fresh connection, then loads something from
// the same origin (an HTTP/2 connection) and opens another. Chromium 156 opens its first
// WebSocket on an HTTP/1.1 connection of its own (RFC 6455) and the second on the HTTP/2
// connection, which advertises SETTINGS_ENABLE_CONNECT_PROTOCOL (RFC 8441); Firefox 153
// negotiates HTTP/2 for the WebSocket's own connection and uses RFC 8441 both times. The
// server reports which HTTP version carried each WebSocket, and the tests print it.

import assert from 'node:assert/strict';
import { after, describe, test } from 'node:test';

import { BROWSERS, closeAll, startEchoServer, token, withPage } from './harness.mjs';

const TEST_TIMEOUT = 30000;

let serverPromise = null;
const echoServer = () => (serverPromise ??= startEchoServer());

after(async () => {
  await closeAll();
  if (serverPromise) await serverPromise.then((s) => s.stop(), () => {});
});

/** Page side: opens a WebSocket, echoes a text and a binary message, then closes. */
async function pageEcho({ url, closeCode, reason, warmup, serverCloses }) {
  if (warmup) {
    // Any response will do: the point is an HTTP/2 connection to the origin.
    // With credentials, as a WebSocket goes: connections are pooled per privacy mode.
    await fetch(warmup, { mode: 'no-cors', cache: 'no-store', credentials: 'include' }).catch(() => {});
  }
  const ws = new WebSocket(url);
  ws.binaryType = 'arraybuffer';
  const messages = [];
  let wake = null;
  ws.onmessage = (e) => {
    messages.push(e.data);
    if (wake) wake();
  };
  const closed = new Promise((resolve) => {
    ws.onclose = (e) => resolve({ code: e.code, reason: e.reason, clean: e.wasClean });
  });
  const opened = await Promise.race([
    new Promise((r) => { ws.onopen = () => r(true); }),
    closed.then(() => false),
  ]);
  if (!opened) return { opened, closed: await closed };
  const next = () => new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error('no message')), 10000);
    const check = () => {
      if (messages.length) {
        clearTimeout(t);
        wake = null;
        resolve(messages.shift());
      }
    };
    wake = check;
    check();
  });
  ws.send('hello ✓');
  const text = await next();
  if (serverCloses) return { opened, text, closed: await closed };
  // Long enough that both sides compress it when permessage-deflate was agreed.
  const long = 'ferrovia ✓ '.repeat(5000);
  ws.send(long);
  const longOk = (await next()) === long;
  const bytes = new Uint8Array(70000).map((_, i) => (i * 7) & 255);
  ws.send(bytes);
  const back = new Uint8Array(await next());
  const binaryOk = back.length === bytes.length && back.every((b, i) => b === bytes[i]);
  if (closeCode) ws.close(closeCode, reason);
  return { opened, text, longOk, binaryOk, protocol: ws.protocol, extensions: ws.extensions, closed: await closed };
}

for (const browser of BROWSERS) {
  describe(browser, () => {
    test('WebSocket echo and close codes both ways, over HTTP/1.1 and HTTP/2', { timeout: TEST_TIMEOUT * 2 }, async () => {
      const server = await echoServer();
      const wss = (p) => server.url(p).replace('https://', 'wss://');
      await withPage(
        browser,
        async (page) => {
          // The page closes: its code and reason reach the server.
          const t1 = token();
          const mark = server.mark();
          const r1 = await page.evaluate(pageEcho, { url: wss(`/ws?t=${t1}`), closeCode: 4000, reason: 'page bye' });
          assert.equal(r1.opened, true, JSON.stringify(r1));
          assert.equal(r1.text, 'hello ✓');
          assert.equal(r1.longOk, true);
          assert.equal(r1.binaryOk, true);
          // The echo servers turn compression on; every browser offers it.
          assert.match(r1.extensions, /^permessage-deflate/);
          console.log(`# ${browser}: extensions agreed: ${r1.extensions}`);
          assert.deepEqual(r1.closed, { code: 4000, reason: 'page bye', clean: true });
          const ev1 = await server.waitForEvent((e) => e.event === 'websocket-closed' && e.path.includes(t1), { since: mark });
          assert.deepEqual([ev1.code, ev1.reason, ev1.remote], [4000, 'page bye', true]);
          const open1 = server.eventsSince(mark).find((e) => e.event === 'websocket' && e.path.includes(t1));
          assert.equal(open1.origin, page.origin);
          console.log(`# ${browser}: first WebSocket over ${open1.http}`);

          // The server closes: the page sees its code and reason. A fetch first makes an
          // HTTP/2 connection to the origin for the browser to reuse.
          const t2 = token();
          const mark2 = server.mark();
          const r2 = await page.evaluate(pageEcho, {
            url: wss(`/ws?t=${t2}&close=4001&reason=server%20bye`),
            warmup: server.url('/'),
            serverCloses: true,
          });
          assert.equal(r2.opened, true, JSON.stringify(r2));
          assert.equal(r2.text, 'hello ✓');
          assert.deepEqual(r2.closed, { code: 4001, reason: 'server bye', clean: true });
          const open2 = await server.waitForEvent((e) => e.event === 'websocket' && e.path.includes(t2), { since: mark2 });
          console.log(`# ${browser}: WebSocket after an HTTPS request over ${open2.http}`);
          const versions = new Set([open1.http, open2.http]);
          for (const v of versions) assert.ok(['HTTP/1.1', 'HTTP/2'].includes(v), v);
          if (browser === 'chromium') {
            // Chromium starts a WebSocket on its own HTTP/1.1 connection and moves to an
            // HTTP/2 connection that advertises extended CONNECT.
            assert.equal(open1.http, 'HTTP/1.1');
            assert.equal(open2.http, 'HTTP/2');
          } else {
            // Firefox offers h2 in ALPN for a WebSocket's own connection and goes RFC 8441
            // at once.
            assert.equal(open1.http, 'HTTP/2');
            assert.equal(open2.http, 'HTTP/2');
          }
        },
        { trustSpki: server.spki },
      );
    });

    test('WebSocket from a foreign origin is refused', { timeout: TEST_TIMEOUT }, async () => {
      const server = await echoServer();
      const t = token();
      const mark = server.mark();
      await withPage(
        browser,
        async (page) => {
          const r = await page.evaluate(pageEcho, { url: server.url(`/ws?t=${t}`).replace('https://', 'wss://') });
          assert.equal(r.opened, false);
          assert.equal(r.closed.code, 1006);
        },
        { host: '127.0.0.2', trustSpki: server.spki },
      );
      assert.deepEqual(server.eventsSince(mark).filter((e) => String(e.path).includes(t)), []);
    });
  });
}
