// `npx ferrovia cert`: the files it writes, what it prints, that a browser accepts the
// certificate by the printed hash, and clear failures for wrong arguments.

import assert from 'node:assert/strict';
import { createHash, createPrivateKey, X509Certificate } from 'node:crypto';
import { mkdtempSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, describe, test } from 'node:test';

import { closeAll, withPage } from '../browser/harness.mjs';
import { REPO_ROOT, run } from './support.mjs';

const CLI = path.join(REPO_ROOT, 'bindings-node', 'lib', 'cli.js');
const cert = (args, opts) => run(process.execPath, [CLI, 'cert', ...args], opts);
const scratch = () => mkdtempSync(path.join(tmpdir(), 'ferrovia-cert-'));

after(() => closeAll());

function inspect(dir) {
  const pem = readFileSync(path.join(dir, 'cert.pem'));
  const x509 = new X509Certificate(pem);
  const spki = x509.publicKey.export({ type: 'spki', format: 'der' });
  return {
    x509,
    keyPem: readFileSync(path.join(dir, 'key.pem')),
    sha256Hex: createHash('sha256').update(x509.raw).digest('hex'),
    sha256Base64: createHash('sha256').update(x509.raw).digest('base64'),
    spkiBase64: createHash('sha256').update(spki).digest('base64'),
  };
}

describe('ferrovia cert', () => {
  test('writes an ECDSA P-256 certificate under 14 days for localhost, 127.0.0.1 and ::1, and prints its hashes', async () => {
    const dir = scratch();
    const r = await cert([], { cwd: dir });
    assert.equal(r.code, 0, r.stderr);
    const c = inspect(dir);
    assert.equal(c.x509.publicKey.asymmetricKeyDetails.namedCurve, 'prime256v1');
    assert.equal(c.x509.subjectAltName, 'DNS:localhost, IP Address:127.0.0.1, IP Address:0:0:0:0:0:0:0:1');
    const days = (new Date(c.x509.validTo) - new Date(c.x509.validFrom)) / 86400000;
    assert.ok(days > 12 && days <= 14, `valid for ${days} days`);
    assert.ok(c.x509.verify(c.x509.publicKey), 'self-signed');
    assert.ok(c.x509.checkPrivateKey(createPrivateKey(c.keyPem)), 'the key matches');
    assert.equal(statSync(path.join(dir, 'key.pem')).mode & 0o777, 0o600);

    assert.match(r.stdout, new RegExp(`hex\\s+${c.sha256Hex}\\n`));
    assert.ok(r.stdout.includes(`base64  ${c.sha256Base64}\n`), r.stdout);
    assert.ok(r.stdout.includes("new WebTransport('https://localhost:4433/', {"), r.stdout);
    assert.ok(r.stdout.includes(`serverCertificateHashes: [{\n      algorithm: 'sha-256',\n      value: Uint8Array.from(atob('${c.sha256Base64}')`), r.stdout);
    assert.ok(r.stdout.includes(`SHA-256 of the public key (SPKI, base64):\n  ${c.spkiBase64}\n`), r.stdout);
    assert.ok(r.stdout.includes('--origin-to-force-quic-on=localhost:4433'), r.stdout);
    assert.ok(r.stdout.includes(`--ignore-certificate-errors-spki-list=${c.spkiBase64}`), r.stdout);
  });

  test('--name, --port, --cert, --key and --json', async () => {
    const dir = scratch();
    const certFile = path.join(dir, 'a', 'server.crt');
    const keyFile = path.join(dir, 'b', 'server.key');
    const r = await cert(['--name', 'example.test', '--name=10.1.2.3', '--name', '[::2]', '--port', '9443', '--cert', certFile, '--key', keyFile, '--json']);
    assert.equal(r.code, 0, r.stderr);
    const info = JSON.parse(r.stdout);
    const x509 = new X509Certificate(readFileSync(certFile));
    assert.equal(x509.subjectAltName, 'DNS:example.test, IP Address:10.1.2.3, IP Address:0:0:0:0:0:0:0:2');
    assert.ok(x509.checkPrivateKey(createPrivateKey(readFileSync(keyFile))));
    assert.equal(info.sha256Hex, createHash('sha256').update(x509.raw).digest('hex'));
    assert.deepEqual(info.names, ['example.test', '10.1.2.3', '::2']);
    assert.equal(info.url, 'https://example.test:9443/');
    assert.equal(info.chromeFlags[0], '--origin-to-force-quic-on=example.test:9443');
    assert.equal(info.validDays, 13);
  });

  test('a browser accepts the written certificate by the printed hash', async () => {
    const dir = scratch();
    const r = await cert(['--out', dir, '--json']);
    assert.equal(r.code, 0, r.stderr);
    const { sha256Hex, certFile, keyFile } = JSON.parse(r.stdout);
    const { Server } = await import('ferrovia');
    const server = await Server.listen({ port: 0, certificate: { certFile, keyFile } });
    try {
      assert.equal(server.certificate.sha256, sha256Hex);
      server.route('/ok', async (request) => {
        const session = await request.accept();
        session.close({ closeCode: 7, reason: 'certificate accepted' });
      });
      const closed = await withPage('chromium', (page) =>
        page.evaluate(async ({ url, hash }) => {
          const t = await wt.connect(url, hash);
          return JSON.parse(JSON.stringify(await wt.timeout(t.closed, 10000, 'closed')));
        }, { url: `https://localhost:${server.port}/ok`, hash: sha256Hex }),
      );
      assert.deepEqual(closed, { closeCode: 7, reason: 'certificate accepted' });
    } finally {
      await server.close();
    }
  });

  test('refuses to overwrite without --force, and overwrites with it', async () => {
    const dir = scratch();
    assert.equal((await cert(['--out', dir])).code, 0);
    const before = readFileSync(path.join(dir, 'cert.pem'), 'utf8');
    const again = await cert(['--out', dir]);
    assert.equal(again.code, 1);
    assert.match(again.stderr, /cert\.pem already exists; pass --force to overwrite it/);
    assert.equal(readFileSync(path.join(dir, 'cert.pem'), 'utf8'), before);
    const forced = await cert(['--out', dir, '--force']);
    assert.equal(forced.code, 0, forced.stderr);
    assert.notEqual(readFileSync(path.join(dir, 'cert.pem'), 'utf8'), before);
  });

  test('an unwritable destination fails with the reason and status 1', async () => {
    const dir = scratch();
    const file = path.join(dir, 'a-file');
    writeFileSync(file, 'not a directory');
    const r = await cert(['--out', path.join(file, 'sub')]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /^ferrovia cert: cannot create the directory .*a-file\/sub: ENOTDIR/);
    assert.equal(r.stdout, '');
  });

  const usageErrors = [
    [['--bogus'], /unknown option --bogus/],
    [['--name'], /--name needs a value/],
    [['--out', '--force'], /--out needs a value/],
    [['--name', 'not a host!'], /--name "not a host!" is neither a DNS name nor an IP address/],
    [['--name', 'a..b'], /--name "a\.\.b" is neither a DNS name nor an IP address/],
    [['--port', '0'], /--port must be a number from 1 to 65535, got "0"/],
    [['--port', '70000'], /--port must be a number from 1 to 65535, got "70000"/],
    [['--port', 'http'], /--port must be a number from 1 to 65535, got "http"/],
    [['--force=yes'], /--force takes no value/],
    [['extra'], /unexpected argument "extra"/],
    [['--cert', 'same.pem', '--key', 'same.pem'], /--cert and --key must be different files/],
  ];
  for (const [args, message] of usageErrors) {
    test(`cert ${args.join(' ')} is a usage error (status 2) that writes nothing`, async () => {
      const dir = scratch();
      const r = await cert(args, { cwd: dir });
      assert.equal(r.code, 2);
      assert.match(r.stderr, message);
      assert.match(r.stderr, /Run `ferrovia cert --help` for usage\./);
      assert.throws(() => statSync(path.join(dir, 'cert.pem')), { code: 'ENOENT' });
    });
  }

  test('help, a missing command and an unknown command', async () => {
    const help = await cert(['--help']);
    assert.equal(help.code, 0);
    assert.match(help.stdout, /^Usage: ferrovia cert \[options\]/);
    assert.match(help.stdout, /--name NAME/);
    const none = await run(process.execPath, [CLI]);
    assert.equal(none.code, 2);
    assert.match(none.stderr, /^Usage: ferrovia <command>/);
    const unknown = await run(process.execPath, [CLI, 'certs']);
    assert.equal(unknown.code, 2);
    assert.match(unknown.stderr, /^ferrovia: unknown command "certs"/);
  });

  test('npx ferrovia cert runs the package bin', async () => {
    const dir = scratch();
    const r = await run('npm', ['exec', '--offline', '--no', '--', 'ferrovia', 'cert', '--out', dir, '--json'], { timeout: 60000 });
    assert.equal(r.code, 0, r.stderr);
    assert.equal(JSON.parse(r.stdout).sha256Hex, inspect(dir).sha256Hex);
  });
});
