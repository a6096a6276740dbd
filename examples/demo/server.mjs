// The Ferrovia demo on Node.js: the page over plain HTTP on localhost (a secure context, so
// the page may use WebTransport) and the WebTransport endpoint with a fresh self-signed
// certificate whose hash the page fetches from /config.json. The same port takes the
// page's WebSocket fallback (QMux sessions) on TCP, handled by the same code.
//
//   node examples/demo/server.mjs [--port 4433] [--http-port 8080] [--host ::]
//
// --port is the UDP port of the WebTransport endpoint, --http-port the TCP port of the
// page; 0 picks a free one. The protocol between page and server is described at the top
// of demo.js; examples/demo/server.py serves the same page the same way.

import { readFile } from 'node:fs/promises';
import http from 'node:http';
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

const USAGE = 'usage: node examples/demo/server.mjs [--port UDP_PORT] [--http-port TCP_PORT] [--host IP]';

function parseArgs(argv) {
  const opts = { port: 4433, httpPort: 8080, host: '::', hostGiven: false };
  const port = (flag, v) => {
    const n = /^\d+$/.test(v ?? '') ? Number(v) : NaN;
    if (!(n >= 0 && n <= 65535)) fail(`${flag} needs a port number (0 to 65535), got ${v === undefined ? 'nothing' : JSON.stringify(v)}`);
    return n;
  };
  for (let i = 0; i < argv.length; i++) {
    const flag = argv[i];
    if (flag === '--port') opts.port = port(flag, argv[++i]);
    else if (flag === '--http-port') opts.httpPort = port(flag, argv[++i]);
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

async function listenWebTransport(opts) {
  try {
    return await Server.listen({ port: opts.port, host: opts.host });
  } catch (err) {
    if (err.code === 'ERR_ADDRESS_IN_USE') fail(`UDP port ${opts.port} is in use; pick another with --port`);
    // Some containers have no IPv6 at all; IPv4 alone still serves Firefox and most setups.
    if (!opts.hostGiven && err.code === 'ERR_BIND') return Server.listen({ port: opts.port, host: '0.0.0.0' });
    throw err;
  }
}

function listenHttp(opts, config) {
  const server = http.createServer(async (req, res) => {
    const { pathname } = new URL(req.url, 'http://localhost');
    if (pathname === '/config.json') {
      res.writeHead(200, { 'content-type': 'application/json', 'cache-control': 'no-store' });
      res.end(JSON.stringify(config));
      return;
    }
    if (pathname === '/client.js' && req.method === 'GET') {
      res.writeHead(200, { 'content-type': 'text/javascript; charset=utf-8', 'cache-control': 'no-store' });
      res.end(await readFile(CLIENT_JS));
      return;
    }
    const file = STATIC[pathname];
    if (!file || req.method !== 'GET') {
      res.writeHead(404, { 'content-type': 'text/plain' });
      res.end('not found\n');
      return;
    }
    res.writeHead(200, { 'content-type': file[1], 'cache-control': 'no-store' });
    res.end(await readFile(path.join(HERE, file[0])));
  });
  return new Promise((resolve) => {
    server.once('error', (err) => {
      if (err.code === 'EADDRINUSE') fail(`TCP port ${opts.httpPort} is in use; pick another with --http-port`);
      fail(`cannot serve the page: ${err.message}`);
    });
    server.listen(opts.httpPort, opts.host, () => resolve(server));
  });
}

const opts = parseArgs(process.argv.slice(2));
const wt = await listenWebTransport(opts);
const config = { port: wt.port, path: '/demo', certificateHash: wt.certificate.sha256, server: `Node.js ${process.version}` };
const web = await listenHttp(opts, config);
const pageUrl = `http://localhost:${web.address().port}/`;

console.log(`
Ferrovia demo (Node.js)

  Open          ${pageUrl}   in Chrome or Firefox; open it in several tabs
  WebTransport  https://localhost:${wt.port}/demo   (UDP port ${wt.port})
  WebSocket     wss://localhost:${wt.port}/demo     (TCP port ${wt.port}; the fallback needs a trusted certificate)
  Certificate   self-signed ECDSA P-256 for localhost, 127.0.0.1, ::1, valid 13 days
  SHA-256       ${wt.certificate.sha256}
                (the page passes it as serverCertificateHashes: no flags, no CA)
  SPKI          ${wt.certificate.spkiSha256}
                (for the WebSocket fallback, start Chromium with
                --ignore-certificate-errors-spki-list=<this>, or open https://localhost:${wt.port}/
                once and accept the certificate)

Press Ctrl-C to stop.
`);

let stopping = false;
async function stop(signal) {
  if (stopping) process.exit(130); // a second Ctrl-C: do not wait for the drain
  stopping = true;
  log(`stopping (${signal}): closing ${tabs.size} ${tabs.size === 1 ? 'session' : 'sessions'}`);
  web.close();
  web.closeAllConnections();
  await wt.close({ grace: 1000 });
  log('stopped');
}
process.on('SIGINT', () => stop('SIGINT'));
process.on('SIGTERM', () => stop('SIGTERM'));

for await (const request of wt.requests('/demo')) {
  serveTab(request).catch((err) => log(`error    ${err.message}`));
}
