// Helpers for the demo, cert and example tests: headless browsers on arbitrary pages (the
// demo serves its own page, so the shared harness's fixed test page does not fit), and
// child processes whose output a test waits on.
//
// Browsers are launched the same way as in tests/browser/harness.mjs: Debian chromium
// through playwright-core, firefox-esr through puppeteer-core (WebDriver BiDi).

import { spawn } from 'node:child_process';
import { existsSync, mkdirSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const require = createRequire(import.meta.url);

export const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
export const OUTPUT_DIR = path.join(REPO_ROOT, 'test-output', 'demo');
const DEBUG = !!process.env.FERROVIA_TEST_DEBUG;

const CHROMIUM_PATH = process.env.FERROVIA_CHROMIUM || '/usr/bin/chromium';
const FIREFOX_PATH = process.env.FERROVIA_FIREFOX || '/usr/bin/firefox-esr';
const CHROMIUM_ARGS = ['--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'];

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// ---------------------------------------------------------------------------------------
// Browsers

const launched = new Map();

/**
 * A launched browser; with `trustSpki` (base64 SHA-256 of a certificate's public key) it
 * also trusts that certificate for TLS over TCP (a page served over TCP, the WebSocket fallback), as a user
 * who accepted the certificate once would: Chromium by its SPKI flag, Firefox by accepting
 * insecure certificates.
 */
function browser(name, trustSpki, chromiumArgs = []) {
  const key = `${name}|${trustSpki ?? ''}|${chromiumArgs.join(' ')}`;
  if (!launched.has(key)) {
    const p = (async () => {
      if (name === 'chromium') {
        if (!existsSync(CHROMIUM_PATH)) throw new Error(`chromium not found at ${CHROMIUM_PATH}`);
        const { chromium } = require('playwright-core');
        const args = [...CHROMIUM_ARGS, ...(trustSpki ? [`--ignore-certificate-errors-spki-list=${trustSpki}`] : []), ...chromiumArgs];
        return { kind: 'playwright', browser: await chromium.launch({ executablePath: CHROMIUM_PATH, headless: true, args }) };
      }
      if (name === 'firefox') {
        if (!existsSync(FIREFOX_PATH)) throw new Error(`firefox not found at ${FIREFOX_PATH}`);
        const puppeteer = require('puppeteer-core');
        return { kind: 'puppeteer', browser: await puppeteer.launch({ browser: 'firefox', executablePath: FIREFOX_PATH, headless: true, acceptInsecureCerts: !!trustSpki }) };
      }
      throw new Error(`unknown browser ${name}`);
    })();
    p.catch(() => launched.delete(key));
    launched.set(key, p);
  }
  return launched.get(key);
}

/**
 * Opens `url` in a fresh page of `name` ('chromium' or 'firefox'). The returned page drives
 * it like a user would: fill() and click() go through the browser's input events.
 */
export async function openPage(name, url, { trustSpki, chromiumArgs } = {}) {
  const { kind, browser: b } = await browser(name, trustSpki, chromiumArgs);
  const context = kind === 'playwright' ? await b.newContext({ viewport: { width: 1200, height: 860 } }) : null;
  const page = context ? await context.newPage() : await b.newPage();
  if (!context) await page.setViewport({ width: 1200, height: 860 });
  const consoleLines = [];
  page.on('console', (m) => {
    const line = `${typeof m.type === 'function' ? m.type() : m.type}: ${m.text()}`;
    consoleLines.push(line);
    if (DEBUG) console.error(`[${name}] ${line}`);
  });
  await page.goto(url);
  const api = {
    name,
    console: consoleLines,
    evaluate: (fn, arg) => (arg === undefined ? page.evaluate(fn) : page.evaluate(fn, arg)),
    text: (selector) => page.evaluate((s) => document.querySelector(s)?.textContent ?? null, selector),
    click: (selector) => page.click(selector),
    /** Picks an option of a <select> as a user would (its change event fires). */
    select: (selector, value) => (context ? page.selectOption(selector, value) : page.select(selector, value)),
    async fill(selector, text) {
      if (context) return page.fill(selector, text);
      await page.$eval(selector, (el) => {
        el.value = '';
      });
      return page.type(selector, text);
    },
    /**
     * Polls fn(arg) in the page until it returns a truthy value; returns that value. A poll
     * that a navigation (the page reloading itself) cuts short counts as not yet.
     */
    async waitFor(fn, arg, { timeout = 15000, what = String(fn) } = {}) {
      const deadline = Date.now() + timeout;
      let last;
      for (;;) {
        try {
          last = await api.evaluate(fn, arg);
        } catch (err) {
          if (!/context was destroyed|navigat/i.test(String(err?.message))) throw err;
          last = undefined;
        }
        if (last) return last;
        if (Date.now() > deadline) throw new Error(`${name}: timed out after ${timeout} ms waiting for ${what}; last value ${JSON.stringify(last)}`);
        await sleep(100);
      }
    },
    async screenshot(file) {
      mkdirSync(path.dirname(file), { recursive: true });
      await page.screenshot({ path: file, fullPage: true });
      return file;
    },
    async close({ runBeforeUnload = false } = {}) {
      if (context) {
        await page.close({ runBeforeUnload }).catch(() => {});
        await context.close().catch(() => {});
      } else await page.close({ runBeforeUnload }).catch(() => {});
    },
  };
  return api;
}

export async function closeBrowsers() {
  const all = [...launched.values()];
  launched.clear();
  await Promise.all(all.map(async (p) => (await p.catch(() => null))?.browser.close().catch(() => {})));
}

// ---------------------------------------------------------------------------------------
// Processes

const live = new Set();
process.on('exit', () => {
  for (const child of live) child.kill('SIGKILL');
});

/**
 * Starts `command args` in the repository root. The result collects stdout lines and
 * stderr; waitForLine(regex) resolves with the first matching line's match.
 */
export function startProcess(command, args, { env, cwd = REPO_ROOT, label = path.basename(command) } = {}) {
  const child = spawn(command, args, { cwd, env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  live.add(child);
  const lines = [];
  let stderr = '';
  let exit = null;
  const waiters = new Set();
  const notify = () => waiters.forEach((w) => w());
  let partial = '';
  child.stdout.setEncoding('utf8');
  child.stdout.on('data', (d) => {
    partial += d;
    const parts = partial.split('\n');
    partial = parts.pop();
    for (const line of parts) {
      lines.push(line);
      if (DEBUG) console.error(`[${label}] ${line}`);
    }
    notify();
  });
  child.stderr.setEncoding('utf8');
  child.stderr.on('data', (d) => {
    stderr += d;
    if (DEBUG) process.stderr.write(`[${label} stderr] ${d}`);
  });
  const exited = new Promise((resolve) => {
    child.on('exit', (code, signal) => {
      live.delete(child);
      exit = { code, signal };
      notify();
      resolve(exit);
    });
  });
  const proc = {
    child,
    lines,
    exited,
    stderr: () => stderr,
    output: () => lines.join('\n'),
    mark: () => lines.length,
    /** The first line from index `since` on that matches `regex`: its match array. */
    waitForLine(regex, { timeout = 15000, since = 0 } = {}) {
      return new Promise((resolve, reject) => {
        const check = () => {
          for (let i = since; i < lines.length; i++) {
            const m = lines[i].match(regex);
            if (m) return finish(() => resolve(m));
          }
          if (exit) finish(() => reject(new Error(`${label} exited (${JSON.stringify(exit)}) before printing ${regex}; stdout:\n${proc.output()}\nstderr:\n${stderr}`)));
        };
        const timer = setTimeout(() => finish(() => reject(new Error(`${label}: no line matching ${regex} within ${timeout} ms; stdout:\n${proc.output()}\nstderr:\n${stderr}`))), timeout);
        const finish = (settle) => {
          clearTimeout(timer);
          waiters.delete(check);
          settle();
        };
        waiters.add(check);
        check();
      });
    },
    async stop(signal = 'SIGTERM', timeout = 5000) {
      if (exit) return exit;
      child.kill(signal);
      const result = await Promise.race([exited, sleep(timeout).then(() => null)]);
      if (result) return result;
      child.kill('SIGKILL');
      return exited;
    },
  };
  return proc;
}

/** Runs a command to completion: { code, stdout, stderr }. */
export function run(command, args, { env, cwd = REPO_ROOT, timeout = 60000 } = {}) {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { cwd, env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`${command} ${args.join(' ')} did not finish within ${timeout} ms`));
    }, timeout);
    child.on('error', reject);
    child.on('exit', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

// Page side of the chat example (passed to page.evaluate; runs in the browser, where the
// harness defines `wt`): joins a room and collects every line into `window.chat.lines`, and
// says one line on a new unidirectional stream.
export const joinChat = async ({ url, hash }) => {
  const t = await wt.connect(url, hash);
  const chat = { t, lines: [] };
  window.chat = chat;
  (async () => {
    const streams = t.incomingUnidirectionalStreams.getReader();
    for (;;) {
      const { done, value } = await streams.read();
      if (done) return;
      wt.readAll(value).then((bytes) => chat.lines.push(wt.decode(bytes)));
    }
  })().catch(() => {});
};

export const say = async (text) => {
  const writer = (await window.chat.t.createUnidirectionalStream()).getWriter();
  await writer.write(wt.encode(text));
  await writer.close();
};
