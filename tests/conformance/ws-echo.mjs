// The Node package's server for the conformance suites (scripts/conformance.sh):
// Autobahn|Testsuite's fuzzingclient against the plain WebSocket echo on `/`, and h2spec
// against the TLS TCP port, where the `fetch` handler answers ordinary HTTP/2 requests.
//
//   node tests/conformance/ws-echo.mjs [--behind-tls-proxy]
//
// Listens on 127.0.0.1, port 0, self-signed certificate, TCP side on the UDP port number
// with TLS (`--behind-tls-proxy`: on its own port without TLS, for ws://), messages up to
// 16 MiB (Autobahn's 9.* cases send 16 MiB), permessage-deflate on (cases 12.* and 13.*). Prints one JSON line once listening:
// {"port":N,"tcpPort":N,"tls":true}. Exits on SIGTERM or SIGINT.

import { Server } from 'ferrovia';

const plain = process.argv.includes('--behind-tls-proxy');
const unknown = process.argv.slice(2).filter((a) => a !== '--behind-tls-proxy');
if (unknown.length) throw new Error(`unknown arguments ${JSON.stringify(unknown)}`);

const body = 'ferrovia conformance server\n';

const server = await Server.listen({
  port: 0,
  host: '127.0.0.1',
  certificate: 'self-signed',
  // Test clients send an Origin of their own (or none); the origin policy is not under test.
  origins: 'any',
  tcp: plain ? { host: '127.0.0.1', port: 0, behindTlsProxy: true } : true,
  limits: { maxMessageSize: 16 * 1024 * 1024 },
  // permessage-deflate, for Autobahn's cases 12.* and 13.* (the others do not offer it).
  webSocketCompression: 'deflate',
  // Ordinary requests (h2spec's): answered at once, without reading the body, as a page
  // or API handler does for GET.
  fetch: () => new Response(body, { headers: { 'content-type': 'text/plain; charset=utf-8' } }),
});

async function echo(request) {
  const ws = await request.acceptWebSocket();
  try {
    // Text comes back as text (a string), binary as binary (a Uint8Array).
    for await (const message of ws) await ws.send(message);
  } catch {
    // The client closed or broke the connection mid-echo: Autobahn does so on purpose.
  }
  await ws.closed;
}

// Claimed before the port is printed, so no request arrives unclaimed.
const sockets = server.requests('/', { webSockets: true });
process.stdout.write(`${JSON.stringify({ port: server.port, tcpPort: server.tcpPort, tls: !plain })}\n`);

const stop = () => server.close({ grace: 200 });
process.on('SIGTERM', stop);
process.on('SIGINT', stop);

for await (const request of sockets) {
  if (request.transport !== 'websocket') {
    request.reject(404);
    continue;
  }
  echo(request).catch((err) => console.error('websocket failed:', err));
}
