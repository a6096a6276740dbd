// Two chat servers, one room: examples/node/chat.mjs and examples/python/chat.py started
// twice against a real redis-server or nats-server, with a headless Chromium page on each
// server as a member. Lines cross between the servers exactly once, joins and leaves are
// announced on the other server, Redis presence lists members of both servers and forgets
// a SIGKILLed server's members after the TTL, a broker restart is logged and survived, and
// a Node and a Python server serve one room together.
//
// Needs redis-server and nats-server (Debian packages of those names) and, for the Python
// example, FERROVIA_PYTHON or the checkout's .venv with ferrovia, redis and nats-py.

import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';

import { closeAll, openPage, startEchoServer } from '../browser/harness.mjs';
import { REPO_ROOT, joinChat, say, startProcess } from './support.mjs';

const T = { timeout: 60000 };
const PRESENCE_TTL = 2; // seconds
const PYTHON = process.env.FERROVIA_PYTHON || path.join(REPO_ROOT, '.venv', 'bin', 'python');

const LANGUAGES = {
  node: { bin: process.execPath, script: path.join(REPO_ROOT, 'examples', 'node', 'chat.mjs') },
  python: { bin: PYTHON, script: path.join(REPO_ROOT, 'examples', 'python', 'chat.py') },
};

/** A system binary by name, also where Debian puts it outside a user's PATH (sbin). */
function which(name) {
  for (const dir of [...(process.env.PATH || '').split(':'), '/usr/sbin', '/usr/bin']) {
    const candidate = path.join(dir, name);
    if (dir && existsSync(candidate)) return candidate;
  }
  throw new Error(`${name} not found: apt-get install ${name}`);
}

function freePort() {
  return new Promise((resolve, reject) => {
    const probe = net.createServer();
    probe.on('error', reject);
    probe.listen(0, '127.0.0.1', () => {
      const { port } = probe.address();
      probe.close(() => resolve(port));
    });
  });
}

/**
 * Resolves once a TCP client at `port` gets a reply that `ready` accepts, connecting again
 * after each refusal: a broker is ready when it answers, not when its process exists.
 */
async function answers(port, { send = '', ready, proc, timeout = 10000 }) {
  const deadline = Date.now() + timeout;
  for (;;) {
    const reply = await new Promise((resolve) => {
      const socket = net.connect(port, '127.0.0.1');
      let data = '';
      socket.setEncoding('utf8');
      socket.on('connect', () => socket.write(send));
      socket.on('data', (d) => {
        data += d;
        if (ready(data)) {
          socket.destroy();
          resolve(data);
        }
      });
      socket.on('error', () => resolve(null));
      socket.on('close', () => resolve(null));
    });
    if (reply) return;
    if (proc.child.exitCode !== null || proc.child.signalCode !== null) throw new Error(`broker on port ${port} exited: ${proc.stderr()}${proc.output()}`);
    if (Date.now() > deadline) throw new Error(`broker on port ${port} did not answer within ${timeout} ms`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

const BROKERS = {
  redis: {
    async start(port) {
      const proc = startProcess(which('redis-server'), ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], { label: 'redis' });
      await answers(port, { send: 'PING\r\n', ready: (d) => d.includes('+PONG'), proc });
      return proc;
    },
  },
  nats: {
    async start(port) {
      const proc = startProcess(which('nats-server'), ['-p', String(port), '-a', '127.0.0.1'], { label: 'nats' });
      // A NATS server greets every client with INFO before anything is sent.
      await answers(port, { ready: (d) => d.startsWith('INFO '), proc });
      return proc;
    },
  },
};

/** A broker process on a port of its own, restartable on that same port. */
async function startBroker(kind) {
  for (let attempt = 1; ; attempt++) {
    const port = await freePort();
    try {
      const proc = await BROKERS[kind].start(port);
      return { kind, port, url: `${kind}://127.0.0.1:${port}`, proc };
    } catch (err) {
      // Another process may have taken the port between the probe and the bind.
      if (attempt === 3) throw err;
    }
  }
}

const servers = new Set();
async function startChat(lang, broker, room) {
  const { bin, script } = LANGUAGES[lang];
  const args = [script, '--port', '0', `--${broker.kind}`, broker.url, '--room', room, '--presence-ttl', String(PRESENCE_TTL)];
  const server = await startEchoServer({ bin, args });
  servers.add(server);
  return server;
}

after(async () => {
  await closeAll();
  await Promise.all([...servers].map((s) => s.stop()));
});

// ---------------------------------------------------------------------------------------
// Page side (runs in the browser; see tests/browser/harness.mjs for `wt`)

/** Sends /who and returns the members line that answers it (the next one to arrive). */
const who = async () => {
  const seen = window.chat.lines.filter((l) => l.startsWith('* members:')).length;
  const writer = (await window.chat.t.createUnidirectionalStream()).getWriter();
  await writer.write(wt.encode('/who'));
  await writer.close();
  const deadline = Date.now() + 5000;
  for (;;) {
    const answers = window.chat.lines.filter((l) => l.startsWith('* members:'));
    if (answers.length > seen) return answers[seen];
    if (Date.now() > deadline) throw new Error(`no answer to /who; lines ${JSON.stringify(window.chat.lines)}`);
    await wt.sleep(20);
  }
};

// ---------------------------------------------------------------------------------------

const lines = (page) => page.evaluate(() => window.chat.lines.slice());
const count = (list, line) => list.filter((l) => l === line).length;

async function waitLine(page, label, line) {
  const deadline = Date.now() + 10000;
  while (!(await lines(page)).includes(line)) {
    if (Date.now() > deadline) assert.fail(`${label} never got ${JSON.stringify(line)}; got ${JSON.stringify(await lines(page))}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

async function member(server, name) {
  const page = await openPage('chromium');
  await page.evaluate(joinChat, { url: server.url(`/chat?name=${name}`), hash: server.certificateHash });
  await server.waitForEvent((e) => e.event === 'join' && e.name === name);
  return page;
}

/**
 * ann on server A, bob on server B, both in the same fresh room. Checks that the join on B
 * is announced at A and that a line said on A reaches B once and A once.
 */
async function twoServersOneRoom(lang, broker, langB = lang) {
  const room = `t${randomBytes(4).toString('hex')}`;
  const a = await startChat(lang, broker, room);
  const b = await startChat(langB, broker, room);
  const ann = await member(a, 'ann');
  // A announces the join after its join event; bob joins B once B has the announcement.
  await b.waitForEvent((e) => e.event === 'remote' && e.line === '* ann joined');
  const bob = await member(b, 'bob');
  await waitLine(ann, 'ann', '* bob joined');
  await waitLine(bob, 'bob', '* bob joined');
  assert.equal(count(await lines(bob), '* ann joined'), 0, 'ann joined before bob was there');

  const hello = `ann: hello from ${lang} A over ${broker.kind} ✓`;
  await ann.evaluate(say, hello.slice('ann: '.length));
  await waitLine(bob, 'bob', hello);
  await b.waitForEvent((e) => e.event === 'remote' && e.line === hello);
  // bob's answer was published after B had ann's line, so the broker hands A its own copy
  // of ann's line before the answer: once A has the answer, a second delivery of ann's line
  // would already have happened.
  const reply = 'bob: hi ann, from B';
  await bob.evaluate(say, reply.slice('bob: '.length));
  await a.waitForEvent((e) => e.event === 'remote' && e.line === reply);
  await waitLine(ann, 'ann', reply);
  await waitLine(bob, 'bob', reply);
  assert.deepEqual(a.events.filter((e) => e.event === 'remote' && e.line === hello), [], 'A skips its own line coming back');
  for (const [page, label] of [[ann, 'ann'], [bob, 'bob']]) {
    const got = await lines(page);
    assert.equal(count(got, hello), 1, `${label}: ${JSON.stringify(got)}`);
    assert.equal(count(got, reply), 1, `${label}: ${JSON.stringify(got)}`);
    assert.equal(count(got, '* bob joined'), 1, `${label}: ${JSON.stringify(got)}`);
  }
  return { a, b, ann, bob };
}

/** Asks `ask()` every 100 ms until it returns `want`; fails after `timeout` ms. */
async function until(ask, want, timeout) {
  const deadline = Date.now() + timeout;
  let last;
  while ((last = await ask()) !== want) {
    if (Date.now() > deadline) assert.fail(`wanted ${JSON.stringify(want)} within ${timeout} ms; last ${JSON.stringify(last)}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** Stops the broker, checks both servers log the loss, restarts it, checks they recover. */
async function brokerRestart(broker, a, b, ann, bob) {
  const marks = [a.mark(), b.mark()];
  await broker.proc.stop('SIGKILL');
  const role = broker.kind === 'redis' ? { role: 'subscriber' } : {};
  const matches = (state) => (e) => e.event === 'broker' && e.broker === broker.kind && e.state === state && (!role.role || e.role === role.role);
  await Promise.all([a, b].map((s, i) => s.waitForEvent(matches('disconnected'), { since: marks[i], timeout: 15000 })));
  // Each server delivers its own lines itself, so its members go on talking meanwhile.
  const during = 'ann: said while the broker is away';
  await ann.evaluate(say, during.slice('ann: '.length));
  await waitLine(ann, 'ann', during);
  broker.proc = await BROKERS[broker.kind].start(broker.port);
  await Promise.all([a, b].map((s, i) => s.waitForEvent(matches('reconnected'), { since: marks[i], timeout: 15000 })));
  const after = 'bob: still here after the broker came back';
  await bob.evaluate(say, after.slice('bob: '.length));
  await a.waitForEvent((e) => e.event === 'remote' && e.line === after, { timeout: 15000 });
  await waitLine(ann, 'ann', after);
}

for (const kind of Object.keys(BROKERS)) {
  describe(`two chat servers, one room, through ${kind}`, () => {
    let broker;
    before(async () => {
      broker = await startBroker(kind);
    });
    after(async () => {
      await broker?.proc.stop();
    });

    for (const lang of Object.keys(LANGUAGES)) {
      if (kind === 'redis') {
        test(`${lang} over redis: lines cross once each way, a join on B is announced at A, presence spans both servers and expires with a killed server`, T, async () => {
          const { a, b, ann, bob } = await twoServersOneRoom(lang, broker);
          try {
            assert.equal(await bob.evaluate(who), '* members: ann, bob');
            assert.equal(await ann.evaluate(who), '* members: ann, bob');
            const listed = await a.waitForEvent((e) => e.event === 'who' && e.name === 'ann');
            assert.deepEqual(listed.members, ['ann', 'bob']);

            await brokerRestart(broker, a, b, ann, bob);
            // The restarted Redis kept nothing (--save ''); each server records its members
            // again when it reconnects, and at the latest a third of the TTL later.
            await until(() => bob.evaluate(who), '* members: ann, bob', PRESENCE_TTL * 1000);

            process.kill(a.pid, 'SIGKILL');
            await assert.rejects(a.waitForEvent(() => false, { timeout: 5000 }), /exited/);
            // A SIGKILLed server says no goodbye: ann is still listed until her entry expires.
            assert.equal(await bob.evaluate(who), '* members: ann, bob');
            await until(() => bob.evaluate(who), '* members: bob', (PRESENCE_TTL + 2) * 1000);
            assert.equal(count(await lines(bob), '* ann left'), 0, 'nobody announced a leave for the killed server');
          } finally {
            await ann.close();
            await bob.close();
            await Promise.all([a.stop(), b.stop()]);
          }
        });
      } else {
        test(`${lang} over nats: lines cross once each way, a join on B is announced at A, a leave on A at B, and a broker restart is survived`, T, async () => {
          const { a, b, ann, bob } = await twoServersOneRoom(lang, broker);
          try {
            // Without presence, /who is an ordinary message.
            await ann.evaluate(say, '/who');
            await waitLine(bob, 'bob', 'ann: /who');

            await brokerRestart(broker, a, b, ann, bob);

            await ann.evaluate(() => window.chat.t.close({ closeCode: 7, reason: 'bye' }));
            const left = await a.waitForEvent((e) => e.event === 'leave' && e.name === 'ann');
            assert.equal(left.code, 7);
            await waitLine(bob, 'bob', '* ann left');
            await b.waitForEvent((e) => e.event === 'remote' && e.line === '* ann left');
          } finally {
            await ann.close();
            await bob.close();
            await Promise.all([a.stop(), b.stop()]);
          }
        });
      }
    }
  });
}

test('a Node and a Python server share one room through redis: lines, joins and presence entries mean the same to both', T, async () => {
  const broker = await startBroker('redis');
  try {
    const { a, b, ann, bob } = await twoServersOneRoom('node', broker, 'python');
    try {
      assert.equal(await bob.evaluate(who), '* members: ann, bob');
      assert.equal(await ann.evaluate(who), '* members: ann, bob');
      await bob.evaluate(() => window.chat.t.close({ closeCode: 5, reason: 'bye' }));
      await waitLine(ann, 'ann', '* bob left');
      assert.equal(await ann.evaluate(who), '* members: ann');
    } finally {
      await ann.close();
      await bob.close();
      await Promise.all([a.stop(), b.stop()]);
    }
  } finally {
    await broker.proc.stop();
  }
});

test('an unreachable broker at start is one line on stderr and a non-zero exit; --redis and --nats exclude each other', T, async () => {
  const port = await freePort(); // nothing listens there
  for (const lang of Object.keys(LANGUAGES)) {
    const { bin, script } = LANGUAGES[lang];
    for (const kind of Object.keys(BROKERS)) {
      const proc = startProcess(bin, [script, '--port', '0', `--${kind}`, `${kind}://127.0.0.1:${port}`], { label: `${lang} chat` });
      const { code } = await proc.exited;
      assert.notEqual(code, 0, `${lang} --${kind}`);
      const stderr = proc.stderr().trim();
      assert.match(stderr, new RegExp(`^chat: cannot reach ${kind === 'redis' ? 'Redis' : 'NATS'} at ${kind}://127\\.0\\.0\\.1:${port}: .+$`), `${lang} --${kind}: ${stderr}`);
      assert.equal(stderr.split('\n').length, 1, `${lang} --${kind}: ${stderr}`);
      assert.equal(proc.output(), '', `${lang} --${kind} printed on stdout`);
    }
    const both = startProcess(bin, [script, '--port', '0', '--redis', 'redis://127.0.0.1:1', '--nats', 'nats://127.0.0.1:1'], { label: `${lang} chat` });
    assert.notEqual((await both.exited).code, 0);
    assert.match(both.stderr(), /not allowed with|mutually exclusive/);
  }
});
