// An echo server on the Node package; the same behaviour and output as the Rust example
// (examples/rust/echo.rs), so the browser suite and the benchmarks can drive either.
//
//   node examples/node/echo.mjs --port 4433 [--host ::]
//
// Prints JSON lines: first {"event":"listening","port":...,"certificateHash":...}, then
// one line per session event. Paths: /echo echoes bidi streams, uni streams (on a new uni
// stream) and datagrams; /open opens a uni and a bidi stream toward the client;
// /close?code=N&reason=R closes after 300 ms; /reject?status=S rejects; /reset?code=N
// resets and stops every incoming bidi stream. Anything else gets 404. These serve
// WebTransport and QMux sessions alike; /ws takes plain WebSockets on the same port.

import { Server } from 'ferrovia';

const emit = (obj) => process.stdout.write(`${JSON.stringify(obj)}\n`);

function parseArgs(argv) {
  const out = { port: 4433, host: '::' };
  for (let i = 0; i < argv.length; i++) {
    const value = argv[i + 1];
    if (argv[i] === '--port' && value !== undefined) out.port = Number(argv[++i]);
    else if (argv[i] === '--host' && value !== undefined) out.host = argv[++i].replace(/^\[|\]$/g, '');
    else throw new Error(`unknown argument ${JSON.stringify(argv[i])}`);
  }
  return out;
}

async function echoBidi(session) {
  for await (const { readable, writable } of session.incomingBidirectionalStreams) {
    readable.pipeTo(writable).catch((err) => {
      if (err && err.code === 'ERR_STREAM_RESET') {
        emit({ event: 'stream-reset', code: err.streamErrorCode });
        writable.abort(err).catch(() => {});
      }
    });
  }
}

async function readAll(readable, limit) {
  const chunks = [];
  let total = 0;
  for await (const chunk of readable) {
    total += chunk.byteLength;
    if (total > limit) throw new RangeError('too long');
    chunks.push(chunk);
  }
  return Buffer.concat(chunks);
}

async function echoUni(session) {
  for await (const readable of session.incomingUnidirectionalStreams) {
    (async () => {
      let data;
      try {
        data = await readAll(readable, 64 << 20);
      } catch (err) {
        if (err && err.code === 'ERR_STREAM_RESET') emit({ event: 'stream-reset', code: err.streamErrorCode });
        return;
      }
      const writable = await session.createUnidirectionalStream();
      const writer = writable.getWriter();
      await writer.write(data);
      await writer.close();
    })().catch(() => {});
  }
}

async function echoDatagrams(session) {
  const writer = session.datagrams.writable.getWriter();
  for await (const d of session.datagrams.readable) await writer.write(d).catch(() => {});
}

async function open(session) {
  const uni = (await session.createUnidirectionalStream()).getWriter();
  await uni.write(new TextEncoder().encode('hello uni'));
  await uni.close();
  const { readable, writable } = await session.createBidirectionalStream();
  const w = writable.getWriter();
  await w.write(new TextEncoder().encode('hello bidi'));
  await w.close();
  const reply = await readAll(readable, 1 << 20);
  emit({ event: 'bidi-reply', data: reply.toString('utf8') });
}

async function reset(session, code) {
  for await (const { readable, writable } of session.incomingBidirectionalStreams) {
    (async () => {
      // Refuse the stream once the client has said something on it, as a server reading
      // a request would: a reset that overtakes the page's first write makes Chromium
      // report that write's failure without the code.
      const reader = readable.getReader();
      await Promise.race([reader.read(), new Promise((r) => setTimeout(r, 2000))]).catch(() => {});
      reader.releaseLock();
      await writable.abort({ streamErrorCode: code }).catch(() => {});
      readable.cancel({ streamErrorCode: (code + 1) >>> 0 }).catch(() => {});
    })();
  }
}

async function handle(request) {
  const url = new URL(request.path, 'https://x');
  const route = url.pathname;
  if (!['/echo', '/open', '/close', '/reject', '/reset'].includes(route)) return request.reject(404);
  if (route === '/reject') return request.reject(Number(url.searchParams.get('status') || 403));
  const protocol = request.subprotocols[0];
  const session = await request.accept({ protocol });
  emit({ event: 'session', path: request.path, origin: request.origin, protocol: protocol ?? null, transport: session.transport });
  const work = (async () => {
    if (route === '/echo') await Promise.all([echoBidi(session), echoUni(session), echoDatagrams(session)]);
    else if (route === '/open') await open(session);
    else if (route === '/close') {
      await new Promise((r) => setTimeout(r, 300));
      session.close({ closeCode: Number(url.searchParams.get('code') || 0), reason: url.searchParams.get('reason') || '' });
    } else await reset(session, Number(url.searchParams.get('code') || 1));
  })().catch(() => {});
  const [info] = await Promise.all([session.closed, work]);
  emit({ event: 'closed', path: session.path, code: info.closeCode, reason: info.reason, remote: info.initiator === 'remote' });
}

/** Plain WebSockets on /ws: echo every message; with ?close=CODE&reason=R close after one. */
async function webSocket(request) {
  const url = new URL(request.path, 'https://x');
  const http = { '2.0': 'HTTP/2', '1.1': 'HTTP/1.1' }[request.httpVersion] ?? request.httpVersion;
  const ws = await request.acceptWebSocket();
  emit({ event: 'websocket', path: request.path, http, origin: request.origin });
  const close = url.searchParams.get('close');
  const work = (async () => {
    for await (const message of ws) {
      await ws.send(message);
      if (close) ws.close({ closeCode: Number(close), reason: url.searchParams.get('reason') || '' });
    }
  })().catch(() => {});
  const [info] = await Promise.all([ws.closed, work]);
  emit({ event: 'websocket-closed', path: request.path, code: info.closeCode, reason: info.reason, remote: info.initiator === 'remote' });
}

const { port, host } = parseArgs(process.argv.slice(2));
// Browsers offer permessage-deflate on every WebSocket; /ws compresses.
const server = await Server.listen({ port, host, webSocketCompression: 'deflate' });
// Claim the requests before announcing the port, so none arrives unclaimed (404).
const requests = server.requests();
server.route('/ws', webSocket, { webSockets: true });
emit({ event: 'listening', port: server.port, certificateHash: server.certificate.sha256, spki: server.certificate.spkiSha256 });
process.on('SIGINT', () => server.close({ grace: 500 }));
process.on('SIGTERM', () => server.close({ grace: 500 }));
for await (const request of requests) {
  handle(request).catch((err) => console.error('session failed:', err));
}
