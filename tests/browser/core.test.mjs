// Browser conformance tests for the Rust core, driven through the `echo` example server.
//
//   cargo build -p ferrovia --example echo && node --test --test-concurrency=1 tests/browser/
//
// (or `npm run test:browser`). Both Chromium and Firefox must run: a browser that fails to
// launch fails its tests.
//
// Environment: FERROVIA_ECHO_BIN (default target/debug/examples/echo), FERROVIA_ECHO_ARGS
// (default `--port 0`), FERROVIA_CHROMIUM / FERROVIA_FIREFOX (executables),
// FERROVIA_TEST_DEBUG=1 (print server events, server stderr and page console output).
//
// Pages load from http://localhost:<port>/ and connect to https://localhost:<port>/...
// Chromium 156 resolves `localhost` to ::1 and Firefox 153 to 127.0.0.1 for WebTransport,
// and neither falls back to the other family, so the server must listen on both.

import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, describe, test } from 'node:test';

import { BROWSERS, closeAll, sha256Hex, sleep, startEchoServer, token, withPage } from './harness.mjs';

const TEST_TIMEOUT = 30000;

// Started on first use, so that the browser-only checks still run (and every server test
// fails with the reason) when the binary is missing or does not start.
let serverPromise = null;
const echoServer = () => (serverPromise ??= startEchoServer());

after(async () => {
  await closeAll();
  if (serverPromise) await serverPromise.then((s) => s.stop(), () => {});
});

/** The server's event for this request: exact path+query, or (if the server drops the query) the bare path. */
function samePath(ev, fullPath) {
  return ev.path === fullPath || ev.path === fullPath.split('?')[0];
}

/**
 * Page side of the /reset test: opens a bidi stream, writes a byte, then reports how the
 * reader and the writer end. Runs in the page (no closure over Node variables).
 */
const resetProbe = async ({ url, hash }) => {
  const t = await wt.connect(url, hash);
  const s = await wt.timeout(t.createBidirectionalStream(), 10000, 'createBidirectionalStream');
  const writer = s.writable.getWriter();
  const reader = s.readable.getReader();
  const firstWrite = await wt.outcome(writer.write(wt.encode('x')), 5000, 'first write');
  // The server resets its send side: the reader must reject.
  let read;
  try {
    for (;;) {
      const { done } = await wt.timeout(reader.read(), 10000, 'read');
      if (done) {
        read = { ok: true, value: 'done (FIN)' };
        break;
      }
    }
  } catch (e) {
    read = { ok: false, error: wt.errorInfo(e) };
  }
  // The server sends STOP_SENDING: the writer must error. Keep writing for up to 3 s.
  // (A copy, not a second reference: puppeteer's BiDi serialisation returns a repeated
  // object reference as undefined.)
  let write = firstWrite.ok ? { ok: true, value: 'all writes succeeded for 3 s' } : JSON.parse(JSON.stringify(firstWrite));
  const deadline = Date.now() + 3000;
  while (write.ok && Date.now() < deadline) {
    try {
      await wt.timeout(writer.write(wt.encode('y')), 3000, 'write');
    } catch (e) {
      write = { ok: false, error: wt.errorInfo(e) };
      break;
    }
    await wt.sleep(50);
  }
  t.close();
  return { firstWrite, read, write };
};

for (const browser of BROWSERS) {
  describe(browser, () => {
    test('page is a secure context with WebTransport', { timeout: TEST_TIMEOUT }, () =>
      withPage(browser, async (page) => {
        const r = await page.evaluate(() => ({
          secure: window.isSecureContext,
          wt: typeof WebTransport,
          origin: location.origin,
        }));
        assert.deepEqual(r, { secure: true, wt: 'function', origin: page.origin });
      }));

    test('bidi echo: 1 MiB through one bidirectional stream', { timeout: TEST_TIMEOUT }, () =>
      withPage(browser, async (page) => {
        const server = await echoServer();
        const data = randomBytes(1 << 20);
        const p = `/echo?t=${token()}`;
        const mark = server.mark();
        const r = await page.evaluate(
          async ({ url, hash, dataB64 }) => {
            const t = await wt.connect(url, hash);
            const data = wt.b64ToBytes(dataB64);
            const s = await wt.timeout(t.createBidirectionalStream(), 10000, 'createBidirectionalStream');
            const [, received] = await Promise.all([
              wt.writeAll(s.writable, data),
              wt.readAll(s.readable, 20000, 'bidi echo read'),
            ]);
            const out = { length: received.byteLength, sha256: await wt.sha256Hex(received) };
            t.close();
            return out;
          },
          { url: server.url(p), hash: server.certificateHash, dataB64: data.toString('base64') },
        );
        assert.equal(r.length, data.length, 'echoed length');
        assert.equal(r.sha256, sha256Hex(data), 'SHA-256 of the echoed bytes (page, crypto.subtle) vs sent bytes (node)');

        const ev = await server.waitForEvent((e) => e.event === 'session' && e.path === p, { since: mark, description: `session ${p}` });
        assert.equal(ev.origin, page.origin, 'session event origin');
        assert.equal(ev.protocol, null, 'session event protocol');
      }));

    test('uni streams both directions', { timeout: TEST_TIMEOUT }, () =>
      withPage(browser, async (page) => {
        const server = await echoServer();
        const data = randomBytes(100 * 1024 + 7);
        const r = await page.evaluate(
          async ({ url, hash, dataB64 }) => {
            const t = await wt.connect(url, hash);
            const data = wt.b64ToBytes(dataB64);
            const incoming = t.incomingUnidirectionalStreams.getReader();
            const next = incoming.read();
            const w = await wt.timeout(t.createUnidirectionalStream(), 10000, 'createUnidirectionalStream');
            await wt.writeAll(w, data);
            const { value, done } = await wt.timeout(next, 10000, 'incomingUnidirectionalStreams.read()');
            if (done) throw new Error('incomingUnidirectionalStreams ended without a stream');
            const got = await wt.readAll(value, 10000, 'incoming uni read');
            const out = { length: got.byteLength, sha256: await wt.sha256Hex(got) };
            t.close();
            return out;
          },
          { url: server.url(`/echo?t=${token()}`), hash: server.certificateHash, dataB64: data.toString('base64') },
        );
        assert.equal(r.length, data.length, 'length of the bytes on the server-opened uni stream');
        assert.equal(r.sha256, sha256Hex(data), 'SHA-256 of the bytes on the server-opened uni stream');
      }));

    test('server-opened uni and bidi streams (/open)', { timeout: TEST_TIMEOUT }, () =>
      withPage(browser, async (page) => {
        const server = await echoServer();
        const p = `/open?t=${token()}`;
        const mark = server.mark();
        const r = await page.evaluate(
          async ({ url, hash }) => {
            const t = await wt.connect(url, hash);
            const uniP = wt.timeout(t.incomingUnidirectionalStreams.getReader().read(), 10000, 'incoming uni stream');
            const bidiP = wt.timeout(t.incomingBidirectionalStreams.getReader().read(), 10000, 'incoming bidi stream');
            const [uni, bidi] = await Promise.all([uniP, bidiP]);
            if (uni.done) throw new Error('incomingUnidirectionalStreams ended');
            if (bidi.done) throw new Error('incomingBidirectionalStreams ended');
            const uniText = wt.decode(await wt.readAll(uni.value, 10000, 'server uni read'));
            const bidiText = wt.decode(await wt.readAll(bidi.value.readable, 10000, 'server bidi read'));
            await wt.timeout(wt.writeAll(bidi.value.writable, wt.encode('reply:' + bidiText)), 10000, 'reply write');
            // Leave the session open: the test awaits the server's bidi-reply event first.
            return { uniText, bidiText };
          },
          { url: server.url(p), hash: server.certificateHash },
        );
        assert.equal(r.uniText, 'hello uni');
        assert.equal(r.bidiText, 'hello bidi');
        const ev = await server.waitForEvent((e) => e.event === 'bidi-reply', { since: mark, description: 'bidi-reply' });
        assert.equal(ev.data, 'reply:hello bidi');
      }));

    test('server-opened streams (/open) read whole in 20 sessions in a row', { timeout: TEST_TIMEOUT * 2 }, () =>
      withPage(browser, async (page) => {
        const server = await echoServer();
        const failures = await page.evaluate(
          async ({ base, hash }) => {
            // A stream's header, data and FIN may arrive in one packet, a handler may
            // return right after finishing: every read must still end cleanly.
            const failures = [];
            for (let i = 0; i < 20; i++) {
              try {
                const t = await wt.connect(`${base}&i=${i}`, hash);
                const uni = await wt.timeout(t.incomingUnidirectionalStreams.getReader().read(), 10000, 'incoming uni stream');
                const bidi = await wt.timeout(t.incomingBidirectionalStreams.getReader().read(), 10000, 'incoming bidi stream');
                const uniText = wt.decode(await wt.readAll(uni.value, 10000, 'server uni read'));
                const bidiText = wt.decode(await wt.readAll(bidi.value.readable, 10000, 'server bidi read'));
                if (uniText !== 'hello uni' || bidiText !== 'hello bidi') failures.push(`${i}: ${uniText} / ${bidiText}`);
                await wt.timeout(wt.writeAll(bidi.value.writable, wt.encode('reply:' + bidiText)), 10000, 'reply write');
                t.close({ closeCode: 0, reason: '' });
              } catch (e) {
                failures.push(`${i}: ${e.message}`);
              }
            }
            return failures;
          },
          { base: server.url(`/open?t=${token()}`), hash: server.certificateHash },
        );
        assert.deepEqual(failures, []);
      }));

    test('datagrams both ways', { timeout: TEST_TIMEOUT }, () =>
      withPage(browser, async (page) => {
        const server = await echoServer();
        const r = await page.evaluate(
          async ({ url, hash }) => {
            const t = await wt.connect(url, hash);
            const reader = t.datagrams.readable.getReader();
            const writable = typeof t.datagrams.createWritable === 'function' ? t.datagrams.createWritable() : t.datagrams.writable;
            const writer = writable.getWriter();
            const sent = [];
            const received = [];
            let readError = null;
            const reading = (async () => {
              try {
                for (;;) {
                  const { value, done } = await reader.read();
                  if (done) break;
                  received.push(wt.bytesToHex(value));
                  if (received.length >= 20) break;
                }
              } catch (e) {
                readError = wt.describe(e);
              }
            })();
            for (let i = 0; i < 20; i++) {
              const d = wt.randomBytes(100);
              d[0] = i;
              sent.push(wt.bytesToHex(d));
              await wt.timeout(writer.write(d), 5000, 'datagram write ' + i);
              await wt.sleep(10);
            }
            // Wait for the echoes: all 20, or 3 s without a new one.
            let last = -1;
            for (let waited = 0; waited < 10000 && received.length < 20; waited += 250) {
              if (received.length === last && waited >= 3000) break;
              last = received.length;
              await wt.sleep(250);
            }
            const out = { sent, received: received.slice(), readError, maxDatagramSize: t.datagrams.maxDatagramSize };
            reader.cancel().catch(() => {});
            t.close();
            await reading;
            return out;
          },
          { url: server.url(`/echo?t=${token()}`), hash: server.certificateHash },
        );
        assert.equal(r.readError, null, 'datagram read error');
        assert.ok(r.received.length >= 1, `no datagram came back (sent ${r.sent.length})`);
        const sent = new Set(r.sent);
        for (const d of r.received) assert.ok(sent.has(d), `received datagram is not a copy of a sent one: ${d}`);
        if (r.received.length < 20) console.log(`# ${browser}: ${r.received.length}/20 datagrams echoed`);
      }));

    test('browser close code and reason reach the server', { timeout: TEST_TIMEOUT }, () =>
      withPage(browser, async (page) => {
        const server = await echoServer();
        const p = `/echo?t=${token()}`;
        const mark = server.mark();
        const r = await page.evaluate(
          async ({ url, hash }) => {
            const t = await wt.connect(url, hash);
            t.close({ closeCode: 7, reason: 'bye from browser' });
            return wt.outcome(t.closed, 10000, 'closed');
          },
          { url: server.url(p), hash: server.certificateHash },
        );
        assert.ok(r.ok, `browser's own closed promise rejected: ${JSON.stringify(r.error)}`);
        const ev = await server.waitForEvent((e) => e.event === 'closed' && samePath(e, p), { since: mark, description: `closed ${p}` });
        assert.equal(ev.code, 7, `server closed event: ${JSON.stringify(ev)}`);
        assert.equal(ev.reason, 'bye from browser', `server closed event: ${JSON.stringify(ev)}`);
        assert.equal(ev.remote, true, `server closed event: ${JSON.stringify(ev)}`);
      }));

    test('server close code and reason reach the browser', { timeout: TEST_TIMEOUT }, () =>
      withPage(browser, async (page) => {
        const server = await echoServer();
        const p = `/close?code=4242&reason=server%20bye&t=${token()}`;
        const mark = server.mark();
        const r = await page.evaluate(
          async ({ url, hash }) => {
            const t = await wt.connect(url, hash);
            return wt.outcome(t.closed, 10000, 'closed');
          },
          { url: server.url(p), hash: server.certificateHash },
        );
        assert.ok(r.ok, `closed rejected instead of resolving: ${JSON.stringify(r.error)}`);
        assert.deepEqual({ closeCode: r.value.closeCode, reason: r.value.reason }, { closeCode: 4242, reason: 'server bye' });
        const ev = await server.waitForEvent((e) => e.event === 'closed' && samePath(e, p), { since: mark, description: `closed ${p}` });
        assert.equal(ev.code, 4242, `server closed event: ${JSON.stringify(ev)}`);
        assert.equal(ev.reason, 'server bye', `server closed event: ${JSON.stringify(ev)}`);
        assert.equal(ev.remote, false, `server closed event: ${JSON.stringify(ev)}`);
      }));

    // 30 = 0x1e is the first code past a gap in the HTTP/3 error-code mapping; 1000 needs more
    // than 8 bits, which Firefox 153 cannot report (see below).
    for (const code of [30, 1000]) test(`server stream reset and STOP_SENDING codes reach the browser (/reset?code=${code})`, { timeout: TEST_TIMEOUT }, () =>
      withPage(browser, async (page) => {
        const server = await echoServer();
        // Firefox reports a code on at most one side, and in some sessions on neither: its
        // content process learns of a RESET_STREAM or STOP_SENDING twice, once as the stream's
        // data pipe closing with an error and once as a separate message carrying the code
        // (WebTransport::OnStreamResetOrStopSending), and whichever lands first decides what
        // the page sees. How often the code wins depends on load: about 2 sessions in 3 on a
        // quiet machine (8 of 12), none in 8 while a benchmark ran beside the suite; it
        // happens against aioquic's server too. So Firefox gets four sessions, every code it
        // reports must be exact, and how many carried one is printed, not asserted.
        const maxAttempts = browser === 'firefox' && code + 1 <= 255 ? 4 : 1;
        const attempts = [];
        for (let i = 0; i < maxAttempts; i++) {
          const r = await page.evaluate(resetProbe, { url: server.url(`/reset?code=${code}&t=${token()}`), hash: server.certificateHash });
          attempts.push(r);
          const dump = JSON.stringify(r);
          console.log(`# ${browser} /reset?code=${code}: reader ${JSON.stringify(r.read)}; writer ${JSON.stringify(r.write)}`);
          assert.equal(r.read.ok, false, `reader did not reject: ${dump}`);
          assert.ok(!r.read.error.timedOut, `reader neither rejected nor ended within 10 s: ${dump}`);
          assert.equal(r.write.ok, false, `writer did not error after STOP_SENDING: ${dump}`);
          assert.ok(!r.write.error.timedOut, `a write hung for 3 s: ${dump}`);
          if (browser === 'chromium') {
            // Chromium 156: the reader rejects with WebTransportError("Received RESET_STREAM.")
            // carrying the RESET_STREAM code.
            assert.equal(r.read.error.name, 'WebTransportError', `reader error: ${dump}`);
            assert.equal(r.read.error.source, 'stream', `reader error: ${dump}`);
            assert.equal(r.read.error.streamErrorCode, code, `reader streamErrorCode: ${dump}`);
            // The writer gets WebTransportError("Received STOP_SENDING.") with the STOP_SENDING
            // code. (Chromium drops that code when RESET_STREAM is processed first and the page
            // writes before the STOP_SENDING reaches it; the server sends STOP_SENDING first, in
            // a packet of its own, and the echo example refuses the stream only after the page's
            // first write, so the code arrives.)
            assert.equal(r.write.error.name, 'WebTransportError', `writer error: ${dump}`);
            assert.equal(r.write.error.streamErrorCode, code + 1, `writer streamErrorCode: ${dump}`);
          } else if (code + 1 <= 255) {
            // Firefox 153 tears the whole bidi stream down on whichever of RESET_STREAM and
            // STOP_SENDING it processes first: that side gets a WebTransportError with the code
            // ("WebTransportStream Reset" / "WebTransportStream StopSending"), the other side a
            // plain TypeError "Error in input stream" or DOMException AbortError "error writing
            // data"; sometimes both sides get the plain errors. Any code it does report must be right.
            if (r.read.error.name === 'WebTransportError') assert.equal(r.read.error.streamErrorCode, code, `reader streamErrorCode: ${dump}`);
            if (r.write.error.name === 'WebTransportError') assert.equal(r.write.error.streamErrorCode, code + 1, `writer streamErrorCode: ${dump}`);
          }
          // Firefox 153 reports stream error codes only up to 255 (8 bits): 256 and above
          // arrive as streamErrorCode 0, so for code 1000 only the rejections are asserted.
        }
        if (maxAttempts > 1) {
          const reported = attempts.filter((r) => r.read.error.name === 'WebTransportError' || r.write.error.name === 'WebTransportError').length;
          console.log(`# ${browser} /reset?code=${code}: a code reached the page in ${reported} of ${attempts.length} sessions`);
        }
      }));

    test('browser stream reset codes reach the server', { timeout: TEST_TIMEOUT }, () =>
      withPage(browser, async (page) => {
        const server = await echoServer();
        const mark = server.mark();
        const r = await page.evaluate(
          async ({ url, hash }) => {
            const t = await wt.connect(url, hash);
            const mkErr = (code) => wt.streamError(code, 'reset by test');
            const check = mkErr(1);
            const ctor = { streamErrorCode: check.streamErrorCode, source: check.source };
            const bidi = await wt.timeout(t.createBidirectionalStream(), 10000, 'createBidirectionalStream');
            const bw = bidi.writable.getWriter();
            await wt.timeout(bw.write(wt.encode('bidi data')), 5000, 'bidi write');
            await wt.sleep(200);
            await wt.outcome(bw.abort(mkErr(77)), 5000, 'bidi abort');
            const uni = await wt.timeout(t.createUnidirectionalStream(), 10000, 'createUnidirectionalStream');
            const uw = uni.getWriter();
            await wt.timeout(uw.write(wt.encode('uni data')), 5000, 'uni write');
            await wt.sleep(200);
            await wt.outcome(uw.abort(mkErr(78)), 5000, 'uni abort');
            return { ctor };
          },
          { url: server.url(`/echo?t=${token()}`), hash: server.certificateHash },
        );
        assert.equal(r.ctor.streamErrorCode, 1, `WebTransportError constructor: ${JSON.stringify(r.ctor)}`);
        const resets = () => JSON.stringify(server.eventsSince(mark).filter((e) => e.event === 'stream-reset'));
        await server.waitForEvent((e) => e.event === 'stream-reset' && e.code === 77, { since: mark, description: `stream-reset 77 (bidi); stream-reset events: ${resets()}` });
        await server.waitForEvent((e) => e.event === 'stream-reset' && e.code === 78, { since: mark, description: `stream-reset 78 (uni); stream-reset events: ${resets()}` });
      }));

    for (const [label, p] of [
      ['/reject?status=403', '/reject?status=403'],
      ['/reject?status=404', '/reject?status=404'],
      ['an unknown path', '/no-such-path'],
    ]) {
      test(`rejected request: ${label}`, { timeout: TEST_TIMEOUT }, () =>
        withPage(browser, async (page) => {
          const server = await echoServer();
          const tok = token();
          const full = `${p}${p.includes('?') ? '&' : '?'}t=${tok}`;
          const mark = server.mark();
          const r = await page.evaluate(
            async ({ url, hash }) => {
              const t = wt.create(url, hash);
              const ready = await wt.outcome(t.ready, 10000, 'ready');
              const closed = await wt.outcome(t.closed, 5000, 'closed');
              return { ready, closed };
            },
            { url: server.url(full), hash: server.certificateHash },
          );
          assert.equal(r.ready.ok, false, `ready resolved for ${full}`);
          assert.equal(r.ready.error.name, 'WebTransportError', `ready error: ${JSON.stringify(r.ready.error)}`);
          assert.equal(r.ready.error.source, 'session', `ready error: ${JSON.stringify(r.ready.error)}`);
          assert.equal(r.closed.ok, false, `closed resolved for a rejected request: ${JSON.stringify(r.closed)}`);
          console.log(`# ${browser} ${label}: ready rejected with ${r.ready.error.text}`);
          await sleep(200);
          const accepted = server.eventsSince(mark).filter((e) => e.event === 'session' && String(e.path).includes(tok));
          assert.deepEqual(accepted, [], 'the server reported a session for a rejected request');
        }));
    }

    test('origin policy: a page on a host the certificate does not name cannot open a session', { timeout: TEST_TIMEOUT }, () =>
      withPage(
        browser,
        async (page) => {
          const server = await echoServer();
          const tok = token();
          const mark = server.mark();
          const r = await page.evaluate(
            async ({ url, hash }) => {
              const t = wt.create(url, hash);
              return { secure: window.isSecureContext, ready: await wt.outcome(t.ready, 10000, 'ready') };
            },
            { url: server.url(`/echo?t=${tok}`), hash: server.certificateHash },
          );
          assert.equal(r.secure, true, 'the page at 127.0.0.2 is a secure context');
          assert.equal(r.ready.ok, false, 'ready resolved although the page host is not one of the server names');
          assert.equal(r.ready.error.name, 'WebTransportError', `ready error: ${JSON.stringify(r.ready.error)}`);
          console.log(`# ${browser} foreign origin: ready rejected with ${r.ready.error.text}`);
          await sleep(200);
          const accepted = server.eventsSince(mark).filter((e) => e.event === 'session' && String(e.path).includes(tok));
          assert.deepEqual(accepted, [], 'the server reported a session for a cross-origin request');
        },
        { host: '127.0.0.2' },
      ));

    test('origin policy: a page at localhost may open a session at 127.0.0.1 (both are server names)', { timeout: TEST_TIMEOUT }, () =>
      withPage(browser, async (page) => {
        const server = await echoServer();
        const p = `/echo?t=${token()}`;
        const r = await page.evaluate(
          async ({ url, hash }) => {
            const t = await wt.connect(url, hash);
            t.close();
            return 'ready';
          },
          { url: server.url(p, '127.0.0.1'), hash: server.certificateHash },
        );
        assert.equal(r, 'ready');
      }));

    test('origin policy control: page at 127.0.0.1 can open a session at 127.0.0.1', { timeout: TEST_TIMEOUT }, () =>
      withPage(
        browser,
        async (page) => {
          const server = await echoServer();
          const p = `/echo?t=${token()}`;
          const mark = server.mark();
          const r = await page.evaluate(
            async ({ url, hash }) => {
              const t = await wt.connect(url, hash);
              const s = await wt.timeout(t.createBidirectionalStream(), 10000, 'createBidirectionalStream');
              const [, got] = await Promise.all([wt.writeAll(s.writable, wt.encode('ping')), wt.readAll(s.readable, 10000, 'read')]);
              t.close();
              return { secure: window.isSecureContext, echoed: wt.decode(got) };
            },
            { url: server.url(p, '127.0.0.1'), hash: server.certificateHash },
          );
          assert.deepEqual(r, { secure: true, echoed: 'ping' });
          const ev = await server.waitForEvent((e) => e.event === 'session' && e.path === p, { since: mark, description: `session ${p}` });
          assert.equal(ev.origin, page.origin);
        },
        { host: '127.0.0.1' },
      ));
  });
}
