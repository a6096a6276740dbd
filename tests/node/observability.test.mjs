// What the server does on its own, seen from Node: its log events on the `ferrovia:log`
// diagnostics channel (requests it refuses, with their reason) and its counters, also as
// Prometheus text. The client is the `ws` package, an independent WebSocket client.

import assert from 'node:assert/strict';
import diagnosticsChannel from 'node:diagnostics_channel';
import { once } from 'node:events';
import { test } from 'node:test';

import WebSocket from 'ws';

import { Server } from 'ferrovia';

/** The status a WebSocket handshake was refused with. */
async function refusedStatus(url, options = {}) {
  const ws = new WebSocket(url, { rejectUnauthorized: false, ...options });
  ws.on('error', () => {}); // the aborted handshake below
  const [request, response] = await once(ws, 'unexpected-response');
  request.destroy();
  return response.statusCode;
}

test('refusals reach the ferrovia:log channel with their reason, and the counters', async () => {
  const events = [];
  const onEvent = (e) => events.push(e);
  diagnosticsChannel.subscribe('ferrovia:log', onEvent);
  const server = await Server.listen({ host: '127.0.0.1', port: 0, logLevel: 'info' });
  try {
    const chat = server.requests('/chat', { webSockets: true });
    const base = `wss://localhost:${server.port}`;
    assert.equal(await refusedStatus(`${base}/nowhere`), 404);
    assert.equal(await refusedStatus(`${base}/chat`, { origin: 'https://elsewhere.example' }), 403);
    const until = Date.now() + 10000;
    const refusals = () => events.filter((e) => e.message === 'request refused');
    while (refusals().length < 2 && Date.now() < until) await new Promise((r) => setTimeout(r, 20));
    const byStatus = Object.fromEntries(refusals().map((e) => [e.fields.status, e]));
    assert.deepEqual(Object.keys(byStatus).sort(), ['403', '404']);
    assert.equal(byStatus['404'].level, 'info');
    assert.equal(byStatus['404'].fields.path, '/nowhere');
    assert.equal(byStatus['404'].fields.reason, 'no route for the path');
    assert.match(byStatus['404'].line, /^request refused \(.*status=404.*\)$/);
    assert.equal(byStatus['403'].fields.reason, 'origin not allowed');

    const stats = server.stats();
    assert.deepEqual(stats.requestsRefused, { 403: 1, 404: 1 });
    assert.equal(stats.sessionsAccepted, 0);
    assert.ok(stats.connectionsAccepted >= 2, JSON.stringify(stats));
    const text = stats.toPrometheus();
    assert.ok(text.includes('ferrovia_requests_refused_total{status="404"} 1\n'), text);
    assert.ok(text.includes('# TYPE ferrovia_connections gauge\n'), text);
    void chat;
  } finally {
    diagnosticsChannel.unsubscribe('ferrovia:log', onEvent);
    await server.close();
  }
});

test('at the default level only warnings and errors are forwarded; a bad level is a TypeError', async () => {
  await assert.rejects(Server.listen({ port: 0, logLevel: 'verbose' }), { name: 'TypeError', message: /logLevel/ });
  const events = [];
  const onEvent = (e) => events.push(e);
  diagnosticsChannel.subscribe('ferrovia:log', onEvent);
  const server = await Server.listen({ host: '127.0.0.1', port: 0 });
  try {
    assert.equal(await refusedStatus(`wss://localhost:${server.port}/nowhere`), 404);
    await new Promise((r) => setTimeout(r, 300));
    assert.deepEqual(server.stats().requestsRefused, { 404: 1 });
    assert.deepEqual(events.filter((e) => e.level !== 'warn' && e.level !== 'error'), []);
  } finally {
    diagnosticsChannel.unsubscribe('ferrovia:log', onEvent);
    await server.close();
  }
});
