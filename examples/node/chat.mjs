// A chat room: every message a browser sends is broadcast to every session in the room.
//
//   node examples/node/chat.mjs [--port 4433] [--host ::]
//   node examples/node/chat.mjs --redis redis://HOST:6379 [--room lobby] [--presence-ttl 30]
//   node examples/node/chat.mjs --nats nats://HOST:4222 [--room lobby]
//
// Browsers connect to https://localhost:4433/chat?name=NAME. A client sends each message
// on its own unidirectional stream (UTF-8, at most 4 KiB); the server sends every line of
// the room ("NAME: text", "* NAME joined", "* NAME left") to each member on a new
// unidirectional stream. Streams are independent, so two lines sent at nearly the same
// moment may arrive in either order.
//
// With --redis or --nats, several servers share one room: each line is also published on
// ferrovia.chat.<room> and every server hands what the others publish to its own members.
// With --redis the room also keeps presence with expiry, and "/who" answers the sender with
// "* members: ann, bob". See docs/scaling.md.
//
// Prints JSON lines: {"event":"listening","port":...,"certificateHash":...}, then
// join, message and leave events; with a broker also "remote" (a line from another
// server), "who", and "broker" events for its connection state and failures.

import { randomUUID } from 'node:crypto';
import { Server } from 'ferrovia';

const MAX_MESSAGE = 4096;
const emit = (obj) => process.stdout.write(`${JSON.stringify(obj)}\n`);
const encoder = new TextEncoder();
const decoder = new TextDecoder();

function parseArgs(argv) {
  const out = { port: 4433, host: '::', redis: null, nats: null, room: 'lobby', presenceTtl: 30 };
  for (let i = 0; i < argv.length; i++) {
    const value = argv[i + 1];
    if (argv[i] === '--port' && value !== undefined) out.port = Number(argv[++i]);
    else if (argv[i] === '--host' && value !== undefined) out.host = argv[++i].replace(/^\[|\]$/g, '');
    else if (argv[i] === '--redis' && value !== undefined) out.redis = argv[++i];
    else if (argv[i] === '--nats' && value !== undefined) out.nats = argv[++i];
    else if (argv[i] === '--room' && value !== undefined) out.room = argv[++i];
    else if (argv[i] === '--presence-ttl' && value !== undefined) out.presenceTtl = Number(argv[++i]);
    else throw new Error(`unknown argument ${JSON.stringify(argv[i])}`);
  }
  if (out.redis && out.nats) throw new Error('--redis and --nats are mutually exclusive');
  // The room is a NATS subject token and part of Redis keys: no dots, spaces or wildcards.
  if (!/^[A-Za-z0-9_-]{1,64}$/.test(out.room)) throw new Error(`--room must be 1-64 of A-Z a-z 0-9 _ -, not ${JSON.stringify(out.room)}`);
  if (!(out.presenceTtl > 0)) throw new Error('--presence-ttl must be a positive number of seconds');
  return out;
}

const members = new Set();
// Lines on their way to each member. A member that takes no more streams (it never grants
// stream credit, or reads nothing) would otherwise pile up one pending delivery per line
// for as long as the room talks: past this many it is closed instead.
const MAX_PENDING = 64;
const SLOW_MEMBER = 1;
const pending = new Map();

async function sendLine(session, line) {
  const writer = (await session.createUnidirectionalStream()).getWriter();
  await writer.write(encoder.encode(line));
  await writer.close();
}

function deliver(line) {
  // One slow member must not hold up the others: each delivery runs on its own.
  for (const member of members) {
    const waiting = pending.get(member) ?? 0;
    if (waiting >= MAX_PENDING) {
      members.delete(member);
      member.close({ closeCode: SLOW_MEMBER, reason: `too slow: ${MAX_PENDING} lines waiting` });
      continue;
    }
    pending.set(member, waiting + 1);
    sendLine(member, line)
      .catch(() => {})
      .finally(() => {
        const left = pending.get(member) - 1;
        if (left > 0) pending.set(member, left);
        else pending.delete(member);
      });
  }
}

// ---------------------------------------------------------------------------------------
// Fan-out across servers
//
// Each published line carries the id of the server that wrote it; a server delivers its own
// lines to its members at once and skips them when they come back from the broker. The
// alternative (deliver only what the subscription returns) would stop the room on every
// server while the broker is away; this way members of one server keep talking to each
// other, and only the other servers miss those lines. The id is random per process, so a
// restarted server never mistakes an old line for its own.

const INSTANCE = randomUUID();
const brokerEvent = (broker, state, extra = {}) => emit({ event: 'broker', broker, state, ...extra });

function decodeEnvelope(broker, raw) {
  try {
    const { from, line } = JSON.parse(raw);
    if (typeof from === 'string' && typeof line === 'string') return { from, line };
  } catch {}
  brokerEvent(broker, 'dropped', { reason: 'not a chat envelope', raw: String(raw).slice(0, 200) });
  return null;
}

function onPublished(broker, raw) {
  const envelope = decodeEnvelope(broker, raw);
  if (!envelope || envelope.from === INSTANCE) return;
  emit({ event: 'remote', line: envelope.line });
  deliver(envelope.line);
}

class BrokerUnreachable extends Error {}

/**
 * Redis: PUBLISH/SUBSCRIBE for lines, a sorted set for presence. Each entry's score is the
 * moment it expires, on the Redis server's clock (TIME), so servers whose clocks disagree
 * still agree on who is gone. Every server pushes its own members' expiry forward every
 * third of the TTL; a server that dies stops doing so and its members drop out after at
 * most one TTL.
 */
async function redisBus(url, room, ttlSeconds) {
  const { Redis } = await import('ioredis');
  const channel = `ferrovia.chat.${room}`;
  const key = `${channel}.members`;
  const ttlMs = Math.round(ttlSeconds * 1000);
  // A subscribed connection can run nothing but (P)SUBSCRIBE commands, so publishing and
  // presence use a second one.
  const pub = new Redis(url, { lazyConnect: true });
  const sub = new Redis(url, { lazyConnect: true });
  let closing = false;
  for (const [role, client] of [['publisher', pub], ['subscriber', sub]]) {
    let ready = false;
    client.on('error', (err) => ready && brokerEvent('redis', 'error', { role, message: err.message }));
    client.on('close', () => ready && !closing && brokerEvent('redis', 'disconnected', { role }));
    client.on('reconnecting', (delay) => ready && brokerEvent('redis', 'reconnecting', { role, delayMs: delay }));
    client.on('ready', () => {
      if (ready) brokerEvent('redis', 'reconnected', { role });
      ready = true;
    });
  }
  const firstError = new Promise((resolve) => {
    pub.once('error', resolve);
    sub.once('error', resolve);
  });
  try {
    await Promise.all([pub.connect(), sub.connect()]);
  } catch {
    const err = await firstError;
    pub.disconnect();
    sub.disconnect();
    throw new BrokerUnreachable(`cannot reach Redis at ${url}: ${err.message}`);
  }
  sub.on('message', (_channel, raw) => onPublished('redis', raw));
  await sub.subscribe(channel);

  const local = new Map(); // session -> presence entry
  let sequence = 0;
  const now = async () => {
    const [seconds, micros] = await pub.time();
    return Number(seconds) * 1000 + Math.floor(Number(micros) / 1000);
  };
  const refresh = async () => {
    if (local.size === 0) return;
    const expires = (await now()) + ttlMs;
    const args = [...local.values()].flatMap((entry) => [expires, entry]);
    // The key itself expires too, so a room everyone left without a goodbye leaves nothing.
    await pub.multi().zadd(key, ...args).pexpire(key, ttlMs).exec();
  };
  const keepAlive = () => refresh().catch((err) => brokerEvent('redis', 'error', { role: 'presence', message: err.message }));
  const timer = setInterval(keepAlive, ttlMs / 3);
  // A Redis that restarted may have lost the set: put this server's members back at once.
  pub.on('ready', keepAlive);

  return {
    name: 'redis',
    publish(line) {
      pub.publish(channel, JSON.stringify({ from: INSTANCE, line })).catch((err) => {
        brokerEvent('redis', 'lost', { line, message: err.message });
      });
    },
    async join(session, name) {
      // Entries are unique per session, so two members called "ann" are both listed.
      local.set(session, `${INSTANCE}/${++sequence}/${name}`);
      await refresh();
    },
    async leave(session) {
      const entry = local.get(session);
      local.delete(session);
      if (entry) await pub.zrem(key, entry);
    },
    async who() {
      const t = await now();
      const [, [err, entries]] = await pub.multi().zremrangebyscore(key, '-inf', t).zrangebyscore(key, `(${t}`, '+inf').exec();
      if (err) throw err;
      return entries.map((entry) => entry.split('/').slice(2).join('/')).sort();
    },
    async close() {
      clearInterval(timer);
      if (local.size) await pub.zrem(key, ...local.values()).catch(() => {});
      closing = true;
      await Promise.allSettled([sub.quit(), pub.quit()]);
    },
  };
}

/** NATS: core publish/subscribe only, no presence (see docs/scaling.md). */
async function natsBus(url, room) {
  const { connect } = await import('nats');
  const subject = `ferrovia.chat.${room}`;
  let nc;
  try {
    // Without waitOnFirstConnect the first attempt fails fast; after that the client
    // retries for ever (-1) and buffers what is published meanwhile.
    nc = await connect({ servers: url, maxReconnectAttempts: -1, reconnectTimeWait: 1000 });
  } catch (err) {
    throw new BrokerUnreachable(`cannot reach NATS at ${url}: ${err.message}`);
  }
  // Named as the Redis states and the Python example name them, so one log reads alike.
  const states = { disconnect: 'disconnected', reconnect: 'reconnected' };
  (async () => {
    for await (const status of nc.status()) {
      if (status.type === 'pingTimer' || status.type === 'update') continue;
      brokerEvent('nats', states[status.type] ?? status.type, { data: typeof status.data === 'string' ? status.data : JSON.stringify(status.data) });
    }
  })();
  const subscription = nc.subscribe(subject);
  (async () => {
    for await (const msg of subscription) onPublished('nats', msg.string());
  })().catch((err) => brokerEvent('nats', 'error', { message: err.message }));
  // The subscription reaches the server before any line this server publishes.
  await nc.flush();
  return {
    name: 'nats',
    publish(line) {
      try {
        nc.publish(subject, encoder.encode(JSON.stringify({ from: INSTANCE, line })));
      } catch (err) {
        brokerEvent('nats', 'lost', { line, message: err.message });
      }
    },
    async join() {},
    async leave() {},
    who: null,
    async close() {
      await nc.drain().catch(() => {});
    },
  };
}

// ---------------------------------------------------------------------------------------

async function readMessage(readable) {
  const chunks = [];
  let size = 0;
  for await (const chunk of readable) {
    size += chunk.byteLength;
    if (size > MAX_MESSAGE) {
      await readable.cancel().catch(() => {});
      return null;
    }
    chunks.push(chunk);
  }
  return decoder.decode(Buffer.concat(chunks)).trim();
}

async function join(request, bus) {
  const name = (new URL(request.path, 'https://x').searchParams.get('name') || 'anonymous').slice(0, 32);
  const session = await request.accept();
  const say = (line) => {
    deliver(line);
    bus?.publish(line);
  };
  const presenceFailed = (err) => brokerEvent(bus.name, 'error', { role: 'presence', message: err.message });
  members.add(session);
  // Presence changes before the join or leave is announced, so whoever hears of it finds
  // the list agreeing; but a broker that is away must not hold the room up for over a second.
  const beforeAnnouncing = async (change) => {
    let timer;
    await Promise.race([change.catch(presenceFailed), new Promise((r) => (timer = setTimeout(r, 1000)))]);
    clearTimeout(timer);
  };
  if (bus) await beforeAnnouncing(bus.join(session, name));
  emit({ event: 'join', name });
  say(`* ${name} joined`);
  session.closed.then(async ({ closeCode, reason }) => {
    members.delete(session);
    if (bus) await beforeAnnouncing(bus.leave(session));
    emit({ event: 'leave', name, code: closeCode, reason });
    say(`* ${name} left`);
  });
  for await (const readable of session.incomingUnidirectionalStreams) {
    readMessage(readable).then(async (text) => {
      if (!text) return;
      if (text === '/who' && bus?.who) {
        const names = await bus.who().catch(presenceFailed);
        if (names) emit({ event: 'who', name, members: names });
        await sendLine(session, names ? `* members: ${names.join(', ')}` : '* members: unknown, the broker is unreachable');
        return;
      }
      emit({ event: 'message', name, text });
      say(`${name}: ${text}`);
    }).catch(() => {});
  }
}

let options;
let bus = null;
try {
  options = parseArgs(process.argv.slice(2));
  if (options.redis) bus = await redisBus(options.redis, options.room, options.presenceTtl);
  else if (options.nats) bus = await natsBus(options.nats, options.room);
} catch (err) {
  process.stderr.write(`chat: ${err.message}\n`);
  process.exit(err instanceof BrokerUnreachable ? 2 : 1);
}
const server = await Server.listen({ port: options.port, host: options.host });
// Claim the requests before announcing the port, so none arrives unclaimed (404).
const requests = server.requests('/chat');
emit({ event: 'listening', port: server.port, certificateHash: server.certificate.sha256 });
process.on('SIGINT', () => server.close());
process.on('SIGTERM', () => server.close());
for await (const request of requests) join(request, bus).catch(() => {});
await bus?.close();
