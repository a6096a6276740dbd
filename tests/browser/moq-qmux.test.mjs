// Interop: @moq/qmux, the published browser QMux client (an independent implementation of
// draft-ietf-quic-qmux-02), against Ferrovia's server. Pages in headless Chromium and
// Firefox import it by its bare name (the harness serves it and @moq/web-socket-stream
// from node_modules through an import map) and talk to the Rust echo example over wss:// on
// the WebTransport port, TLS trusted by the harness.
//
//   cargo build -p ferrovia --example echo && node --test tests/browser/moq-qmux.test.mjs
//
// Chromium runs @moq/qmux over its native WebSocketStream, Firefox over the package's
// WebSocket ponyfill. The echo example prints `session` and `closed` events; the tests
// check the server's side as well as the page's.

import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, describe, test } from 'node:test';

import { BROWSERS, closeAll, sha256Hex, startEchoServer, token, withPage } from './harness.mjs';

const TEST_TIMEOUT = 45000;

let serverPromise = null;
const echoServer = () => (serverPromise ??= startEchoServer());

after(async () => {
  await closeAll();
  if (serverPromise) await serverPromise.then((s) => s.stop(), () => {});
});

async function sessionEvent(server, p, since) {
  return server.waitForEvent((e) => e.event === 'session' && e.path === p, { since, description: `session ${p}` });
}

async function closedEvent(server, p, since) {
  return server.waitForEvent((e) => e.event === 'closed' && e.path === p, { since, description: `closed ${p}` });
}

for (const browser of BROWSERS) {
  describe(`${browser}: @moq/qmux against the Ferrovia server`, () => {
    const run = (body) => async () => {
      const server = await echoServer();
      return withPage(browser, (page) => body(page, server), { trustSpki: server.spki });
    };

    test('bidi echo of 1 MiB and 8 concurrent streams, bytes compared; app protocol; the server sees qmux', { timeout: TEST_TIMEOUT }, run(async (page, server) => {
      const data = randomBytes(1 << 20);
      const p = `/echo?t=${token()}`;
      const mark = server.mark();
      const r = await page.evaluate(async ({ url, dataB64 }) => {
        const { default: Session } = await import('@moq/qmux');
        const t = new Session(url, { protocols: ['chat.v1'], versions: { 'chat.v1': 'qmux-02' } });
        await wt.timeout(t.ready, 10000, 'ready');
        const data = wt.b64ToBytes(dataB64);
        const s = await wt.timeout(t.createBidirectionalStream(), 10000, 'createBidirectionalStream');
        const [, got] = await Promise.all([wt.writeAll(s.writable, data), wt.readAll(s.readable, 20000, 'bidi echo')]);
        const small = await Promise.all(Array.from({ length: 8 }, async (_, i) => {
          const d = wt.randomBytes(20000 + i);
          const st = await t.createBidirectionalStream();
          const [, back] = await Promise.all([wt.writeAll(st.writable, d, true, 4096), wt.readAll(st.readable, 20000, `bidi ${i}`)]);
          return (await wt.sha256Hex(back)) === (await wt.sha256Hex(d));
        }));
        const out = { protocol: t.protocol, length: got.length, sha256: await wt.sha256Hex(got), small };
        t.close();
        return out;
      }, { url: server.url(p), dataB64: data.toString('base64') });
      assert.equal(r.protocol, 'chat.v1', JSON.stringify(r));
      assert.equal(r.length, data.length);
      assert.equal(r.sha256, sha256Hex(data), 'SHA-256 of the echo (page) vs the bytes sent (node)');
      assert.deepEqual(r.small, Array(8).fill(true));
      const ev = await sessionEvent(server, p, mark);
      assert.deepEqual([ev.transport, ev.protocol, ev.origin], ['qmux', 'chat.v1', page.origin]);
    }));

    test('a uni stream comes back on a server-opened uni stream', { timeout: TEST_TIMEOUT }, run(async (page, server) => {
      const data = randomBytes(100 * 1024 + 7);
      const r = await page.evaluate(async ({ url, dataB64 }) => {
        const { default: Session } = await import('@moq/qmux');
        const t = new Session(url);
        await wt.timeout(t.ready, 10000, 'ready');
        const incoming = t.incomingUnidirectionalStreams.getReader();
        const w = await t.createUnidirectionalStream();
        await wt.writeAll(w, wt.b64ToBytes(dataB64));
        const { value } = await wt.timeout(incoming.read(), 10000, 'incoming uni');
        const got = await wt.readAll(value, 10000, 'uni echo');
        const out = { protocol: t.protocol, length: got.length, sha256: await wt.sha256Hex(got) };
        t.close();
        return out;
      }, { url: server.url(`/echo?t=${token()}`), dataB64: data.toString('base64') });
      assert.deepEqual(r, { protocol: '', length: data.length, sha256: sha256Hex(data) });
    }));

    test('datagrams echo, in order, up to the size the server sends back', { timeout: TEST_TIMEOUT }, run(async (page, server) => {
      const r = await page.evaluate(async ({ url }) => {
        const { default: Session } = await import('@moq/qmux');
        const t = new Session(url);
        await wt.timeout(t.ready, 10000, 'ready');
        // @moq/qmux resolves ready before the server's transport parameters arrive and
        // drops datagrams until they have: wait for the limit they set.
        const deadline = Date.now() + 5000;
        while (t.datagrams.maxDatagramSize === 0 && Date.now() < deadline) await wt.sleep(10);
        const maxDatagramSize = t.datagrams.maxDatagramSize;
        const reader = t.datagrams.readable.getReader();
        const writer = t.datagrams.writable.getWriter();
        const sent = [];
        for (let i = 0; i < 20; i++) {
          // The last is 16379 bytes, the most the echo returns in one record (16382).
          const d = wt.randomBytes(i === 19 ? 16379 : 100 + i);
          sent.push(await wt.sha256Hex(d));
          await writer.write(d);
        }
        const received = [];
        for (let i = 0; i < 20; i++) {
          const { value } = await wt.timeout(reader.read(), 5000, `datagram ${i} (of 20)`);
          received.push(await wt.sha256Hex(value));
        }
        t.close();
        return { maxDatagramSize, inOrder: JSON.stringify(sent) === JSON.stringify(received) };
      }, { url: server.url(`/echo?t=${token()}`) });
      assert.ok(r.maxDatagramSize >= 16379, `maxDatagramSize ${r.maxDatagramSize}`);
      assert.equal(r.inOrder, true, 'all 20 datagrams came back, in order');
    }));

    test('close code and reason reach the server; the server\'s reach the page', { timeout: TEST_TIMEOUT }, run(async (page, server) => {
      const p1 = `/echo?t=${token()}`;
      const mark = server.mark();
      const mine = await page.evaluate(async ({ url }) => {
        const { default: Session } = await import('@moq/qmux');
        const t = new Session(url);
        await wt.timeout(t.ready, 10000, 'ready');
        // One round trip first, so the server has the page's transport parameters.
        const s = await t.createBidirectionalStream();
        await Promise.all([wt.writeAll(s.writable, wt.encode('x')), wt.readAll(s.readable, 5000, 'echo')]);
        t.close({ closeCode: 4000000007, reason: 'bye from @moq/qmux ✓' });
        return wt.outcome(t.closed, 5000, 'closed');
      }, { url: server.url(p1) });
      assert.deepEqual(mine, { ok: true, value: { closeCode: 4000000007, reason: 'bye from @moq/qmux ✓' } });
      const ev1 = await closedEvent(server, p1, mark);
      assert.deepEqual([ev1.code, ev1.reason, ev1.remote], [4000000007, 'bye from @moq/qmux ✓', true]);

      // Closed as soon as ready resolves, which @moq/qmux does when the WebSocket opens,
      // before any frame from the server: its transport parameters still go first.
      const p0 = `/echo?t=${token()}`;
      const early = await page.evaluate(async ({ url }) => {
        const { default: Session } = await import('@moq/qmux');
        const t = new Session(url);
        await wt.timeout(t.ready, 10000, 'ready');
        t.close({ closeCode: 9, reason: 'early' });
        return wt.outcome(t.closed, 5000, 'closed');
      }, { url: server.url(p0) });
      assert.deepEqual(early, { ok: true, value: { closeCode: 9, reason: 'early' } });
      const ev0 = await closedEvent(server, p0, mark);
      assert.deepEqual([ev0.code, ev0.reason, ev0.remote], [9, 'early', true]);

      const p2 = `/close?code=4242&reason=server%20bye&t=${token()}`;
      const theirs = await page.evaluate(async ({ url }) => {
        const { default: Session } = await import('@moq/qmux');
        const t = new Session(url);
        await wt.timeout(t.ready, 10000, 'ready');
        return wt.outcome(t.closed, 5000, 'closed');
      }, { url: server.url(p2) });
      assert.deepEqual(theirs, { ok: true, value: { closeCode: 4242, reason: 'server bye' } });
      const ev2 = await closedEvent(server, p2, mark);
      assert.deepEqual([ev2.code, ev2.reason, ev2.remote], [4242, 'server bye', false]);
    }));

    test('reset codes both ways: the page\'s reach the server, the server\'s reach the page', { timeout: TEST_TIMEOUT }, run(async (page, server) => {
      const mark = server.mark();
      const r = await page.evaluate(async ({ echoUrl, resetUrl }) => {
        const { default: Session, StreamError } = await import('@moq/qmux');
        const t = new Session(echoUrl);
        await wt.timeout(t.ready, 10000, 'ready');
        const bidi = await t.createBidirectionalStream();
        const bw = bidi.writable.getWriter();
        await bw.write(wt.encode('bidi data'));
        await bw.abort(new StreamError(77));
        const uni = await t.createUnidirectionalStream();
        const uw = uni.getWriter();
        await uw.write(wt.encode('uni data'));
        await uw.abort(new StreamError(78));
        const later = await t.createBidirectionalStream();
        const [, got] = await Promise.all([wt.writeAll(later.writable, wt.encode('still fine')), wt.readAll(later.readable, 5000, 'after resets')]);
        t.close();

        // /reset?code=30 resets each bidi stream with 30 and stops it with 31.
        const u = new Session(resetUrl);
        await wt.timeout(u.ready, 10000, 'ready (reset)');
        const s = await u.createBidirectionalStream();
        const writer = s.writable.getWriter();
        const reader = s.readable.getReader();
        await writer.write(wt.encode('x'));
        const read = await wt.outcome(reader.read(), 10000, 'read');
        let write = { ok: true };
        for (let i = 0; i < 60 && write.ok; i++) {
          write = await wt.outcome(writer.write(wt.encode('y')), 3000, 'write');
          await wt.sleep(50);
        }
        u.close();
        return { after: wt.decode(got), read, write };
      }, { echoUrl: server.url(`/echo?t=${token()}`), resetUrl: server.url(`/reset?code=30&t=${token()}`) });
      const dump = JSON.stringify(r);
      assert.equal(r.after, 'still fine');
      await server.waitForEvent((e) => e.event === 'stream-reset' && e.code === 77, { since: mark, description: 'stream-reset 77 (bidi)' });
      await server.waitForEvent((e) => e.event === 'stream-reset' && e.code === 78, { since: mark, description: 'stream-reset 78 (uni)' });
      assert.equal(r.read.ok, false, dump);
      assert.deepEqual([r.read.error.source, r.read.error.streamErrorCode], ['stream', 30], dump);
      assert.equal(r.write.ok, false, dump);
      assert.deepEqual([r.write.error.source, r.write.error.streamErrorCode], ['stream', 31], dump);
    }));

    test('server-opened uni and bidi streams (/open) reach the page; its reply reaches the server', { timeout: TEST_TIMEOUT }, run(async (page, server) => {
      const p = `/open?t=${token()}`;
      const mark = server.mark();
      const r = await page.evaluate(async ({ url }) => {
        const { default: Session } = await import('@moq/qmux');
        const t = new Session(url);
        await wt.timeout(t.ready, 10000, 'ready');
        const [uni, bidi] = await wt.timeout(
          Promise.all([t.incomingUnidirectionalStreams.getReader().read(), t.incomingBidirectionalStreams.getReader().read()]),
          10000, 'incoming streams');
        const uniText = wt.decode(await wt.readAll(uni.value, 10000, 'server uni'));
        const bidiText = wt.decode(await wt.readAll(bidi.value.readable, 10000, 'server bidi'));
        await wt.writeAll(bidi.value.writable, wt.encode('reply:' + bidiText));
        return { uniText, bidiText };
      }, { url: server.url(p) });
      assert.deepEqual(r, { uniText: 'hello uni', bidiText: 'hello bidi' });
      const ev = await server.waitForEvent((e) => e.event === 'bidi-reply', { since: mark, description: 'bidi-reply' });
      assert.equal(ev.data, 'reply:hello bidi');
      assert.equal((await sessionEvent(server, p, mark)).transport, 'qmux');
    }));
  });
}
