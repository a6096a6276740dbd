// The page, the API and WebTransport on one server (examples/rust/site.rs): headless
// Chromium and Firefox load the page from Ferrovia's HTTP handler (HTTP/2 on the TCP side;
// Chromium also over HTTP/3, forced with --origin-to-force-quic-on), the page fetches the
// JSON API from the same origin, then opens a WebTransport session to that origin and
// echoes a message on a stream.

import assert from 'node:assert/strict';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';

import { startEchoServer } from '../browser/harness.mjs';
import { closeBrowsers, openPage, REPO_ROOT } from './support.mjs';

const T = { timeout: 60000 };
const SITE = path.join(process.env.FERROVIA_RUST_EXAMPLES || path.join(REPO_ROOT, 'target', 'debug', 'examples'), 'site');

/** What the page shows once done, and the protocol its own document came over. */
const shown = () => {
  const version = document.getElementById('version').textContent;
  const echo = document.getElementById('echo').textContent;
  if (version === '?' || echo === '…') return null;
  return { version, echo, navigation: performance.getEntriesByType('navigation')[0]?.nextHopProtocol };
};

describe('the site example: page, API and WebTransport from one port', () => {
  let site;
  before(async () => {
    site = await startEchoServer({ bin: SITE, args: ['--port', '0'] });
  });
  after(async () => {
    await closeBrowsers();
    await site?.stop();
  });

  test('chromium over HTTP/2: the page, its API call and its session', T, async () => {
    const page = await openPage('chromium', site.url('/'), { trustSpki: site.spki });
    try {
      const result = await page.waitFor(shown, undefined, { what: 'the page to finish' });
      assert.deepEqual(result, { version: 'HTTP/2', echo: 'hello over WebTransport', navigation: 'h2' });
    } finally {
      await page.close();
    }
  });

  test('chromium over HTTP/3: the same page from the handler over QUIC', T, async () => {
    const page = await openPage('chromium', site.url('/'), {
      trustSpki: site.spki,
      chromiumArgs: [`--origin-to-force-quic-on=localhost:${site.port}`],
    });
    try {
      const result = await page.waitFor(shown, undefined, { what: 'the page to finish' });
      assert.deepEqual(result, { version: 'HTTP/3', echo: 'hello over WebTransport', navigation: 'h3' });
    } finally {
      await page.close();
    }
  });

  test('firefox over HTTP/2: the page, its API call and its session', T, async () => {
    const page = await openPage('firefox', site.url('/'), { trustSpki: site.spki });
    try {
      const result = await page.waitFor(shown, undefined, { what: 'the page to finish' });
      assert.equal(result.echo, 'hello over WebTransport');
      assert.equal(result.navigation, 'h2');
      // The API call may already take the Alt-Svc the page's response advertised.
      assert.ok(['HTTP/2', 'HTTP/3'].includes(result.version), result.version);
    } finally {
      await page.close();
    }
  });
});
