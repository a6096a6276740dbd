// Shared helpers for the headless-browser WebTransport tests (see DESIGN.md §5).
//
// - openPage(name): a fresh page in headless Chromium (playwright-core) or Firefox
//   (puppeteer-core, WebDriver BiDi), loaded from http://localhost:<port>/ so that it is a
//   secure context. The page defines `window.wt`, a small set of helpers that
//   page-side test code can use (see PAGE_HELPERS below). The page server also serves the
//   browser connector at /client.js, and the npm packages in PAGE_PACKAGES (@moq/qmux and
//   its dependency) under /node_modules/, which pages import by their bare names through
//   the page's import map.
// - startEchoServer(): runs the Rust example server (`examples/rust/echo.rs`), reads its
//   JSON-lines stdout and lets a test await an event.
// - closeAll(): closes the browsers and the page server.
//
// Page-side code is passed to page.evaluate() and therefore cannot close over Node
// variables; pass everything it needs as the single `arg` (JSON-serialisable). Return plain
// JSON data without repeated references to one object: puppeteer's WebDriver BiDi
// serialisation (Firefox) turns the second reference into undefined.

import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import http from 'node:http';
import { createRequire } from 'node:module';
import path from 'node:path';
import readline from 'node:readline';
import { fileURLToPath } from 'node:url';

const require = createRequire(import.meta.url);

export const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
// `FERROVIA_BROWSERS=chromium` narrows the suites under tests/browser/ to one browser (the
// quick loop does). A name it does not know is an error, not an empty (passing) run.
export const BROWSERS = (process.env.FERROVIA_BROWSERS || 'chromium,firefox').split(',').map((b) => b.trim());
for (const b of BROWSERS) {
  if (b !== 'chromium' && b !== 'firefox') {
    throw new Error(`FERROVIA_BROWSERS: unknown browser ${JSON.stringify(b)} (chromium, firefox)`);
  }
}

const CHROMIUM_PATH = process.env.FERROVIA_CHROMIUM || '/usr/bin/chromium';
const FIREFOX_PATH = process.env.FERROVIA_FIREFOX || '/usr/bin/firefox-esr';
const CHROMIUM_ARGS = [
  '--no-sandbox',
  '--disable-gpu',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  // Never '--disable-quic': WebTransport needs QUIC.
];
const DEBUG = !!process.env.FERROVIA_TEST_DEBUG;

// ---------------------------------------------------------------------------------------
// The test page

// Runs inside the page. Kept dependency-free and ES2020 so both engines take it as is.
const PAGE_HELPERS = String.raw`
'use strict';
(() => {
  const transports = new Set();
  const wt = {
    encode: (s) => new TextEncoder().encode(s),
    decode: (b) => new TextDecoder().decode(b),
    hexToBytes(hex) {
      const out = new Uint8Array(hex.length / 2);
      for (let i = 0; i < out.length; i++) out[i] = parseInt(hex.substr(i * 2, 2), 16);
      return out;
    },
    bytesToHex(bytes) {
      return Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
    },
    b64ToBytes(b64) {
      const bin = atob(b64);
      const out = new Uint8Array(bin.length);
      for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
      return out;
    },
    async sha256Hex(bytes) {
      return wt.bytesToHex(new Uint8Array(await crypto.subtle.digest('SHA-256', bytes)));
    },
    randomBytes(n) {
      const out = new Uint8Array(n);
      for (let i = 0; i < n; i += 65536) crypto.getRandomValues(out.subarray(i, Math.min(n, i + 65536)));
      return out;
    },
    sleep: (ms) => new Promise((r) => setTimeout(r, ms)),
    // Describe any thrown value, keeping the WebTransportError fields.
    errorInfo(e) {
      if (e === undefined || e === null) return { name: String(e), message: String(e) };
      if (typeof e !== 'object') return { name: typeof e, message: String(e) };
      return {
        name: e.name,
        constructor: e.constructor && e.constructor.name,
        message: e.message,
        source: e.source,
        streamErrorCode: e.streamErrorCode === undefined ? undefined : e.streamErrorCode,
        text: String(e),
        timedOut: e.timedOut === true || undefined,
      };
    },
    describe(e) {
      const i = wt.errorInfo(e);
      let s = i.name + ': ' + i.message;
      if (i.source !== undefined) s += ' (source=' + i.source + ', streamErrorCode=' + i.streamErrorCode + ')';
      return s;
    },
    // Resolves/rejects like p, or rejects with "<label>: timed out after <ms> ms".
    timeout(p, ms, label) {
      let t;
      return Promise.race([
        Promise.resolve(p).finally(() => clearTimeout(t)),
        new Promise((_, reject) => {
          t = setTimeout(() => {
            const e = new Error(label + ': timed out after ' + ms + ' ms');
            e.timedOut = true;
            reject(e);
          }, ms);
        }),
      ]);
    },
    // Settles p within ms and reports the outcome instead of throwing.
    async outcome(p, ms, label) {
      try {
        return { ok: true, value: await wt.timeout(p, ms, label) };
      } catch (e) {
        return { ok: false, error: wt.errorInfo(e) };
      }
    },
    options(hashHex) {
      return { serverCertificateHashes: [{ algorithm: 'sha-256', value: wt.hexToBytes(hashHex) }] };
    },
    // new WebTransport(url) without awaiting ready; closed/ready rejections are observed
    // so the console stays clean.
    create(url, hashHex, extra) {
      const t = new WebTransport(url, Object.assign(wt.options(hashHex), extra || {}));
      transports.add(t);
      t.ready.catch(() => {});
      t.closed.catch(() => {}).finally(() => transports.delete(t));
      return t;
    },
    // new WebTransport(url) and await ready; throws a descriptive Error if ready rejects.
    async connect(url, hashHex, extra, ms) {
      const t = wt.create(url, hashHex, extra);
      try {
        await wt.timeout(t.ready, ms || 10000, 'ready of ' + url);
      } catch (e) {
        throw new Error('WebTransport ' + url + ' ready rejected: ' + wt.describe(e));
      }
      return t;
    },
    // Read a ReadableStream to its end; returns the concatenated bytes.
    async readAll(readable, ms, label) {
      const reader = readable.getReader();
      const chunks = [];
      let total = 0;
      const deadline = Date.now() + (ms || 15000);
      for (;;) {
        const left = deadline - Date.now();
        let r;
        try {
          r = await wt.timeout(reader.read(), Math.max(left, 1), label || 'readAll');
        } catch (e) {
          const err = new Error((label || 'readAll') + ' after ' + total + ' bytes: ' + wt.describe(e));
          err.cause = e;
          throw err;
        }
        if (r.done) break;
        chunks.push(r.value);
        total += r.value.byteLength;
      }
      const out = new Uint8Array(total);
      let off = 0;
      for (const c of chunks) { out.set(c, off); off += c.byteLength; }
      return out;
    },
    // Write bytes in chunks, then close (FIN) unless close === false.
    async writeAll(writable, bytes, close, chunkSize) {
      const writer = writable.getWriter();
      const size = chunkSize || 65536;
      try {
        for (let i = 0; i < bytes.byteLength; i += size) {
          await writer.write(bytes.slice(i, Math.min(bytes.byteLength, i + size)));
        }
        if (close !== false) await writer.close();
        else writer.releaseLock();
      } catch (e) {
        throw new Error('writeAll: ' + wt.describe(e));
      }
    },
    // A WebTransportError carrying streamErrorCode, for writer.abort()/reader.cancel().
    // Chromium 156 and Firefox 153 take one WebTransportErrorInit dictionary
    // ({ message, streamErrorCode }); the current spec takes (message, options).
    streamError(code, message) {
      const msg = message || 'reset by test';
      let e;
      try { e = new WebTransportError({ message: msg, streamErrorCode: code }); } catch (err) { e = null; }
      if (!e || e.streamErrorCode !== code) e = new WebTransportError(msg, { streamErrorCode: code });
      return e;
    },
    closeAll() {
      for (const t of transports) { try { t.close(); } catch (e) {} }
      transports.clear();
    },
  };
  window.wt = wt;
})();
`;

// Packages from node_modules that pages may import by their bare names (an import map
// sends each to its ESM entry point, served under /node_modules/ by the page server):
// @moq/qmux, the published QMux client, and what it imports.
const PAGE_PACKAGES = ['@moq/qmux', '@moq/web-socket-stream'];
const NODE_MODULES = path.join(REPO_ROOT, 'node_modules');

function pageImportMap() {
  const imports = {};
  for (const name of PAGE_PACKAGES) {
    let entry = 'index.js';
    try {
      const pkg = JSON.parse(readFileSync(path.join(NODE_MODULES, name, 'package.json'), 'utf8'));
      const dot = pkg.exports?.['.'];
      entry = (typeof dot === 'string' ? dot : dot?.import ?? dot?.default) ?? pkg.module ?? pkg.main ?? entry;
    } catch {
      /* not installed: the import fails in the page and the test says so */
    }
    imports[name] = `/node_modules/${name}/${entry.replace(/^\.\//, '')}`;
  }
  return JSON.stringify({ imports });
}

/** The file under node_modules for a /node_modules/<package>/<file>.js URL of a PAGE_PACKAGES package, or null. */
function pagePackageFile(url) {
  if (!url.startsWith('/node_modules/')) return null;
  let rel;
  try {
    rel = decodeURIComponent(url.split('?')[0]).slice('/node_modules/'.length);
  } catch {
    return null;
  }
  const pkg = PAGE_PACKAGES.find((name) => rel.startsWith(`${name}/`));
  if (!pkg || !rel.endsWith('.js')) return null;
  const root = path.join(NODE_MODULES, pkg);
  const file = path.resolve(NODE_MODULES, rel);
  return file.startsWith(root + path.sep) && existsSync(file) ? file : null;
}

const PAGE_HTML = `<!doctype html>
<html><head><meta charset="utf-8"><title>ferrovia browser tests</title>
<script type="importmap">${pageImportMap()}</script>
<script>${PAGE_HELPERS}</script></head>
<body>ferrovia browser tests</body></html>
`;

const pageServers = new Map();

/**
 * Starts (once per address) the plain-HTTP page server; resolves to its origin as seen
 * under `host` (default localhost), e.g. http://localhost:1234. localhost and 127.0.0.1
 * share a server on 127.0.0.1; another loopback address (127.0.0.2, say: a host the test
 * certificates do not name) gets a server of its own. Every loopback origin is
 * potentially trustworthy, so the page is a secure context.
 */
export function pageOrigin(host = 'localhost') {
  const bind = host === 'localhost' ? '127.0.0.1' : host;
  if (!pageServers.has(bind)) {
    pageServers.set(bind, new Promise((resolve, reject) => {
      const server = http.createServer((req, res) => {
        if (req.url === '/' || req.url.startsWith('/?')) {
          res.writeHead(200, { 'content-type': 'text/html; charset=utf-8', 'cache-control': 'no-store' });
          res.end(PAGE_HTML);
        } else if (req.url === '/client.js') {
          // The browser connector (bindings-node/lib/client.mjs), for pages to import.
          res.writeHead(200, { 'content-type': 'text/javascript; charset=utf-8', 'cache-control': 'no-store' });
          res.end(readFileSync(path.join(REPO_ROOT, 'bindings-node', 'lib', 'client.mjs')));
        } else if (pagePackageFile(req.url)) {
          res.writeHead(200, { 'content-type': 'text/javascript; charset=utf-8', 'cache-control': 'no-store' });
          res.end(readFileSync(pagePackageFile(req.url)));
        } else {
          res.writeHead(404, { 'content-type': 'text/plain' });
          res.end('not found');
        }
      });
      server.on('error', reject);
      server.listen(0, bind, () => resolve({ server, port: server.address().port }));
    }));
  }
  return pageServers.get(bind).then((s) => `http://${host}:${s.port}`);
}

// ---------------------------------------------------------------------------------------
// Browsers

const browsers = new Map(); // name -> Promise<{ kind, browser }>

/**
 * Launches a browser. With `trustSpki` (the base64 SHA-256 of a certificate's public key)
 * the browser also trusts that certificate for TLS over TCP (WSS, HTTPS), which
 * serverCertificateHashes does not cover: Chromium by its SPKI flag, Firefox by accepting
 * insecure certificates.
 */
async function launch(name, trustSpki, extraArgs = [], firefoxPrefs = {}) {
  if (name === 'chromium') {
    if (!existsSync(CHROMIUM_PATH)) throw new Error(`chromium not found at ${CHROMIUM_PATH}`);
    const { chromium } = require('playwright-core');
    const args = trustSpki ? [...CHROMIUM_ARGS, `--ignore-certificate-errors-spki-list=${trustSpki}`] : [...CHROMIUM_ARGS];
    args.push(...extraArgs);
    const browser = await chromium.launch({ executablePath: CHROMIUM_PATH, headless: true, args });
    return { kind: 'playwright', browser };
  }
  if (name === 'firefox') {
    if (!existsSync(FIREFOX_PATH)) throw new Error(`firefox not found at ${FIREFOX_PATH}`);
    const puppeteer = require('puppeteer-core');
    const browser = await puppeteer.launch({
      browser: 'firefox',
      executablePath: FIREFOX_PATH,
      headless: true,
      acceptInsecureCerts: !!trustSpki,
      extraPrefsFirefox: firefoxPrefs,
    });
    return { kind: 'puppeteer', browser };
  }
  throw new Error(`unknown browser ${name}`);
}

function getBrowser(name, trustSpki, chromiumArgs, firefoxPrefs) {
  const key = `${name}|${trustSpki || ''}|${(chromiumArgs || []).join(' ')}|${JSON.stringify(firefoxPrefs || {})}`;
  if (!browsers.has(key)) {
    const p = launch(name, trustSpki, chromiumArgs, firefoxPrefs);
    p.catch(() => browsers.delete(key)); // let a later call retry and report again
    browsers.set(key, p);
  }
  return browsers.get(key);
}

/**
 * Opens a fresh page (own browser context in Chromium) at the page server's origin
 * (http://localhost:<port>/, or http://<host>:<port>/); `trustSpki` picks a browser that
 * trusts that certificate for TLS over TCP too (see `launch`); `chromiumArgs` adds
 * command-line flags to Chromium (a browser of its own; the connector tests use
 * --disable-quic to stand for a network that blocks UDP); `firefoxPrefs` sets Firefox
 * preferences (a browser of its own). Returns { browser, origin, evaluate(fn, arg),
 * goto(url), close() }; `goto` leaves the page server for another page.
 */
export async function openPage(name, { host = 'localhost', trustSpki, chromiumArgs, firefoxPrefs } = {}) {
  const origin = await pageOrigin(host);
  const { kind, browser } = await getBrowser(name, trustSpki, chromiumArgs, firefoxPrefs);
  const url = `${origin}/`;
  if (kind === 'playwright') {
    const context = await browser.newContext();
    const page = await context.newPage();
    if (DEBUG) page.on('console', (m) => console.error(`[${name} console] ${m.type()}: ${m.text()}`));
    await page.goto(url);
    return {
      browser: name,
      origin,
      evaluate: (fn, arg) => page.evaluate(fn, arg),
      goto: (url) => page.goto(url),
      close: async () => {
        await page.evaluate(() => window.wt && window.wt.closeAll()).catch(() => {});
        await context.close().catch(() => {});
      },
    };
  }
  const page = await browser.newPage();
  if (DEBUG) page.on('console', (m) => console.error(`[${name} console] ${m.type()}: ${m.text()}`));
  await page.goto(url);
  return {
    browser: name,
    origin,
    evaluate: (fn, arg) => (arg === undefined ? page.evaluate(fn) : page.evaluate(fn, arg)),
    goto: (url) => page.goto(url),
    close: async () => {
      await page.evaluate(() => window.wt && window.wt.closeAll()).catch(() => {});
      await page.close().catch(() => {});
    },
  };
}

/** Runs body(page) with a fresh page and always closes the page afterwards. */
export async function withPage(name, body, options) {
  const page = await openPage(name, options);
  try {
    return await body(page);
  } finally {
    await page.close();
  }
}

/** Closes every launched browser and the page server. */
export async function closeAll() {
  const all = [...browsers.values()];
  browsers.clear();
  await Promise.all(
    all.map(async (p) => {
      try {
        const { browser } = await p;
        await withTimeout(browser.close(), 15000, 'browser.close');
      } catch {
        /* launch failed or close hung; nothing more to do */
      }
    }),
  );
  const servers = [...pageServers.values()];
  pageServers.clear();
  for (const p of servers) {
    const { server } = await p.catch(() => ({}));
    if (server) {
      server.closeAllConnections?.();
      await new Promise((r) => server.close(r));
    }
  }
}

// ---------------------------------------------------------------------------------------
// The Rust echo server

export const ECHO_BIN = process.env.FERROVIA_ECHO_BIN || path.join(REPO_ROOT, 'target', 'debug', 'examples', 'echo');
/** Arguments for the echo server; FERROVIA_ECHO_ARGS (space-separated) overrides `--port 0`. */
export const ECHO_ARGS = process.env.FERROVIA_ECHO_ARGS ? process.env.FERROVIA_ECHO_ARGS.trim().split(/\s+/) : ['--port', '0'];

const liveServers = new Set();
process.on('exit', () => {
  for (const child of liveServers) {
    try { child.kill('SIGKILL'); } catch { /* already gone */ }
  }
});

/**
 * Starts the echo example server with `--port 0` and waits for its `listening` event.
 * Resolves to {
 *   port, certificateHash (hex), spki, url(path) -> 'https://localhost:<port><path>',
 *   events (all parsed stdout lines so far), mark() -> index,
 *   waitForEvent(pred, { timeout, since }) -> event, eventsSince(mark),
 *   stderr() -> captured stderr text, stop()
 * }.
 */
export async function startEchoServer({ bin = ECHO_BIN, args = ECHO_ARGS, startTimeout = 20000 } = {}) {
  if (!existsSync(bin)) {
    throw new Error(`echo server binary not found at ${bin}; build it with \`cargo build -p ferrovia --example echo\` or set FERROVIA_ECHO_BIN`);
  }
  const child = spawn(bin, args, { stdio: ['ignore', 'pipe', 'pipe'], env: process.env });
  liveServers.add(child);
  const events = [];
  const waiters = new Set();
  let stderrText = '';
  let exited = null;

  child.stderr.setEncoding('utf8');
  child.stderr.on('data', (d) => {
    stderrText += d;
    if (stderrText.length > 200000) stderrText = stderrText.slice(-100000);
    if (DEBUG) process.stderr.write(`[echo stderr] ${d}`);
  });

  const notify = () => {
    for (const w of waiters) w.check();
  };
  readline.createInterface({ input: child.stdout }).on('line', (line) => {
    if (!line.trim()) return;
    let ev;
    try {
      ev = JSON.parse(line);
    } catch {
      ev = { event: 'non-json', line };
    }
    ev.receivedAt = Date.now();
    events.push(ev);
    if (DEBUG) console.error(`[echo event] ${line}`);
    notify();
  });
  child.on('exit', (code, signal) => {
    exited = { code, signal };
    liveServers.delete(child);
    notify();
  });
  child.on('error', (err) => {
    exited = { error: err };
    liveServers.delete(child);
    notify();
  });

  function tail(text, n = 2000) {
    return text.length > n ? '…' + text.slice(-n) : text;
  }

  function waitForEvent(pred, { timeout = 10000, since = 0, description = String(pred) } = {}) {
    return new Promise((resolve, reject) => {
      const w = {
        check() {
          for (let i = since; i < events.length; i++) {
            if (pred(events[i])) {
              done();
              resolve(events[i]);
              return;
            }
          }
          if (exited) {
            done();
            reject(new Error(`echo server exited (${JSON.stringify(exited)}) before an event matching ${description}; stderr: ${tail(stderrText)}`));
          }
        },
      };
      const timer = setTimeout(() => {
        done();
        const seen = events.slice(since).map((e) => JSON.stringify(stripTime(e)));
        reject(new Error(`no server event matching ${description} within ${timeout} ms; events seen: [${seen.join(', ')}]`));
      }, timeout);
      function done() {
        clearTimeout(timer);
        waiters.delete(w);
      }
      waiters.add(w);
      w.check();
    });
  }

  let listening;
  try {
    listening = await waitForEvent((e) => e.event === 'listening', { timeout: startTimeout, description: '"listening"' });
  } catch (e) {
    child.kill('SIGKILL');
    throw e;
  }
  for (const key of ['port', 'certificateHash']) {
    if (listening[key] === undefined) {
      child.kill('SIGKILL');
      throw new Error(`listening event lacks "${key}": ${JSON.stringify(listening)}`);
    }
  }

  return {
    port: listening.port,
    certificateHash: String(listening.certificateHash).toLowerCase(),
    spki: listening.spki,
    listening,
    events,
    url: (p = '/', host = 'localhost') => `https://${host.includes(':') ? `[${host}]` : host}:${listening.port}${p}`,
    mark: () => events.length,
    eventsSince: (m) => events.slice(m),
    waitForEvent,
    stderr: () => stderrText,
    pid: child.pid,
    async stop() {
      if (exited) return exited;
      const gone = new Promise((r) => child.once('exit', (code, signal) => r({ code, signal })));
      child.kill('SIGTERM');
      const result = await Promise.race([gone, sleep(5000).then(() => null)]);
      if (result) return result;
      child.kill('SIGKILL');
      return gone;
    },
  };
}

function stripTime(e) {
  const { receivedAt, ...rest } = e;
  return rest;
}

// ---------------------------------------------------------------------------------------
// Small utilities

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

export function withTimeout(p, ms, label) {
  let t;
  return Promise.race([
    Promise.resolve(p).finally(() => clearTimeout(t)),
    new Promise((_, reject) => {
      t = setTimeout(() => reject(new Error(`${label}: timed out after ${ms} ms`)), ms);
    }),
  ]);
}

export const sha256Hex = (buf) => createHash('sha256').update(buf).digest('hex');

let tokenCounter = 0;
/** A unique token to tag a test's request URL (e.g. `/echo?t=<token>`). */
export function token(prefix = 't') {
  tokenCounter += 1;
  return `${prefix}${process.pid.toString(36)}${tokenCounter}${Math.random().toString(36).slice(2, 7)}`;
}
