// Browsers through uvicorn + Starlette: examples/python/starlette_app.py serves its page and
// the browser connector over HTTPS (uvicorn, with a certificate from Ferrovia) and mounts
// `server.asgi()` at /rt. Headless Chromium and Firefox load the page from uvicorn and reach
// Ferrovia's routes through uvicorn's port: the page's own script, a QMux session from the
// connector (bytes echoed on a bidi stream, closed with a code and reason the server
// handler reports) and a plain `new WebSocket('wss://...')` (text echoed, close codes seen
// on both sides). The Express and Fastify counterpart is tests/node/frameworks-browser.test.mjs.
//
// Needs a Python with ferrovia, uvicorn and starlette installed (scripts/test-python.sh
// makes .venv): FERROVIA_PYTHON, or the checkout's .venv/bin/python.

import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';

import { startEchoServer } from '../browser/harness.mjs';
import { describePage, qmuxEcho, webSocketEcho } from '../node/frameworks-page.mjs';
import { closeBrowsers, openPage, REPO_ROOT } from './support.mjs';

const T = { timeout: 60000 };
const BROWSERS = ['chromium', 'firefox'];
const PYTHON = process.env.FERROVIA_PYTHON || path.join(REPO_ROOT, '.venv', 'bin', 'python');
const APP = path.join(REPO_ROOT, 'examples', 'python', 'starlette_app.py');

let counter = 0;
const token = () => `${process.pid.toString(36)}x${++counter}`;

describe('uvicorn + Starlette over HTTPS (examples/python/starlette_app.py)', () => {
  let app;
  before(async () => {
    assert.ok(existsSync(PYTHON), `no Python at ${PYTHON}: run scripts/test-python.sh or set FERROVIA_PYTHON`);
    app = await startEchoServer({ bin: PYTHON, args: [APP, '--port', '0'] });
  });
  after(async () => {
    await closeBrowsers();
    const exit = await app?.stop();
    // uvicorn stops on SIGTERM; the app must not die with a traceback.
    if (app) assert.doesNotMatch(app.stderr(), /Traceback/, `stderr: ${app.stderr()}`);
    return exit;
  });

  const open = async (browser) => {
    const page = await openPage(browser, `https://localhost:${app.port}/`, { trustSpki: app.spki });
    assert.deepEqual(await page.evaluate(describePage), { protocol: 'https:', title: 'ferrovia + starlette', secure: true });
    return page;
  };

  for (const browser of BROWSERS) {
    test(`${browser}: the example page loads the connector from Starlette, echoes on a session and a WebSocket`, T, async () => {
      const since = app.mark();
      const page = await open(browser);
      try {
        const shown = await page.waitFor(
          () => {
            const text = (id) => document.getElementById(id).textContent;
            return text('ws') && text('echo') ? { transport: text('transport'), echo: text('echo'), ws: text('ws') } : null;
          },
          undefined,
          { what: 'the page to show both echoes' },
        );
        // The certificate hash in the page makes native WebTransport (UDP) work, so the
        // connector picks it; the WebSocket goes through uvicorn.
        assert.deepEqual(shown, { transport: 'webtransport', echo: 'hello from webtransport', ws: 'hello over a plain WebSocket' });
        const closed = await app.waitForEvent((e) => e.event === 'closed' && e.path === '/rt/echo', { since });
        assert.deepEqual([closed.transport, closed.code, closed.reason, closed.initiator], ['webtransport', 0, 'page done', 'remote']);
        const wsClosed = await app.waitForEvent((e) => e.event === 'websocket-closed' && e.path === '/rt/ws', { since });
        assert.deepEqual([wsClosed.code, wsClosed.reason, wsClosed.initiator], [1000, 'page done', 'remote']);
      } finally {
        await page.close();
      }
    });

    test(`${browser}: a QMux session from the connector through uvicorn echoes 1 MiB and closes with a code the handler sees`, T, async () => {
      const page = await open(browser);
      try {
        const p = `/rt/echo?t=${token()}`;
        const reason = `done with starlette in ${browser}`;
        const result = await page.evaluate(qmuxEcho, { path: p, size: 1 << 20, closeCode: 4242, reason });
        assert.equal(result.transport, 'qmux');
        assert.equal(result.received, result.sent);
        assert.equal(result.receivedSha256, result.sentSha256);
        assert.equal(result.same, true);
        assert.deepEqual(result.closed, { closeCode: 4242, reason });
        const session = await app.waitForEvent((e) => e.event === 'session' && e.path === p);
        assert.equal(session.transport, 'qmux');
        const closed = await app.waitForEvent((e) => e.event === 'closed' && e.path === p);
        assert.deepEqual([closed.transport, closed.code, closed.reason, closed.initiator], ['qmux', 4242, reason, 'remote']);
      } finally {
        await page.close();
      }
    });

    test(`${browser}: a plain WebSocket through uvicorn echoes text; close codes reach the other side both ways`, T, async () => {
      const page = await open(browser);
      try {
        // The page closes.
        const p1 = `/rt/ws?t=${token()}`;
        const fromPage = await page.evaluate(webSocketEcho, { path: p1, message: 'hello starlette ✓', closeCode: 4001, reason: 'page leaves' });
        assert.equal(fromPage.echoed, 'hello starlette ✓');
        assert.deepEqual(fromPage.close, { code: 4001, reason: 'page leaves', wasClean: true });
        const opened = await app.waitForEvent((e) => e.event === 'websocket' && e.path === p1);
        assert.equal(opened.transport, 'websocket');
        const closed1 = await app.waitForEvent((e) => e.event === 'websocket-closed' && e.path === p1);
        assert.deepEqual([closed1.code, closed1.reason, closed1.initiator], [4001, 'page leaves', 'remote']);

        // The server closes after the echo.
        const p2 = `/rt/ws?t=${token()}&close=4002&reason=server%20done`;
        const fromServer = await page.evaluate(webSocketEcho, { path: p2, message: 'once' });
        assert.equal(fromServer.echoed, 'once');
        assert.deepEqual(fromServer.close, { code: 4002, reason: 'server done', wasClean: true });
        const closed2 = await app.waitForEvent((e) => e.event === 'websocket-closed' && e.path === p2);
        assert.deepEqual([closed2.code, closed2.reason, closed2.initiator], [4002, 'server done', 'local']);
      } finally {
        await page.close();
      }
    });
  }
});
