// Ferrovia beside an Express app: Express serves the page and the API on TCP, Ferrovia
// serves WebTransport on UDP at the same port number, and the WebSockets that reach
// Express (QMux sessions for clients without WebTransport, plain WebSockets) are handed to
// Ferrovia, so one set of routes serves every client.
//
//   node examples/node/express.mjs [--port 4433]
//
// Prints {"event":"listening","port":P,...} on stdout. In production put TLS in front of
// Express (or use https.createServer with the same certificate as Ferrovia).

import express from 'express';
import { Server } from 'ferrovia';

const portArg = process.argv.indexOf('--port');
const port = portArg > 0 ? Number(process.argv[portArg + 1]) : 4433;

// UDP only: Express owns the TCP port.
const ferrovia = await Server.listen({ host: '::', port, tcp: false });

const app = express();
app.get('/', (req, res) => res.type('html').send('<!doctype html><title>ferrovia + express</title><p>hello'));
app.get('/api/time', (req, res) => res.json({ now: Date.now() }));
const http = app.listen(ferrovia.port, '::');
http.on('upgrade', (req, socket, head) => {
  ferrovia.handleUpgrade(req, socket, head).catch(() => socket.destroy());
});

// The same handlers whatever carried the session.
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

http.once('listening', () => {
  console.log(JSON.stringify({ event: 'listening', port: ferrovia.port, certificateHash: ferrovia.certificate.sha256 }));
});
process.on('SIGTERM', async () => {
  http.close();
  await ferrovia.close();
  process.exit(0);
});
