// Browsers through Express and Fastify: headless Chromium and Firefox load a page that the
// framework app serves over HTTPS (with a certificate from Ferrovia), import the browser
// connector from the app, and reach Ferrovia's routes through the framework's TCP port,
// handed over by `server.handleUpgrade(req, socket, head)`: a QMux session (bytes echoed on
// a bidi stream, closed with a code and reason the server handler observes) and a plain
// `new WebSocket('wss://...')` (a text message echoed, close codes seen on both sides).
// The Starlette + uvicorn counterpart is tests/demo/starlette-browser.test.mjs.

import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import https from 'node:https';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';

import express from 'express';
import Fastify from 'fastify';
import { Server, generateCertificate } from 'ferrovia';

import { closeBrowsers, openPage } from '../demo/support.mjs';
import { describePage, qmuxEcho, webSocketEcho } from './frameworks-page.mjs';

const T = { timeout: 60000 };
const BROWSERS = ['chromium', 'firefox'];
const CLIENT_JS = fileURLToPath(import.meta.resolve('ferrovia/client'));
const certificate = generateCertificate({ names: ['localhost', '127.0.0.1', '::1'] });

/**
 * Ferrovia on UDP only (the app owns TCP), with a QMux/WebTransport echo route and a plain
 * WebSocket echo route; what each handler sees at the end is kept by the request's `t`
 * query parameter.
 */
async function startFerrovia() {
  const ferrovia = await Server.listen({ host: '::', port: 0, tcp: false, certificate: { cert: certificate.cert, key: certificate.key } });
  const seen = new Map();
  const observation = (token) => {
    if (!seen.has(token)) {
      let resolve;
      const promise = new Promise((r) => (resolve = r));
      seen.set(token, { promise, resolve });
    }
    return seen.get(token);
  };
  const tokenOf = (path) => new URL(path, 'https://x').searchParams.get('t');
  ferrovia.route('/echo', async (request) => {
    const transport = request.transport;
    const session = await request.accept();
    const streams = [];
    (async () => {
      for await (const { readable, writable } of session.incomingBidirectionalStreams) {
        streams.push(readable.pipeTo(writable).catch(() => {}));
      }
    })();
    const closed = await session.closed;
    observation(tokenOf(request.path)).resolve({ requestTransport: transport, sessionTransport: session.transport, closed });
  });
  ferrovia.route(
    '/ws',
    async (request) => {
      const query = new URL(request.path, 'https://x').searchParams;
      const transport = request.transport;
      const ws = await request.acceptWebSocket();
      const messages = [];
      try {
        for await (const message of ws) {
          messages.push(message);
          await ws.send(message);
          if (query.has('close')) ws.close({ closeCode: Number(query.get('close')), reason: query.get('reason') ?? '' });
        }
      } catch {
        /* the close ends the loop either way */
      }
      const closed = await ws.closed;
      observation(query.get('t')).resolve({ transport, messages, closed });
    },
    { webSockets: true },
  );
  return { ferrovia, observed: (token) => observation(token).promise };
}

const PAGE = (name) => `<!doctype html><html><head><meta charset="utf-8"><title>ferrovia + ${name}</title></head><body><p>${name} page</p></body></html>`;

const FRAMEWORKS = {
  async express(ferrovia) {
    const app = express();
    app.get('/', (req, res) => res.type('html').send(PAGE('express')));
    app.get('/client.js', (req, res) => res.type('text/javascript').sendFile(CLIENT_JS));
    const web = https.createServer({ cert: certificate.cert, key: certificate.key }, app);
    web.on('upgrade', (req, socket, head) => {
      ferrovia.handleUpgrade(req, socket, head).catch(() => socket.destroy());
    });
    await new Promise((resolve, reject) => {
      web.once('error', reject);
      web.listen(ferrovia.port, '::', resolve);
    });
    return async () => {
      web.closeAllConnections();
      await new Promise((r) => web.close(r));
    };
  },
  async fastify(ferrovia) {
    const fastify = Fastify({ https: { cert: certificate.cert, key: certificate.key } });
    fastify.get('/', async (request, reply) => reply.type('text/html').send(PAGE('fastify')));
    fastify.get('/client.js', async (request, reply) => reply.type('text/javascript').send(readFileSync(CLIENT_JS)));
    fastify.server.on('upgrade', (req, socket, head) => {
      ferrovia.handleUpgrade(req, socket, head).catch(() => socket.destroy());
    });
    await fastify.listen({ port: ferrovia.port, host: '::' });
    return async () => {
      fastify.server.closeAllConnections();
      await fastify.close();
    };
  },
};

after(closeBrowsers);

// Warnings the process prints, as a user running the app would see them (a listener leak on
// the app's sockets shows up as MaxListenersExceededWarning).
const warnings = [];
process.on('warning', (w) => warnings.push(`${w.name}: ${w.message}`));

let counter = 0;
const token = () => `${process.pid.toString(36)}x${++counter}`;

for (const [name, startApp] of Object.entries(FRAMEWORKS)) {
  describe(`${name} over HTTPS`, () => {
    let ferrovia;
    let observed;
    let stopApp;
    before(async () => {
      // The app takes TCP on the number Ferrovia got for UDP, which another process may
      // hold on TCP: then both start again on another number.
      for (let attempt = 1; ; attempt++) {
        ({ ferrovia, observed } = await startFerrovia());
        try {
          stopApp = await startApp(ferrovia);
          return;
        } catch (err) {
          await ferrovia.close({ grace: 0 });
          if (err?.code !== 'EADDRINUSE' || attempt === 5) throw err;
        }
      }
    });
    after(async () => {
      await stopApp?.();
      await ferrovia?.close({ grace: 0 });
    });

    const open = async (browser) => {
      const page = await openPage(browser, `https://localhost:${ferrovia.port}/`, { trustSpki: certificate.spkiSha256 });
      assert.deepEqual(await page.evaluate(describePage), { protocol: 'https:', title: `ferrovia + ${name}`, secure: true });
      return page;
    };

    for (const browser of BROWSERS) {
      test(`${browser}: a QMux session from the connector through ${name} echoes 1 MiB and closes with a code the handler sees`, T, async () => {
        const warned = warnings.length;
        const page = await open(browser);
        try {
          const t = token();
          const reason = `done with ${name} in ${browser}`;
          const result = await page.evaluate(qmuxEcho, { path: `/echo?t=${t}`, size: 1 << 20, closeCode: 4242, reason });
          assert.equal(result.transport, 'qmux');
          assert.equal(result.received, result.sent);
          assert.equal(result.receivedSha256, result.sentSha256);
          assert.equal(result.same, true);
          assert.deepEqual(result.closed, { closeCode: 4242, reason });
          const server = await observed(t);
          assert.equal(server.requestTransport, 'qmux');
          assert.equal(server.sessionTransport, 'qmux');
          assert.deepEqual(server.closed, { closeCode: 4242, reason, initiator: 'remote' });
          await new Promise((r) => setImmediate(r)); // warnings are emitted on the next tick
          assert.deepEqual(warnings.slice(warned), []);
        } finally {
          await page.close();
        }
      });

      test(`${browser}: a plain WebSocket through ${name} echoes text; close codes reach the other side both ways`, T, async () => {
        const page = await open(browser);
        try {
          // The page closes.
          const t1 = token();
          const fromPage = await page.evaluate(webSocketEcho, { path: `/ws?t=${t1}`, message: `hello ${name} ✓`, closeCode: 4001, reason: 'page leaves' });
          assert.equal(fromPage.echoed, `hello ${name} ✓`);
          assert.deepEqual(fromPage.close, { code: 4001, reason: 'page leaves', wasClean: true });
          const server1 = await observed(t1);
          assert.equal(server1.transport, 'websocket');
          assert.deepEqual(server1.messages, [`hello ${name} ✓`]);
          assert.deepEqual(server1.closed, { closeCode: 4001, reason: 'page leaves', initiator: 'remote' });

          // The server closes after the echo.
          const t2 = token();
          const fromServer = await page.evaluate(webSocketEcho, { path: `/ws?t=${t2}&close=4002&reason=server%20done`, message: 'once' });
          assert.equal(fromServer.echoed, 'once');
          assert.deepEqual(fromServer.close, { code: 4002, reason: 'server done', wasClean: true });
          const server2 = await observed(t2);
          assert.deepEqual(server2.closed, { closeCode: 4002, reason: 'server done', initiator: 'local' });
        } finally {
          await page.close();
        }
      });
    }
  });
}
