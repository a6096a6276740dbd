// The Node package without a browser: argument checks, native errors and their codes,
// certificates, process lifetime, CommonJS/ESM entry points and the TypeScript types.

import assert from 'node:assert/strict';
import { spawnSync, spawn } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';

import * as ferrovia from 'ferrovia';

const { Server, WebTransportError, generateCertificate } = ferrovia;
const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const require = createRequire(import.meta.url);

describe('listen options', () => {
  const cases = [
    [{ port: 'x' }, TypeError, /options\.port must be a number/],
    [{ port: 70000 }, RangeError, /options\.port must be an integer in 0\.\.65535/],
    [{ port: 1.5 }, RangeError, /options\.port/],
    [{ host: 'localhost' }, RangeError, /options\.host must be an IP address/],
    [{ host: 5 }, TypeError, /options\.host must be a string/],
    [{ certificate: 'mine' }, RangeError, /options\.certificate must be/],
    [{ certificate: { cert: 5, key: 'k' } }, TypeError, /options\.certificate\.cert must be a PEM string or Buffer/],
    [{ certificate: {} }, TypeError, /options\.certificate must have/],
    [{ origins: 5 }, TypeError, /options\.origins must be/],
    [{ idleTimeout: -1 }, RangeError, /options\.idleTimeout/],
    [{ congestionControl: 'vegas' }, RangeError, /options\.congestionControl must be/],
    [{ limits: { maxSessions: 0 } }, RangeError, /options\.limits\.maxSessions/],
    [{ limits: { bogus: 1 } }, TypeError, /unknown option limits\.bogus/],
    [{ prot: 1 }, TypeError, /unknown option "prot"/],
    ['4433', TypeError, /options must be an object/],
  ];
  for (const [options, type, message] of cases) {
    test(`rejects ${JSON.stringify(options)} with ${type.name}`, async () => {
      await assert.rejects(Server.listen(options), (e) => e instanceof type && message.test(e.message));
    });
  }
});

describe('native errors carry stable codes', () => {
  test('a port in use', async () => {
    const a = await Server.listen({ port: 0, host: '127.0.0.1' });
    try {
      await assert.rejects(Server.listen({ port: a.port, host: '127.0.0.1' }), (e) => {
        // net's shape (code, errno, syscall, address, port); Ferrovia's name stays readable.
        assert.equal(e.code, 'EADDRINUSE');
        assert.equal(e.ferroviaCode, 'ERR_ADDRESS_IN_USE');
        assert.equal(e.syscall, 'bind');
        assert.equal(e.port, a.port);
        assert.match(e.message, new RegExp(`127\\.0\\.0\\.1:${a.port}`));
        return true;
      });
    } finally {
      await a.close({ grace: 0 });
    }
  });

  test('a missing certificate file and a garbage PEM', async () => {
    await assert.rejects(
      Server.listen({ port: 0, certificate: { certFile: '/nonexistent/cert.pem', keyFile: '/nonexistent/key.pem' } }),
      (e) => e.code === 'ERR_CERTIFICATE' && /\/nonexistent\/cert\.pem/.test(e.message),
    );
    await assert.rejects(
      Server.listen({ port: 0, certificate: { cert: 'not a pem', key: 'nor this' } }),
      (e) => e.code === 'ERR_CERTIFICATE' && /no certificate/.test(e.message),
    );
  });

  test('a route that is already taken', async () => {
    const s = await Server.listen({ port: 0, host: '127.0.0.1' });
    try {
      const r = s.requests('/a');
      assert.throws(() => s.requests('/a'), (e) => e.code === 'ERR_ROUTE_TAKEN');
      r.close();
      s.requests('/a').close(); // free again after close()
      assert.throws(() => s.requests('no-slash'), (e) => e.code === 'ERR_INVALID_CONFIG');
    } finally {
      await s.close({ grace: 0 });
    }
  });

  test('a panic in native code becomes an exception', async () => {
    const native = ferrovia.default.__native;
    assert.throws(() => native.__panicSync(), /deliberate panic/);
    await assert.rejects(native.__panicAsync(), /deliberate panic/);
    // The module still works afterwards.
    const s = await Server.listen({ port: 0, host: '127.0.0.1' });
    assert.ok(s.port > 0);
    await s.close({ grace: 0 });
  });

  test('WebTransportError has the W3C fields', () => {
    const e = new WebTransportError('x', { source: 'session', streamErrorCode: 9 });
    assert.equal(e.name, 'WebTransportError');
    assert.equal(e.source, 'session');
    assert.equal(e.streamErrorCode, 9);
    assert.ok(e instanceof Error);
    assert.equal(new WebTransportError().streamErrorCode, null);
  });
});

describe('certificates', () => {
  test('generateCertificate, PEM text and PEM files give the same hashes', async () => {
    const c = generateCertificate({ names: ['localhost', '127.0.0.1'] });
    assert.match(c.cert, /-----BEGIN CERTIFICATE-----/);
    assert.match(c.key, /-----BEGIN PRIVATE KEY-----/);
    assert.match(c.sha256, /^[0-9a-f]{64}$/);
    const dir = mkdtempSync(path.join(tmpdir(), 'ferrovia-'));
    writeFileSync(path.join(dir, 'cert.pem'), c.cert);
    writeFileSync(path.join(dir, 'key.pem'), c.key);
    const a = await Server.listen({ port: 0, host: '127.0.0.1', certificate: { cert: c.cert, key: Buffer.from(c.key) } });
    const b = await Server.listen({ port: 0, host: '127.0.0.1', certificate: { certFile: path.join(dir, 'cert.pem'), keyFile: path.join(dir, 'key.pem') } });
    try {
      assert.equal(a.certificate.sha256, c.sha256);
      assert.equal(b.certificate.sha256, c.sha256);
      assert.equal(a.certificate.spkiSha256, c.spkiSha256);
      assert.deepEqual(Buffer.from(a.certificateHashes[0].value).toString('hex'), c.sha256);
      assert.equal(a.certificateHashes[0].algorithm, 'sha-256');
      // Rotation: new connections get the new certificate.
      const next = generateCertificate();
      a.setCertificate({ cert: next.cert, key: next.key });
      assert.equal(a.certificate.sha256, next.sha256);
      assert.throws(() => a.setCertificate({ cert: 'x', key: 'y' }), (e) => e.code === 'ERR_CERTIFICATE');
    } finally {
      await a.close({ grace: 0 });
      await b.close({ grace: 0 });
    }
  });

  test('bad names are refused', () => {
    assert.throws(() => generateCertificate({ names: [] }), TypeError);
    assert.throws(() => generateCertificate({ names: [7] }), /names\[0\] must be a string/);
  });
});

describe('process lifetime', () => {
  test('a server keeps the process alive until close(), then it exits on its own', async () => {
    const script = `
      import { Server } from 'ferrovia';
      const server = await Server.listen({ port: 0, host: '127.0.0.1' });
      (async () => { for await (const r of server.requests()) r.reject(404); console.log('requests ended'); })();
      (async () => { for await (const r of server.requests('/x')) r.reject(404); console.log('route ended'); })();
      setTimeout(async () => { await server.close({ grace: 100 }); console.log('closed'); }, 1500);
    `;
    const child = spawn(process.execPath, ['--input-type=module', '-e', script], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (d) => (out += d));
    child.stderr.on('data', (d) => (out += d));
    const started = Date.now();
    const code = await new Promise((resolve) => child.on('exit', resolve));
    const elapsed = Date.now() - started;
    assert.equal(code, 0, out);
    assert.match(out, /requests ended/);
    assert.match(out, /route ended/);
    assert.match(out, /closed/);
    assert.ok(elapsed >= 1400, `the server kept the process alive (${elapsed} ms)`);
  });
});

describe('packaging', () => {
  test('require() and import give the same API', () => {
    const cjs = require('ferrovia');
    for (const name of ['Server', 'SessionRequest', 'WebTransportSession', 'WebTransportError', 'toDuplex', 'generateCertificate']) {
      assert.equal(typeof cjs[name], 'function', name);
      assert.equal(ferrovia[name], cjs[name], `${name} is the same object in ESM and CJS`);
    }
  });

  test("importing 'ferrovia' and 'ferrovia/client' prints nothing", () => {
    for (const code of [
      "import * as c from 'ferrovia/client'; if (typeof c.connect !== 'function') process.exit(3);",
      "import * as f from 'ferrovia'; if (typeof f.Server !== 'function') process.exit(3);",
    ]) {
      const r = spawnSync(process.execPath, ['--input-type=module', '-e', code], { cwd: ROOT, encoding: 'utf8' });
      assert.equal(r.status, 0, r.stderr);
      assert.equal(r.stderr, '', 'no warning on stderr');
    }
  });

  test('TypeScript: tsc --noEmit accepts the typed example', () => {
    const tsc = path.join(ROOT, 'node_modules', 'typescript', 'bin', 'tsc');
    const r = spawnSync(process.execPath, [tsc, '-p', path.join(ROOT, 'tests', 'node', 'tsconfig.json')], { encoding: 'utf8' });
    assert.equal(r.status, 0, r.stdout + r.stderr);
  });
});
