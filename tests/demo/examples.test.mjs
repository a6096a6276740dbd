// Smoke runs of every example program with browsers as clients: the chat room between two
// pages, the datagram game-state loop, and uploads with progress and an integrity check.
// Node and Rust examples always run; FERROVIA_PYTHON=<python with ferrovia installed> adds
// the Python ones. Rust examples come from `cargo build -p ferrovia --examples`.

import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { existsSync, mkdtempSync, readdirSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, describe, test } from 'node:test';

import { closeAll, openPage, startEchoServer, withPage } from '../browser/harness.mjs';
import { REPO_ROOT, joinChat, say } from './support.mjs';

const T = { timeout: 60000 };
const RUST_DIR = process.env.FERROVIA_RUST_EXAMPLES || path.join(REPO_ROOT, 'target', 'debug', 'examples');

const LANGUAGES = {
  node: (name) => ({ bin: process.execPath, args: [path.join(REPO_ROOT, 'examples', 'node', `${name}.mjs`)] }),
  rust: (name) => ({ bin: path.join(RUST_DIR, name), args: [] }),
};
if (process.env.FERROVIA_PYTHON) {
  LANGUAGES.python = (name) => ({ bin: process.env.FERROVIA_PYTHON, args: [path.join(REPO_ROOT, 'examples', 'python', `${name}.py`)] });
}

const servers = new Set();
async function start(lang, name, extra = []) {
  const { bin, args } = LANGUAGES[lang](name);
  const server = await startEchoServer({ bin, args: [...args, '--port', '0', ...extra] });
  servers.add(server);
  return server;
}

after(async () => {
  await closeAll();
  await Promise.all([...servers].map((s) => s.stop()));
});

// ---------------------------------------------------------------------------------------
// Page side (runs in the browser; see the harness for `wt`)

const playGame = async ({ url, hash }) => {
  const t = await wt.connect(url, hash);
  const streams = t.incomingUnidirectionalStreams.getReader();
  const { value: hello } = await wt.timeout(streams.read(), 5000, 'id stream');
  const { id } = JSON.parse(wt.decode(await wt.readAll(hello)));
  const writable = typeof t.datagrams.createWritable === 'function' ? t.datagrams.createWritable() : t.datagrams.writable;
  const writer = writable.getWriter();
  const states = [];
  const reading = (async () => {
    const reader = t.datagrams.readable.getReader();
    for (;;) {
      const { done, value } = await reader.read();
      if (done) return;
      const v = new DataView(value.buffer, value.byteOffset, value.byteLength);
      const players = [];
      for (let i = 0; i < v.getUint16(4); i++) {
        const at = 6 + i * 14;
        players.push({ id: v.getUint32(at), x: v.getInt16(at + 4), y: v.getInt16(at + 6), seq: v.getUint32(at + 8) });
      }
      states.push({ tick: v.getUint32(0), me: players.find((p) => p.id === id) || null, count: players.length });
    }
  })().catch(() => {});
  let seq = 0;
  const until = Date.now() + 1500;
  while (Date.now() < until) {
    const input = new DataView(new ArrayBuffer(6));
    input.setUint32(0, ++seq);
    input.setInt8(4, 1); // right
    input.setInt8(5, -1); // up
    await writer.write(new Uint8Array(input.buffer));
    await wt.sleep(30);
  }
  await wt.sleep(300);
  t.close({ closeCode: 3, reason: 'game over' });
  await reading;
  return { id, sent: seq, states };
};

const upload = async ({ url, hash, size, corrupt }) => {
  const t = await wt.connect(url, hash);
  const data = wt.randomBytes(size);
  const sha = await wt.sha256Hex(data);
  const claimed = corrupt ? sha.replace(/^./, (c) => (c === '0' ? '1' : '0')) : sha;
  const { readable, writable } = await t.createBidirectionalStream();
  const replies = wt.readAll(readable, 30000, 'replies');
  const header = wt.encode(`${size} ${claimed} report ${size}.bin\n`);
  const body = new Uint8Array(header.byteLength + size);
  body.set(header);
  body.set(data, header.byteLength);
  await wt.writeAll(writable, body);
  const lines = wt.decode(await replies).trim().split('\n');
  t.close();
  return { sha, lines };
};

// ---------------------------------------------------------------------------------------

for (const lang of Object.keys(LANGUAGES)) {
  describe(`${lang} examples`, () => {
    test(`${lang} chat: a message from one page reaches the other, joins and leaves are announced`, T, async () => {
      const server = await start(lang, 'chat');
      const ann = await openPage('chromium');
      const bob = await openPage('firefox');
      try {
        await ann.evaluate(joinChat, { url: server.url('/chat?name=ann'), hash: server.certificateHash });
        await server.waitForEvent((e) => e.event === 'join' && e.name === 'ann');
        await bob.evaluate(joinChat, { url: server.url('/chat?name=bob'), hash: server.certificateHash });
        await server.waitForEvent((e) => e.event === 'join' && e.name === 'bob');
        const lines = (page) => page.evaluate(() => window.chat.lines.slice());
        const waitLine = async (page, line) => {
          const deadline = Date.now() + 10000;
          while (!(await lines(page)).includes(line)) {
            if (Date.now() > deadline) assert.fail(`${page.browser} never got ${JSON.stringify(line)}; got ${JSON.stringify(await lines(page))}`);
            await new Promise((r) => setTimeout(r, 50));
          }
        };
        await waitLine(ann, '* bob joined');
        await ann.evaluate(say, 'hi bob, from chromium');
        await waitLine(bob, 'ann: hi bob, from chromium');
        await waitLine(ann, 'ann: hi bob, from chromium');
        await bob.evaluate(say, 'hello ann ✓');
        await waitLine(ann, 'bob: hello ann ✓');
        await server.waitForEvent((e) => e.event === 'message' && e.name === 'bob' && e.text === 'hello ann ✓');
        await bob.evaluate(() => window.chat.t.close({ closeCode: 9, reason: 'bye' }));
        const left = await server.waitForEvent((e) => e.event === 'leave' && e.name === 'bob');
        assert.equal(left.code, 9);
        assert.equal(left.reason, 'bye');
        await waitLine(ann, '* bob left');
      } finally {
        await ann.close();
        await bob.close();
      }
    });

    test(`${lang} gamestate: inputs as datagrams move the player in the state datagrams of every tick`, T, async () => {
      const server = await start(lang, 'gamestate', ['--tick-hz', '30']);
      const { id, sent, states } = await withPage('chromium', (page) => page.evaluate(playGame, { url: server.url('/game'), hash: server.certificateHash }));
      await server.waitForEvent((e) => e.event === 'join' && e.id === id);
      const left = await server.waitForEvent((e) => e.event === 'leave' && e.id === id);
      assert.equal(left.code, 3);
      // 1.8 s at 30 Hz is 54 ticks; loopback may drop a few datagrams, not most.
      assert.ok(states.length >= 25, `${states.length} state datagrams`);
      const ticks = states.map((s) => s.tick);
      assert.ok(ticks.every((t, i) => i === 0 || t !== ticks[i - 1]), 'one datagram per tick');
      assert.ok(ticks.at(-1) - ticks[0] >= states.length - 1, `ticks ${ticks[0]}..${ticks.at(-1)}`);
      const mine = states.filter((s) => s.me);
      const first = mine[0].me;
      const last = mine.at(-1).me;
      assert.ok(last.x - first.x >= 100, `moved right from ${first.x} to ${last.x}`);
      assert.ok(first.y - last.y >= 100, `moved up from ${first.y} to ${last.y}`);
      assert.ok(last.seq > sent / 2 && last.seq <= sent, `the server acknowledged input ${last.seq} of ${sent}`);
    });

    test(`${lang} upload: progress while sending, the checksum verified, the file stored; a wrong checksum is refused`, T, async () => {
      const dir = mkdtempSync(path.join(tmpdir(), 'ferrovia-uploads-'));
      const server = await start(lang, 'upload', ['--dir', dir]);
      assert.equal(path.resolve(server.listening.dir), dir);
      const size = 3 * 1024 * 1024 + 17;
      await withPage('firefox', async (page) => {
        const good = await page.evaluate(upload, { url: server.url('/upload'), hash: server.certificateHash, size });
        const progress = good.lines.filter((l) => l.startsWith('progress ')).map((l) => Number(l.split(' ')[1]));
        assert.ok(progress.length >= 3, `progress lines: ${JSON.stringify(good.lines.slice(0, 5))}`);
        assert.ok(progress.every((n, i) => i === 0 || n > progress[i - 1]), `progress only grows: ${JSON.stringify(progress)}`);
        assert.equal(progress.at(-1), size);
        assert.equal(good.lines.at(-1), `ok ${size} ${good.sha}`);
        const stored = await server.waitForEvent((e) => e.event === 'upload' && e.ok);
        assert.equal(stored.sha256, good.sha);
        assert.equal(path.basename(stored.path), `report_${size}.bin`);
        assert.equal(createHash('sha256').update(readFileSync(path.join(dir, `report_${size}.bin`))).digest('hex'), good.sha);

        const bad = await page.evaluate(upload, { url: server.url('/upload'), hash: server.certificateHash, size: 100000, corrupt: true });
        assert.match(bad.lines.at(-1), new RegExp(`^error checksum mismatch: received data has SHA-256 ${bad.sha}$`));
        const refused = await server.waitForEvent((e) => e.event === 'upload' && !e.ok);
        assert.match(refused.reason, /checksum mismatch/);
      });
      assert.deepEqual(readdirSync(dir), [`report_${size}.bin`], 'the refused upload left nothing behind');
    });
  });
}

test('every example program has a Node, Rust and Python version', () => {
  for (const name of ['echo', 'chat', 'gamestate', 'upload']) {
    assert.ok(existsSync(path.join(REPO_ROOT, 'examples', 'node', `${name}.mjs`)), `examples/node/${name}.mjs`);
    assert.ok(existsSync(path.join(REPO_ROOT, 'examples', 'rust', `${name}.rs`)), `examples/rust/${name}.rs`);
    assert.ok(existsSync(path.join(REPO_ROOT, 'examples', 'python', `${name}.py`)), `examples/python/${name}.py`);
  }
});
