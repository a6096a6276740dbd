'use strict';
// Fleet options of Server.listen (reusePort, connectionIds, fleetSecret) and runWorkers():
// several processes serving one port, the parent holding the sockets in order.

const { fork } = require('node:child_process');
const { EventEmitter } = require('node:events');
const native = require('./native.js');

// The descriptors a worker finds its sockets in (after stdin, stdout and stderr).
const WORKER_UDP_FD = 3;
const WORKER_TCP_FD = 4;
const WORKER_ENV = 'FERROVIA_WORKER';

const { describe, checkInt } = require('./check.js');

/** A server ID as bytes: a Uint8Array, an array of byte values, or a hex string. */
function serverIdBytes(v) {
  const name = 'options.connectionIds.serverId';
  let bytes;
  if (v instanceof Uint8Array) bytes = Buffer.from(v);
  else if (Array.isArray(v)) bytes = Buffer.from(v.map((b, i) => checkInt(`${name}[${i}]`, b, 0, 255)));
  else if (typeof v === 'string') {
    if (!/^([0-9a-fA-F]{2})+$/.test(v)) throw new TypeError(`${name} must be hex digits in pairs, got ${JSON.stringify(v)}`);
    bytes = Buffer.from(v, 'hex');
  } else {
    throw new TypeError(`${name} must be a Uint8Array, an array of bytes or a hex string, got ${describe(v)}`);
  }
  if (bytes.length < 1 || bytes.length > 15) throw new RangeError(`${name} must be 1 to 15 bytes, got ${bytes.length}`);
  return bytes;
}

const WORKER = (() => {
  const raw = process.env[WORKER_ENV];
  if (!raw) return null;
  try {
    const w = JSON.parse(raw);
    return Object.freeze({ index: w.index, count: w.count, host: w.host, port: w.port, tcp: w.tcp });
  } catch {
    return null;
  }
})();
let workerSocketsTaken = false;

/**
 * Checks the fleet options of `o` and adds them to the native options `out`; in a worker
 * of runWorkers(), the first listen on the group's port (or without a port) gets the
 * worker's sockets.
 */
function fleetOptions(o, out) {
  if (o.reusePort !== undefined) {
    if (typeof o.reusePort !== 'boolean') throw new TypeError(`options.reusePort must be a boolean, got ${describe(o.reusePort)}`);
    out.reusePort = o.reusePort;
  }
  if (o.connectionIds !== undefined) {
    const c = o.connectionIds;
    if (c === null || typeof c !== 'object' || Array.isArray(c)) throw new TypeError(`options.connectionIds must be an object, got ${describe(c)}`);
    for (const key of Object.keys(c)) {
      if (!['serverId', 'configId', 'nonceLength'].includes(key)) throw new TypeError(`unknown option connectionIds.${key}`);
    }
    const serverId = serverIdBytes(c.serverId);
    const configId = c.configId === undefined ? 0 : checkInt('options.connectionIds.configId', c.configId, 0, 6);
    const nonceLength = c.nonceLength === undefined ? 8 : checkInt('options.connectionIds.nonceLength', c.nonceLength, 4, 18);
    if (serverId.length + nonceLength > 19) {
      throw new RangeError(`options.connectionIds: serverId (${serverId.length} bytes) and nonceLength (${nonceLength}) must add up to 19 at most`);
    }
    out.connectionIds = { serverId, configId, nonceLength };
  }
  if (o.fleetSecret !== undefined) {
    let secret;
    if (typeof o.fleetSecret === 'string') secret = Buffer.from(o.fleetSecret, 'utf8');
    else if (o.fleetSecret instanceof Uint8Array) secret = Buffer.from(o.fleetSecret);
    else throw new TypeError(`options.fleetSecret must be a string or a Uint8Array, got ${describe(o.fleetSecret)}`);
    if (secret.length < 32) throw new RangeError(`options.fleetSecret must be at least 32 bytes, got ${secret.length}`);
    out.fleetSecret = secret;
  }
  if (WORKER && !workerSocketsTaken && (o.port === undefined || o.port === WORKER.port)) {
    workerSocketsTaken = true;
    out.port = WORKER.port;
    out.worker = { index: WORKER.index, udpFd: WORKER_UDP_FD, tcpFd: WORKER.tcp ? WORKER_TCP_FD : undefined };
  }
}

/**
 * N processes serving one port, started by runWorkers(). Events: 'message' (message,
 * index) for what a worker sends with process.send(), 'exit' (index, code, signal).
 */
class Workers extends EventEmitter {
  #group;
  #script;
  #options;
  #children = [];
  #closing = null;

  constructor(group, script, options) {
    super();
    this.#group = group;
    this.#script = script;
    this.#options = options;
    for (let i = 0; i < options.count; i++) this.#spawn(i);
  }

  /** The port all workers serve. */
  get port() {
    return this.#group.port;
  }

  /** The number of workers. */
  get count() {
    return this.#options.count;
  }

  /** The worker processes (a restarted worker replaces its entry). */
  get processes() {
    return [...this.#children];
  }

  #spawn(index) {
    const { count, host, tcp, args, env, execArgv, restart } = this.#options;
    const tcpFd = tcp ? this.#group.tcpFd(index) : -1;
    const started = Date.now();
    const child = fork(this.#script, args, {
      env: { ...process.env, ...env, [WORKER_ENV]: JSON.stringify({ index, count, host, port: this.port, tcp: tcpFd >= 0 }) },
      execArgv,
      // The worker's sockets land on descriptors 3 and 4; the IPC channel comes after.
      stdio: ['inherit', 'inherit', 'inherit', this.#group.udpFd(index), tcpFd >= 0 ? tcpFd : 'ignore', 'ipc'],
    });
    this.#children[index] = child;
    child.on('message', (message) => this.emit('message', message, index));
    child.on('error', (err) => this.emit('error', err));
    child.on('exit', (code, signal) => {
      this.emit('exit', index, code, signal);
      if (this.#closing || !restart || this.#children[index] !== child) return;
      // The parent still holds the worker's sockets: a new worker takes its place. One
      // that dies at once is restarted after a pause rather than in a tight loop.
      const delay = Date.now() - started < 1000 ? 1000 : 100;
      setTimeout(() => {
        if (!this.#closing) this.#spawn(index);
      }, delay).unref();
    });
  }

  /**
   * Stops every worker (SIGTERM, SIGKILL after `timeout` ms) and closes the sockets.
   * Resolves once all have exited.
   */
  close({ timeout = 10_000 } = {}) {
    this.#closing ??= (async () => {
      await Promise.all(
        this.#children.map(
          (child) =>
            new Promise((resolve) => {
              if (child.exitCode !== null || child.signalCode !== null) return resolve();
              const kill = setTimeout(() => child.kill('SIGKILL'), timeout);
              child.once('exit', () => {
                clearTimeout(kill);
                resolve();
              });
              child.kill('SIGTERM');
            }),
        ),
      );
      this.#group.close();
    })();
    return this.#closing;
  }
}

/**
 * Runs `count` copies of the module `script` as worker processes that share one port:
 * this process opens the UDP socket of each worker (and a TCP listener, unless `tcp` is
 * false) in order in a SO_REUSEPORT group that routes by connection ID, and keeps them
 * open, so a worker that exits is replaced without losing its place. In each worker, the
 * first Server.listen() on that port (or without a port) serves on the worker's sockets;
 * `currentWorker` says which worker it is. Linux only.
 */
function runWorkers(count, script, options = {}, translate = (e) => e) {
  if (process.platform !== 'linux') throw new Error('runWorkers needs Linux (SO_REUSEPORT with connection ID steering)');
  checkInt('count', count, 1, 256);
  if (typeof script !== 'string' && !(script instanceof URL)) throw new TypeError(`script must be a path or a file: URL, got ${describe(script)}`);
  const path = script instanceof URL ? require('node:url').fileURLToPath(script) : script;
  if (options === null || typeof options !== 'object') throw new TypeError(`options must be an object, got ${describe(options)}`);
  for (const key of Object.keys(options)) {
    if (!['host', 'port', 'tcp', 'args', 'env', 'execArgv', 'restart'].includes(key)) throw new TypeError(`unknown option ${JSON.stringify(key)}`);
  }
  const host = options.host ?? '::';
  if (typeof host !== 'string') throw new TypeError(`options.host must be a string, got ${describe(host)}`);
  const port = options.port === undefined ? 4433 : checkInt('options.port', options.port, 0, 65535);
  const tcp = options.tcp ?? true;
  if (typeof tcp !== 'boolean') throw new TypeError(`options.tcp must be a boolean, got ${describe(tcp)}`);
  const restart = options.restart ?? true;
  if (typeof restart !== 'boolean') throw new TypeError(`options.restart must be a boolean, got ${describe(restart)}`);
  const args = options.args ?? [];
  if (!Array.isArray(args)) throw new TypeError(`options.args must be an array, got ${describe(args)}`);
  let group;
  try {
    group = native.openReusePortGroup(host, port, count, tcp);
  } catch (err) {
    throw translate(err);
  }
  return new Workers(group, path, { count, host, tcp, args, env: options.env ?? {}, execArgv: options.execArgv ?? process.execArgv, restart });
}

module.exports = { fleetOptions, runWorkers, Workers, currentWorker: WORKER };
