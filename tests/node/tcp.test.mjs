// The Node package's TCP side: plain WebSocket sessions and QMux requests on the same port
// as WebTransport, with the `ws` package as an independent client.
//
//   node --test tests/node/tcp.test.mjs

import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';

import { Server } from 'ferrovia';
import WebSocket from 'ws';

let server;

before(async () => {
  server = await Server.listen({ host: '127.0.0.1', port: 0 });
});

after(async () => {
  await server?.close({ grace: 200 });
});

/** A `ws` client trusting the server's certificate. */
function client(path, protocols, options = {}) {
  return new WebSocket(`wss://localhost:${server.tcpPort}${path}`, protocols, {
    ca: server.certificate.pem,
    ...options,
  });
}

function once(emitter, event) {
  return new Promise((resolve, reject) => {
    emitter.once(event, (...args) => resolve(args));
    if (event !== 'error') emitter.once('error', reject);
  });
}

/** `Promise.withResolvers()` (Node 22), which @moq/qmux needs too. */
function deferred() {
  let resolve;
  let reject;
  const promise = new Promise((a, b) => {
    resolve = a;
    reject = b;
  });
  return { promise, resolve, reject };
}

describe('plain WebSocket sessions', () => {
  test('echo of text and binary, subprotocol, close codes both ways', async () => {
    assert.equal(server.tcpPort, server.port, 'the TCP side shares the UDP port number');
    const seen = deferred();
    const routes = server.route(
      '/echo-ws',
      async (request) => {
        assert.equal(request.transport, 'websocket');
        assert.equal(request.httpVersion, '1.1');
        assert.deepEqual(request.subprotocols, ['chat', 'other']);
        const ws = await request.acceptWebSocket({ protocol: 'chat' });
        assert.equal(ws.transport, 'websocket');
        assert.equal(ws.protocol, 'chat');
        seen.resolve(ws);
        for await (const message of ws) await ws.send(message);
      },
      { webSockets: true },
    );
    try {
      const c = client('/echo-ws', ['chat', 'other']);
      await once(c, 'open');
      assert.equal(c.protocol, 'chat');
      c.send('hello ✓');
      const [text, isBinary] = await once(c, 'message');
      assert.equal(isBinary, false);
      assert.equal(text.toString(), 'hello ✓');
      const bytes = Buffer.alloc(200_000, 7);
      c.send(bytes);
      const [back, binary] = await once(c, 'message');
      assert.equal(binary, true);
      assert.ok(bytes.equals(back));
      const ws = await seen.promise;
      c.close(4000, 'client bye');
      assert.deepEqual(await ws.closed, { closeCode: 4000, reason: 'client bye', initiator: 'remote' });
      await once(c, 'close');

      // The server closes.
      const seen2 = deferred();
      const routes2 = server.route(
        '/close-ws',
        async (request) => {
          const ws2 = await request.acceptWebSocket();
          seen2.resolve(ws2);
        },
        { webSockets: true },
      );
      const c2 = client('/close-ws');
      await once(c2, 'open');
      const ws2 = await seen2.promise;
      ws2.close({ closeCode: 4001, reason: 'server bye' });
      const [code, reason] = await once(c2, 'close');
      assert.deepEqual([code, reason.toString()], [4001, 'server bye']);
      assert.equal((await ws2.closed).initiator, 'local');
      assert.throws(() => ws2.close({ closeCode: 1006 }), { code: 'ERR_INVALID_CLOSE_CODE' });
      routes2.close();
    } finally {
      routes.close();
    }
    for (let i = 0; i < 100 && server.sessionCount > 0; i++) await new Promise((r) => setTimeout(r, 20));
    assert.equal(server.sessionCount, 0);
  });

  test('a route that did not ask for plain WebSockets refuses them; the wrong accept is an error', async () => {
    const routes = server.requests('/sessions-only');
    const c = client('/sessions-only');
    const [, res] = await once(c, 'unexpected-response');
    assert.equal(res.statusCode, 400);
    routes.close();

    const got = deferred();
    const mixed = server.route('/mixed', async (request) => got.resolve(request), { webSockets: true });
    const plain = client('/mixed');
    const request = await got.promise;
    await assert.rejects(request.accept(), { code: 'ERR_WRONG_TRANSPORT' });
    assert.equal(request.answered, false);
    await request.reject(403);
    const [, res2] = await once(plain, 'unexpected-response');
    assert.equal(res2.statusCode, 403);

    // A QMux offer is a session request: acceptWebSocket() does not apply.
    const got2 = deferred();
    mixed.close();
    const q = server.route('/q', async (r) => got2.resolve(r));
    const qc = client('/q', ['qmux-02']);
    qc.on('error', () => {});
    const qr = await got2.promise;
    assert.equal(qr.transport, 'qmux');
    await assert.rejects(qr.acceptWebSocket(), { code: 'ERR_WRONG_TRANSPORT' });
    await qr.reject(404);
    q.close();
    assert.throws(() => server.requests(undefined, { webSockets: true }), TypeError);
  });

  test('a route handler that throws after accepting closes what it accepted, as in Python', async () => {
    const errors = [];
    const accepted = deferred();
    const r = server.route('/throws', async (request) => {
      if (request.transport === 'websocket') {
        const ws = await request.acceptWebSocket();
        accepted.resolve(ws);
      } else {
        accepted.resolve(await request.accept());
      }
      throw new Error('bug after accept');
    }, { webSockets: true, onError: (e) => errors.push(e.message) });
    try {
      // A plain WebSocket: the client gets 1011 and the reason.
      const c = client('/throws');
      const [code, reason] = await once(c, 'close');
      assert.deepEqual([code, reason.toString()], [1011, 'internal error']);
      // A QMux session: closed by the server with code 0 and the reason.
      const again = deferred();
      accepted.resolve = again.resolve;
      const qc = client('/throws', ['qmux-02']);
      qc.on('error', () => {});
      const session = await again.promise;
      const info = await session.closed;
      assert.deepEqual([info.closeCode, info.reason], [0, 'internal error']);
      assert.deepEqual(errors, ['bug after accept', 'bug after accept']);
      qc.terminate();
    } finally {
      r.close();
    }
  });
});

describe('the tcp option', () => {
  test('off, and plain behind a TLS-terminating proxy', async () => {
    const off = await Server.listen({ host: '127.0.0.1', port: 0, tcp: false });
    assert.equal(off.tcpPort, null);
    await off.close({ grace: 0 });

    const proxied = await Server.listen({ host: '127.0.0.1', port: 0, tcp: { host: '127.0.0.1', port: 0, behindTlsProxy: true } });
    try {
      assert.notEqual(proxied.tcpPort, null);
      proxied.route('/p', async (request) => {
        const ws = await request.acceptWebSocket();
        for await (const m of ws) await ws.send(m);
      }, { webSockets: true });
      const c = new WebSocket(`ws://127.0.0.1:${proxied.tcpPort}/p`, { headers: { host: 'localhost' } });
      await once(c, 'open');
      c.send('through the proxy');
      const [m] = await once(c, 'message');
      assert.equal(m.toString(), 'through the proxy');
      c.close();
    } finally {
      await proxied.close({ grace: 0 });
    }
    await assert.rejects(Server.listen({ tcp: { host: '::' } }), TypeError);
  });

  test('forwarding headers count only from trustedProxies', async () => {
    const who = async (trustedProxies) => {
      const server = await Server.listen({
        host: '127.0.0.1',
        port: 0,
        tcp: { host: '127.0.0.1', port: 0, behindTlsProxy: true, ...(trustedProxies ? { trustedProxies } : {}) },
        fetch: (request, info) => new Response(`${request.url} ${info.remoteAddress}`),
      });
      try {
        const { request: get } = await import('node:http');
        return await new Promise((resolve, reject) => {
          const req = get({
            host: '127.0.0.1',
            port: server.tcpPort,
            path: '/who',
            headers: { host: 'localhost', 'x-forwarded-for': '6.6.6.6, 192.0.2.9, 10.1.2.3', 'x-forwarded-proto': 'https' },
          }, (res) => {
            let body = '';
            res.setEncoding('utf8');
            res.on('data', (c) => { body += c; });
            res.on('end', () => resolve(body));
          });
          req.on('error', reject);
          req.end();
        });
      } finally {
        await server.close({ grace: 0 });
      }
    };
    // Loopback (the default) and 10/8 trusted: the chain leads to the client, the scheme counts.
    assert.equal(await who(['127.0.0.1', '10.0.0.0/8']), 'https://localhost/who 192.0.2.9');
    // Only 10/8 trusted: this loopback peer is a client and its headers are its own claims.
    assert.equal(await who(['10.0.0.0/8']), 'http://localhost/who 127.0.0.1');
    // Default: loopback trusted, 10.1.2.3 is not, so it is the client.
    assert.equal(await who(undefined), 'https://localhost/who 10.1.2.3');
    await assert.rejects(Server.listen({ tcp: { port: 0, behindTlsProxy: true, trustedProxies: ['10.0.0.0/33'] } }), /not an IP address or CIDR range/);
    await assert.rejects(Server.listen({ tcp: { port: 0, trustedProxies: ['10.0.0.0/8'] } }), TypeError);
  });
});

describe('another HTTP server carries the sessions', () => {
  test('node:http upgrade and node:http2 extended CONNECT', async () => {
    const http = await import('node:http');
    const http2 = await import('node:http2');
    const app = await Server.listen({ host: '127.0.0.1', port: 0, tcp: false });
    const echoes = app.route('/ws', async (request) => {
      const ws = await request.acceptWebSocket();
      for await (const m of ws) await ws.send(m);
    }, { webSockets: true });
    // An HTTP/1.1 server of the application's own, on another port.
    const h1 = http.createServer((req, res) => res.end('page'));
    h1.on('upgrade', (req, socket, head) => app.handleUpgrade(req, socket, head).catch(() => socket.destroy()));
    await new Promise((r) => h1.listen(0, '127.0.0.1', r));
    try {
      const c = new WebSocket(`ws://127.0.0.1:${h1.address().port}/ws`, { headers: { host: 'localhost' } });
      await once(c, 'open');
      c.send('via node:http');
      const [m] = await once(c, 'message');
      assert.equal(m.toString(), 'via node:http');
      c.close(4003, 'bye');
      await once(c, 'close');
      // Refusals become statuses on the other server's socket.
      const refused = new WebSocket(`ws://127.0.0.1:${h1.address().port}/nowhere`, { headers: { host: 'localhost' } });
      const [, res] = await once(refused, 'unexpected-response');
      assert.equal(res.statusCode, 404);
    } finally {
      h1.close();
    }
    // An HTTP/2 server with extended CONNECT.
    const h2 = http2.createServer({ settings: { enableConnectProtocol: true } });
    h2.on('stream', (stream, headers) => {
      if (headers[':protocol'] === 'websocket') app.handleStream(stream, headers).catch(() => stream.destroy());
      else stream.respond({ ':status': 404 }, { endStream: true });
    });
    await new Promise((r) => h2.listen(0, '127.0.0.1', r));
    try {
      const session = http2.connect(`http://127.0.0.1:${h2.address().port}`);
      await once(session, 'remoteSettings');
      const stream = session.request({
        ':method': 'CONNECT',
        ':protocol': 'websocket',
        ':path': '/ws',
        ':authority': 'localhost',
        ':scheme': 'http',
        'sec-websocket-version': '13',
      });
      const [headers] = await once(stream, 'response');
      assert.equal(headers[':status'], 200);
      // A client frame, masked as RFC 6455 requires: text "h2".
      stream.write(Buffer.from([0x81, 0x82, 1, 2, 3, 4, 'h'.charCodeAt(0) ^ 1, '2'.charCodeAt(0) ^ 2]));
      const [frame] = await once(stream, 'data');
      assert.deepEqual([...frame], [0x81, 0x02, 'h'.charCodeAt(0), '2'.charCodeAt(0)]);
      stream.close();
      session.close();
    } finally {
      h2.close();
    }
    echoes.close();
    await app.close({ grace: 0 });
  });
});

describe('QMux sessions from @moq/qmux in Node', () => {
  /** An @moq/qmux session to `path`, over `ws` trusting the server's certificate. */
  async function qmuxSession(path) {
    // @moq/qmux builds on `Promise.withResolvers` (Node 22) and the global WebSocket.
    Promise.withResolvers ??= deferred;
    const ca = server.certificate.pem;
    globalThis.WebSocket = class extends WebSocket {
      constructor(url, protocols) {
        super(url, protocols, { ca });
      }
    };
    const { default: Session } = await import('@moq/qmux');
    const t = new Session(`wss://localhost:${server.tcpPort}${path}`, {
      protocols: ['chat.v1'],
      versions: { 'chat.v1': 'qmux-02' },
    });
    await t.ready;
    return t;
  }

  // The facade keeps one native wait per session and widens it in place when a new kind is
  // asked for; a widening must apply whenever it comes, even right after the wait began.
  for (const [i, name, gap] of [
    [0, 'right after', () => new Promise((r) => setImmediate(r))],
    [1, '100 ms after', () => new Promise((r) => setTimeout(r, 100))],
  ]) {
    test(`a stream asked for ${name} a pending datagram wait is delivered`, async () => {
      const path = `/widen-${i}`;
      const delivered = deferred();
      const routes = server.route(path, async (request) => {
        const session = await request.accept({ protocol: 'chat.v1' });
        session.datagrams.readable.getReader().read().catch(() => {});
        await gap();
        const { value: stream } = await session.incomingUnidirectionalStreams.getReader().read();
        const { value } = await stream.getReader().read();
        delivered.resolve(Buffer.from(value).toString());
      });
      const t = await qmuxSession(path);
      try {
        await new Promise((r) => setTimeout(r, 200));
        const writer = (await t.createUnidirectionalStream()).getWriter();
        await writer.write(new TextEncoder().encode('widened'));
        await writer.close();
        const timeout = new Promise((r) => setTimeout(() => r('no stream within 5 s'), 5000));
        assert.equal(await Promise.race([delivered.promise, timeout]), 'widened');
      } finally {
        t.close();
        routes.close();
      }
    });
  }
});

describe('permessage-deflate (RFC 7692) with the `ws` client', () => {
  /** A server with compression `mode` and an echo on /z; closed by the caller. */
  async function compressingServer(mode, limits = {}) {
    const s = await Server.listen({ host: '127.0.0.1', port: 0, webSocketCompression: mode, limits });
    s.route(
      '/z',
      async (request) => {
        const ws = await request.acceptWebSocket();
        try {
          for await (const message of ws) await ws.send(message);
        } catch {
          // closed mid-echo (the bomb)
        }
      },
      { webSockets: true },
    );
    return s;
  }

  /** A `ws` client; `.answered` resolves with the Sec-WebSocket-Extensions it got back. */
  function connect(s, perMessageDeflate, options = {}) {
    const ws = new WebSocket(`wss://localhost:${s.tcpPort}/z`, { ca: s.certificate.pem, perMessageDeflate, ...options });
    ws.answered = once(ws, 'upgrade').then(([res]) => res.headers['sec-websocket-extensions'] ?? '');
    return ws;
  }

  /** Echoes `messages` one by one; resolves with what came back and the bytes read off the wire. */
  async function echo(ws, messages) {
    await once(ws, 'open');
    const back = [];
    for (const m of messages) {
      const got = once(ws, 'message');
      ws.send(m);
      const [data, isBinary] = await got;
      back.push(isBinary ? Buffer.from(data) : data.toString());
    }
    return { back, wire: ws._socket.bytesRead };
  }

  const chat = Array.from({ length: 50 }, (_, i) =>
    JSON.stringify({ room: 'lobby', seq: i, user: 'ana', text: 'hello everyone, how is it going today?' }).repeat(20));

  test('negotiated with context takeover: text and binary echo intact, and the server compresses', async () => {
    const s = await compressingServer('deflate');
    try {
      const ws = connect(s, true);
      const binary = Buffer.alloc(200_000, 'abcdefgh');
      const { back, wire } = await echo(ws, [...chat, binary]);
      assert.equal(await ws.answered, 'permessage-deflate');
      assert.deepEqual(back.slice(0, chat.length), chat);
      assert.ok(back[chat.length].equals(binary));
      const sent = chat.reduce((n, m) => n + m.length, 0) + binary.length;
      // What the server sent came compressed: a small fraction of the payload.
      assert.ok(wire < sent / 10, `read ${wire} bytes for ${sent} bytes of messages`);
      ws.close(1000);
      await once(ws, 'close');
    } finally {
      await s.close({ grace: 100 });
    }
  });

  test('the light mode asks both sides for no context takeover; a client without compression is served plain', async () => {
    const s = await compressingServer('deflate-no-context');
    try {
      const light = connect(s, true);
      const { back } = await echo(light, chat.slice(0, 5));
      assert.deepEqual(back, chat.slice(0, 5));
      assert.equal(
        await light.answered,
        'permessage-deflate; server_no_context_takeover; client_no_context_takeover',
      );
      light.close(1000);
      const plain = connect(s, false);
      const { back: plainBack, wire } = await echo(plain, chat.slice(0, 5));
      assert.equal(await plain.answered, '');
      assert.deepEqual(plainBack, chat.slice(0, 5));
      assert.ok(wire >= chat.slice(0, 5).reduce((n, m) => n + m.length, 0));
      plain.close(1000);
      await once(plain, 'close');
    } finally {
      await s.close({ grace: 100 });
    }
  });

  test('off by default: an offer is declined', async () => {
    const ws = client('/echo-default-off', [], { perMessageDeflate: true });
    const routes = server.route('/echo-default-off', async (r) => (await r.acceptWebSocket()).close(), { webSockets: true });
    try {
      await once(ws, 'open');
      assert.equal(ws.extensions, '');
      await once(ws, 'close');
    } finally {
      routes.close();
    }
  });

  test('a 10 MiB bomb in a few KiB is refused with 1009 while inflating; the server keeps serving', async () => {
    const s = await compressingServer('deflate', { maxMessageSize: 1024 * 1024 });
    try {
      const ws = connect(s, true);
      await once(ws, 'open');
      const closed = once(ws, 'close');
      ws.send(Buffer.alloc(10 * 1024 * 1024));
      const [code, reason] = await closed;
      assert.equal(code, 1009);
      assert.match(reason.toString(), /inflates past the limit/);
      assert.ok(ws._socket === null || ws._socket.bytesWritten < 100_000, 'the bomb went out compressed');
      // Another client is served as before.
      const next = connect(s, true);
      const { back } = await echo(next, ['still here '.repeat(10)]);
      assert.deepEqual(back, ['still here '.repeat(10)]);
      next.close(1000);
      await once(next, 'close');
    } finally {
      await s.close({ grace: 100 });
    }
  });
});
