// The browser connector (bindings-node/lib/client.mjs, shipped as 'ferrovia/client'):
// its QMux codec in Node, then pages in headless Chromium and Firefox that import it from
// the harness's page server and talk to the Rust echo example over native WebTransport
// and over QMux on a WebSocket (wss:// on the same port, TLS trusted by the harness).
//
//   cargo build -p ferrovia --example echo && node --test tests/browser/connector.test.mjs
//
// The echo example prints a `session` event with the transport the server saw, and a
// `closed` event with the code and reason; the tests check both sides.

import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import dgram from 'node:dgram';
import net from 'node:net';
import { after, describe, test } from 'node:test';

import { _internal as Q, FerroviaTransport, WebTransportError } from '../../bindings-node/lib/client.mjs';
import { BROWSERS, closeAll, sha256Hex, startEchoServer, token, withPage } from './harness.mjs';

const TEST_TIMEOUT = 45000;

let serverPromise = null;
const echoServer = () => (serverPromise ??= startEchoServer());

after(async () => {
  await closeAll();
  if (serverPromise) await serverPromise.then((s) => s.stop(), () => {});
});

// ------------------------------------------------------------------------ codec, in Node

const hex = (b) => Buffer.from(b).toString('hex');
const bytes = (h) => new Uint8Array(Buffer.from(h, 'hex'));

/** A WebSocket stand-in: records what the session sends, delivers what a test gives it. */
class FakeWS {
  static last;
  constructor(url, protocols) {
    Object.assign(this, { url, protocols, sent: [], readyState: 0, bufferedAmount: 0, protocol: 'qmux-02.chat', closedWith: null });
    FakeWS.last = this;
  }
  send(b) { this.sent.push(Q.decodeRecord(new Uint8Array(b))); }
  close(code) { this.readyState = 3; this.closedWith = code; }
  open() { this.readyState = 1; this.onopen(); }
  deliver(fs) { this.onmessage({ data: Q.encodeRecord(fs).buffer }); }
  take() { return this.sent.splice(0).flat(); }
  drop() { this.readyState = 3; this.onclose({ code: 1006, reason: '' }); }
}

/** A QMux transport over a FakeWS that has exchanged transport parameters. */
async function fakeSession(peerParams, qmux = {}) {
  const t = new FerroviaTransport('https://example.test/x', { transports: ['qmux'], qmux: { WebSocket: FakeWS, ...qmux } });
  const ws = FakeWS.last;
  ws.open();
  ws.take();
  ws.deliver([{ type: 'transport_parameters', params: { initialMaxData: 1 << 20, initialMaxStreamDataBidiRemote: 1 << 16, initialMaxStreamDataBidiLocal: 1 << 16, initialMaxStreamDataUni: 1 << 16, initialMaxStreamsBidi: 10, initialMaxStreamsUni: 10, maxDatagramFrameSize: 65536, ...peerParams } }]);
  await t.ready;
  return { t, ws };
}

const tick = (ms = 0) => new Promise((r) => setTimeout(r, ms));

describe('QMux codec', () => {
  test('varints: boundaries, RFC 9000 §A.1 samples, 8-byte values as BigInt, truncation', () => {
    const cases = [
      [0, '00'], [63, '3f'], [64, '4040'], [16383, '7fff'], [16384, '80004000'],
      [2 ** 30 - 1, 'bfffffff'], [2 ** 30, 'c000000040000000'],
      [Number.MAX_SAFE_INTEGER, 'c01fffffffffffff'],
      [2n ** 53n, 'c020000000000000'], [2n ** 62n - 1n, 'ffffffffffffffff'],
    ];
    for (const [v, h] of cases) {
      const w = new Q.Writer(1);
      w.varint(v);
      assert.equal(hex(w.view()), h, `encode ${v}`);
      assert.equal(Q.varintSize(v), h.length / 2);
      const r = new Q.Reader(bytes(h));
      assert.equal(r.varint(), v, `decode ${h}`);
      assert.equal(r.left, 0);
    }
    // RFC 9000 §A.1, including a non-minimal encoding.
    assert.equal(new Q.Reader(bytes('c2197c5eff14e88c')).varint(), 151288809941952652n);
    assert.equal(new Q.Reader(bytes('9d7f3e7d')).varint(), 494878333);
    assert.equal(new Q.Reader(bytes('7bbd')).varint(), 15293);
    assert.equal(new Q.Reader(bytes('4025')).varint(), 37);
    for (const h of ['', '40', '80ffff', 'c0000000000000']) {
      assert.throws(() => new Q.Reader(bytes(h)).varint(), (e) => e instanceof Q.QmuxError && e.code === Q.E.FRAME_ENCODING_ERROR, h);
    }
    for (const bad of [-1, 2 ** 62, 1.5, 2n ** 62n]) assert.throws(() => new Q.Writer().varint(bad), RangeError);
  });

  const params = {
    maxIdleTimeout: 30000, initialMaxData: 1 << 24, initialMaxStreamDataBidiLocal: 1,
    initialMaxStreamDataBidiRemote: 2, initialMaxStreamDataUni: 3, initialMaxStreamsBidi: 100,
    initialMaxStreamsUni: 2 ** 50, maxDatagramFrameSize: 65536, maxRecordSize: 1 << 20, resetStreamAt: true,
  };
  const data = new Uint8Array([1, 2, 3, 250]);
  const frames = [
    { type: 'padding', length: 1 },
    { type: 'padding', length: 300 },
    { type: 'reset_stream', id: 4, code: 7, finalSize: 2 ** 40 },
    { type: 'stop_sending', id: 2 ** 53 - 1, code: 2 ** 32 - 1 },
    { type: 'stream', id: 0, offset: 0, fin: false, data },
    { type: 'stream', id: 5, offset: 70000, fin: true, data },
    { type: 'stream', id: 9, offset: 3, fin: true, data: new Uint8Array(0) },
    { type: 'max_data', max: 2 ** 50 },
    { type: 'max_stream_data', id: 3, max: 16384 },
    { type: 'max_streams', uni: false, count: 100 },
    { type: 'max_streams', uni: true, count: 2 ** 50 },
    { type: 'data_blocked', limit: 5 },
    { type: 'stream_data_blocked', id: 8, limit: 6 },
    { type: 'streams_blocked', uni: false, limit: 7 },
    { type: 'streams_blocked', uni: true, limit: 8 },
    { type: 'connection_close', code: Q.E.PROTOCOL_VIOLATION, frameType: 0x08, reason: 'gap ✓' },
    { type: 'application_close', code: 4242, reason: 'server bye' },
    { type: 'application_close', code: 0, reason: '' },
    { type: 'reset_stream_at', id: 12, code: 1, finalSize: 10, reliableSize: 4 },
    { type: 'datagram', data },
    { type: 'transport_parameters', params },
    { type: 'transport_parameters', params: Q.defaultParams() },
    { type: 'ping', seq: 0 },
    { type: 'ping', seq: 2 ** 40 },
    { type: 'ping_response', seq: 17 },
  ];

  test('every frame type round-trips, alone and all in one record; every cut is an error', () => {
    for (const f of frames) {
      const rec = Q.encodeRecord([f]);
      assert.deepEqual(Q.decodeRecord(rec), [f], `${f.type}: ${hex(rec)}`);
      if (f.type === 'padding') continue; // any prefix of zeros is padding too
      for (let cut = 1; cut < rec.length; cut++) {
        assert.throws(() => Q.decodeRecord(rec.subarray(0, cut)), (e) => e instanceof Q.QmuxError, `${f.type} cut at ${cut}`);
      }
    }
    // Padding runs merge when adjacent, so the all-in-one record has only one.
    const mixed = frames.filter((f) => f.type !== 'padding');
    const rec = Q.encodeRecord([{ type: 'padding', length: 3 }, ...mixed]);
    assert.deepEqual(Q.decodeRecord(rec), [{ type: 'padding', length: 3 }, ...mixed]);
  });

  test('wire bytes match the draft and the Rust machine', () => {
    // QX_TRANSPORT_PARAMETERS opens with "\xffQS0\r\n\r\n" (0x3f5153300d0a0d0a as a varint).
    const tp = Q.encodeRecord([{ type: 'transport_parameters', params: { initialMaxData: 5, maxRecordSize: 65536 } }]);
    assert.equal(hex(tp), 'ff5153300d0a0d0a' + '10' + '040105' + 'c571c59429cd0845' + '04' + '80010000');
    assert.equal(hex(Q.encodeRecord([{ type: 'ping', seq: 3 }])), 'f48c67529ef8c7bd03');
    assert.equal(hex(Q.encodeRecord([{ type: 'ping_response', seq: 3 }])), 'f48c67529ef8c7be03');
    // STREAM always carries LEN; OFF only when the offset is not zero.
    assert.equal(hex(Q.encodeRecord([{ type: 'stream', id: 4, offset: 0, fin: true, data: bytes('aabb') }])), '0b0402aabb');
    assert.equal(hex(Q.encodeRecord([{ type: 'stream', id: 4, offset: 7, fin: false, data: bytes('aa') }])), '0e040701aa');
    assert.equal(hex(Q.encodeRecord([{ type: 'datagram', data: bytes('aa') }])), '3101aa');
    assert.equal(hex(Q.encodeRecord([{ type: 'application_close', code: 7, reason: 'b' }])), '1d070162');
  });

  test('frames that run to the end of a record: STREAM without LEN, DATAGRAM 0x30', () => {
    assert.deepEqual(Q.decodeRecord(bytes('0c0407aabbcc')), [{ type: 'stream', id: 4, offset: 7, fin: false, data: bytes('aabbcc') }]);
    assert.deepEqual(Q.decodeRecord(bytes('0904')), [{ type: 'stream', id: 4, offset: 0, fin: true, data: new Uint8Array(0) }]);
    assert.deepEqual(Q.decodeRecord(bytes('10053001020304')), [{ type: 'max_data', max: 5 }, { type: 'datagram', data: bytes('01020304') }]);
  });

  test('prohibited and unknown frame types', () => {
    for (const ty of [0x01, 0x02, 0x03, 0x06, 0x07, 0x18, 0x19, 0x1a, 0x1b, 0x1e, 0x21, 0x3f]) {
      const w = new Q.Writer();
      w.varint(ty);
      assert.throws(() => Q.decodeRecord(w.view()), (e) => e.code === Q.E.FRAME_ENCODING_ERROR && /prohibited|unknown/.test(e.message), `0x${ty.toString(16)}`);
    }
    // A non-minimal encoding does not sneak a prohibited type past: 8-byte 0x01 is PING.
    assert.throws(() => Q.decodeRecord(bytes('c000000000000001')), /prohibited frame type 0x1/);
    assert.throws(() => Q.decodeRecord(bytes('12d000000000000001')), /stream count above 2\^60/);
  });

  test('transport parameters: defaults, prohibited, duplicates, bad values, unknown ignored', () => {
    const round = Q.decodeParams(Q.encodeParams(params));
    assert.deepEqual(round, params);
    assert.equal(Q.encodeParams(Q.defaultParams()).length, 0, 'defaults are omitted');
    assert.deepEqual(Q.decodeParams(new Uint8Array(0)), Q.defaultParams());
    const tlv = (id, value) => {
      const w = new Q.Writer();
      w.varint(id);
      w.varint(value.length);
      w.bytes(value);
      return hex(w.view());
    };
    const int = (v) => { const w = new Q.Writer(); w.varint(v); return w.view().slice(); };
    const isTpError = (e) => e instanceof Q.QmuxError && e.code === Q.E.TRANSPORT_PARAMETER_ERROR;
    for (const id of [0x00, 0x02, 0x03, 0x0a, 0x0b, 0x0c, 0x0d, 0x0e, 0x0f, 0x10]) {
      assert.throws(() => Q.decodeParams(bytes(tlv(id, int(1)))), isTpError, `prohibited 0x${id.toString(16)}`);
    }
    assert.throws(() => Q.decodeParams(bytes(tlv(0x04, int(1)) + tlv(0x04, int(2)))), isTpError, 'duplicate');
    assert.throws(() => Q.decodeParams(bytes(tlv(0x0571c59429cd0845n, int(16381)))), isTpError, 'max_record_size below 16382');
    assert.equal(Q.decodeParams(bytes(tlv(0x0571c59429cd0845n, int(16382)))).maxRecordSize, 16382);
    assert.throws(() => Q.decodeParams(bytes(tlv(0x1d, int(1)))), isTpError, 'reset_stream_at with a value');
    assert.throws(() => Q.decodeParams(bytes(tlv(0x04, bytes('0500')))), isTpError, 'trailing bytes in a value');
    assert.throws(() => Q.decodeParams(bytes(tlv(0x09, int(2n ** 60n + 1n)))), isTpError, 'stream count above 2^60');
    assert.throws(() => Q.decodeParams(bytes(tlv(0x04, int(1 << 20)).slice(0, -2))), isTpError, 'truncated');
    // Greasing (31 * N + 27) and moq's in-band ALPN parameter are ignored.
    const p = Q.decodeParams(bytes(tlv(31 * 5 + 27, bytes('616263')) + tlv(0x3d4f9c2a8b1e6075n, int(9)) + tlv(0x04, int(77))));
    assert.equal(p.initialMaxData, 77);
  });

  test('records: several frames per record; the size-prefixed form for byte streams', () => {
    const fs = [{ type: 'max_data', max: 1 }, { type: 'stream', id: 0, offset: 0, fin: true, data: bytes('68656c6c6f') }, { type: 'ping', seq: 1 }];
    const rec = Q.encodeRecord(fs);
    assert.deepEqual(Q.decodeRecord(rec), fs);
    const sized = Q.encodeSizedRecord(fs);
    const r = new Q.Reader(sized);
    assert.equal(r.varint(), rec.length);
    assert.deepEqual(Q.decodeRecord(r.bytes(r.left)), fs);
    // A record truncated inside its last frame is an error, never a short frame.
    assert.throws(() => Q.decodeRecord(rec.subarray(0, rec.length - 1)), (e) => e.code === Q.E.FRAME_ENCODING_ERROR);
    // CONNECTION_CLOSE reasons are cut to 1024 bytes at a character boundary.
    const long = Q.decodeRecord(Q.encodeRecord([{ type: 'application_close', code: 1, reason: 'é'.repeat(600) }]))[0].reason;
    assert.equal(long, 'é'.repeat(512));
  });

  test('Safari detection and the default order of attempts', () => {
    const ua = {
      safari: 'Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/26.4 Safari/605.1.15',
      iosChrome: 'Mozilla/5.0 (iPhone; CPU iPhone OS 18_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) CriOS/130.0 Mobile/15E148 Safari/604.1',
      chrome: 'Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/156.0.0.0 Safari/537.36',
      edge: 'Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/140.0.0.0 Safari/537.36 Edg/140.0.0.0',
      firefox: 'Mozilla/5.0 (X11; Linux x86_64; rv:153.0) Gecko/20100101 Firefox/153.0',
    };
    assert.deepEqual(Q.defaultTransports(ua.safari), ['qmux', 'webtransport']);
    assert.deepEqual(Q.defaultTransports(ua.iosChrome), ['qmux', 'webtransport'], 'every iOS browser is WebKit');
    for (const k of ['chrome', 'edge', 'firefox']) assert.deepEqual(Q.defaultTransports(ua[k]), ['webtransport', 'qmux'], k);
  });

  test('WebTransportError: the stand-in in Node, with session source and u32 codes', () => {
    const e = Q.wtError('stopped', 'stream', 2 ** 32 - 1);
    assert.ok(e instanceof WebTransportError);
    assert.deepEqual([e.name, e.message, e.source, e.streamErrorCode], ['WebTransportError', 'stopped', 'stream', 2 ** 32 - 1]);
    const s = Q.wtError('gone', 'session');
    assert.deepEqual([s.source, s.streamErrorCode], ['session', null]);
    const byDict = new WebTransportError({ message: 'm', streamErrorCode: 3 });
    assert.deepEqual([byDict.message, byDict.streamErrorCode, byDict.source], ['m', 3, 'stream']);
  });

  test('a session over a fake WebSocket: parameters first, credit and bufferedAmount hold data back', async () => {
    const t = new FerroviaTransport('https://example.test:4433/chat?x=1#frag', {
      transports: ['qmux'], protocols: ['chat'], qmux: { WebSocket: FakeWS, highWaterMark: 1000, maxStreamData: 100, maxData: 1000 },
    });
    const ws = FakeWS.last;
    // The page's query as written, then the tag both attempts of this connect() carry.
    assert.match(ws.url, /^wss:\/\/example\.test:4433\/chat\?x=1&ferrovia-attempt=[0-9a-f]{24}$/);
    assert.equal(t.url, 'https://example.test:4433/chat?x=1#frag');
    assert.deepEqual(ws.protocols, ['qmux-02.chat', 'qmux-02']);
    ws.open();
    const first = ws.take();
    assert.equal(first.length, 1);
    assert.equal(first[0].type, 'transport_parameters');
    assert.equal(first[0].params.initialMaxStreamDataBidiLocal, 100);
    ws.deliver([{ type: 'transport_parameters', params: { initialMaxData: 50, initialMaxStreamDataBidiRemote: 30, initialMaxStreamsBidi: 1 } }]);
    await t.ready;
    assert.equal(t.transport, 'qmux');
    assert.equal(t.protocol, 'chat');

    const s = await t.createBidirectionalStream();
    // The stream opens on the server at once (an empty STREAM frame), as native
    // WebTransport opens it, so a server that speaks first need not wait for data.
    assert.deepEqual(ws.take().map((f) => [f.type, f.id, f.offset ?? 0, f.data?.length, f.fin]), [['stream', 0, 0, 0, false]]);
    const w = s.writable.getWriter();
    let done = false;
    const wrote = w.write(new Uint8Array(40).fill(1)).then(() => { done = true; });
    await new Promise((r) => setTimeout(r, 10));
    // 30 bytes of stream credit: the write is not done until the peer gives more.
    assert.deepEqual(ws.take().map((f) => [f.type, f.data?.length]), [['stream', 30]]);
    assert.equal(done, false);
    ws.deliver([{ type: 'max_stream_data', id: 0, max: 100 }]);
    await wrote;
    assert.deepEqual(ws.take().map((f) => [f.type, f.offset, f.data?.length]), [['stream', 30, 10]]);
    // Now the connection credit (50) binds, then bufferedAmount.
    const second = w.write(new Uint8Array(20).fill(2));
    assert.deepEqual(ws.take().map((f) => [f.type, f.offset, f.data?.length]), [['stream', 40, 10]]);
    ws.bufferedAmount = 5000;
    ws.deliver([{ type: 'max_data', max: 1000 }]);
    assert.deepEqual(ws.take(), [], 'nothing but control frames while bufferedAmount is over the mark');
    ws.bufferedAmount = 0;
    await second; // the poll picks it up
    assert.deepEqual(ws.take().map((f) => [f.type, f.offset, f.data?.length]), [['stream', 50, 10]]);

    // Reading returns credit: 100-byte window, MAX_STREAM_DATA once half is consumed.
    ws.deliver([{ type: 'stream', id: 0, offset: 0, fin: false, data: new Uint8Array(60) }]);
    const reader = s.readable.getReader();
    assert.equal((await reader.read()).value.length, 60);
    await new Promise((r) => setTimeout(r, 0));
    assert.deepEqual(ws.take(), [{ type: 'max_stream_data', id: 0, max: 160 }]);
    // The peer exceeding our credit is a FLOW_CONTROL_ERROR (0x1c), and closed rejects.
    ws.deliver([{ type: 'stream', id: 0, offset: 60, fin: false, data: new Uint8Array(101) }]);
    const close = ws.take();
    assert.equal(close[0].type, 'connection_close');
    assert.equal(close[0].code, Q.E.FLOW_CONTROL_ERROR);
    await assert.rejects(t.closed, (e) => e.source === 'session' && e.name === 'WebTransportError');
  });
});

describe('QMux session over a fake WebSocket', () => {
  test('answers QX_PING, pings every keepAlive with rising sequence numbers, gives up when idle', async () => {
    const { t, ws } = await fakeSession({}, { keepAlive: 20, idleTimeout: 300 });
    ws.deliver([{ type: 'ping', seq: 5 }, { type: 'ping', seq: 9 }]);
    assert.deepEqual(ws.take(), [{ type: 'ping_response', seq: 9 }], 'one response for both');
    await tick(90);
    const pings = ws.take().filter((f) => f.type === 'ping').map((f) => f.seq);
    assert.ok(pings.length >= 2, `pings: ${pings}`);
    assert.deepEqual(pings, pings.map((_, i) => i), 'sequence numbers from 0, rising');
    await assert.rejects(t.closed, (e) => e.source === 'session' && /idle timeout/.test(e.message));
  });

  test('peer CONNECTION_CLOSE 0x1d resolves closed; 0x1c and a lost WebSocket reject it', async () => {
    let { t, ws } = await fakeSession({});
    ws.deliver([{ type: 'application_close', code: 4242, reason: 'bye' }]);
    assert.deepEqual(await t.closed, { closeCode: 4242, reason: 'bye' });
    assert.equal(ws.closedWith, 1000);
    ({ t, ws } = await fakeSession({}));
    ws.deliver([{ type: 'connection_close', code: Q.E.PROTOCOL_VIOLATION, frameType: 8, reason: 'nope' }]);
    await assert.rejects(t.closed, (e) => e.source === 'session' && /0xa: nope/.test(e.message));
    ({ t, ws } = await fakeSession({}));
    ws.drop();
    await assert.rejects(t.closed, (e) => e.source === 'session' && /1006/.test(e.message));
    // Our close: 0x1d with code and reason, then WebSocket close 1000.
    ({ t, ws } = await fakeSession({}));
    t.close({ closeCode: 3, reason: 'done' });
    assert.deepEqual(ws.take(), [{ type: 'application_close', code: 3, reason: 'done' }]);
    assert.equal(ws.closedWith, 1000);
    assert.deepEqual(await t.closed, { closeCode: 3, reason: 'done' });
  });

  test('abort while a write waits for credit resets at once; STOP_SENDING is answered with RESET_STREAM', async () => {
    const { t, ws } = await fakeSession({ initialMaxStreamDataBidiRemote: 10 });
    const s = await t.createBidirectionalStream();
    const w = s.writable.getWriter();
    const pending = w.write(new Uint8Array(25));
    await tick();
    const abort = w.abort({ streamErrorCode: 42 });
    await assert.rejects(pending);
    await abort;
    // The empty frame that opened the stream, the 10 bytes of credit, then the reset.
    assert.deepEqual(ws.take().map((f) => [f.type, f.offset ?? f.finalSize, f.data?.length ?? f.code]), [['stream', 0, 0], ['stream', 0, 10], ['reset_stream', 10, 42]]);

    const s2 = await t.createBidirectionalStream();
    const w2 = s2.writable.getWriter();
    await w2.write(new Uint8Array(3));
    ws.take();
    ws.deliver([{ type: 'stop_sending', id: 4, code: 77 }]);
    assert.deepEqual(ws.take(), [{ type: 'reset_stream', id: 4, code: 77, finalSize: 3 }]);
    await assert.rejects(w2.write(new Uint8Array(1)), (e) => e.source === 'stream' && e.streamErrorCode === 77);
    // The page cancelling a readable sends STOP_SENDING with its code.
    await s2.readable.cancel({ streamErrorCode: 78 });
    assert.deepEqual(ws.take(), [{ type: 'stop_sending', id: 4, code: 78 }]);
  });

  test('peer streams: opened implicitly in order, limited by our MAX_STREAMS, re-offered when done', async () => {
    const { t, ws } = await fakeSession({}, { maxStreams: 2 });
    const incoming = t.incomingUnidirectionalStreams.getReader();
    // A frame on server uni stream 7 (index 1) opens index 0 (ID 3) first.
    ws.deliver([{ type: 'stream', id: 7, offset: 0, fin: true, data: bytes('07') }, { type: 'stream', id: 3, offset: 0, fin: true, data: bytes('03') }]);
    const first = await incoming.read();
    const second = await incoming.read();
    const read = async (rs) => hex((await rs.getReader().read()).value);
    assert.deepEqual([await read(first.value), await read(second.value)], ['03', '07']);
    await tick();
    // Both are over once read to the end, so the peer may open two more.
    const credit = ws.take();
    assert.ok(credit.every((f) => f.type === 'max_streams' && f.uni), JSON.stringify(credit));
    assert.equal(credit.at(-1).count, 4);
    // Index 4 (ID 19) is beyond the limit of 4 we just offered: STREAM_LIMIT_ERROR.
    ws.deliver([{ type: 'stream', id: 19, offset: 0, fin: false, data: bytes('00') }]);
    const close = ws.take().find((f) => f.type === 'connection_close');
    assert.equal(close?.code, Q.E.STREAM_LIMIT_ERROR);
    await assert.rejects(t.closed);
  });
});

// ---------------------------------------------------------------- browsers: page helpers

/**
 * A port that passes TCP to the echo server and blocks UDP, as a network that filters
 * UDP does: with `silent`, a UDP socket on the same port number takes every datagram and
 * answers none (a firewall's DROP); without, no UDP socket is bound, so the kernel answers
 * with ICMP port unreachable (a REJECT). Dual-stack, as browsers dial ::1 or 127.0.0.1.
 */
async function udpBlocked(targetPort, silent) {
  for (let attempt = 0; attempt < 20; attempt++) {
    const sockets = new Set();
    const tcp = net.createServer((client) => {
      const upstream = net.connect(targetPort, '127.0.0.1');
      for (const [a, b] of [[client, upstream], [upstream, client]]) {
        sockets.add(a);
        a.on('error', () => b.destroy());
        a.on('close', () => b.destroy());
      }
      client.pipe(upstream).pipe(client);
    });
    await new Promise((resolve, reject) => tcp.once('error', reject).listen(0, '::', resolve));
    const port = tcp.address().port;
    let udp = null;
    let count = 0;
    if (silent) {
      udp = dgram.createSocket({ type: 'udp6', ipv6Only: false });
      udp.on('message', () => count++);
      try {
        await new Promise((resolve, reject) => { udp.once('error', reject); udp.bind(port, '::', resolve); });
      } catch {
        udp.close();
        tcp.close();
        continue; // the UDP port number was taken; try another
      }
    }
    return {
      port,
      datagrams: () => count,
      close() {
        udp?.close();
        tcp.close();
        for (const s of sockets) s.destroy();
      },
    };
  }
  throw new Error('no port free for both TCP and UDP');
}

/** The session event for a request path, and its transport. */
async function sessionEvent(server, p, since) {
  return server.waitForEvent((e) => e.event === 'session' && e.path === p, { since, description: `session ${p}` });
}

/** Page side: connect, echo `text` on a bidi stream, report transport and attempts. */
async function pageEchoText({ url, hash, options, text, dropWebTransport, fakeStall }) {
  const { connect } = (window.ferroviaClient ??= await import(location.origin + '/client.js'));
  if (dropWebTransport) delete window.WebTransport;
  if (fakeStall) {
    // A WebTransport whose handshake never completes, as when UDP is silently dropped.
    window.WebTransport = class {
      constructor() {
        this.ready = new Promise(() => {});
        this.closed = new Promise(() => {});
        window.stalledClosed = false;
      }
      close() { window.stalledClosed = true; }
    };
  }
  const started = performance.now();
  const opts = Object.assign(hash ? wt.options(hash) : {}, options || {});
  const t = await wt.timeout(connect(url, opts), 20000, 'connect');
  const readyMs = Math.round(performance.now() - started);
  const s = await wt.timeout(t.createBidirectionalStream(), 10000, 'createBidirectionalStream');
  const [, got] = await Promise.all([wt.writeAll(s.writable, wt.encode(text)), wt.readAll(s.readable, 10000, 'echo read')]);
  const out = { transport: t.transport, protocol: t.protocol, echoed: wt.decode(got), readyMs, attempts: t.attempts, stalledClosed: window.stalledClosed };
  t.close();
  return out;
}

for (const browser of BROWSERS) {
  describe(`${browser}: connector`, () => {
    const run = (body, options = {}) => async () => {
      const server = await echoServer();
      return withPage(browser, (page) => body(page, server), { trustSpki: server.spki, ...options });
    };

    test('native WebTransport where it works', { timeout: TEST_TIMEOUT }, run(async (page, server) => {
      const p = `/echo?t=${token()}`;
      const mark = server.mark();
      const r = await page.evaluate(pageEchoText, { url: server.url(p), hash: server.certificateHash, text: 'native hello' });
      assert.equal(r.transport, 'webtransport', JSON.stringify(r));
      assert.equal(r.echoed, 'native hello');
      assert.deepEqual(r.attempts.map((a) => [a.transport, a.outcome]), [['webtransport', 'ready']]);
      assert.equal((await sessionEvent(server, p, mark)).transport, 'webtransport');
    }));

    test('QMux: 1 MiB bidi echo by SHA-256, subprotocol, the server sees qmux', { timeout: TEST_TIMEOUT }, run(async (page, server) => {
      const data = randomBytes(1 << 20);
      const p = `/echo?t=${token()}`;
      const mark = server.mark();
      const r = await page.evaluate(async ({ url, dataB64 }) => {
        const { connect, FerroviaTransport } = (window.ferroviaClient ??= await import(location.origin + '/client.js'));
        const t = await wt.timeout(connect(url, { transports: ['qmux'], protocols: ['chat.v1'] }), 10000, 'connect');
        const data = wt.b64ToBytes(dataB64);
        const s = await t.createBidirectionalStream();
        const [, got] = await Promise.all([wt.writeAll(s.writable, data), wt.readAll(s.readable, 20000, 'bidi echo')]);
        const out = {
          isTransport: t instanceof FerroviaTransport, transport: t.transport, protocol: t.protocol, reliability: t.reliability,
          length: got.length, sha256: await wt.sha256Hex(got), maxDatagramSize: t.datagrams.maxDatagramSize,
        };
        t.close();
        return out;
      }, { url: server.url(p), dataB64: data.toString('base64') });
      assert.deepEqual(
        { ...r, sha256: undefined },
        { isTransport: true, transport: 'qmux', protocol: 'chat.v1', reliability: 'reliable-only', length: data.length, sha256: undefined, maxDatagramSize: 65531 },
      );
      assert.equal(r.sha256, sha256Hex(data), 'SHA-256 of the echo (page, crypto.subtle) vs the bytes sent (node)');
      const ev = await sessionEvent(server, p, mark);
      assert.equal(ev.transport, 'qmux');
      assert.equal(ev.protocol, 'chat.v1');
      assert.equal(ev.origin, page.origin);
    }));

    test('QMux: 40 concurrent bidi streams and 40 uni streams of 100 KiB each', { timeout: TEST_TIMEOUT }, run(async (page, server) => {
      const r = await page.evaluate(async ({ url }) => {
        const { connect } = (window.ferroviaClient ??= await import(location.origin + '/client.js'));
        const t = await connect(url, { transports: ['qmux'] });
        const incoming = t.incomingUnidirectionalStreams.getReader();
        const one = async (i) => {
          const data = wt.randomBytes(100 * 1024 + i);
          const s = await t.createBidirectionalStream();
          const [, got] = await Promise.all([wt.writeAll(s.writable, data, true, 16384), wt.readAll(s.readable, 20000, `bidi ${i}`)]);
          return (await wt.sha256Hex(got)) === (await wt.sha256Hex(data));
        };
        const uni = async (i) => {
          const w = await t.createUnidirectionalStream();
          await wt.writeAll(w, wt.randomBytes(100 * 1024 + i));
        };
        // The echo answers each uni stream with one of its own; their sizes tell them apart.
        // They are read as they come: unread, they would hold connection credit.
        const sizes = [];
        const echoes = (async () => {
          for (let i = 0; i < 40; i++) {
            const { value } = await wt.timeout(incoming.read(), 20000, `incoming uni ${i}`);
            sizes.push(wt.readAll(value, 20000, 'uni echo').then((b) => b.length - 100 * 1024));
          }
        })();
        const [bidi] = await Promise.all([
          Promise.all(Array.from({ length: 40 }, (_, i) => one(i))),
          Promise.all(Array.from({ length: 40 }, (_, i) => uni(i))),
          echoes,
        ]);
        sizes.splice(0, 40, ...(await Promise.all(sizes)));
        t.close();
        return { bidi, sizes: sizes.sort((a, b) => a - b) };
      }, { url: server.url(`/echo?t=${token()}`) });
      assert.deepEqual(r.bidi, Array(40).fill(true));
      assert.deepEqual(r.sizes, Array.from({ length: 40 }, (_, i) => i));
    }));

    test('QMux: uni stream echo and datagrams (reliable, in order)', { timeout: TEST_TIMEOUT }, run(async (page, server) => {
      const data = randomBytes(100 * 1024 + 7);
      const r = await page.evaluate(async ({ url, dataB64 }) => {
        const { connect } = (window.ferroviaClient ??= await import(location.origin + '/client.js'));
        const t = await connect(url, { transports: ['qmux'] });
        const data = wt.b64ToBytes(dataB64);
        const incoming = t.incomingUnidirectionalStreams.getReader();
        const w = await t.createUnidirectionalStream();
        await wt.writeAll(w, data);
        const { value } = await wt.timeout(incoming.read(), 10000, 'incoming uni');
        const got = await wt.readAll(value, 10000, 'uni echo');
        const reader = t.datagrams.readable.getReader();
        const writer = t.datagrams.createWritable().getWriter();
        const sent = [];
        for (let i = 0; i < 20; i++) {
          // The last is as large as the server can send back: it accepts 65531 bytes
          // (maxDatagramSize here) but caps its own records at 16382 bytes.
          const d = wt.randomBytes(i === 19 ? 16379 : 100 + i);
          sent.push(await wt.sha256Hex(d));
          await writer.write(d);
        }
        const received = [];
        for (let i = 0; i < 20; i++) received.push(await wt.sha256Hex((await wt.timeout(reader.read(), 5000, `datagram ${i}`)).value));
        t.close();
        return { length: got.length, sha256: await wt.sha256Hex(got), inOrder: JSON.stringify(sent) === JSON.stringify(received) };
      }, { url: server.url(`/echo?t=${token()}`), dataB64: data.toString('base64') });
      assert.equal(r.length, data.length);
      assert.equal(r.sha256, sha256Hex(data));
      assert.equal(r.inOrder, true, 'all 20 datagrams (the last of 16379 bytes) came back in order');
    }));

    test('QMux: server-opened uni and bidi streams (/open)', { timeout: TEST_TIMEOUT }, run(async (page, server) => {
      const p = `/open?t=${token()}`;
      const mark = server.mark();
      const r = await page.evaluate(async ({ url }) => {
        const { FerroviaTransport } = (window.ferroviaClient ??= await import(location.origin + '/client.js'));
        const t = new FerroviaTransport(url, { transports: ['qmux'] });
        // Taken before ready: the connector hands out stand-ins that follow the transport.
        const uniP = t.incomingUnidirectionalStreams.getReader().read();
        const bidiP = t.incomingBidirectionalStreams.getReader().read();
        await t.ready;
        const [uni, bidi] = await wt.timeout(Promise.all([uniP, bidiP]), 10000, 'incoming streams');
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

    test('QMux: close code and reason both ways', { timeout: TEST_TIMEOUT }, run(async (page, server) => {
      // The page closes: CONNECTION_CLOSE 0x1d reaches the server's closed event.
      const p1 = `/echo?t=${token()}`;
      const mark = server.mark();
      const mine = await page.evaluate(async ({ url }) => {
        const { connect } = (window.ferroviaClient ??= await import(location.origin + '/client.js'));
        const t = await connect(url, { transports: ['qmux'] });
        // One round trip first: the server hands a QMux session to the application only
        // once it has the page's transport parameters, and a close that arrives before
        // then loses the session (see the report).
        const s = await t.createBidirectionalStream();
        await Promise.all([wt.writeAll(s.writable, wt.encode('x')), wt.readAll(s.readable, 5000, 'echo')]);
        t.close({ closeCode: 4000000007, reason: 'bye from the page ✓' });
        return wt.outcome(t.closed, 5000, 'closed');
      }, { url: server.url(p1) });
      assert.deepEqual(mine, { ok: true, value: { closeCode: 4000000007, reason: 'bye from the page ✓' } });
      const ev1 = await server.waitForEvent((e) => e.event === 'closed' && e.path === p1, { since: mark, description: `closed ${p1}` });
      assert.deepEqual([ev1.code, ev1.reason, ev1.remote], [4000000007, 'bye from the page ✓', true]);

      // The server closes: closed resolves with its code and reason.
      const p2 = `/close?code=4242&reason=server%20bye&t=${token()}`;
      const theirs = await page.evaluate(async ({ url }) => {
        const { connect } = (window.ferroviaClient ??= await import(location.origin + '/client.js'));
        const t = await connect(url, { transports: ['qmux'] });
        const s = await t.createBidirectionalStream();
        const closed = await wt.outcome(t.closed, 5000, 'closed');
        // Streams of a closed session fail with a session error.
        const write = await wt.outcome(s.writable.getWriter().write(wt.encode('late')), 2000, 'write after close');
        return { closed, write };
      }, { url: server.url(p2) });
      assert.deepEqual(theirs.closed, { ok: true, value: { closeCode: 4242, reason: 'server bye' } });
      assert.equal(theirs.write.ok, false);
      assert.equal(theirs.write.error.source, 'session', JSON.stringify(theirs.write));
      const ev2 = await server.waitForEvent((e) => e.event === 'closed' && e.path === p2, { since: mark, description: `closed ${p2}` });
      assert.deepEqual([ev2.code, ev2.reason, ev2.remote], [4242, 'server bye', false]);
    }));

    for (const code of [30, 1000]) {
      test(`QMux: reset and STOP_SENDING codes from the server (/reset?code=${code})`, { timeout: TEST_TIMEOUT }, run(async (page, server) => {
        const r = await page.evaluate(async ({ url }) => {
          const { connect } = (window.ferroviaClient ??= await import(location.origin + '/client.js'));
          const t = await connect(url, { transports: ['qmux'] });
          const s = await t.createBidirectionalStream();
          const writer = s.writable.getWriter();
          const reader = s.readable.getReader();
          await writer.write(wt.encode('x'));
          const read = await wt.outcome(reader.read(), 10000, 'read');
          let write = { ok: true };
          for (let i = 0; i < 60 && write.ok; i++) {
            write = await wt.outcome(writer.write(wt.encode('y')), 3000, 'write');
            await wt.sleep(50);
          }
          t.close();
          return { read, write };
        }, { url: server.url(`/reset?code=${code}&t=${token()}`) });
        const dump = JSON.stringify(r);
        assert.equal(r.read.ok, false, dump);
        assert.deepEqual([r.read.error.name, r.read.error.source, r.read.error.streamErrorCode], ['WebTransportError', 'stream', code], dump);
        assert.equal(r.write.ok, false, dump);
        assert.deepEqual([r.write.error.name, r.write.error.source, r.write.error.streamErrorCode], ['WebTransportError', 'stream', code + 1], dump);
      }));
    }

    test('QMux: the page\'s reset codes reach the server; cancel stops a stream', { timeout: TEST_TIMEOUT }, run(async (page, server) => {
      const mark = server.mark();
      const r = await page.evaluate(async ({ url }) => {
        const { connect } = (window.ferroviaClient ??= await import(location.origin + '/client.js'));
        const t = await connect(url, { transports: ['qmux'] });
        const bidi = await t.createBidirectionalStream();
        const bw = bidi.writable.getWriter();
        await bw.write(wt.encode('bidi data'));
        // Any object with streamErrorCode will do; the browsers' own constructor clamps to 255.
        await bw.abort({ streamErrorCode: 77 });
        const uni = await t.createUnidirectionalStream();
        const uw = uni.getWriter();
        await uw.write(wt.encode('uni data'));
        await uw.abort(wt.streamError(78));
        // STOP_SENDING: the echo's writer fails and it resets in answer (RFC 9000 §3.5); the
        // session carries on.
        const other = await t.createBidirectionalStream();
        const ow = other.writable.getWriter();
        await ow.write(wt.encode('to be stopped'));
        await other.readable.cancel({ streamErrorCode: 79 });
        const after = await t.createBidirectionalStream();
        const [, got] = await Promise.all([wt.writeAll(after.writable, wt.encode('still fine')), wt.readAll(after.readable, 5000, 'after')]);
        t.close();
        return wt.decode(got);
      }, { url: server.url(`/echo?t=${token()}`) });
      assert.equal(r, 'still fine');
      await server.waitForEvent((e) => e.event === 'stream-reset' && e.code === 77, { since: mark, description: 'stream-reset 77 (bidi)' });
      await server.waitForEvent((e) => e.event === 'stream-reset' && e.code === 78, { since: mark, description: 'stream-reset 78 (uni)' });
    }));

    test('a refusal is final: the page gets the status, whichever transport went first; no session', { timeout: TEST_TIMEOUT }, run(async (page, server) => {
      const tok = token();
      const mark = server.mark();
      const r = await page.evaluate(async ({ url, hash }) => {
        const { FerroviaTransport } = (window.ferroviaClient ??= await import(location.origin + '/client.js'));
        const out = {};
        for (const transports of [['webtransport', 'qmux'], ['qmux', 'webtransport']]) {
          const started = performance.now();
          const t = new FerroviaTransport(url, Object.assign(wt.options(hash), { transports }));
          const status = t.ready.then(() => null, (e) => e.status ?? 'none');
          const ready = await wt.outcome(t.ready, 15000, 'ready');
          out[transports[0]] = {
            ready,
            status: await status,
            ms: Math.round(performance.now() - started),
            closed: await wt.outcome(t.closed, 5000, 'closed'),
            attempts: t.attempts.map((a) => [a.transport, a.outcome, a.status ?? null]),
            transport: t.transport,
          };
        }
        return out;
      }, { url: server.url(`/reject?status=403&t=${tok}`), hash: server.certificateHash });
      const dump = JSON.stringify(r);
      for (const first of ['webtransport', 'qmux']) {
        const x = r[first];
        assert.equal(x.ready.ok, false, dump);
        assert.deepEqual([x.ready.error.name, x.ready.error.source], ['WebTransportError', 'session'], dump);
        assert.equal(x.status, 403, dump);
        assert.equal(x.closed.ok, false, dump);
        assert.equal(x.transport, null);
      }
      // Native first: its refusal shows the page nothing, so QMux asks, and the server
      // answers it with the same refusal (without asking the application again).
      assert.deepEqual(r.webtransport.attempts, [['webtransport', 'failed', null], ['qmux', 'failed', 403]], dump);
      // QMux first: the refusal is final, native WebTransport is not tried.
      assert.deepEqual(r.qmux.attempts, [['qmux', 'failed', 403]], dump);
      console.log(`# ${browser}: /reject?status=403 refused after ${r.webtransport.ms} ms native first, ${r.qmux.ms} ms QMux first: ${r.webtransport.ready.error.message}`);
      assert.deepEqual(server.eventsSince(mark).filter((e) => e.event === 'session' && String(e.path).includes(tok)), []);
    }));

    test('setup mistakes are not hidden: a hash as text throws; a stale hash falls back, says why, warns once', { timeout: TEST_TIMEOUT }, run(async (page, server) => {
      const tok = token();
      const mark = server.mark();
      const r = await page.evaluate(async ({ url, hash, stale }) => {
        const { connect } = (window.ferroviaClient ??= await import(location.origin + '/client.js'));
        const warnings = [];
        const warn = console.warn;
        console.warn = (...args) => { warnings.push(args.join(' ')); warn.apply(console, args); };
        const out = {};
        // The hash as hex text, as it is printed: the page's mistake, thrown at once.
        const hex = hash;
        const t0 = performance.now();
        try {
          await connect(`${url}&case=hex`, { serverCertificateHashes: [{ algorithm: 'sha-256', value: hex }] });
          out.hex = 'connected';
        } catch (e) {
          out.hex = { name: e.name, message: e.message, ms: Math.round(performance.now() - t0) };
        }
        try {
          await connect(`${url}&case=alg`, { serverCertificateHashes: [{ algorithm: 'SHA-256', value: wt.hexToBytes(hash) }] });
          out.alg = 'connected';
        } catch (e) {
          out.alg = { name: e.name, message: e.message };
        }
        // A stale hash (another certificate's): native fails, QMux works, and the page is told.
        const staleT = await wt.timeout(connect(`${url}&case=stale`, { serverCertificateHashes: [{ algorithm: 'sha-256', value: wt.hexToBytes(stale) }] }), 20000, 'stale');
        out.stale = { transport: staleT.transport, reason: staleT.fallbackReason, attempts: staleT.attempts.map((a) => [a.transport, a.outcome]) };
        staleT.close();
        const again = await wt.timeout(connect(`${url}&case=again`, { serverCertificateHashes: [{ algorithm: 'sha-256', value: wt.hexToBytes(stale) }] }), 20000, 'again');
        out.again = { transport: again.transport, reason: again.fallbackReason };
        again.close();
        const good = await wt.timeout(connect(`${url}&case=good`, wt.options(hash)), 20000, 'good');
        out.good = { transport: good.transport, reason: good.fallbackReason };
        good.close();
        console.warn = warn;
        out.warnings = warnings;
        return out;
      }, { url: server.url(`/echo?t=${tok}`), hash: server.certificateHash, stale: randomBytes(32).toString('hex') });
      const dump = JSON.stringify(r);
      assert.equal(r.hex.name, 'TypeError', dump);
      assert.match(r.hex.message, /is a string: it must be the hash's 32 bytes/, dump);
      assert.equal(r.alg.name, 'TypeError', dump);
      assert.match(r.alg.message, /algorithm must be 'sha-256'/, dump);
      assert.equal(r.stale.transport, 'qmux', dump);
      assert.deepEqual(r.stale.attempts, [['webtransport', 'failed'], ['qmux', 'ready']], dump);
      assert.ok(r.stale.reason, dump);
      assert.equal(r.again.transport, 'qmux', dump);
      assert.ok(r.again.reason, dump);
      assert.deepEqual([r.good.transport, r.good.reason], ['webtransport', null], dump);
      assert.equal(r.warnings.length, 1, `one warning per page: ${dump}`);
      assert.match(r.warnings[0], /did not work .*using QMux/, dump);
      console.log(`# ${browser}: stale hash: ${r.stale.reason}`);
      // Neither mistake reached the server.
      const seen = server.eventsSince(mark).filter((e) => e.event === 'session' && String(e.path).includes(tok)).map((e) => new URL(e.path, 'https://x').searchParams.get('case'));
      assert.ok(!seen.includes('hex') && !seen.includes('alg'), JSON.stringify(seen));
    }));

    test('Safari before 26.4 (no WebTransport global): QMux, echo works', { timeout: TEST_TIMEOUT }, run(async (page, server) => {
      const p = `/echo?t=${token()}`;
      const mark = server.mark();
      const r = await page.evaluate(pageEchoText, { url: server.url(p), hash: server.certificateHash, text: 'no native', dropWebTransport: true });
      assert.equal(r.transport, 'qmux', JSON.stringify(r));
      assert.equal(r.echoed, 'no native');
      assert.deepEqual(r.attempts.map((a) => [a.transport, a.outcome, a.error]), [['webtransport', 'failed', 'WebTransport is not available'], ['qmux', 'ready', undefined]]);
      assert.equal((await sessionEvent(server, p, mark)).transport, 'qmux');
      console.log(`# ${browser}: no WebTransport global, QMux ready after ${r.readyMs} ms`);
    }));

    test('Safari (by user agent) starts with QMux; an explicit transports list overrides', { timeout: TEST_TIMEOUT }, run(async (page, server) => {
      const r = await page.evaluate(async ({ url, hash }) => {
        const ua = 'Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/26.4 Safari/605.1.15';
        Object.defineProperty(navigator, 'userAgent', { get: () => ua, configurable: true });
        const { connect } = (window.ferroviaClient ??= await import(location.origin + '/client.js'));
        const byDefault = await connect(url, wt.options(hash));
        const overridden = await connect(url, Object.assign(wt.options(hash), { transports: ['webtransport', 'qmux'] }));
        const out = { ua: navigator.userAgent === ua, byDefault: byDefault.attempts, overridden: overridden.attempts };
        byDefault.close();
        overridden.close();
        return out;
      }, { url: server.url(`/echo?t=${token()}`), hash: server.certificateHash });
      assert.equal(r.ua, true);
      assert.deepEqual(r.byDefault.map((a) => [a.transport, a.outcome]), [['qmux', 'ready']]);
      assert.deepEqual(r.overridden.map((a) => [a.transport, a.outcome]), [['webtransport', 'ready']]);
    }));

    test('a native handshake that never completes: QMux after fallbackAfter', { timeout: TEST_TIMEOUT }, run(async (page, server) => {
      const p = `/echo?t=${token()}`;
      const r = await page.evaluate(pageEchoText, { url: server.url(p), text: 'stalled', fakeStall: true, options: { fallbackAfter: 700 } });
      assert.equal(r.transport, 'qmux', JSON.stringify(r));
      assert.equal(r.echoed, 'stalled');
      assert.deepEqual(r.attempts.map((a) => [a.transport, a.outcome]), [['webtransport', 'abandoned'], ['qmux', 'ready']]);
      assert.ok(r.readyMs >= 700 && r.readyMs < 5000, `ready after ${r.readyMs} ms`);
      assert.equal(r.stalledClosed, true, 'the stalled attempt was closed');
      console.log(`# ${browser}: stalled native handshake, QMux ready after ${r.readyMs} ms (fallbackAfter 700)`);
    }));

    for (const silent of [true, false]) {
      const what = silent ? 'UDP silently dropped' : 'UDP refused (ICMP port unreachable)';
      test(`${what}: falls back to QMux on the same port`, { timeout: TEST_TIMEOUT }, run(async (page, server) => {
        const hole = await udpBlocked(server.port, silent);
        try {
          const p = `/echo?t=${token()}`;
          const mark = server.mark();
          const r = await page.evaluate(pageEchoText, { url: server.url(p).replace(`:${server.port}/`, `:${hole.port}/`), hash: server.certificateHash, text: 'no udp' });
          const native = r.attempts[0];
          console.log(`# ${browser}, ${what}: native attempt ${native.outcome} after ${native.ms} ms${native.error ? ` (${native.error})` : ''}; QMux ready after ${r.readyMs} ms; ${hole.datagrams()} UDP datagrams dropped`);
          assert.equal(r.transport, 'qmux', JSON.stringify(r));
          assert.equal(r.echoed, 'no udp');
          assert.equal((await sessionEvent(server, p, mark)).transport, 'qmux');
          if (silent) {
            // Nothing answers, so the connector waits fallbackAfter (3000 ms by default).
            assert.ok(hole.datagrams() > 0, 'the native attempt sent QUIC packets');
            assert.deepEqual(r.attempts.map((a) => [a.transport, a.outcome]), [['webtransport', 'abandoned'], ['qmux', 'ready']]);
            assert.ok(r.readyMs >= 3000 && r.readyMs < 6000, `ready after ${r.readyMs} ms`);
          } else {
            assert.ok(r.readyMs < 6000, `ready after ${r.readyMs} ms`);
          }
        } finally {
          hole.close();
        }
      }));
    }

    if (browser === 'chromium') {
      // The brief's first idea for "UDP blocked" does not block WebTransport: Chromium 156
      // with --disable-quic still opens WebTransport over HTTP/3 (its WebTransport client
      // does not consult that switch), so the connector rightly stays native.
      test('Chromium --disable-quic still has native WebTransport', { timeout: TEST_TIMEOUT }, run(async (page, server) => {
        const p = `/echo?t=${token()}`;
        const mark = server.mark();
        const r = await page.evaluate(pageEchoText, { url: server.url(p), hash: server.certificateHash, text: 'quic off?' });
        console.log(`# chromium --disable-quic: ${r.transport}, ready after ${r.readyMs} ms`);
        assert.equal(r.echoed, 'quic off?');
        assert.equal(r.transport, 'webtransport', JSON.stringify(r));
        assert.equal((await sessionEvent(server, p, mark)).transport, 'webtransport');
      }, { chromiumArgs: ['--disable-quic'] }));
    }

    test('backpressure: writes stall within the windows while the page does not read', { timeout: 60000 }, run(async (page, server) => {
      const data = randomBytes(8 << 20);
      const r = await page.evaluate(async ({ url, dataB64 }) => {
        const { connect } = (window.ferroviaClient ??= await import(location.origin + '/client.js'));
        const t = await connect(url, { transports: ['qmux'] });
        const data = wt.b64ToBytes(dataB64);
        const s = await t.createBidirectionalStream();
        const writer = s.writable.getWriter();
        let written = 0;
        const writing = (async () => {
          for (let i = 0; i < data.length; i += 65536) {
            await writer.write(data.subarray(i, i + 65536));
            written += Math.min(65536, data.length - i);
          }
          await writer.close();
        })();
        await wt.sleep(1000);
        const at1s = written;
        await wt.sleep(1000);
        const at2s = written;
        const q = t.session;
        const limits = {
          serverWindow: q.peer.initialMaxStreamDataBidiRemote, ourWindow: q.local.initialMaxStreamDataBidiLocal,
          ourConnectionWindow: q.local.initialMaxData, highWaterMark: q.hwm, recordCap: Math.min(q.peer.maxRecordSize, 65536),
        };
        const started = performance.now();
        const [got] = await Promise.all([wt.readAll(s.readable, 40000, 'read after the stall'), writing]);
        const drainMs = Math.round(performance.now() - started);
        const out = { at1s, at2s, ...limits, length: got.length, sha256: await wt.sha256Hex(got), drainMs };
        t.close();
        return out;
      }, { url: server.url(`/echo?t=${token()}`), dataB64: data.toString('base64') });
      // Everything the page has written is in one of: the server's receive window for this
      // stream (its transport parameter), the echo task's read chunk (64 KiB), our receive
      // window (the server cannot send more), the WebSocket send buffer (high-water mark plus
      // one record of overshoot).
      const bound = r.serverWindow + 65536 + r.ourWindow + r.highWaterMark + r.recordCap;
      console.log(`# ${browser} backpressure: ${r.at1s} bytes written after 1 s, ${r.at2s} after 2 s; bound ${bound} (server window ${r.serverWindow}, ours ${r.ourWindow}, high-water mark ${r.highWaterMark}); 8 MiB echoed in ${r.drainMs} ms once read`);
      assert.ok(r.at2s <= bound, `written ${r.at2s} > bound ${bound}`);
      assert.ok(r.at2s < data.length, 'the writes stalled');
      assert.equal(r.at2s, r.at1s, 'no progress between 1 s and 2 s without reading');
      assert.equal(r.length, data.length);
      assert.equal(r.sha256, sha256Hex(data));
    }));
  });
}
