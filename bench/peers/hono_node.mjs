// Hono on @hono/node-server: a fetch handler on Node's own HTTP/2 server (with HTTP/1.1
// beside it), the peer a Node team would otherwise pick for the Ferrovia package's `fetch`.
//
//   node bench/peers/hono_node.mjs --port 0 --host 127.0.0.1
//
// Same contract as every server in the suite: the first stdout line is
// {"event":"listening","port":P,"certificateHash":HEX}. `serve()` with
// `createServer: createSecureServer` and `allowHTTP1: true` (ALPN h2 and http/1.1, a fresh
// self-signed ECDSA P-256 certificate); the app answers GET /json with
// `c.json({ message: 'hello' })` and anything else with Hono's 404. Settings stay at their
// defaults. bench/servers/node_fetch.mjs is the same handler on the Ferrovia Node package.

import { createHash } from 'node:crypto';
import { createSecureServer } from 'node:http2';
import { serve } from '@hono/node-server';
import { Hono } from 'hono';
import { parseArgs, selfSigned } from './self_signed.mjs';

const { port, host } = parseArgs(process.argv.slice(2));
const { cert, key, der } = selfSigned();
const app = new Hono();
app.get('/json', (c) => c.json({ message: 'hello' }));

const server = serve(
  { fetch: app.fetch, port, hostname: host, createServer: createSecureServer, serverOptions: { cert, key, allowHTTP1: true } },
  (info) => {
    const hash = createHash('sha256').update(der).digest('hex');
    process.stdout.write(`${JSON.stringify({ event: 'listening', port: info.port, certificateHash: hash })}\n`);
  },
);
// The Ferrovia core sets TCP_NODELAY on its TCP side too.
server.on('connection', (socket) => socket.setNoDelay(true));
