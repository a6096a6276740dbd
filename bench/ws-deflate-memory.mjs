// What permessage-deflate costs an idle WebSocket connection on the server, for Ferrovia's
// Node package and the peers a user would otherwise pick (`ws` with perMessageDeflate,
// Python `websockets` with its default compression): each server runs in a process of its
// own; N `ws` clients connect, each echoes one 2 KiB JSON message (so that both sides'
// compression state exists) and then stays idle; the server's RSS growth per connection is
// read from /proc, with compression agreed and with the clients not offering it.
//
//   node bench/ws-deflate-memory.mjs [N=500]
//
// Ferrovia serves wss:// (its TCP side is TLS); the peers serve ws://. Compare the rows of
// one server with each other (the cost of compression), not raw figures across servers.

import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import WebSocket from 'ws';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const N = Number(process.argv[2] ?? 500);
const PYTHON = process.env.FERROVIA_PYTHON ?? path.join(ROOT, '.venv', 'bin', 'python');

const WS_SERVER = `
import { WebSocketServer } from 'ws';
const wss = new WebSocketServer({ host: '127.0.0.1', port: 0, perMessageDeflate: true });
wss.on('connection', (ws) => ws.on('message', (m, binary) => ws.send(m, { binary })));
wss.on('listening', () => console.log(JSON.stringify({ port: wss.address().port })));
`;

const WEBSOCKETS_SERVER = `
import asyncio, json
from websockets.asyncio.server import serve
async def echo(ws):
    async for m in ws:
        await ws.send(m)
async def main():
    async with serve(echo, "127.0.0.1", 0, compression="deflate", max_size=None) as server:
        print(json.dumps({"port": server.sockets[0].getsockname()[1]}), flush=True)
        await asyncio.Future()
asyncio.run(main())
`;

const SERVERS = {
  'ferrovia (Node)': {
    cmd: [process.execPath, [path.join(ROOT, 'examples/node/echo.mjs'), '--port', '0', '--host', '127.0.0.1']],
    url: (port) => `wss://localhost:${port}/ws`,
  },
  'ws 8 (perMessageDeflate)': { cmd: [process.execPath, ['--input-type=module', '-e', WS_SERVER]], url: (port) => `ws://127.0.0.1:${port}/` },
  'websockets (compression="deflate")': { cmd: [PYTHON, ['-c', WEBSOCKETS_SERVER]], url: (port) => `ws://127.0.0.1:${port}/` },
};

const rssKiB = (pid) => Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))[1]);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function start(cmd, args) {
  // Servers' own logs (a peer reporting the clients' abrupt end) are not the measurement.
  const child = spawn(cmd, args, { cwd: ROOT, stdio: ['ignore', 'pipe', 'ignore'] });
  const port = await new Promise((resolve, reject) => {
    let buf = '';
    child.stdout.on('data', (d) => {
      buf += d;
      for (const line of buf.split('\n')) {
        try {
          const j = JSON.parse(line);
          if (j.port) return resolve(j.port);
        } catch {}
      }
    });
    child.on('exit', (code) => reject(new Error(`${cmd} exited with ${code}`)));
  });
  child.stdout.resume();
  return { child, port };
}

const message = JSON.stringify({ room: 'lobby', user: 'ana', text: 'hello everyone, how is it going today? '.repeat(50) });

async function measure(name, server, deflate) {
  const { child, port } = await start(...server.cmd);
  try {
    await sleep(500);
    const before = rssKiB(child.pid);
    const clients = [];
    for (let i = 0; i < N; i++) {
      const ws = new WebSocket(server.url(port), { perMessageDeflate: deflate, rejectUnauthorized: false });
      await new Promise((resolve, reject) => {
        ws.once('open', resolve);
        ws.once('error', reject);
      });
      const back = new Promise((r) => ws.once('message', r));
      ws.send(message);
      await back;
      if (deflate && !ws.extensions.includes('permessage-deflate')) throw new Error(`${name}: compression not agreed`);
      clients.push(ws);
    }
    await sleep(1000);
    const after = rssKiB(child.pid);
    for (const ws of clients) ws.terminate();
    return (after - before) / N;
  } finally {
    child.kill('SIGTERM');
  }
}

console.log(`| server | KiB per idle connection, compression agreed | not offered | compression's cost |`);
console.log('|---|---|---|---|');
for (const [name, server] of Object.entries(SERVERS)) {
  const on = await measure(name, server, true);
  const off = await measure(name, server, false);
  console.log(`| ${name} | ${on.toFixed(1)} | ${off.toFixed(1)} | ${(on - off).toFixed(1)} |`);
}
