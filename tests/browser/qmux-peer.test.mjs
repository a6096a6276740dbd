// Interop: the browser connector (bindings-node/lib/client.mjs, 'ferrovia/client') against
// a server built on the `qmux` crate, an independent implementation of
// draft-ietf-quic-qmux-02 (core/examples/qmux_peer_echo.rs: WebSockets over TLS handed to
// `qmux::ws::Server`). Pages in headless Chromium and Firefox connect with
// `transports: ['qmux']`, TLS trusted by the harness.
//
//   cargo build -p ferrovia --example qmux_peer_echo && node --test tests/browser/qmux-peer.test.mjs
//
// The peer prints JSON lines like the echo example: `session` (with the negotiated
// application protocol), `stream-reset` and `closed` (code, reason, and whether the close
// was an application close). It does not see request paths, so the tests run one session
// at a time and tell their events apart by close reason.

import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { after, describe, test } from 'node:test';

import { BROWSERS, REPO_ROOT, closeAll, sha256Hex, startEchoServer, token, withPage } from './harness.mjs';

const TEST_TIMEOUT = 45000;
const PEER_BIN = process.env.FERROVIA_QMUX_PEER_BIN || path.join(REPO_ROOT, 'target', 'debug', 'examples', 'qmux_peer_echo');

let serverPromise = null;
const peerServer = () => {
  if (!existsSync(PEER_BIN)) {
    throw new Error(`${PEER_BIN} not found; build it with \`cargo build -p ferrovia --example qmux_peer_echo\``);
  }
  return (serverPromise ??= startEchoServer({ bin: PEER_BIN, args: ['--port', '0'] }));
};

after(async () => {
  await closeAll();
  if (serverPromise) await serverPromise.then((s) => s.stop(), () => {});
});

for (const browser of BROWSERS) {
  describe(`${browser}: the connector against the qmux crate's server`, () => {
    const run = (body) => async () => {
      const server = await peerServer();
      return withPage(browser, (page) => body(page, server), { trustSpki: server.spki });
    };

    test('bidi echo of 1 MiB and 8 concurrent streams, bytes compared; app protocol chat.v1 on both ends', { timeout: TEST_TIMEOUT }, run(async (page, server) => {
      const data = randomBytes(1 << 20);
      const reason = `bidi ${token()}`;
      const mark = server.mark();
      const r = await page.evaluate(async ({ url, dataB64, reason }) => {
        const { connect } = await import(location.origin + '/client.js');
        const t = await wt.timeout(connect(url, { transports: ['qmux'], protocols: ['chat.v1'] }), 10000, 'connect');
        const data = wt.b64ToBytes(dataB64);
        const s = await wt.timeout(t.createBidirectionalStream(), 10000, 'createBidirectionalStream');
        const [, got] = await Promise.all([wt.writeAll(s.writable, data), wt.readAll(s.readable, 20000, 'bidi echo')]);
        const small = await Promise.all(Array.from({ length: 8 }, async (_, i) => {
          const d = wt.randomBytes(20000 + i);
          const st = await t.createBidirectionalStream();
          const [, back] = await Promise.all([wt.writeAll(st.writable, d, true, 4096), wt.readAll(st.readable, 20000, `bidi ${i}`)]);
          return (await wt.sha256Hex(back)) === (await wt.sha256Hex(d));
        }));
        const out = {
          transport: t.transport, protocol: t.protocol, attempts: t.attempts.map((a) => [a.transport, a.outcome]),
          length: got.length, sha256: await wt.sha256Hex(got), small,
        };
        t.close({ closeCode: 0, reason });
        return out;
      }, { url: server.url(`/echo?t=${token()}`), dataB64: data.toString('base64'), reason });
      assert.deepEqual(
        { ...r, sha256: undefined },
        { transport: 'qmux', protocol: 'chat.v1', attempts: [['qmux', 'ready']], length: data.length, sha256: undefined, small: Array(8).fill(true) },
      );
      assert.equal(r.sha256, sha256Hex(data), 'SHA-256 of the echo (page) vs the bytes sent (node)');
      const ev = await server.waitForEvent((e) => e.event === 'session', { since: mark, description: 'session' });
      assert.equal(ev.protocol, 'chat.v1');
      await server.waitForEvent((e) => e.event === 'closed' && e.reason === reason, { since: mark, description: `closed "${reason}"` });
    }));

    test('bare qmux-02: a uni stream comes back on a server-opened one; datagrams echo in order', { timeout: TEST_TIMEOUT }, run(async (page, server) => {
      const data = randomBytes(100 * 1024 + 7);
      const reason = `uni ${token()}`;
      const mark = server.mark();
      const r = await page.evaluate(async ({ url, dataB64, reason }) => {
        const { connect } = await import(location.origin + '/client.js');
        const t = await wt.timeout(connect(url, { transports: ['qmux'] }), 10000, 'connect');
        const incoming = t.incomingUnidirectionalStreams.getReader();
        const w = await t.createUnidirectionalStream();
        await wt.writeAll(w, wt.b64ToBytes(dataB64));
        const { value } = await wt.timeout(incoming.read(), 10000, 'incoming uni');
        const got = await wt.readAll(value, 10000, 'uni echo');
        const maxDatagramSize = t.datagrams.maxDatagramSize;
        const reader = t.datagrams.readable.getReader();
        const writer = t.datagrams.createWritable().getWriter();
        const sent = [];
        for (let i = 0; i < 20; i++) {
          // The last is the largest the peer takes (and sends back in one record).
          const d = wt.randomBytes(i === 19 ? maxDatagramSize : 100 + i);
          sent.push(await wt.sha256Hex(d));
          await writer.write(d);
        }
        const received = [];
        for (let i = 0; i < 20; i++) received.push(await wt.sha256Hex((await wt.timeout(reader.read(), 5000, `datagram ${i}`)).value));
        const out = {
          protocol: t.protocol, length: got.length, sha256: await wt.sha256Hex(got),
          maxDatagramSize, inOrder: JSON.stringify(sent) === JSON.stringify(received),
        };
        t.close({ closeCode: 0, reason });
        return out;
      }, { url: server.url(`/echo?t=${token()}`), dataB64: data.toString('base64'), reason });
      assert.equal(r.protocol, '');
      assert.equal(r.length, data.length);
      assert.equal(r.sha256, sha256Hex(data));
      assert.ok(r.maxDatagramSize >= 1000, `maxDatagramSize ${r.maxDatagramSize}`);
      assert.equal(r.inOrder, true, `all 20 datagrams (the last of ${r.maxDatagramSize} bytes) came back in order`);
      const ev = await server.waitForEvent((e) => e.event === 'session', { since: mark, description: 'session' });
      assert.equal(ev.protocol, null);
    }));

    test('the page\'s close code and reason reach the peer as an application close', { timeout: TEST_TIMEOUT }, run(async (page, server) => {
      const reason = `bye from the page ✓ ${token()}`;
      const mark = server.mark();
      const r = await page.evaluate(async ({ url, reason }) => {
        const { connect } = await import(location.origin + '/client.js');
        const t = await wt.timeout(connect(url, { transports: ['qmux'] }), 10000, 'connect');
        const s = await t.createBidirectionalStream();
        await Promise.all([wt.writeAll(s.writable, wt.encode('x')), wt.readAll(s.readable, 5000, 'echo')]);
        t.close({ closeCode: 4000000007, reason });
        return wt.outcome(t.closed, 5000, 'closed');
      }, { url: server.url(`/echo?t=${token()}`), reason });
      assert.deepEqual(r, { ok: true, value: { closeCode: 4000000007, reason } });
      const ev = await server.waitForEvent((e) => e.event === 'closed' && e.reason === reason, { since: mark, description: `closed "${reason}"` });
      assert.deepEqual([ev.code, ev.clean], [4000000007, true]);
    }));

    test('the page\'s reset codes reach the peer; the session carries on', { timeout: TEST_TIMEOUT }, run(async (page, server) => {
      const mark = server.mark();
      const r = await page.evaluate(async ({ url }) => {
        const { connect } = await import(location.origin + '/client.js');
        const t = await wt.timeout(connect(url, { transports: ['qmux'] }), 10000, 'connect');
        const bidi = await t.createBidirectionalStream();
        const bw = bidi.writable.getWriter();
        await bw.write(wt.encode('bidi data'));
        await bw.abort(wt.streamError(77));
        const uni = await t.createUnidirectionalStream();
        const uw = uni.getWriter();
        await uw.write(wt.encode('uni data'));
        await uw.abort(wt.streamError(78));
        const later = await t.createBidirectionalStream();
        const [, got] = await Promise.all([wt.writeAll(later.writable, wt.encode('still fine')), wt.readAll(later.readable, 5000, 'after resets')]);
        t.close();
        return wt.decode(got);
      }, { url: server.url(`/echo?t=${token()}`) });
      assert.equal(r, 'still fine');
      await server.waitForEvent((e) => e.event === 'stream-reset' && e.code === 77, { since: mark, description: 'stream-reset 77 (bidi)' });
      await server.waitForEvent((e) => e.event === 'stream-reset' && e.code === 78, { since: mark, description: 'stream-reset 78 (uni)' });
    }));
  });
}
