// WebSocket echo server on the `ws` package, a peer for the Ferrovia benchmarks.
//
//   node bench/peers/ws_echo.mjs --port 0 --host 127.0.0.1
//
// Same contract as every server in the suite: the first stdout line is
// {"event":"listening","port":P,"certificateHash":HEX}. It serves TLS on TCP (Node's
// `https` server, ALPN `http/1.1`, a fresh self-signed ECDSA P-256 certificate) and takes a
// WebSocket (RFC 6455) on /ws, echoing every text and binary message with the echo from
// ws's README (`ws.send(data, { binary: isBinary })` in the `message` handler). It has no
// WebTransport and no QMux; ws's settings stay at their defaults (permessage-deflate is off
// on a ws server unless asked for), as a user would run it.

import { createHash } from 'node:crypto';
import { createServer } from 'node:https';
import { WebSocketServer } from 'ws';
import { parseArgs, selfSigned } from './self_signed.mjs';

const { port, host } = parseArgs(process.argv.slice(2));
const { cert, key, der } = selfSigned();
const server = createServer({ cert, key, ALPNProtocols: ['http/1.1'] });
// The Ferrovia core sets TCP_NODELAY on its TCP side too.
server.on('connection', (socket) => socket.setNoDelay(true));
const wss = new WebSocketServer({ server, path: '/ws' });
wss.on('connection', (ws) => {
  ws.on('error', () => {});
  ws.on('message', (data, isBinary) => ws.send(data, { binary: isBinary }));
});
server.listen(port, host, () => {
  const hash = createHash('sha256').update(der).digest('hex');
  process.stdout.write(`${JSON.stringify({ event: 'listening', port: server.address().port, certificateHash: hash })}\n`);
});
