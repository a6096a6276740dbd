// A game-state loop over datagrams: clients send their input, the server moves every player
// at a fixed tick rate and sends the whole state to every client each tick.
//
//   node examples/node/gamestate.mjs [--port 4433] [--host ::] [--tick-hz 20]
//
// Browsers connect to https://localhost:4433/game. The server first sends the player's id
// on a unidirectional stream (`{"id":N}`). Then, in datagrams (big-endian):
//   client → server  input: u32 seq, i8 dx, i8 dy (the direction held, -1..1)
//   server → client  state: u32 tick, u16 count, count × (u32 id, i16 x, i16 y, u32 last input seq)
// Datagrams may be lost: a lost input is replaced by the next one, a lost state by the next
// tick's, which is why the state is sent whole rather than as changes.
//
// Prints JSON lines: listening, then join and leave events.

import { Server } from 'ferrovia';

const WORLD = 1000;
const SPEED = 10; // world units per tick
const emit = (obj) => process.stdout.write(`${JSON.stringify(obj)}\n`);

function parseArgs(argv) {
  const out = { port: 4433, host: '::', tickHz: 20 };
  for (let i = 0; i < argv.length; i++) {
    const value = argv[i + 1];
    if (argv[i] === '--port' && value !== undefined) out.port = Number(argv[++i]);
    else if (argv[i] === '--host' && value !== undefined) out.host = argv[++i].replace(/^\[|\]$/g, '');
    else if (argv[i] === '--tick-hz' && value !== undefined) out.tickHz = Number(argv[++i]);
    else throw new Error(`unknown argument ${JSON.stringify(argv[i])}`);
  }
  if (!(out.tickHz > 0 && out.tickHz <= 240)) throw new Error('--tick-hz must be in 1..240');
  return out;
}

const players = new Map(); // id -> { session, x, y, dx, dy, seq }
let nextId = 1;
let tick = 0;

async function play(request) {
  const session = await request.accept();
  const id = nextId++;
  const player = { session, x: WORLD / 2, y: WORLD / 2, dx: 0, dy: 0, seq: 0 };
  const hello = (await session.createUnidirectionalStream()).getWriter();
  await hello.write(new TextEncoder().encode(JSON.stringify({ id })));
  await hello.close();
  players.set(id, player);
  emit({ event: 'join', id });
  session.closed.then(({ closeCode, reason }) => {
    players.delete(id);
    emit({ event: 'leave', id, code: closeCode, reason });
  });
  for await (const d of session.datagrams.readable) {
    if (d.byteLength !== 6) continue;
    const view = new DataView(d.buffer, d.byteOffset, d.byteLength);
    const seq = view.getUint32(0);
    // Inputs can arrive out of order; an older one must not undo a newer one.
    if (seq <= player.seq) continue;
    player.seq = seq;
    player.dx = Math.sign(view.getInt8(4));
    player.dy = Math.sign(view.getInt8(5));
  }
}

function step() {
  tick += 1;
  for (const p of players.values()) {
    p.x = Math.min(WORLD, Math.max(0, p.x + p.dx * SPEED));
    p.y = Math.min(WORLD, Math.max(0, p.y + p.dy * SPEED));
  }
  for (const { session } of players.values()) {
    // Whatever fits one datagram; a real game would send each client what is near it.
    const room = Math.floor((session.datagrams.maxDatagramSize - 6) / 14);
    const shown = [...players].slice(0, room);
    const view = new DataView(new ArrayBuffer(6 + shown.length * 14));
    view.setUint32(0, tick);
    view.setUint16(4, shown.length);
    shown.forEach(([id, p], i) => {
      const at = 6 + i * 14;
      view.setUint32(at, id);
      view.setInt16(at + 4, p.x);
      view.setInt16(at + 6, p.y);
      view.setUint32(at + 8, p.seq);
    });
    session.datagrams.send(new Uint8Array(view.buffer)).catch(() => {});
  }
}

const { port, host, tickHz } = parseArgs(process.argv.slice(2));
const server = await Server.listen({ port, host });
// Claim the requests before announcing the port, so none arrives unclaimed (404).
const requests = server.requests('/game');
emit({ event: 'listening', port: server.port, certificateHash: server.certificate.sha256, tickHz });
const timer = setInterval(step, 1000 / tickHz);
const stop = () => {
  clearInterval(timer);
  server.close();
};
process.on('SIGINT', stop);
process.on('SIGTERM', stop);
for await (const request of requests) play(request).catch(() => {});
