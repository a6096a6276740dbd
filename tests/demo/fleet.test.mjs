// A fleet member restarting under a browser's open session (examples/rust/fleet.rs). On
// SIGTERM the member drains: its HTTP/3 connections get GOAWAY and each session the
// DRAIN capsule. The page's session goes on (a new stream still echoes, the member still
// answers), a new session is refused (503), and once the page closes, the member exits
// with a clean drain. Chromium and Firefox.

import assert from 'node:assert/strict';
import path from 'node:path';
import { after, describe, test } from 'node:test';

import { BROWSERS, closeAll, startEchoServer, withPage } from '../browser/harness.mjs';
import { REPO_ROOT } from './support.mjs';

const T = { timeout: 60000 };
const FLEET_BIN = path.join(process.env.FERROVIA_RUST_EXAMPLES || path.join(REPO_ROOT, 'target', 'debug', 'examples'), 'fleet');

after(closeAll);

const openSession = async ({ url, hash }) => {
  const t = await wt.connect(url, hash);
  window.fleet = { t, drained: false };
  // `draining` is newer than WebTransport itself; where a browser has it, record it.
  if (t.draining) t.draining.then(() => (window.fleet.drained = true), () => {});
  const echo = async (text) => {
    const s = await t.createBidirectionalStream();
    const back = wt.readAll(s.readable, 10000, 'echo');
    await wt.writeAll(s.writable, wt.encode(text), true);
    return wt.decode(await back);
  };
  const member = async () => {
    const incoming = t.incomingUnidirectionalStreams.getReader();
    const w = (await t.createUnidirectionalStream()).getWriter();
    await w.write(wt.encode('?'));
    await w.close();
    const { value } = await wt.timeout(incoming.read(), 10000, 'member answer');
    incoming.releaseLock();
    return wt.decode(await wt.readAll(value, 10000, 'member'));
  };
  window.fleet.echo = echo;
  window.fleet.member = member;
  return { echo: await echo('before'), member: await member() };
};

const afterDrain = async ({ url, hash }) => {
  const { fleet } = window;
  const echo = await wt.outcome(fleet.echo('after the drain began'), 10000, 'echo');
  const member = await wt.outcome(fleet.member(), 10000, 'member');
  const fresh = await wt.outcome(wt.connect(url, hash, undefined, 10000), 12000, 'new session');
  if (fresh.ok) fresh.value.close();
  fleet.t.close({ closeCode: 0, reason: 'done' });
  return { echo, member, fresh: fresh.ok, drainedSignal: fleet.drained, hasDraining: 'draining' in fleet.t };
};

describe('a draining fleet member', () => {
  for (const browser of BROWSERS) {
    test(`${browser}: the open session goes on, a new one is refused, the member exits clean`, T, async () => {
      const server = await startEchoServer({ bin: FLEET_BIN, args: ['--server-id', '7', '--port', '0', '--grace', '20'] });
      try {
        await withPage(browser, async (page) => {
          const args = { url: server.url('/echo'), hash: server.certificateHash };
          const before = await page.evaluate(openSession, args);
          assert.deepEqual(before, { echo: 'before', member: 'member 7' });
          const mark = server.mark();
          process.kill(server.pid, 'SIGTERM');
          await server.waitForEvent((e) => e.event === 'draining', { since: mark });
          const r = await page.evaluate(afterDrain, args);
          assert.deepEqual(r.echo, { ok: true, value: 'after the drain began' }, 'the open session still echoes');
          assert.deepEqual(r.member, { ok: true, value: 'member 7' }, 'and the same member answers');
          assert.equal(r.fresh, false, 'a new session on a draining member is refused');
          if (r.hasDraining) assert.equal(r.drainedSignal, true, 'transport.draining resolved');
          const drained = await server.waitForEvent((e) => e.event === 'drained', { since: mark, timeout: 15000 });
          assert.equal(drained.clean, true, 'the member exits once the page closed, not at its grace limit');
          console.log(`# ${browser}: draining promise ${r.hasDraining ? 'resolved' : 'not offered'}`);
        });
      } finally {
        await server.stop();
      }
    });
  }
});
