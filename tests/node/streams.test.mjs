// The W3C stream classes of the Node package against browsers as independent clients:
// WebTransportSendStream / WebTransportReceiveStream, BYOB reads, sendOrder, getStats()
// on streams and sessions, and reset / stop-sending codes reaching the peer.
//
//   node --test --test-concurrency=1 tests/node/streams.test.mjs

import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { after, before, describe, test } from 'node:test';

import ferroviaPackage from 'ferrovia';
import WebSocket from 'ws';

import { _internal as connectorCodec, connect as connectorConnect, MessageStream as PageMessageStream } from '../../bindings-node/lib/client.mjs';
import {
  MessageStream,
  Server,
  WebTransportBidirectionalStream,
  WebTransportError,
  WebTransportReceiveStream,
  WebTransportSendStream,
} from 'ferrovia';

import { closeAll, withPage } from '../browser/harness.mjs';

const T = 60000;
const MIB = 1 << 20;
const sha256 = (buf) => createHash('sha256').update(buf).digest('hex');

let server;
let hash;
const handlers = new Map();
let seq = 0;

/** Registers a one-off session handler and returns the URL that reaches it. */
function route(handler) {
  const name = `/s${++seq}`;
  handlers.set(name, handler);
  return `https://localhost:${server.port}${name}`;
}

before(async () => {
  server = await Server.listen({ port: 0 });
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

/** Polls `get` until `ok(value)`, for counters that follow an ACK. */
async function until(get, ok, ms, what) {
  const deadline = Date.now() + ms;
  let v = await get();
  while (!ok(v)) {
    if (Date.now() > deadline) throw new Error(`${what}: last ${JSON.stringify(v)}`);
    await new Promise((r) => setTimeout(r, 20));
    v = await get();
  }
  return v;
}

describe('stream classes without a peer', () => {
  test('the constructors are not for applications', () => {
    for (const C of [WebTransportSendStream, WebTransportReceiveStream, WebTransportBidirectionalStream]) {
      assert.throws(() => new C(), TypeError, C.name);
    }
    assert.ok(WebTransportSendStream.prototype instanceof WritableStream);
    assert.ok(WebTransportReceiveStream.prototype instanceof ReadableStream);
  });
});

/** The connector in Node, over QMux through `ws`, trusting the server's certificate. */
function connectQmux(url) {
  const ca = server.certificate.pem;
  class TrustingWebSocket extends WebSocket {
    constructor(u, protocols) {
      super(u, protocols, { ca });
    }
  }
  return connectorConnect(`https://localhost:${server.tcpPort}${new URL(url).pathname}`, { transports: ['qmux'], qmux: { WebSocket: TrustingWebSocket } });
}

describe('messages on a stream', () => {
  const native = ferroviaPackage.__native;

  test("the connector's codec and the core's agree, however the bytes are cut", () => {
    const sizes = [0, 1, 63, 64, 16383, 16384, 70000, 5, 0];
    const messages = sizes.map((n, i) => new Uint8Array(n).fill(i + 1));
    const page = Buffer.concat(messages.map((m) => connectorCodec.encodeMessage(m)));
    const core = Buffer.concat(messages.map((m) => native.encodeMessageFrame(m)));
    assert.equal(sha256(page), sha256(core), 'the same bytes on the wire');
    for (const cut of [1, 3, 1000, page.length]) {
      const coreDecoder = new native.NativeMessageDecoder(1 << 20);
      const pageDecoder = new connectorCodec.MessageDecoder(1 << 20);
      const fromCore = [];
      const fromPage = [];
      for (let i = 0; i < page.length; i += cut) {
        fromCore.push(...coreDecoder.push(page.subarray(i, i + cut)));
        fromPage.push(...pageDecoder.push(core.subarray(i, i + cut)));
      }
      coreDecoder.finish();
      pageDecoder.finish();
      assert.deepEqual(fromCore.map((m) => sha256(m)), messages.map((m) => sha256(m)), `core decoder, cut ${cut}`);
      assert.deepEqual(fromPage.map((m) => sha256(m)), messages.map((m) => sha256(m)), `connector decoder, cut ${cut}`);
    }
    // Both refuse a long message from its prefix alone, with the same code and fields.
    const prefix = native.encodeMessageFrame(Buffer.alloc(5000)).subarray(0, 2);
    for (const decoder of [new native.NativeMessageDecoder(100), new connectorCodec.MessageDecoder(100)]) {
      assert.throws(() => decoder.push(prefix), /message of 5000 bytes exceeds the limit of 100 bytes/);
    }
    assert.throws(() => new MessageStream({}), TypeError);
    assert.throws(() => new MessageStream(new ReadableStream(), { maxMessageSize: -1 }), RangeError);
  });

  test('Node: MessageStream on both ends over QMux (the connector through ws), errors keep their codes', { timeout: T }, async () => {
    const outcome = deferred();
    const url = route(async (request) => {
      const session = await request.accept();
      const { value: stream } = await session.incomingBidirectionalStreams.getReader().read();
      const messages = new MessageStream(stream, { maxMessageSize: 100_000 });
      let count = 0;
      try {
        for await (const m of messages) {
          messages.send(m); // not awaited: a broadcaster's way; a failure must not go unhandled
          count++;
        }
        await messages.close();
        outcome.resolve({ count });
      } catch (err) {
        outcome.resolve({ count, code: err.code, size: err.size, max: err.max });
      }
    });
    const t = await connectQmux(url);
    try {
      const page = new PageMessageStream(await t.createBidirectionalStream(), { text: true });
      const lines = Array.from({ length: 200 }, (_, i) => `line ${i} ${'é'.repeat(i * 3)}`);
      const echoed = (async () => {
        const got = [];
        for await (const m of page) got.push(m);
        return got;
      })();
      for (const line of lines) await page.send(line);
      await page.close();
      assert.deepEqual(await within(echoed, 20000, 'echo'), lines);
      assert.deepEqual(await outcome.promise, { count: 200 });
    } finally {
      t.close();
    }
  });

  test('Node: sends nobody awaits to a peer that stopped reading fail quietly; the awaited one says why', { timeout: T }, async () => {
    const unhandled = [];
    const onUnhandled = (reason) => unhandled.push(reason);
    process.on('unhandledRejection', onUnhandled);
    const outcome = deferred();
    const url = route(async (request) => {
      const session = await request.accept();
      const { value: stream } = await session.incomingBidirectionalStreams.getReader().read();
      const messages = new MessageStream(stream, { text: true });
      for await (const m of messages) {
        if (m !== 'stop reading') continue;
        // The page cancels its readable (STOP_SENDING) right after this line.
        await new Promise((r) => setTimeout(r, 300));
        for (let i = 0; i < 20; i++) messages.send(`unawaited ${i}`);
        const code = await messages.send('awaited').then(() => 'sent', (e) => e.code);
        outcome.resolve({ code, buffered: messages.bufferedAmount });
        break;
      }
    });
    const t = await connectQmux(url);
    try {
      const bidi = await t.createBidirectionalStream();
      const page = new PageMessageStream(bidi.writable);
      await page.send('stop reading');
      await bidi.readable.cancel({ streamErrorCode: 7 });
      const r = await within(outcome.promise, 10000, 'server outcome');
      await new Promise((resolve) => setTimeout(resolve, 200));
      assert.deepEqual(r, { code: 'ERR_STREAM_STOPPED', buffered: 0 });
      assert.deepEqual(unhandled, [], 'no unhandled rejection');
    } finally {
      process.off('unhandledRejection', onUnhandled);
      t.close();
    }
  });

  test('Node: the messages before one above the limit are read first', () => {
    const native = ferroviaPackage.__native;
    const wire = Buffer.concat([native.encodeMessageFrame(Buffer.from('a')), native.encodeMessageFrame(Buffer.from('b')), native.encodeMessageFrame(Buffer.alloc(300)).subarray(0, 2)]);
    for (const decoder of [new native.NativeMessageDecoder(100), new connectorCodec.MessageDecoder(100)]) {
      const first = decoder.push(wire).map((m) => Buffer.from(m).toString());
      assert.deepEqual(first, ['a', 'b']);
      assert.throws(() => (decoder.takeBatch ? decoder.takeBatch() : decoder.push(new Uint8Array(0))), /message of 300 bytes exceeds the limit of 100 bytes/);
    }
    // Many tiny messages come out in bounded batches.
    const tiny = Buffer.concat(Array.from({ length: 3000 }, () => native.encodeMessageFrame(Buffer.alloc(0))));
    const decoder = new native.NativeMessageDecoder(100);
    const sizes = [];
    for (let batch = decoder.push(tiny); batch.length > 0; batch = decoder.takeBatch()) sizes.push(batch.length);
    assert.deepEqual(sizes, [1024, 1024, 952]);
  });

  test('Node: a message above the reader\'s limit ends its loop with ERR_MESSAGE_TOO_LARGE', { timeout: T }, async () => {
    const outcome = deferred();
    const url = route(async (request) => {
      const session = await request.accept();
      const { value: stream } = await session.incomingBidirectionalStreams.getReader().read();
      try {
        for await (const m of new MessageStream(stream, { maxMessageSize: 1000 })) void m;
        outcome.resolve({ code: 'none' });
      } catch (err) {
        outcome.resolve({ code: err.code, size: err.size, max: err.max });
      }
    });
    const t = await connectQmux(url);
    try {
      const page = new PageMessageStream(await t.createBidirectionalStream());
      page.send(new Uint8Array(5000));
      assert.deepEqual(await within(outcome.promise, 10000, 'server outcome'), { code: 'ERR_MESSAGE_TOO_LARGE', size: 5000, max: 1000 });
    } finally {
      t.close();
    }
  });
});

for (const browser of ['chromium', 'firefox']) {
  describe(`${browser}: messages`, () => {
    for (const transport of ['webtransport', 'qmux']) {
      test(`${transport}: the page's MessageStream and the server's, both ways, text and bytes`, { timeout: T }, () =>
        withPage(browser, async (page) => {
          const served = deferred();
          const url = route(async (request) => {
            const session = await request.accept();
            const { value: stream } = await session.incomingBidirectionalStreams.getReader().read();
            const messages = new MessageStream(stream);
            const seen = [];
            for await (const m of messages) {
              seen.push(sha256(m));
              await messages.send(m);
            }
            await messages.send('bye ✓');
            await messages.close();
            served.resolve(seen);
          });
          const sizes = [0, 1, 100, 16384, 70000, 300000, 7];
          const r = await page.evaluate(
            async ({ url, hash, sizes, transport }) => {
              const { FerroviaTransport, MessageStream } = (window.ferroviaClient ??= await import(location.origin + '/client.js'));
              const hex = hash.match(/../g).map((h) => parseInt(h, 16));
              const t = new FerroviaTransport(url, { transports: [transport], serverCertificateHashes: [{ algorithm: 'sha-256', value: new Uint8Array(hex) }] });
              await t.ready;
              const messages = new MessageStream(await t.createBidirectionalStream());
              const random = (n) => {
                const b = new Uint8Array(n);
                for (let i = 0; i < n; i += 65536) crypto.getRandomValues(b.subarray(i, Math.min(n, i + 65536)));
                return b;
              };
              const sent = sizes.map(random);
              const back = (async () => {
                const got = [];
                for await (const m of messages) got.push(m);
                return got;
              })();
              for (const m of sent) await messages.send(m);
              await messages.close();
              const got = await back;
              const hex2 = async (b) => [...new Uint8Array(await crypto.subtle.digest('SHA-256', b))].map((x) => x.toString(16).padStart(2, '0')).join('');
              const out = { transport: t.transport, sent: [], got: [], last: new TextDecoder().decode(got.at(-1)) };
              for (const m of sent) out.sent.push(await hex2(m));
              for (const m of got.slice(0, -1)) out.got.push(await hex2(m));
              t.close();
              return out;
            },
            { url, hash, sizes, transport },
          );
          assert.equal(r.transport, transport);
          assert.deepEqual(r.got, r.sent, 'every message echoed whole, in order');
          assert.deepEqual(await within(served.promise, 15000, 'server'), r.sent, 'the server read the same messages');
          assert.equal(r.last, 'bye ✓');
        }, { trustSpki: server.certificate.spkiSha256 }));
    }
  });
}

describe('chromium', () => {
  test('instanceof, toStringTag and shapes of incoming and created streams', { timeout: T }, () =>
    withPage('chromium', async (page) => {
      const out = deferred();
      const url = route(async (request) => {
        const session = await request.accept();
        const { value: bidi } = await session.incomingBidirectionalStreams.getReader().read();
        const { value: uni } = await session.incomingUnidirectionalStreams.getReader().read();
        const mine = await session.createBidirectionalStream();
        const sent = await session.createUnidirectionalStream({ sendOrder: 3 });
        out.resolve({ bidi, uni, mine, sent });
        for await (const chunk of uni) void chunk;
        await bidi.readable.pipeTo(bidi.writable);
      });
      const r = page.evaluate(
        async ({ url, hash }) => {
          const t = await wt.connect(url, hash);
          const b = await t.createBidirectionalStream();
          const u = await t.createUnidirectionalStream();
          const uw = u.getWriter();
          await uw.write(wt.encode('uni'));
          await uw.close();
          const [, got] = await Promise.all([wt.writeAll(b.writable, wt.encode('echo me')), wt.readAll(b.readable)]);
          t.close();
          return wt.decode(got);
        },
        { url, hash },
      );
      const { bidi, uni, mine, sent } = await within(out.promise, 15000, 'server streams');
      for (const pair of [bidi, mine]) {
        assert.ok(pair instanceof WebTransportBidirectionalStream);
        assert.deepEqual(Object.keys(pair), ['readable', 'writable'], 'own enumerable halves');
        const { readable, writable } = pair;
        assert.ok(readable instanceof WebTransportReceiveStream && readable instanceof ReadableStream);
        assert.ok(writable instanceof WebTransportSendStream && writable instanceof WritableStream);
        assert.equal(Object.prototype.toString.call(readable), '[object WebTransportReceiveStream]');
        assert.equal(Object.prototype.toString.call(writable), '[object WebTransportSendStream]');
        assert.equal(writable.sendOrder, 0);
        assert.equal(writable.sendGroup, null);
        assert.equal(typeof readable.getStats, 'function');
      }
      assert.ok(uni instanceof WebTransportReceiveStream);
      assert.ok(sent instanceof WebTransportSendStream);
      assert.equal(sent.sendOrder, 3);
      await sent.close();
      assert.equal(await r, 'echo me');
    }));

  test('1 MiB read with a BYOB reader into the caller\'s buffers; stats follow each read', { timeout: T }, () =>
    withPage('chromium', async (page) => {
      const out = deferred();
      const url = route(async (request) => {
        const session = await request.accept();
        const { value: stream } = await session.incomingUnidirectionalStreams.getReader().read();
        const reader = stream.getReader({ mode: 'byob' });
        const h = createHash('sha256');
        let buffer = new ArrayBuffer(24_000); // not a divisor of the chunk sizes QUIC uses
        let total = 0;
        let reads = 0;
        let sameBuffer = true;
        let statsMatch = true;
        for (;;) {
          const { value, done } = await reader.read(new Uint8Array(buffer, 0, buffer.byteLength));
          // The view comes back over the caller's memory (transferred, so a new ArrayBuffer
          // object of the same size), filled from its start.
          if (value.buffer.byteLength !== 24_000 || value.byteOffset !== 0) sameBuffer = false;
          if (done) {
            out.resolve({ total, reads, hex: h.digest('hex'), sameBuffer, statsMatch, endView: value.byteLength, stats: await stream.getStats() });
            await session.closed;
            return;
          }
          h.update(value);
          total += value.byteLength;
          reads++;
          // No read-ahead: the stream has handed exactly what this reader got.
          const s = await stream.getStats();
          if (s.bytesRead !== total || s.bytesReceived < s.bytesRead) statsMatch = false;
          buffer = value.buffer;
        }
      });
      const r = await page.evaluate(
        async ({ url, hash, size }) => {
          const t = await wt.connect(url, hash);
          const s = await t.createUnidirectionalStream();
          const data = wt.randomBytes(size);
          await wt.writeAll(s, data, true, 100_000);
          const hex = await wt.sha256Hex(data);
          await wt.sleep(200);
          t.close();
          return hex;
        },
        { url, hash, size: MIB },
      );
      const s = await within(out.promise, 20000, 'server BYOB reads');
      assert.equal(s.total, MIB);
      assert.equal(s.hex, r, 'SHA-256 of what the BYOB reader got equals what the page sent');
      assert.ok(s.reads >= MIB / 24_000, `reads ${s.reads}`);
      assert.ok(s.sameBuffer, 'every read filled the caller\'s buffer from its start');
      assert.ok(s.statsMatch, 'bytesRead equalled the bytes read after every read');
      assert.equal(s.endView, 0, 'the final read returns an empty view');
      assert.deepEqual(s.stats, { bytesReceived: MIB, bytesRead: MIB });
    }));

  test('the default reader still yields Uint8Array chunks; a bidi echo through BYOB', { timeout: T }, () =>
    withPage('chromium', async (page) => {
      const out = deferred();
      const url = route(async (request) => {
        const session = await request.accept();
        const incoming = session.incomingBidirectionalStreams.getReader();
        // First stream: the default reader, as before.
        const { value: a } = await incoming.read();
        const h = createHash('sha256');
        let total = 0;
        let allUint8 = true;
        for await (const chunk of a.readable) {
          if (!(chunk instanceof Uint8Array) || chunk.byteLength === 0) allUint8 = false;
          h.update(chunk);
          total += chunk.byteLength;
        }
        // Second stream: BYOB reads into one growing buffer, echoed back whole.
        const { value: b } = await incoming.read();
        const reader = b.readable.getReader({ mode: 'byob' });
        let buf = new Uint8Array(300_000);
        let filled = 0;
        for (;;) {
          if (filled === buf.byteLength) {
            const bigger = new Uint8Array(buf.byteLength * 2);
            bigger.set(buf);
            buf = bigger;
          }
          const { value, done } = await reader.read(new Uint8Array(buf.buffer, filled, buf.byteLength - filled));
          buf = new Uint8Array(value.buffer);
          if (done) break;
          filled += value.byteLength;
        }
        const w = b.writable.getWriter();
        await w.write(buf.subarray(0, filled));
        await w.close();
        out.resolve({ total, hex: h.digest('hex'), allUint8, echoed: filled });
        // Holds the session until the page closes it: an unreferenced session may be collected and closed (code 0) while the page still uses it.
        await session.closed;
      });
      const r = await page.evaluate(
        async ({ url, hash, size }) => {
          const t = await wt.connect(url, hash);
          const a = await t.createBidirectionalStream();
          const one = wt.randomBytes(size);
          await wt.writeAll(a.writable, one);
          const b = await t.createBidirectionalStream();
          const two = wt.randomBytes(size);
          const [, back] = await Promise.all([wt.writeAll(b.writable, two, true, 50_000), wt.readAll(b.readable, 20000, 'echo')]);
          const res = { one: await wt.sha256Hex(one), two: await wt.sha256Hex(two), back: await wt.sha256Hex(back), n: back.byteLength };
          t.close();
          return res;
        },
        { url, hash, size: MIB },
      );
      const s = await within(out.promise, 20000, 'server side');
      assert.equal(s.total, MIB);
      assert.ok(s.allUint8, 'every chunk was a non-empty Uint8Array');
      assert.equal(s.hex, r.one);
      assert.equal(s.echoed, MIB);
      assert.equal(r.n, MIB);
      assert.equal(r.back, r.two, 'the BYOB-read bytes came back intact');
    }));

  test('sendOrder: set at open, before and after writes; bad values throw', { timeout: T }, () =>
    withPage('chromium', async (page) => {
      const out = deferred();
      const url = route(async (request) => {
        const session = await request.accept();
        const errors = {};
        const grab = (name, f) => {
          try {
            f();
            errors[name] = 'no error';
          } catch (e) {
            errors[name] = e.constructor.name;
          }
        };
        const grabAsync = async (name, p) => {
          try {
            (await p).close?.();
            errors[name] = 'no error';
          } catch (e) {
            errors[name] = e.constructor.name;
          }
        };
        await grabAsync('open 1.5', session.createUnidirectionalStream({ sendOrder: 1.5 }));
        await grabAsync('open "1"', session.createUnidirectionalStream({ sendOrder: '1' }));
        await grabAsync('open 2**53', session.createBidirectionalStream({ sendOrder: 2 ** 53 }));
        await grabAsync('open sendGroup', session.createUnidirectionalStream({ sendGroup: {} }));
        const low = await session.createUnidirectionalStream({ sendOrder: -(2 ** 40) });
        const high = await session.createUnidirectionalStream({ sendOrder: Number.MAX_SAFE_INTEGER });
        const orders = [low.sendOrder, high.sendOrder];
        low.sendOrder = 7; // before any write
        orders.push(low.sendOrder);
        const lw = low.getWriter();
        const hw = high.getWriter();
        const piece = new Uint8Array(64 * 1024).fill(1);
        const writes = [];
        for (let i = 0; i < 16; i++) {
          writes.push(lw.write(piece), hw.write(piece));
          if (i === 4) {
            // After some writes, while later ones wait: both directions, both extremes.
            high.sendOrder = Number.MIN_SAFE_INTEGER;
            low.sendOrder = 2 ** 31 + 5;
          }
        }
        await Promise.all(writes);
        orders.push(high.sendOrder, low.sendOrder);
        for (const [name, v] of [
          ['1.5', 1.5],
          ['NaN', NaN],
          ['Infinity', Infinity],
          ['2**53', 2 ** 53],
          ['"3"', '3'],
          ['null', null],
          ['3n', 3n],
        ]) {
          grab(`set ${name}`, () => {
            high.sendOrder = v;
          });
        }
        grab('sendGroup = {}', () => {
          high.sendGroup = {};
        });
        grab('sendGroup = null', () => {
          high.sendGroup = null;
        });
        orders.push(high.sendOrder);
        await Promise.all([lw.close(), hw.close()]);
        // Still settable once closed, as in the browser; without effect.
        low.sendOrder = 1;
        out.resolve({ errors, orders, after: low.sendOrder });
        await session.closed;
      });
      const r = await page.evaluate(
        async ({ url, hash }) => {
          const t = await wt.connect(url, hash);
          const reader = t.incomingUnidirectionalStreams.getReader();
          const sizes = [];
          for (let i = 0; i < 2; i++) {
            const { value } = await reader.read();
            sizes.push((await wt.readAll(value, 20000, 'stream ' + i)).byteLength);
          }
          t.close();
          return sizes;
        },
        { url, hash },
      );
      const s = await within(out.promise, 20000, 'server side');
      assert.deepEqual(s.errors, {
        'open 1.5': 'RangeError',
        'open "1"': 'TypeError',
        'open 2**53': 'RangeError',
        'open sendGroup': 'TypeError',
        'set 1.5': 'RangeError',
        'set NaN': 'RangeError',
        'set Infinity': 'RangeError',
        'set 2**53': 'RangeError',
        'set "3"': 'TypeError',
        'set null': 'TypeError',
        'set 3n': 'TypeError',
        'sendGroup = {}': 'TypeError',
        'sendGroup = null': 'no error',
      });
      assert.deepEqual(s.orders, [-(2 ** 40), Number.MAX_SAFE_INTEGER, 7, Number.MIN_SAFE_INTEGER, 2 ** 31 + 5, Number.MIN_SAFE_INTEGER]);
      assert.equal(s.after, 1);
      assert.deepEqual(r, [16 * 64 * 1024, 16 * 64 * 1024], 'both streams delivered whole');
    }));

  test('send stream getStats: bytesWritten, bytesSent, bytesAcknowledged; session getStats', { timeout: T }, () =>
    withPage('chromium', async (page) => {
      const out = deferred();
      const url = route(async (request) => {
        const session = await request.accept();
        const send = await session.createUnidirectionalStream();
        const steps = [await send.getStats()];
        const w = send.getWriter();
        const piece = new Uint8Array(128 * 1024).fill(7);
        for (let i = 0; i < 8; i++) {
          await w.write(piece);
          steps.push(await send.getStats());
        }
        await w.close();
        // The page reads everything; the ACKs follow within a few round trips.
        const final = await until(() => send.getStats(), (s) => s.bytesAcknowledged === MIB, 10000, 'bytesAcknowledged');
        const p = send.getStats();
        const conn = await session.getStats();
        out.resolve({ steps, final, isPromise: p instanceof Promise, conn });
        await session.closed;
      });
      const r = await page.evaluate(
        async ({ url, hash }) => {
          const t = await wt.connect(url, hash);
          const { value } = await t.incomingUnidirectionalStreams.getReader().read();
          const n = (await wt.readAll(value, 20000)).byteLength;
          await wt.sleep(1000);
          t.close();
          return n;
        },
        { url, hash },
      );
      const s = await within(out.promise, 20000, 'server side');
      assert.equal(r, MIB);
      assert.deepEqual(s.steps[0], { bytesWritten: 0, bytesSent: 0, bytesAcknowledged: 0 });
      s.steps.forEach((st, i) => {
        assert.equal(st.bytesWritten, i * 128 * 1024, `bytesWritten after ${i} writes`);
        assert.ok(st.bytesSent <= st.bytesWritten && st.bytesAcknowledged <= st.bytesSent, JSON.stringify(st));
      });
      assert.deepEqual(s.final, { bytesWritten: MIB, bytesSent: MIB, bytesAcknowledged: MIB });
      assert.ok(s.isPromise, 'getStats() returns a Promise');
      const c = s.conn;
      assert.ok(c.bytesSent > MIB && c.packetsSent > 0 && c.packetsReceived > 0, JSON.stringify(c));
      assert.ok(c.bytesReceived > 0 && c.bytesLost >= 0 && c.packetsLost >= 0, JSON.stringify(c));
      assert.ok(c.minRtt >= 0 && c.minRtt <= c.smoothedRtt + 1e-9, `minRtt ${c.minRtt}, smoothedRtt ${c.smoothedRtt}`);
      assert.equal(c.rttVariation, undefined, 'quinn does not report the RTT variation');
      assert.equal(c.datagrams.droppedIncoming, 0);
    }));

  test('an aborted send stream resets the page\'s reader with the code', { timeout: T }, () =>
    withPage('chromium', async (page) => {
      const out = deferred();
      const url = route(async (request) => {
        const session = await request.accept();
        const send = await session.createUnidirectionalStream();
        const w = send.getWriter();
        await w.write(new TextEncoder().encode('partial'));
        await new Promise((r) => setTimeout(r, 200));
        await w.abort(new WebTransportError('server abort', { streamErrorCode: 77 }));
        out.resolve(await send.getStats());
        await session.closed;
      });
      const r = await page.evaluate(
        async ({ url, hash }) => {
          const t = await wt.connect(url, hash);
          const { value } = await t.incomingUnidirectionalStreams.getReader().read();
          const reader = value.getReader();
          const res = await wt.outcome((async () => { for (;;) { if ((await reader.read()).done) return 'FIN'; } })(), 10000, 'reader');
          t.close();
          return res;
        },
        { url, hash },
      );
      assert.equal(r.ok, false, 'the page reader fails');
      assert.equal(r.error.name, 'WebTransportError', JSON.stringify(r.error));
      assert.equal(r.error.streamErrorCode, 77, JSON.stringify(r.error));
      const stats = await out.promise;
      assert.equal(stats.bytesWritten, 7);
      assert.equal(stats.bytesAcknowledged, 0, 'a reset stream is never fully acknowledged');
    }));
});

describe('firefox', () => {
  test('a cancelled receive stream stops the page\'s writer with the code, also under a pending BYOB read', { timeout: T }, () =>
    withPage('firefox', async (page) => {
      const out = deferred();
      const url = route(async (request) => {
        const session = await request.accept();
        const { value: bidi } = await session.incomingBidirectionalStreams.getReader().read();
        const reader = bidi.readable.getReader({ mode: 'byob' });
        const first = await reader.read(new Uint8Array(16));
        const pending = reader.read(new Uint8Array(16)); // the page sends no more for now
        await new Promise((r) => setTimeout(r, 100));
        await reader.cancel(new WebTransportError('server cancel', { streamErrorCode: 41 }));
        const after = await pending;
        // Tells the page to go on writing, now that the stream is stopped. One byte, not
        // an empty stream: Firefox 153 closes the whole connection with
        // H3_GENERAL_PROTOCOL_ERROR when it reads a WebTransport unidirectional stream's
        // header and FIN together (seen in 6 of 15 runs, none of 8 with a byte; see
        // docs/troubleshooting.md).
        const goAhead = (await session.createUnidirectionalStream()).getWriter();
        await goAhead.write(new Uint8Array([1]));
        await goAhead.close();
        out.resolve({ first: new TextDecoder().decode(first.value), afterDone: after.done });
        await session.closed;
      });
      const r = await page.evaluate(
        async ({ url, hash }) => {
          const t = await wt.connect(url, hash);
          const s = await t.createBidirectionalStream();
          const w = s.writable.getWriter();
          await w.write(wt.encode('hello'));
          // Nothing more until the server has cancelled: its pending read must see the end.
          await wt.timeout(t.incomingUnidirectionalStreams.getReader().read(), 10000, 'the go-ahead');
          let res = { ok: true };
          for (let i = 0; i < 200 && res.ok; i++) {
            await wt.sleep(30);
            res = await wt.outcome(w.write(wt.encode('more')), 5000, 'writer');
          }
          t.close();
          return res;
        },
        { url, hash },
      );
      const s = await within(out.promise, 15000, 'server side');
      assert.equal(s.first, 'hello');
      assert.equal(s.afterDone, true, 'the pending BYOB read settles as done on cancel');
      assert.equal(r.ok, false, 'the page writer fails');
      assert.equal(r.error.streamErrorCode, 41, JSON.stringify(r.error));
    }));
});
