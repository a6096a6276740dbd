// The Ferrovia Node package answering the HTTP benchmarks through its fetch handler.
//
//   node bench/servers/node_fetch.mjs --port 0 --host 127.0.0.1
//
// `Server.listen({ port, host, fetch })` with a WHATWG Request → Response handler: GET /json
// answers `Response.json({ message: 'hello' })` ({"message":"hello"}, content-type
// application/json), anything else 404, over HTTP/3 on UDP and HTTP/2 and HTTP/1.1 on TCP
// at the same port. Every setting stays at its default. The first stdout line is
// {"event":"listening","port":P,"certificateHash":HEX}, as for every server in the suite.
// bench/peers/node_http2.mjs is the same server on node:http2.

import { Server } from 'ferrovia';
import { parseArgs } from '../peers/self_signed.mjs';

function fetch(request) {
  if (request.method === 'GET' && new URL(request.url).pathname === '/json') {
    return Response.json({ message: 'hello' });
  }
  return new Response(null, { status: 404 });
}

const { port, host } = parseArgs(process.argv.slice(2));
const server = await Server.listen({ port, host, fetch });
process.stdout.write(`${JSON.stringify({ event: 'listening', port: server.port, certificateHash: server.certificate.sha256 })}\n`);
process.on('SIGINT', () => server.close({ grace: 500 }));
process.on('SIGTERM', () => server.close({ grace: 500 }));
