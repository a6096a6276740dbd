// File uploads with progress and an integrity check.
//
//   node examples/node/upload.mjs [--port 4433] [--host ::] [--dir DIR] [--max-size BYTES]
//
// Browsers connect to https://localhost:4433/upload and send each file on its own
// bidirectional stream: a header line `SIZE SHA256HEX NAME\n`, then exactly SIZE bytes,
// then FIN. The server answers on the same stream with `progress BYTES\n` lines as data
// arrives, then `ok SIZE SHA256HEX\n` once the file is stored under --dir (default: the
// system temp directory's ferrovia-uploads), or `error REASON\n`. A file whose SHA-256
// differs from the header's is not kept.
//
// Prints JSON lines: listening (with the directory), then one upload event per file.

import { createHash } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { mkdir, rename, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { once } from 'node:events';

import { Server } from 'ferrovia';

const PROGRESS_EVERY = 256 * 1024;
const MAX_HEADER = 1024;
const emit = (obj) => process.stdout.write(`${JSON.stringify(obj)}\n`);
const encoder = new TextEncoder();

function parseArgs(argv) {
  const out = { port: 4433, host: '::', dir: path.join(tmpdir(), 'ferrovia-uploads'), maxSize: 1 << 30 };
  for (let i = 0; i < argv.length; i++) {
    const value = argv[i + 1];
    if (argv[i] === '--port' && value !== undefined) out.port = Number(argv[++i]);
    else if (argv[i] === '--host' && value !== undefined) out.host = argv[++i].replace(/^\[|\]$/g, '');
    else if (argv[i] === '--dir' && value !== undefined) out.dir = path.resolve(argv[++i]);
    else if (argv[i] === '--max-size' && value !== undefined) out.maxSize = Number(argv[++i]);
    else throw new Error(`unknown argument ${JSON.stringify(argv[i])}`);
  }
  return out;
}

/** A name that stays inside the upload directory whatever the client sent. */
function safeName(name) {
  const base = path.basename(name).replace(/[^\w.-]/g, '_').replace(/^\.+/, '');
  return base.slice(0, 100) || 'upload';
}

class UploadError extends Error {}

async function receive(reader, writer, opts) {
  let buffered = Buffer.alloc(0);
  let header = null;
  while (header === null) {
    const { done, value } = await reader.read();
    if (done) throw new UploadError('stream ended before the header');
    buffered = Buffer.concat([buffered, value]);
    const newline = buffered.indexOf(0x0a);
    if (newline >= 0) {
      header = buffered.subarray(0, newline).toString('utf8');
      buffered = buffered.subarray(newline + 1);
    } else if (buffered.length > MAX_HEADER) throw new UploadError('header too long');
  }
  const match = /^(\d+) ([0-9a-f]{64}) (.+)$/.exec(header);
  if (!match) throw new UploadError('bad header: expected "SIZE SHA256HEX NAME"');
  const size = Number(match[1]);
  const expected = match[2];
  const name = safeName(match[3]);
  if (size > opts.maxSize) throw new UploadError(`too large: ${size} bytes, the limit is ${opts.maxSize}`);

  await mkdir(opts.dir, { recursive: true });
  const final = path.join(opts.dir, name);
  const partial = `${final}.part-${process.pid}-${Date.now()}`;
  const file = createWriteStream(partial);
  const hash = createHash('sha256');
  let received = 0;
  let reported = 0;
  const take = async (chunk) => {
    received += chunk.byteLength;
    if (received > size) throw new UploadError(`more than the announced ${size} bytes`);
    hash.update(chunk);
    // Respecting the file's backpressure keeps QUIC flow control in charge of the pace.
    if (!file.write(chunk)) await once(file, 'drain');
    if (received - reported >= PROGRESS_EVERY || received === size) {
      reported = received;
      await writer.write(encoder.encode(`progress ${received}\n`));
    }
  };
  try {
    if (buffered.length) await take(buffered);
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      await take(value);
    }
    file.end();
    await once(file, 'close');
    if (received !== size) throw new UploadError(`got ${received} of ${size} bytes`);
    const actual = hash.digest('hex');
    if (actual !== expected) throw new UploadError(`checksum mismatch: received data has SHA-256 ${actual}`);
    await rename(partial, final);
    return { name, size, sha256: actual, path: final };
  } catch (err) {
    file.destroy();
    await rm(partial, { force: true });
    err.upload = { name, size };
    throw err;
  }
}

async function upload(stream, opts) {
  const reader = stream.readable.getReader();
  const writer = stream.writable.getWriter();
  try {
    const result = await receive(reader, writer, opts);
    await writer.write(encoder.encode(`ok ${result.size} ${result.sha256}\n`));
    await writer.close();
    emit({ event: 'upload', ok: true, ...result });
  } catch (err) {
    const reason = err instanceof UploadError ? err.message : `failed: ${err.message}`;
    emit({ event: 'upload', ok: false, reason, ...(err.upload ?? {}) });
    await writer.write(encoder.encode(`error ${reason}\n`)).catch(() => {});
    await writer.close().catch(() => {});
    // Tell the client to stop sending the rest of a rejected file.
    await reader.cancel({ streamErrorCode: 1 }).catch(() => {});
  }
}

async function serve(request, opts) {
  const session = await request.accept();
  for await (const stream of session.incomingBidirectionalStreams) upload(stream, opts).catch(() => {});
}

const opts = parseArgs(process.argv.slice(2));
const server = await Server.listen({ port: opts.port, host: opts.host });
// Claim the requests before announcing the port, so none arrives unclaimed (404).
const requests = server.requests('/upload');
emit({ event: 'listening', port: server.port, certificateHash: server.certificate.sha256, dir: opts.dir });
process.on('SIGINT', () => server.close());
process.on('SIGTERM', () => server.close());
for await (const request of requests) serve(request, opts).catch(() => {});
