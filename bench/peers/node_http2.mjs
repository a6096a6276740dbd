// Node's own HTTP/2 server (node:http2, with HTTP/1.1 beside it), a peer for the Ferrovia
// HTTP benchmarks.
//
//   node bench/peers/node_http2.mjs --port 0 --host 127.0.0.1
//
// Same contract as every server in the suite: the first stdout line is
// {"event":"listening","port":P,"certificateHash":HEX}. It serves TLS on TCP
// (`createSecureServer` with `allowHTTP1: true`, so ALPN h2 and http/1.1, a fresh
// self-signed ECDSA P-256 certificate) and answers GET /json with {"message":"hello"}
// (content-type application/json) through the compatibility API's request handler, which
// takes both versions; anything else gets 404. No HTTP/3: Node has none. Its settings stay
// at their defaults, as a user would run it. bench/servers/node_fetch.mjs is the same
// server on the Ferrovia Node package.

import { createHash } from 'node:crypto';
import { createSecureServer } from 'node:http2';
import { parseArgs, selfSigned } from './self_signed.mjs';

const { port, host } = parseArgs(process.argv.slice(2));
const { cert, key, der } = selfSigned();
const server = createSecureServer({ cert, key, allowHTTP1: true }, (req, res) => {
  if (req.method === 'GET' && req.url === '/json') {
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ message: 'hello' }));
  } else {
    res.writeHead(404);
    res.end();
  }
});
// The Ferrovia core sets TCP_NODELAY on its TCP side too.
server.on('connection', (socket) => socket.setNoDelay(true));
server.listen(port, host, () => {
  const hash = createHash('sha256').update(der).digest('hex');
  process.stdout.write(`${JSON.stringify({ event: 'listening', port: server.address().port, certificateHash: hash })}\n`);
});
