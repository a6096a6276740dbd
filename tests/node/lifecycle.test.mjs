// The Node package over a server's life: bind errors shaped like `net`'s, the classes of
// errors from answering requests, `Symbol.asyncDispose`, an AbortSignal that closes the
// server, and certificates reloaded from files that change. Clients: the `ws` package,
// node:tls and node:http2.
//
//   node --test tests/node/lifecycle.test.mjs

import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import diagnosticsChannel from 'node:diagnostics_channel';
import { mkdtempSync, renameSync, writeFileSync } from 'node:fs';
import http2 from 'node:http2';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { once } from 'node:events';
import { describe, test } from 'node:test';
import tls from 'node:tls';

import { Server, WebTransportError, generateCertificate } from 'ferrovia';
import WebSocket from 'ws';

const asyncDispose = Symbol.asyncDispose ?? Symbol.for('nodejs.asyncDispose');
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

function deferred() {
  let resolve;
  const promise = new Promise((r) => (resolve = r));
  return { promise, resolve };
}

/**
 * A QMux session to `path` through the package's own connector, over the `ws` package,
 * trusting the server's certificate.
 */
async function connectQmux(server, path) {
  const ca = server.certificate.pem;
  class TrustingWebSocket extends WebSocket {
    constructor(url, protocols) {
      super(url, protocols, { ca });
    }
  }
  const { connect } = await import('ferrovia/client');
  return connect(`https://localhost:${server.tcpPort}${path}`, { transports: ['qmux'], qmux: { WebSocket: TrustingWebSocket } });
}

/** SHA-256 (hex) of the certificate a new TLS connection to the TCP side is given. */
function peerCertificateSha256(port) {
  return new Promise((resolve, reject) => {
    const socket = tls.connect({ host: '127.0.0.1', port, servername: 'localhost', rejectUnauthorized: false, ALPNProtocols: ['http/1.1'] }, () => {
      const raw = socket.getPeerCertificate().raw;
      socket.destroy();
      resolve(createHash('sha256').update(raw).digest('hex'));
    });
    socket.on('error', reject);
  });
}

/** Polls `check` until it returns true or `ms` pass. */
async function eventually(check, ms = 5000) {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (await check()) return true;
    await sleep(50);
  }
  return false;
}

describe('a busy port fails like net', () => {
  test('the UDP port in use: EADDRINUSE with errno, syscall, address and port', async () => {
    const a = await Server.listen({ port: 0, host: '127.0.0.1', tcp: false });
    try {
      await assert.rejects(Server.listen({ port: a.port, host: '127.0.0.1', tcp: false }), (e) => {
        assert.ok(e instanceof Error && !(e instanceof WebTransportError));
        assert.equal(e.code, 'EADDRINUSE');
        assert.equal(e.errno, -os.constants.errno.EADDRINUSE);
        assert.equal(e.syscall, 'bind');
        assert.equal(e.address, '127.0.0.1');
        assert.equal(e.port, a.port);
        assert.equal(e.transport, 'udp');
        assert.equal(e.ferroviaCode, 'ERR_ADDRESS_IN_USE');
        return true;
      });
    } finally {
      await a.close({ grace: 0 });
    }
  });

  test('the TCP port in use (a net.Server holds it)', async () => {
    const holder = net.createServer();
    await new Promise((resolve) => holder.listen(0, '127.0.0.1', resolve));
    const { port } = holder.address();
    try {
      await assert.rejects(Server.listen({ port, host: '127.0.0.1' }), (e) => {
        assert.equal(e.code, 'EADDRINUSE');
        assert.equal(e.syscall, 'bind');
        assert.equal(e.address, '127.0.0.1');
        assert.equal(e.port, port);
        assert.equal(e.transport, 'tcp');
        return true;
      });
    } finally {
      holder.close();
    }
  });
});

describe('accept() never fails because of what a client did', () => {
  test('a silent QMux client and a session limit reached meanwhile give sessions that are already closed', async () => {
    // Two QMux requests (the `ws` package offering qmux-02, sending nothing more) wait
    // while no session is open; with room for one session, accepting both leaves one
    // without a slot (its client gets 503), and the other ends when no QMux transport
    // parameters come within responseTimeout. Neither accept() rejects.
    const server = await Server.listen({ port: 0, host: '127.0.0.1', limits: { maxSessions: 1, responseTimeout: 300 } });
    const clients = [];
    try {
      const requests = [];
      const both = deferred();
      server.route('/q', (r) => {
        requests.push(r);
        if (requests.length === 2) both.resolve();
      });
      for (let i = 0; i < 2; i++) {
        const c = new WebSocket(`wss://localhost:${server.tcpPort}/q`, ['qmux-02'], { ca: server.certificate.pem });
        c.on('error', () => {});
        c.on('unexpected-response', () => {});
        clients.push(c);
      }
      await both.promise;
      assert.ok(requests.every((r) => r.transport === 'qmux'));
      const started = Date.now();
      const sessions = await Promise.all(requests.map((r) => r.accept()));
      assert.ok(Date.now() - started < 250, `accept() waited ${Date.now() - started} ms for the client`);
      const infos = await Promise.all(sessions.map((s) => s.closed));
      const reasons = infos.map((i) => i.reason).sort();
      assert.match(reasons[0], /session limit/);
      assert.match(reasons[1], /transport parameters/);
      assert.equal(server.stats().sessionsFailedToStart, 2);
    } finally {
      for (const c of clients) c.terminate();
      await server.close({ grace: 0 });
    }
  });

  test('ERR_BODY_TOO_LARGE in a fetch handler carries its limit', async () => {
    const server = await Server.listen({
      port: 0,
      host: '127.0.0.1',
      limits: { maxRequestBody: 1000 },
      fetch: async (request) => {
        try {
          await request.arrayBuffer();
          return new Response('read');
        } catch (e) {
          const err = e.cause ?? e;
          return new Response(`${err instanceof WebTransportError} ${err.code} ${err.limit}`);
        }
      },
    });
    const session = http2.connect(`https://localhost:${server.tcpPort}`, { rejectUnauthorized: false });
    try {
      const body = await new Promise((resolve, reject) => {
        const req = session.request({ ':method': 'POST', ':path': '/' });
        let text = '';
        req.setEncoding('utf8');
        req.on('data', (d) => (text += d));
        req.on('end', () => resolve(text));
        req.on('error', reject);
        req.end(Buffer.alloc(5000, 1)); // no content-length: the read fails at the limit
      });
      assert.equal(body, 'false ERR_BODY_TOO_LARGE 1000');
    } finally {
      session.close();
      await server.close({ grace: 0 });
    }
  });
});

describe('lifecycles', () => {
  test('reject(status, { headers }) sends the headers; a bad header throws and leaves the request usable', async () => {
    const server = await Server.listen({ host: '127.0.0.1', port: 0 });
    try {
      server.route('/auth', async (request) => {
        await assert.rejects(request.reject(401, { headers: { 'bad header': 'x' } }), { code: 'ERR_INVALID_HEADER' });
        assert.equal(request.answered, false);
        await request.reject(401, { headers: { 'www-authenticate': 'Bearer realm="chat"' } });
      }, { webSockets: true });
      const ws = new WebSocket(`wss://localhost:${server.port}/auth`, { rejectUnauthorized: false });
      ws.on('error', () => {});
      const [request, response] = await once(ws, 'unexpected-response');
      request.destroy();
      assert.equal(response.statusCode, 401);
      assert.equal(response.headers['www-authenticate'], 'Bearer realm="chat"');
    } finally {
      await server.close({ grace: 0 });
    }
  });

  test('drain(): new sessions get 503, an open WebSocket goes on, drained() waits for it', async () => {
    const server = await Server.listen({ host: '127.0.0.1', port: 0 });
    try {
      const accepted = [];
      server.route('/d', async (request) => {
        const ws = await request.acceptWebSocket();
        accepted.push(ws);
        for await (const message of ws) await ws.send(message);
      }, { webSockets: true });
      const url = `wss://localhost:${server.port}/d`;
      const open = new WebSocket(url, { rejectUnauthorized: false });
      await once(open, 'open');
      server.drain();
      assert.equal(server.draining, true);
      const late = new WebSocket(url, { rejectUnauthorized: false });
      late.on('error', () => {});
      const [request, response] = await once(late, 'unexpected-response');
      request.destroy();
      assert.equal(response.statusCode, 503);
      open.send('still here');
      const [echoed] = await once(open, 'message');
      assert.equal(echoed.toString(), 'still here');
      let drained = false;
      const done = server.drained().then(() => (drained = true));
      await new Promise((r) => setTimeout(r, 200));
      assert.equal(drained, false, 'a WebSocket is still open');
      open.close(1000, 'bye');
      await done;
      assert.equal(server.sessionCount, 0);
      assert.equal(server.stats().requestsRefused[503], 1);
    } finally {
      await server.close({ grace: 0 });
    }
  });

  test('a closed server frees its UDP and TCP port at once: the same port listens again in the same process', async () => {
    const first = await Server.listen({ host: '127.0.0.1', port: 0 });
    const { port } = first;
    await first.close({ grace: 0 });
    // `first` is still referenced here: nothing waits for garbage collection.
    const second = await Server.listen({ host: '127.0.0.1', port });
    try {
      assert.equal(second.port, port);
      assert.equal(second.tcpPort, port);
    } finally {
      await second.close({ grace: 0 });
    }
    assert.ok(first);
  });

  test('Server[Symbol.asyncDispose] closes the server', async () => {
    const server = await Server.listen({ port: 0, host: '127.0.0.1' });
    const requests = server.requests('/x');
    await server[asyncDispose]();
    assert.equal(await requests.next(), null);
    const closing = server.close();
    assert.equal(server.close(), closing, 'asyncDispose was that same close()');
    await closing;
  });

  test('WebTransportSession[Symbol.asyncDispose] closes with code 0', async () => {
    const server = await Server.listen({ port: 0, host: '127.0.0.1' });
    let client;
    try {
      const got = deferred();
      server.route('/q', async (r) => got.resolve(await r.accept()));
      client = await connectQmux(server, '/q');
      const session = await got.promise;
      assert.equal(session.transport, 'qmux');
      await session[asyncDispose]();
      assert.deepEqual(await session.closed, { closeCode: 0, reason: '', initiator: 'local' });
      const seen = await client.closed;
      assert.equal(seen.closeCode, 0);
    } finally {
      client?.close();
      await server.close({ grace: 0 });
    }
  });

  test('a session its handler lets go stays open through garbage collection until closed', async () => {
    const server = await Server.listen({ port: 0, host: '127.0.0.1' });
    const v8 = await import('node:v8');
    const vm = await import('node:vm');
    v8.setFlagsFromString('--expose-gc');
    const gc = vm.runInNewContext('gc');
    let client;
    try {
      const accepted = deferred();
      // The handler keeps nothing: the session object is unreachable once it returns.
      server.route('/let-go', async (r) => {
        await r.accept();
        accepted.resolve();
      });
      client = await connectQmux(server, '/let-go');
      await accepted.promise;
      let ended = false;
      client.closed.then(() => (ended = true), () => (ended = true));
      for (let i = 0; i < 5; i++) {
        gc();
        await sleep(60);
      }
      assert.equal(ended, false, 'the session closed when its handler let go of it');
      assert.equal(server.sessionCount, 1);
      await server.close({ grace: 0 });
      const seen = await client.closed;
      assert.equal(typeof seen.closeCode, 'number');
    } finally {
      client?.close();
      await server.close({ grace: 0 });
    }
  });

  test('an AbortSignal closes the server; an aborted one rejects with AbortError', async () => {
    const controller = new AbortController();
    const server = await Server.listen({ port: 0, host: '127.0.0.1', signal: controller.signal });
    const requests = server.requests('/x');
    controller.abort();
    assert.equal(await requests.next(), null);
    await server.close(); // the same close, already under way

    const reason = new Error('not now');
    await assert.rejects(Server.listen({ port: 0, signal: AbortSignal.abort(reason) }), (e) => {
      assert.equal(e.name, 'AbortError');
      assert.equal(e.code, 'ABORT_ERR');
      assert.equal(e.cause, reason);
      return true;
    });
    await assert.rejects(Server.listen({ port: 0, signal: 'x' }), TypeError);
  });
});

describe('certificates from files', () => {
  test('setCertificate({ certFile, keyFile }) and an unreadable file', async () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'ferrovia-'));
    const c = generateCertificate();
    writeFileSync(path.join(dir, 'cert.pem'), c.cert);
    writeFileSync(path.join(dir, 'key.pem'), c.key);
    const server = await Server.listen({ port: 0, host: '127.0.0.1' });
    try {
      server.setCertificate({ certFile: path.join(dir, 'cert.pem'), keyFile: path.join(dir, 'key.pem') });
      assert.equal(server.certificate.sha256, c.sha256);
      assert.throws(() => server.setCertificate({ certFile: path.join(dir, 'nope.pem'), keyFile: path.join(dir, 'key.pem') }), (e) => e.code === 'ERR_CERTIFICATE' && /nope\.pem/.test(e.message));
      assert.equal(server.certificate.sha256, c.sha256, 'a failed call changes nothing');
      assert.throws(() => server.setCertificate({ cert: c.cert, key: c.key, watch: true }), TypeError);
      await assert.rejects(Server.listen({ port: 0, certificate: { cert: c.cert, key: c.key, watch: true } }), TypeError);
    } finally {
      await server.close({ grace: 0 });
    }
  });

  test('watch: true reloads changed files; a half-written pair keeps the old certificate', async () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'ferrovia-'));
    const certFile = path.join(dir, 'cert.pem');
    const keyFile = path.join(dir, 'key.pem');
    const first = generateCertificate();
    writeFileSync(certFile, first.cert);
    writeFileSync(keyFile, first.key);
    const events = [];
    const onLog = (e) => {
      if (e.target === 'ferrovia::certificate') events.push(e);
    };
    diagnosticsChannel.subscribe('ferrovia:log', onLog);
    const server = await Server.listen({ port: 0, host: '127.0.0.1', logLevel: 'info', certificate: { certFile, keyFile, watch: true } });
    try {
      assert.equal(server.certificate.sha256, first.sha256);
      assert.equal(await peerCertificateSha256(server.tcpPort), first.sha256);

      // In place: the new pair, written one file after the other.
      const second = generateCertificate();
      writeFileSync(certFile, second.cert);
      writeFileSync(keyFile, second.key);
      assert.ok(await eventually(() => server.certificate.sha256 === second.sha256), 'the certificate was reloaded');
      assert.equal(await peerCertificateSha256(server.tcpPort), second.sha256, 'a new connection gets the new certificate');

      // Half written: a new certificate whose key has not arrived yet stays out.
      const third = generateCertificate();
      writeFileSync(certFile, third.cert);
      assert.ok(await eventually(() => events.some((e) => e.level === 'warn')), 'the failed reload was logged');
      assert.equal(server.certificate.sha256, second.sha256, 'the old certificate stays');
      // The key arrives, by rename as deployment tools do.
      writeFileSync(path.join(dir, 'key.pem.tmp'), third.key);
      renameSync(path.join(dir, 'key.pem.tmp'), keyFile);
      assert.ok(await eventually(() => server.certificate.sha256 === third.sha256), 'the completed pair was loaded');
      assert.ok(events.some((e) => e.level === 'info' && e.fields.sha256 === third.sha256));

      // A certificate set by hand stops the watching.
      server.setCertificate({ cert: first.cert, key: first.key });
      const fourth = generateCertificate();
      writeFileSync(certFile, fourth.cert);
      writeFileSync(keyFile, fourth.key);
      await sleep(600);
      assert.equal(server.certificate.sha256, first.sha256);
    } finally {
      diagnosticsChannel.unsubscribe('ferrovia:log', onLog);
      await server.close({ grace: 0 });
    }
  });

  test('a watching server does not keep the process alive, and close() stops the watching', async () => {
    const { spawn } = await import('node:child_process');
    const dir = mkdtempSync(path.join(os.tmpdir(), 'ferrovia-'));
    const c = generateCertificate();
    writeFileSync(path.join(dir, 'cert.pem'), c.cert);
    writeFileSync(path.join(dir, 'key.pem'), c.key);
    const script = `
      import { Server } from 'ferrovia';
      const server = await Server.listen({ port: 0, host: '127.0.0.1',
        certificate: { certFile: ${JSON.stringify(path.join(dir, 'cert.pem'))}, keyFile: ${JSON.stringify(path.join(dir, 'key.pem'))}, watch: true } });
      await server.close({ grace: 0 });
      console.log('closed');
    `;
    const child = spawn(process.execPath, ['--input-type=module', '-e', script], { cwd: path.resolve(import.meta.dirname ?? path.dirname(new URL(import.meta.url).pathname), '..', '..'), stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (d) => (out += d));
    child.stderr.on('data', (d) => (out += d));
    const timer = setTimeout(() => child.kill(), 10000);
    const code = await new Promise((resolve) => child.on('exit', resolve));
    clearTimeout(timer);
    assert.equal(code, 0, out);
    assert.match(out, /closed/);
  });
});
