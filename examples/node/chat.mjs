// A chat room: every message a browser sends is broadcast to every session in the room.
//
//   node examples/node/chat.mjs [--port 4433] [--host ::]
//
// Browsers connect to https://localhost:4433/chat?name=NAME. A client sends each message
// on its own unidirectional stream (UTF-8, at most 4 KiB); the server sends every line of
// the room ("NAME: text", "* NAME joined", "* NAME left") to each member on a new
// unidirectional stream. Streams are independent, so two lines sent at nearly the same
// moment may arrive in either order.
//
// Prints JSON lines: {"event":"listening","port":...,"certificateHash":...}, then
// join, message and leave events.

import { Server } from 'ferrovia';

const MAX_MESSAGE = 4096;
const emit = (obj) => process.stdout.write(`${JSON.stringify(obj)}\n`);
const encoder = new TextEncoder();
const decoder = new TextDecoder();

function parseArgs(argv) {
  const out = { port: 4433, host: '::' };
  for (let i = 0; i < argv.length; i++) {
    const value = argv[i + 1];
    if (argv[i] === '--port' && value !== undefined) out.port = Number(argv[++i]);
    else if (argv[i] === '--host' && value !== undefined) out.host = argv[++i].replace(/^\[|\]$/g, '');
    else throw new Error(`unknown argument ${JSON.stringify(argv[i])}`);
  }
  return out;
}

const members = new Set();

async function sendLine(session, line) {
  const writer = (await session.createUnidirectionalStream()).getWriter();
  await writer.write(encoder.encode(line));
  await writer.close();
}

function broadcast(line) {
  // One slow member must not hold up the others: each delivery runs on its own.
  for (const member of members) sendLine(member, line).catch(() => {});
}

async function readMessage(readable) {
  const chunks = [];
  let size = 0;
  for await (const chunk of readable) {
    size += chunk.byteLength;
    if (size > MAX_MESSAGE) {
      await readable.cancel().catch(() => {});
      return null;
    }
    chunks.push(chunk);
  }
  return decoder.decode(Buffer.concat(chunks)).trim();
}

async function join(request) {
  const name = (new URL(request.path, 'https://x').searchParams.get('name') || 'anonymous').slice(0, 32);
  const session = await request.accept();
  members.add(session);
  emit({ event: 'join', name });
  broadcast(`* ${name} joined`);
  session.closed.then(({ closeCode, reason }) => {
    members.delete(session);
    emit({ event: 'leave', name, code: closeCode, reason });
    broadcast(`* ${name} left`);
  });
  for await (const readable of session.incomingUnidirectionalStreams) {
    readMessage(readable).then((text) => {
      if (!text) return;
      emit({ event: 'message', name, text });
      broadcast(`${name}: ${text}`);
    }, () => {});
  }
}

const { port, host } = parseArgs(process.argv.slice(2));
const server = await Server.listen({ port, host });
// Claim the requests before announcing the port, so none arrives unclaimed (404).
const requests = server.requests('/chat');
emit({ event: 'listening', port: server.port, certificateHash: server.certificate.sha256 });
process.on('SIGINT', () => server.close());
process.on('SIGTERM', () => server.close());
for await (const request of requests) join(request).catch(() => {});
