// The quick start (docs/quickstart.md) as its reader runs it: the example process on one
// port, its own page in Chromium and Firefox, natively and through a port that passes TCP
// and blocks UDP (the connector falls back to QMux), chatting with each other; a wrong
// token refused with 401 and its header on both transports; a member sending more than
// the limit dropped while the rest keep talking; SIGTERM ending the process cleanly.
//
// The Node example by default; the Python suite runs this file with
// FERROVIA_QUICKSTART="<python> examples/python/quickstart.py".
//
//   node --test tests/node/quickstart.test.mjs

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createHash, X509Certificate } from 'node:crypto';
import net from 'node:net';
import path from 'node:path';
import tls from 'node:tls';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';

import { closeAll, openPage } from '../browser/harness.mjs';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const COMMAND = (process.env.FERROVIA_QUICKSTART ?? `${process.execPath} examples/node/quickstart.mjs`).split(' ');
const T = 90000;

let child;
let url;
let spki;
let exited;
let blockedUrl;
let proxy;
const pages = [];

/** Base64 SHA-256 of the public key of the certificate the TCP side presents. */
function serverSpki(port) {
  return new Promise((resolve, reject) => {
    const socket = tls.connect({ host: '127.0.0.1', port, servername: 'localhost', rejectUnauthorized: false, ALPNProtocols: ['http/1.1'] }, () => {
      const cert = new X509Certificate(socket.getPeerCertificate().raw);
      socket.destroy();
      resolve(createHash('sha256').update(cert.publicKey.export({ type: 'spki', format: 'der' })).digest('base64'));
    });
    socket.on('error', reject);
  });
}

before(async () => {
  child = spawn(COMMAND[0], COMMAND.slice(1), { cwd: ROOT, env: { ...process.env, PORT: '0' }, stdio: ['ignore', 'pipe', 'inherit'] });
  exited = new Promise((resolve) => child.on('exit', (code, signal) => resolve({ code, signal })));
  url = await new Promise((resolve, reject) => {
    let out = '';
    const timer = setTimeout(() => reject(new Error(`no "chat on" line within 20 s: ${out}`)), 20000);
    child.stdout.on('data', (d) => {
      out += d;
      const m = /chat on (https:\/\/localhost:\d+\/)/.exec(out);
      if (m) {
        clearTimeout(timer);
        resolve(m[1]);
      }
    });
    child.on('exit', (code) => reject(new Error(`the example exited (${code}) before listening: ${out}`)));
  });
  spki = await serverSpki(new URL(url).port);
  // TCP passed on to the example, UDP answered by nobody: a network that blocks UDP.
  proxy = net.createServer((client) => {
    const upstream = net.connect(Number(new URL(url).port), '127.0.0.1');
    client.pipe(upstream).pipe(client);
    client.on('error', () => upstream.destroy());
    upstream.on('error', () => client.destroy());
  });
  await new Promise((resolve) => proxy.listen(0, '::', resolve));
  blockedUrl = `https://localhost:${proxy.address().port}/`;
});

after(async () => {
  for (const p of pages) await p.close().catch(() => {});
  await closeAll();
  proxy?.close();
  if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
});

/** Opens the quick start's own page; resolves once it says which transport it got. */
async function member(browser, { udpBlocked = false } = {}) {
  const page = await openPage(browser, { trustSpki: spki });
  pages.push(page);
  await page.goto(udpBlocked ? blockedUrl : url);
  const transport = await page.evaluate(async () => {
    const deadline = Date.now() + 20000;
    while (Date.now() < deadline) {
      const m = /^connected over (\w+)/.exec(document.getElementById('log').textContent);
      if (m) return m[1];
      await new Promise((r) => setTimeout(r, 50));
    }
    throw new Error(`not connected: ${document.getElementById('log').textContent}`);
  });
  return { page, transport };
}

const say = (page, text) =>
  page.evaluate((text) => {
    const line = document.getElementById('line');
    line.value = text;
    line.dispatchEvent(new KeyboardEvent('keydown', { key: 'Enter' }));
  }, text);

/** Waits until the page's log shows every line of `lines`. */
const sees = (page, lines, ms = 15000) =>
  page.evaluate(async ({ lines, ms }) => {
    const deadline = Date.now() + ms;
    while (Date.now() < deadline) {
      const log = document.getElementById('log').textContent.split('\n');
      if (lines.every((l) => log.includes(l))) return true;
      await new Promise((r) => setTimeout(r, 50));
    }
    throw new Error(`log lacks ${JSON.stringify(lines)}: ${document.getElementById('log').textContent}`);
  }, { lines, ms });

describe(`quick start: ${path.basename(COMMAND.at(-1))}`, () => {
  let room;

  test('Chromium and Firefox, natively and with UDP blocked (QMux), chat with each other', { timeout: T }, async () => {
    room = [
      await member('chromium'),
      await member('chromium', { udpBlocked: true }),
      await member('firefox'),
      await member('firefox', { udpBlocked: true }),
    ];
    assert.deepEqual(room.map((m) => m.transport), ['webtransport', 'qmux', 'webtransport', 'qmux']);
    // A member is in the room once the server has taken its stream, a moment after the
    // page has it: greet until everyone hears the same greeting.
    for (let k = 0; ; k++) {
      assert.ok(k < 40, 'the room never formed');
      await say(room[0].page, `hello ${k}`);
      const heard = await Promise.all(room.map((m) => sees(m.page, [`hello ${k}`], 500).then(() => true, () => false)));
      if (heard.every(Boolean)) break;
    }
    const lines = room.map((_, i) => `line ${i} from member ${i} ✓`);
    for (const [i, m] of room.entries()) await say(m.page, lines[i]);
    for (const m of room) await sees(m.page, lines);
  });

  test('a wrong token gets 401 and its header on both transports; no fallback after it', { timeout: T }, async () => {
    const page = room[0].page;
    const refusals = await page.evaluate(async () => {
      const { connect, serverCertificateHashes } = await import('/ferrovia/client.js');
      const out = [];
      for (const transports of [undefined, ['qmux']]) {
        try {
          await connect(location.origin + '/chat?token=wrong', { serverCertificateHashes, transports });
          out.push({ connected: true });
        } catch (e) {
          out.push({ status: e.status, authenticate: e.headers?.['www-authenticate'] ?? null });
        }
      }
      return out;
    });
    assert.deepEqual(refusals[0].status, 401, JSON.stringify(refusals));
    assert.deepEqual(refusals[1], { status: 401, authenticate: 'Bearer' });
  });

  test('a member sending more than 4096 bytes is dropped; the others keep talking', { timeout: T }, async () => {
    const [a, b, c] = room;
    await say(b.page, 'x'.repeat(5000));
    await say(a.page, 'still here ✓');
    await sees(c.page, ['still here ✓']);
    const log = await c.page.evaluate(() => document.getElementById('log').textContent);
    assert.ok(!log.includes('x'.repeat(5000)), 'the long message reached nobody');
  });

  test('SIGTERM ends the process cleanly', { timeout: T }, async () => {
    child.kill('SIGTERM');
    const end = await Promise.race([exited, new Promise((r) => setTimeout(() => r('still running after 10 s'), 10000))]);
    assert.deepEqual(end, { code: 0, signal: null });
  });
});
