// Fleet options of the Node package: reusePort, connectionIds and fleetSecret, and
// runWorkers() starting worker processes that share one port. node:https (plain TLS over
// TCP, which the group shares too) is the independent client.
//
//   node --test tests/node/fleet.test.mjs

import assert from 'node:assert/strict';
import https from 'node:https';
import { describe, test } from 'node:test';

import { Server, generateCertificate, runWorkers, currentWorker } from 'ferrovia';

const linux = process.platform === 'linux';

describe('reusePort', { skip: !linux && 'SO_REUSEPORT groups are tested on Linux' }, () => {
  test('two servers bind the same port only with reusePort', async () => {
    const a = await Server.listen({ host: '127.0.0.1', port: 0, reusePort: true });
    try {
      const b = await Server.listen({ host: '127.0.0.1', port: a.port, reusePort: true });
      assert.equal(b.port, a.port);
      assert.equal(b.tcpPort, a.tcpPort, 'the TCP side shares the port too');
      await b.close({ grace: 0 });
      await assert.rejects(Server.listen({ host: '127.0.0.1', port: a.port }), (err) => {
        assert.equal(err.code, 'EADDRINUSE');
        return true;
      });
    } finally {
      await a.close({ grace: 0 });
    }
  });

  test('reusePort must be a boolean', async () => {
    await assert.rejects(Server.listen({ host: '127.0.0.1', port: 0, reusePort: 'yes' }), TypeError);
  });
});

describe('connectionIds and fleetSecret', () => {
  const listen = (extra) => Server.listen({ host: '127.0.0.1', port: 0, tcp: false, ...extra });

  test('valid settings listen', async () => {
    for (const serverId of ['fe0102', [0xfe, 1, 2], new Uint8Array([9, 9, 9, 9, 9, 9, 9, 9])]) {
      const server = await listen({ connectionIds: { serverId, configId: 1, nonceLength: 6 }, fleetSecret: 'a fleet secret of thirty-two bytes!' });
      await server.close({ grace: 0 });
    }
    const server = await listen({ fleetSecret: new Uint8Array(32).fill(7) });
    await server.close({ grace: 0 });
  });

  test('bad settings are refused with a clear message', async () => {
    const refused = async (extra, type, pattern) => {
      await assert.rejects(listen(extra), (err) => {
        assert.ok(err instanceof type, `${err.name}: ${err.message}`);
        assert.match(err.message, pattern);
        return true;
      });
    };
    await refused({ connectionIds: { serverId: 'xyz' } }, TypeError, /serverId must be hex digits in pairs/);
    await refused({ connectionIds: { serverId: 7 } }, TypeError, /serverId must be a Uint8Array, an array of bytes or a hex string/);
    await refused({ connectionIds: {} }, TypeError, /serverId must be/);
    await refused({ connectionIds: { serverId: [] } }, RangeError, /serverId must be 1 to 15 bytes, got 0/);
    await refused({ connectionIds: { serverId: new Uint8Array(16) } }, RangeError, /1 to 15 bytes, got 16/);
    await refused({ connectionIds: { serverId: [256] } }, RangeError, /serverId\[0\] must be an integer in 0..255/);
    await refused({ connectionIds: { serverId: '01', configId: 7 } }, RangeError, /configId must be an integer in 0..6/);
    await refused({ connectionIds: { serverId: '01', nonceLength: 3 } }, RangeError, /nonceLength must be an integer in 4..18/);
    await refused({ connectionIds: { serverId: 'ff'.repeat(15), nonceLength: 5 } }, RangeError, /add up to 19 at most/);
    await refused({ connectionIds: { serverId: '01', nonce: 8 } }, TypeError, /unknown option connectionIds.nonce/);
    await refused({ fleetSecret: 'too short' }, RangeError, /fleetSecret must be at least 32 bytes, got 9/);
    await refused({ fleetSecret: 42 }, TypeError, /fleetSecret must be a string or a Uint8Array/);
  });
});

/** GET / over a new TLS connection (a new source port each time); the body. */
function get(port, ca) {
  return new Promise((resolve, reject) => {
    const req = https.get({ host: '127.0.0.1', port, path: '/', ca, servername: 'localhost', agent: false }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d) => (body += d));
      res.on('end', () => resolve(body));
    });
    req.on('error', reject);
  });
}

describe('runWorkers', { skip: !linux && 'runWorkers needs Linux' }, () => {
  test('this process is not a worker', () => {
    assert.equal(currentWorker, null);
  });

  test('two workers serve one port and clients reach both', async () => {
    const { cert, key } = generateCertificate({ names: ['localhost', '127.0.0.1'] });
    const workers = runWorkers(2, new URL('./fleet-worker.mjs', import.meta.url), {
      host: '127.0.0.1',
      port: 0,
      env: { FLEET_TEST_CERT: cert, FLEET_TEST_KEY: key },
      restart: false,
    });
    try {
      assert.equal(workers.count, 2);
      assert.notEqual(workers.port, 0);
      const listening = await new Promise((resolve, reject) => {
        const seen = [];
        workers.on('message', (m) => {
          seen.push(m);
          if (seen.length === 2) resolve(seen);
        });
        workers.on('exit', (index, code) => reject(new Error(`worker ${index} exited with ${code}`)));
      });
      assert.deepEqual(listening.map((m) => m.index).sort(), [0, 1]);
      for (const m of listening) {
        assert.equal(m.port, workers.port, 'every worker serves the group port');
        assert.equal(m.tcpPort, workers.port);
      }
      // The kernel hashes each new connection to one of the two workers.
      const answers = new Set();
      for (let i = 0; i < 64 && answers.size < 2; i++) answers.add(await get(workers.port, cert));
      assert.deepEqual([...answers].sort(), ['worker 0 of 2', 'worker 1 of 2']);
    } finally {
      await workers.close();
    }
    assert.ok(workers.processes.every((p) => p.exitCode !== null || p.signalCode !== null));
  });

  test('arguments are checked', () => {
    assert.throws(() => runWorkers(0, 'x.mjs'), RangeError);
    assert.throws(() => runWorkers(2, 42), TypeError);
    assert.throws(() => runWorkers(2, 'x.mjs', { bogus: 1 }), /unknown option "bogus"/);
  });
});
