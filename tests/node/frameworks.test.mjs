// Ferrovia beside Express and Fastify (examples/node/express.mjs, fastify.mjs): the app
// serves its page and API, and WebSockets reaching it are carried by Ferrovia's routes.

import assert from 'node:assert/strict';
import path from 'node:path';
import { after, describe, test } from 'node:test';

import WebSocket from 'ws';

import { REPO_ROOT, startEchoServer } from '../browser/harness.mjs';

const servers = new Set();
after(async () => Promise.all([...servers].map((s) => s.stop())));

for (const name of ['express', 'fastify']) {
  describe(name, () => {
    test('serves the page, the API and a WebSocket through Ferrovia', async () => {
      const server = await startEchoServer({ bin: process.execPath, args: [path.join(REPO_ROOT, 'examples', 'node', `${name}.mjs`), '--port', '0'] });
      servers.add(server);
      const base = `http://127.0.0.1:${server.port}`;
      const page = await fetch(`${base}/`);
      assert.equal(page.status, 200);
      assert.match(await page.text(), new RegExp(name));
      const api = await (await fetch(`${base}/api/time`)).json();
      assert.equal(typeof api.now, 'number');
      const ws = new WebSocket(`ws://127.0.0.1:${server.port}/ws`, { headers: { host: 'localhost' } });
      await new Promise((resolve, reject) => {
        ws.once('open', resolve);
        ws.once('error', reject);
      });
      ws.send(`through ${name}`);
      const message = await new Promise((resolve) => ws.once('message', resolve));
      assert.equal(message.toString(), `through ${name}`);
      ws.close();
      const refused = new WebSocket(`ws://127.0.0.1:${server.port}/nowhere`, { headers: { host: 'localhost' } });
      const status = await new Promise((resolve) => refused.once('unexpected-response', (_, res) => resolve(res.statusCode)));
      assert.equal(status, 404);
    });
  });
}
