// Ferrovia beside a Fastify app: Fastify serves HTTP on TCP, Ferrovia serves WebTransport
// on UDP at the same port number and takes the WebSockets (QMux sessions, plain
// WebSockets) that reach Fastify's server.
//
//   node examples/node/fastify.mjs [--port 4433]

import Fastify from 'fastify';
import { Server } from 'ferrovia';

const portArg = process.argv.indexOf('--port');
const port = portArg > 0 ? Number(process.argv[portArg + 1]) : 4433;

const ferrovia = await Server.listen({ host: '::', port, tcp: false });

const fastify = Fastify();
fastify.get('/', async (request, reply) => reply.type('text/html').send('<!doctype html><title>ferrovia + fastify</title><p>hello'));
fastify.get('/api/time', async () => ({ now: Date.now() }));
fastify.server.on('upgrade', (req, socket, head) => {
  ferrovia.handleUpgrade(req, socket, head).catch(() => socket.destroy());
});

ferrovia.route('/echo', async (request) => {
  const session = await request.accept();
  for await (const { readable, writable } of session.incomingBidirectionalStreams) {
    readable.pipeTo(writable).catch(() => {});
  }
});
ferrovia.route(
  '/ws',
  async (request) => {
    const ws = await request.acceptWebSocket();
    for await (const message of ws) await ws.send(message);
  },
  { webSockets: true },
);

await fastify.listen({ port: ferrovia.port, host: '::' });
console.log(JSON.stringify({ event: 'listening', port: ferrovia.port, certificateHash: ferrovia.certificate.sha256 }));
process.on('SIGTERM', async () => {
  await fastify.close();
  await ferrovia.close();
  process.exit(0);
});
