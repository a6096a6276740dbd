// The Ferrovia demo on Node.js: one server and one port for everything. Ferrovia's fetch
// handler serves the page (HTTP/2 and HTTP/1.1 on TCP, HTTP/3 on UDP), the page opens its
// WebTransport session to the same origin, trusting the fresh self-signed certificate by
// the hash it fetches from /config.json, and the same port takes the page's WebSocket
// fallback (QMux sessions) on TCP, handled by the same code.
//
//   node examples/demo/server.mjs [--port 4433] [--host ::]
//
// --port is the port (UDP and TCP); 0 picks a free one. The browser must trust the
// certificate for the page itself (TCP): the banner says how. The protocol between page
// and server is described at the top of demo.js; examples/demo/server.py serves the same
// page the same way.

import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import { Server } from 'ferrovia';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const STATIC = {
  '/': ['index.html', 'text/html; charset=utf-8'],
  '/index.html': ['index.html', 'text/html; charset=utf-8'],
  '/demo.js': ['demo.js', 'text/javascript; charset=utf-8'],
  '/demo.css': ['demo.css', 'text/css; charset=utf-8'],
};
// The browser connector ships in the package as `ferrovia/client`.
const CLIENT_JS = fileURLToPath(import.meta.resolve('ferrovia/client'));
const CHAT_MAX_BYTES = 2000;
const STATS_EVERY_MS = 500;
// A tab that stops reading its feed must not make the server buffer without bound.
const FEED_MAX_PENDING = 256;

const USAGE = 'usage: node examples/demo/server.mjs [--port PORT] [--host IP]';

function parseArgs(argv) {
  const opts = { port: 4433, host: '::', hostGiven: false };
  const port = (flag, v) => {
    const n = /^\d+$/.test(v ?? '') ? Number(v) : NaN;
    if (!(n >= 0 && n <= 65535)) fail(`${flag} needs a port number (0 to 65535), got ${v === undefined ? 'nothing' : JSON.stringify(v)}`);
    return n;
  };
  for (let i = 0; i < argv.length; i++) {
    const flag = argv[i];
    if (flag === '--port') opts.port = port(flag, argv[++i]);
    else if (flag === '--http-port') fail('--http-port is gone: the page now comes from the same port as the sessions (--port)');
    else if (flag === '--host' && argv[i + 1] !== undefined) {
      opts.host = argv[++i].replace(/^\[|\]$/g, '');
      opts.hostGiven = true;
    } else if (flag === '-h' || flag === '--help') {
      console.log(USAGE);
      process.exit(0);
    } else fail(`unknown argument ${JSON.stringify(flag)}`);
  }
  return opts;
}

function fail(message) {
  console.error(`demo: ${message}\n${USAGE}`);
  process.exit(2);
}

const clock = () => new Date().toTimeString().slice(0, 8);
const log = (line) => console.log(`${clock()}  ${line}`);
const encoder = new TextEncoder();
const decoder = new TextDecoder();

// ---------------------------------------------------------------------------------------
// The room: every open tab

const tabs = new Map(); // id -> { id, name, session, feed, pending }
let nextId = 1;

function send(tab, message) {
  if (tab.pending >= FEED_MAX_PENDING) {
    tab.session.close({ closeCode: 4002, reason: 'not reading the feed' });
    return;
  }
  tab.pending += 1;
  tab.feed
    .write(encoder.encode(`${JSON.stringify(message)}\n`))
    .then(() => (tab.pending -= 1))
    .catch(() => {}); // the session ended; its close is logged by closed
}

function broadcast(message) {
  for (const tab of tabs.values()) send(tab, message);
}

function presence() {
  broadcast({ type: 'presence', peers: [...tabs.values()].map(({ id, name }) => ({ id, name })) });
}

async function readText(readable, limit) {
  const chunks = [];
  let total = 0;
  for await (const chunk of readable) {
    total += chunk.byteLength;
    if (total > limit) {
      await readable.cancel().catch(() => {});
      return null;
    }
    chunks.push(chunk);
  }
  return decoder.decode(Buffer.concat(chunks));
}

async function echo(session) {
  for await (const { readable, writable } of session.incomingBidirectionalStreams) {
    readable.pipeTo(writable).catch(() => {});
  }
}

async function chat(tab) {
  for await (const readable of tab.session.incomingUnidirectionalStreams) {
    readText(readable, CHAT_MAX_BYTES)
      .then((text) => {
        if (!text || !text.trim()) return;
        log(`chat     ${tab.name}: ${text}`);
        broadcast({ type: 'chat', id: tab.id, name: tab.name, text, at: Date.now() });
      })
      .catch(() => {});
  }
}

async function cursors(tab) {
  for await (const datagram of tab.session.datagrams.readable) {
    if (datagram.byteLength !== 8) continue;
    const relayed = new Uint8Array(12);
    new DataView(relayed.buffer).setUint32(0, tab.id);
    relayed.set(datagram, 4);
    for (const other of tabs.values()) other.session.datagrams.send(relayed).catch(() => {});
  }
}

async function stats(tab) {
  const timer = setInterval(async () => {
    const s = await tab.session.getStats().catch(() => null);
    if (!s) return;
    send(tab, {
      type: 'stats',
      at: Date.now(),
      rtt: s.smoothedRtt,
      bytesSent: s.bytesSent,
      bytesReceived: s.bytesReceived,
      packetsLost: s.packetsLost,
      congestionWindow: s.congestionWindow,
    });
  }, STATS_EVERY_MS);
  await tab.session.closed;
  clearInterval(timer);
}

async function serveTab(request) {
  const session = await request.accept();
  const id = nextId++;
  const tab = { id, name: `tab ${id}`, session, feed: null, pending: 0 };
  const where = session.remoteAddress.includes(':') ? `[${session.remoteAddress}]:${session.remotePort}` : `${session.remoteAddress}:${session.remotePort}`;
  const over = session.transport === 'qmux' ? 'WebSocket (QMux)' : 'WebTransport';
  log(`open     ${tab.name} from ${request.origin ?? 'a non-browser client'} (${where}) over ${over}`);
  session.closed.then(({ closeCode, reason, initiator }) => {
    tabs.delete(id);
    const by = { remote: 'by the browser', local: 'by the server', connection: 'with the connection' }[initiator] ?? '';
    log(`closed   ${tab.name} ${by}: code ${closeCode}, reason ${JSON.stringify(reason)}`);
    presence();
  });
  try {
    tab.feed = (await session.createUnidirectionalStream()).getWriter();
  } catch {
    return; // closed before it started
  }
  tabs.set(id, tab);
  send(tab, { type: 'hello', id, name: tab.name });
  presence();
  await Promise.allSettled([echo(session), chat(tab), cursors(tab), stats(tab)]);
}

// ---------------------------------------------------------------------------------------
// Start, print where to go, stop on Ctrl-C

/** The page, its script and style, the browser connector and the config the page reads. */
async function site(request, config) {
  const { pathname } = new URL(request.url);
  const headers = { 'cache-control': 'no-store' };
  if (pathname === '/config.json') return Response.json(config, { headers });
  if (request.method !== 'GET' && request.method !== 'HEAD') {
    return new Response('method not allowed\n', { status: 405, headers: { allow: 'GET, HEAD' } });
  }
  const [file, type] = pathname === '/client.js' ? [CLIENT_JS, 'text/javascript; charset=utf-8'] : STATIC[pathname] ?? [];
  if (!file) return new Response('not found\n', { status: 404, headers: { 'content-type': 'text/plain' } });
  return new Response(await readFile(path.resolve(HERE, file)), { headers: { ...headers, 'content-type': type } });
}

async function listen(opts) {
  let config = null;
  const fetch = (request) => site(request, config);
  const start = (host) => Server.listen({ port: opts.port, host, fetch });
  let server;
  try {
    server = await start(opts.host);
  } catch (err) {
    if (err.code === 'EADDRINUSE') fail(`port ${opts.port} is in use; pick another with --port`);
    // Some containers have no IPv6 at all; IPv4 alone still serves Firefox and most setups.
    if (opts.hostGiven || err.code !== 'ERR_BIND') throw err;
    server = await start('0.0.0.0');
  }
  config = { port: server.port, path: '/demo', certificateHash: server.certificate.sha256, server: `Node.js ${process.version}` };
  return server;
}

const opts = parseArgs(process.argv.slice(2));
const wt = await listen(opts);
const origin = `https://localhost:${wt.port}`;

console.log(`
Ferrovia demo (Node.js)

  Open          ${origin}/   in Chrome or Firefox; open it in several tabs
  Trust         the page needs the browser to trust the certificate on TCP, once:
                Chrome/Chromium: start it with
                  --user-data-dir=/tmp/ferrovia-demo --ignore-certificate-errors-spki-list=${wt.certificate.spkiSha256}
                or, in any browser, open the page and accept the certificate warning
  WebTransport  ${origin}/demo   (UDP port ${wt.port}; the page trusts it by hash)
  WebSocket     wss://localhost:${wt.port}/demo     (TCP port ${wt.port}, the fallback)
  Certificate   self-signed ECDSA P-256 for localhost, 127.0.0.1, ::1, valid 13 days
  SHA-256       ${wt.certificate.sha256}
                (the page passes it as serverCertificateHashes)
  SPKI          ${wt.certificate.spkiSha256}

Press Ctrl-C to stop.
`);

let stopping = false;
async function stop(signal) {
  if (stopping) process.exit(130); // a second Ctrl-C: do not wait for the drain
  stopping = true;
  log(`stopping (${signal}): closing ${tabs.size} ${tabs.size === 1 ? 'session' : 'sessions'}`);
  await wt.close({ grace: 1000 });
  log('stopped');
}
process.on('SIGINT', () => stop('SIGINT'));
process.on('SIGTERM', () => stop('SIGTERM'));

for await (const request of wt.requests('/demo')) {
  serveTab(request).catch((err) => log(`error    ${err.message}`));
}
