// The README's accept loop against hostile clients: QMux clients that never send their
// transport parameters, and clients that send a session request and vanish. Before,
// `await request.accept()` rejected for them and the unhandled rejection ended the process;
// now it resolves a session that is already closed, and the loop keeps serving.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import tls from 'node:tls';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import WebSocket from 'ws';

const script = fileURLToPath(new URL('./fixtures/readme-echo.mjs', import.meta.url));

function openQmux(port, pem) {
  const ws = new WebSocket(`wss://localhost:${port}/echo`, ['qmux-02'], { ca: pem });
  ws.on('error', () => {});
  ws.on('unexpected-response', () => {});
  return ws;
}

test('no client stops the README loop: silent QMux clients and clients that leave mid-request', async () => {
  const child = spawn(process.execPath, [script], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (d) => { stderr += d; });
  let exited = null;
  child.on('exit', (code, signal) => { exited = { code, signal }; });
  const lines = createInterface({ input: child.stdout });
  const [first] = await once(lines, 'line');
  const { tcpPort, pem } = JSON.parse(first);
  const hostile = [];
  try {
    // Ten QMux clients that complete the WebSocket handshake and then say nothing.
    for (let i = 0; i < 10; i++) hostile.push(openQmux(tcpPort, pem));
    // Ten clients that send a QMux upgrade and drop the connection at once.
    for (let i = 0; i < 10; i++) {
      const s = tls.connect({ port: tcpPort, host: '127.0.0.1', servername: 'localhost', ca: pem, ALPNProtocols: ['http/1.1'] }, () => {
        s.write(`GET /echo HTTP/1.1\r\nHost: localhost:${tcpPort}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n`
          + 'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: qmux-02\r\n\r\n');
        setTimeout(() => s.destroy(), 5 * i);
      });
      s.on('error', () => {});
    }
    // The loop answers at once: a new client's handshake completes while the silent ones wait.
    const started = Date.now();
    const bystander = openQmux(tcpPort, pem);
    await once(bystander, 'open');
    assert.ok(Date.now() - started < 2000, `the bystander waited ${Date.now() - started} ms`);
    bystander.terminate();
    // Past responseTimeout (5 s) the silent sessions end; the process must still be there
    // and still serving.
    await new Promise((r) => setTimeout(r, 6500));
    assert.equal(exited, null, `the server exited: ${JSON.stringify(exited)}\n${stderr}`);
    const late = openQmux(tcpPort, pem);
    await once(late, 'open');
    late.terminate();
    assert.equal(exited, null, stderr);
    assert.doesNotMatch(stderr, /Unhandled|ERR_CONNECTION_LOST/);
  } finally {
    for (const ws of hostile) ws.terminate();
    child.kill('SIGKILL');
    if (!exited) await once(child, 'exit');
  }
});
