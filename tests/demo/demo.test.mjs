// The demo as a newcomer meets it: the page in headless Chromium and Firefox, loaded from
// the same server and port as its sessions (the certificate trusted as a user would: by
// Chromium's SPKI flag, by an accepted warning in Firefox), echo, a chat between two pages
// (one per browser), cursor datagrams, session statistics, the close button reaching the
// server's log, and Ctrl-C stopping the server cleanly. Screenshots go to
// test-output/demo/.
//
//   node --test --test-concurrency=1 tests/demo/
//
// FERROVIA_DEMO_CMD (space-separated) runs another demo server with the same page, e.g.
// `.venv/bin/python examples/demo/server.py`; the default is the Node one.

import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { statSync } from 'node:fs';
import https from 'node:https';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';

import { OUTPUT_DIR, closeBrowsers, openPage, startProcess } from './support.mjs';

const [DEMO_CMD, ...DEMO_ARGS] = process.env.FERROVIA_DEMO_CMD
  ? process.env.FERROVIA_DEMO_CMD.trim().split(/\s+/)
  : [process.execPath, 'examples/demo/server.mjs'];
const FLAVOUR = !process.env.FERROVIA_DEMO_CMD ? 'node' : /python/.test(path.basename(DEMO_CMD)) ? 'python' : path.basename(DEMO_CMD);
const T = { timeout: 60000 };

let demo;
let pageUrl;
// The demo's certificate, which the browser trusts for the page (and the WebSocket fallback).
let spki;

function startDemo() {
  const proc = startProcess(DEMO_CMD, [...DEMO_ARGS, '--port', '0'], { label: 'demo' });
  return proc;
}

/**
 * GET over HTTPS (HTTP/1.1) from a server with a self-signed certificate: the body, the
 * response headers and the SHA-256 of the certificate the server presented.
 */
function get(url) {
  return new Promise((resolve, reject) => {
    const req = https.get(url, { rejectUnauthorized: false }, (res) => {
      const presented = createHash('sha256').update(res.socket.getPeerCertificate().raw).digest('hex');
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode, headers: res.headers, body: Buffer.concat(chunks).toString(), certificateHash: presented }));
      res.on('error', reject);
    });
    req.on('error', reject);
  });
}

async function started(proc, timeout = 30000) {
  const [, url] = await proc.waitForLine(/Open\s+(https:\/\/localhost:\d+\/)/, { timeout });
  const [, hash] = await proc.waitForLine(/SHA-256\s+([0-9a-f]{64})/);
  const [, spki] = await proc.waitForLine(/SPKI\s+(\S+=)/);
  await proc.waitForLine(/Ctrl-C/);
  return { url, hash, spki };
}

const connected = (page) => page.waitFor(() => document.getElementById('status').dataset.state === 'connected' && document.getElementById('identity').textContent, undefined, { what: 'the session to connect' });
const tabName = async (page) => (await connected(page)).replace(/^you are /, '');
const transportOf = (page) => page.evaluate(() => document.getElementById('transport').dataset.transport);
const num = (page, id) => page.evaluate((i) => Number(document.getElementById(i).textContent), id);

before(async () => {
  demo = startDemo();
  ({ url: pageUrl, spki } = await started(demo));
});

after(async () => {
  await closeBrowsers();
  await demo?.stop('SIGKILL');
});

describe(`demo (${FLAVOUR})`, () => {
  test('serves the page, its config and the certificate hash the page uses from the session port', async () => {
    const [, wtPort] = await demo.waitForLine(/WebTransport\s+https:\/\/localhost:(\d+)\/demo/);
    const [, hash] = await demo.waitForLine(/SHA-256\s+([0-9a-f]{64})/);
    const [, flagged] = await demo.waitForLine(/--ignore-certificate-errors-spki-list=(\S+=)/);
    assert.equal(flagged, spki);
    assert.equal(pageUrl, `https://localhost:${wtPort}/`);
    const config = await get(new URL('config.json', pageUrl));
    assert.equal(config.status, 200);
    assert.equal(JSON.parse(config.body).certificateHash, hash);
    assert.equal(JSON.parse(config.body).port, Number(wtPort));
    // TCP presents the certificate whose hash the page gives WebTransport on UDP.
    assert.equal(config.certificateHash, hash);
    const html = await get(pageUrl);
    assert.match(html.body, /<script type="module" src="demo.js">/);
    assert.equal(html.headers['alt-svc'], `h3=":${wtPort}"; ma=86400`);
    assert.equal((await get(new URL('no-such-file', pageUrl))).status, 404);
  });

  for (const browser of ['chromium', 'firefox']) {
    test(`${browser}: echo, cursor datagrams, statistics and the close button`, T, async () => {
      const page = await openPage(browser, pageUrl, { trustSpki: spki });
      try {
        const name = await tabName(page);
        const [, opened, over] = await demo.waitForLine(new RegExp(`open\\s+${name} from (https://localhost:\\d+) \\(.*\\) over (.*)$`));
        assert.equal(opened, pageUrl.replace(/\/$/, ''));
        // The page came over HTTP/2 from the session's own port.
        assert.equal(await page.evaluate(() => performance.getEntriesByType('navigation')[0].nextHopProtocol), 'h2');
        // The connector picks native WebTransport when it works.
        assert.equal(over, 'WebTransport');
        assert.equal(await transportOf(page), 'webtransport');
        assert.equal(await page.text('#transport'), 'over WebTransport');

        const text = `echo from ${browser} ✓ ${Date.now()}`;
        await page.fill('#echo-input', text);
        await page.click('#echo-send');
        const echoed = await page.waitFor((t) => [...document.querySelectorAll('#echo-log .echoed')].map((e) => e.textContent).find((s) => s === t), text, { what: 'the echo' });
        assert.equal(echoed, text);

        // 60 Hz out and back: within two seconds far more than a handful make the round trip.
        await page.waitFor(() => Number(document.getElementById('dg-received').textContent) >= 60, undefined, { what: '60 datagrams back' });
        const sent = await num(page, 'dg-sent');
        const received = await num(page, 'dg-received');
        assert.ok(sent >= received * 0.5 && sent > 0, `sent ${sent}, received ${received}`);
        const lost = await num(page, 'dg-lost');
        assert.ok(lost >= 0 && lost < received, `lost ${lost} of ${received}`);
        const row = await page.waitFor((n) => [...document.querySelectorAll('#cursor-table tr')].map((tr) => [...tr.cells].map((c) => c.textContent)).find((c) => c[0] === `${n} (you)` && /^[1-9]\d* Hz$/.test(c[3])), name, { what: 'own cursor row with a rate' });
        assert.ok(Number(row[1]) > 0, `own cursor row ${JSON.stringify(row)}`);

        const points = await page.waitFor(() => Number(document.getElementById('chart').dataset.points) >= 3 && Number(document.getElementById('chart').dataset.points), undefined, { what: 'three chart points' });
        assert.ok(points >= 3);
        assert.match(await page.text('#stat-rtt'), /^\d+\.\d\d ms$/);
        assert.match(await page.text('#stat-sent'), /^\d+(\.\d+)? (B|KiB|MiB)$/);
        assert.match(await page.text('#stat-received'), /^\d+(\.\d+)? (B|KiB|MiB)$/);
        const shot = await page.screenshot(path.join(OUTPUT_DIR, `${FLAVOUR}-${browser}.png`));
        assert.ok(statSync(shot).size > 10000, 'the screenshot has content');

        const mark = demo.mark();
        await page.click('#close');
        const status = await page.waitFor(() => document.getElementById('status').dataset.state === 'closed' && document.getElementById('status').textContent, undefined, { what: 'closed status' });
        assert.equal(status, 'closed by you: code 4000, reason "close button"');
        await demo.waitForLine(new RegExp(`closed\\s+${name} by the browser: code 4000, reason "close button"`), { since: mark });
        assert.equal(await page.evaluate(() => document.getElementById('reconnect').hidden), false);
      } finally {
        await page.close();
      }
    });
  }

  test('chat and cursors between a Chromium page on WebTransport and a Firefox page on WebSocket', T, async () => {
    const a = await openPage('chromium', pageUrl, { trustSpki: spki });
    const b = await openPage('firefox', `${pageUrl}?transport=websocket`, { trustSpki: spki });
    try {
      const nameA = await tabName(a);
      const nameB = await tabName(b);
      assert.equal(await transportOf(a), 'webtransport');
      assert.equal(await transportOf(b), 'qmux');
      assert.equal(await b.text('#transport'), 'over WebSocket (QMux)');
      await demo.waitForLine(new RegExp(`open\\s+${nameB} from .* over WebSocket \\(QMux\\)$`));
      await a.waitFor((n) => document.getElementById('chat-peers').textContent.includes(n), nameB, { what: `${nameB} in the room` });

      const hello = `hello from chromium ${Date.now()}`;
      await a.fill('#chat-input', hello);
      await a.click('#chat-send');
      const seen = await b.waitFor((t) => [...document.querySelectorAll('#chat-log li')].map((li) => li.textContent).find((s) => s.includes(t)), hello, { what: 'the message on the other page' });
      assert.ok(seen.startsWith(`${nameA}: ${hello}`), seen);

      const reply = `and hello from firefox ${Date.now()}`;
      await b.fill('#chat-input', reply);
      await b.click('#chat-send');
      const back = await a.waitFor((t) => [...document.querySelectorAll('#chat-log li')].map((li) => li.textContent).find((s) => s.includes(t)), reply, { what: 'the reply' });
      assert.ok(back.startsWith(`${nameB}: ${reply}`), back);
      await demo.waitForLine(new RegExp(`chat\\s+${nameB}: ${reply}`));

      // Relayed datagrams: each page counts the other's cursor.
      for (const [page, other] of [[a, nameB], [b, nameA]]) {
        await page.waitFor((n) => [...document.querySelectorAll('#cursor-table tr')].some((tr) => tr.cells[0].textContent === n && Number(tr.cells[1].textContent) >= 30), other, { what: `30 datagrams from ${other}` });
      }
      await a.screenshot(path.join(OUTPUT_DIR, `${FLAVOUR}-chat-chromium.png`));
      await b.screenshot(path.join(OUTPUT_DIR, `${FLAVOUR}-chat-firefox.png`));

      // Closing the tab ends the session; the server logs it and the room shrinks.
      const mark = demo.mark();
      await b.close({ runBeforeUnload: true });
      await demo.waitForLine(new RegExp(`closed\\s+${nameB} (by the browser|with the connection): code \\d+`), { since: mark });
      await a.waitFor((n) => !document.getElementById('chat-peers').textContent.includes(n), nameB, { what: `${nameB} to leave the room` });
    } finally {
      await a.close();
      await b.close();
    }
  });

  test('the transport control switches a Chromium page to WebSocket, where echo and statistics work', T, async () => {
    const page = await openPage('chromium', pageUrl, { trustSpki: spki });
    try {
      await tabName(page);
      assert.equal(await transportOf(page), 'webtransport');
      await page.select('#transport-choice', 'websocket');
      // The page reloads with ?transport=websocket and connects again.
      await page.waitFor(() => location.search === '?transport=websocket' && document.getElementById('transport').dataset.transport === 'qmux', undefined, { what: 'the page to reconnect over WebSocket' });
      const name = await tabName(page);
      await demo.waitForLine(new RegExp(`open\\s+${name} from .* over WebSocket \\(QMux\\)$`));
      const text = `echo over WebSocket ✓ ${Date.now()}`;
      await page.fill('#echo-input', text);
      await page.click('#echo-send');
      const echoed = await page.waitFor((t) => [...document.querySelectorAll('#echo-log .echoed')].map((e) => e.textContent).find((s) => s === t), text, { what: 'the echo' });
      assert.equal(echoed, text);
      // Datagrams over QMux are reliable: every cursor datagram comes back.
      await page.waitFor(() => Number(document.getElementById('dg-received').textContent) >= 60, undefined, { what: '60 datagrams back' });
      assert.equal(await num(page, 'dg-lost'), 0);
      await page.waitFor(() => Number(document.getElementById('chart').dataset.points) >= 3, undefined, { what: 'three chart points' });
      assert.match(await page.text('#stat-sent'), /^\d+(\.\d+)? (B|KiB|MiB)$/);
      await page.screenshot(path.join(OUTPUT_DIR, `${FLAVOUR}-websocket-chromium.png`));
      const mark = demo.mark();
      await page.click('#close');
      const status = await page.waitFor(() => document.getElementById('status').dataset.state === 'closed' && document.getElementById('status').textContent, undefined, { what: 'closed status' });
      assert.equal(status, 'closed by you: code 4000, reason "close button"');
      await demo.waitForLine(new RegExp(`closed\\s+${name} by the browser: code 4000, reason "close button"`), { since: mark });
    } finally {
      await page.close();
    }
  });

  test('chromium loads the page over HTTP/3 from the same port, then its session echoes', T, async () => {
    const port = new URL(pageUrl).port;
    const page = await openPage('chromium', pageUrl, { trustSpki: spki, chromiumArgs: [`--origin-to-force-quic-on=localhost:${port}`] });
    try {
      const name = await tabName(page);
      assert.equal(await page.evaluate(() => performance.getEntriesByType('navigation')[0].nextHopProtocol), 'h3');
      assert.equal(await transportOf(page), 'webtransport');
      await demo.waitForLine(new RegExp(`open\\s+${name} from https://localhost:${port} .* over WebTransport$`));
      const text = `echo after an HTTP/3 page load ${Date.now()}`;
      await page.fill('#echo-input', text);
      await page.click('#echo-send');
      const echoed = await page.waitFor((t) => [...document.querySelectorAll('#echo-log .echoed')].map((e) => e.textContent).find((s) => s === t), text, { what: 'the echo' });
      assert.equal(echoed, text);
    } finally {
      await page.close();
    }
  });

  test('Ctrl-C closes the sessions and stops the server with status 0', T, async () => {
    const page = await openPage('chromium', pageUrl, { trustSpki: spki });
    try {
      await tabName(page);
      const mark = demo.mark();
      demo.child.kill('SIGINT');
      const exit = await Promise.race([demo.exited, new Promise((r) => setTimeout(() => r('still running'), 10000))]);
      assert.deepEqual(exit, { code: 0, signal: null }, `stderr: ${demo.stderr()}`);
      await demo.waitForLine(/stopped/, { since: mark });
      const status = await page.waitFor(() => document.getElementById('status').dataset.state === 'closed' && document.getElementById('status').textContent, undefined, { what: 'the page to see the close' });
      assert.match(status, /^closed by the server/);
    } finally {
      await page.close();
    }
  });
});

// The README's command serves the Node demo; with FERROVIA_DEMO_CMD this file tests another server.
if (!process.env.FERROVIA_DEMO_CMD) test('scripts/demo.sh, the README\'s first command, starts the demo and stops on Ctrl-C', { timeout: 600000 }, async () => {
  // Builds the native module only when it is missing or stale, so this is quick after `npm ci`.
  const script = startProcess('bash', ['scripts/demo.sh', '--port', '0'], { label: 'demo.sh' });
  try {
    const { url, hash } = await started(script, 580000).catch(async (err) => {
      throw new Error(`${err.message}\nstderr: ${script.stderr()}`);
    });
    const config = await get(new URL('config.json', url));
    assert.equal(JSON.parse(config.body).certificateHash, hash);
    script.child.kill('SIGINT');
    assert.deepEqual(await script.exited, { code: 0, signal: null });
    assert.match(script.output(), /stopped/);
  } finally {
    await script.stop('SIGKILL');
  }
});
