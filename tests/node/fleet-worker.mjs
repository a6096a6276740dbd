// A worker of tests/node/fleet.test.mjs: serves the group's port and answers every HTTP
// request with its index.
import { Server, currentWorker } from 'ferrovia';

const server = await Server.listen({
  host: '127.0.0.1',
  certificate: { cert: process.env.FLEET_TEST_CERT, key: process.env.FLEET_TEST_KEY },
  fetch: () => new Response(`worker ${currentWorker.index} of ${currentWorker.count}`),
});
process.send({ index: currentWorker.index, port: server.port, tcpPort: server.tcpPort });
process.on('SIGTERM', () => {
  server.close({ grace: 0 }).finally(() => process.exit(0));
});
