'use strict';
// Certificates: reading a PEM pair from files or from the options, the `watch` check,
// watching the files to reload the certificate when they change (logged on the
// `ferrovia:log` channel), and generateCertificate() for a self-signed one.

const fs = require('node:fs');
const pathModule = require('node:path');
const native = require('./native.js');
const { translate } = require('./errors.js');
const { logEvent } = require('./log.js');
const { describe, checkString } = require('./check.js');

/** Checks `watch` of a certificate: a boolean, and only beside certFile and keyFile. */
function checkWatch(name, cert) {
  if (cert.watch === undefined) return false;
  if (typeof cert.watch !== 'boolean') throw new TypeError(`${name}.watch must be a boolean, got ${describe(cert.watch)}`);
  if (cert.watch && (cert.certFile === undefined || cert.cert !== undefined || cert.key !== undefined)) {
    throw new TypeError(`${name}.watch needs certFile and keyFile`);
  }
  return cert.watch;
}

/** Reads a PEM certificate chain and key from files (ERR_CERTIFICATE when one cannot be read). */
function readPemFiles(certFile, keyFile) {
  const read = (file) => {
    try {
      return fs.readFileSync(file, 'utf8');
    } catch (err) {
      const e = new Error(`cannot read ${file}: ${err.message}`, { cause: err });
      e.code = 'ERR_CERTIFICATE';
      throw e;
    }
  };
  return { cert: read(certFile), key: read(keyFile) };
}

/** Quiet time after the last change to a watched certificate file before it is reloaded. */
const CERT_RELOAD_DELAY = 200;
/** Polling interval where the file system cannot report changes. */
const CERT_POLL_INTERVAL = 1000;
const CERT_LOG_TARGET = 'ferrovia::certificate';

/**
 * Calls `install(cert, key)` with the files' PEM text whenever either file changes (after
 * CERT_RELOAD_DELAY of quiet). The directories are watched, so a file replaced by rename
 * (or a Kubernetes secret's symlink swap) is seen too. A pair that fails to load (a file
 * half written, a key that does not match) is logged and the current certificate stays;
 * the next change tries again. Nothing here keeps the process alive. Returns { close() }.
 */
function watchCertificate(certFile, keyFile, install) {
  let closed = false;
  let timer = null;
  let tried = null; // the texts last tried, installed or not
  const fields = { cert_file: certFile, key_file: keyFile };
  const reload = () => {
    timer = null;
    if (closed) return;
    let pem;
    try {
      pem = readPemFiles(certFile, keyFile);
    } catch (err) {
      logEvent('warn', CERT_LOG_TARGET, 'certificate reload failed; the current certificate stays', { ...fields, error: err.message });
      return;
    }
    if (tried && tried.cert === pem.cert && tried.key === pem.key) return;
    tried = pem;
    try {
      const sha256 = install(pem.cert, pem.key);
      logEvent('info', CERT_LOG_TARGET, 'certificate reloaded', { ...fields, sha256 });
    } catch (err) {
      logEvent('warn', CERT_LOG_TARGET, 'certificate reload failed; the current certificate stays', { ...fields, error: err.message });
    }
  };
  const changed = () => {
    if (closed) return;
    if (timer) clearTimeout(timer);
    timer = setTimeout(reload, CERT_RELOAD_DELAY);
    timer.unref();
  };
  const files = [...new Set([pathModule.resolve(certFile), pathModule.resolve(keyFile)])];
  const watchers = [];
  let polling = false;
  const poll = () => {
    if (polling) return;
    polling = true;
    for (const file of files) {
      fs.watchFile(file, { persistent: false, interval: CERT_POLL_INTERVAL }, changed);
    }
    watchers.push({ close: () => files.forEach((file) => fs.unwatchFile(file, changed)) });
  };
  try {
    for (const dir of new Set(files.map((f) => pathModule.dirname(f)))) {
      const w = fs.watch(dir, { persistent: false }, changed);
      w.on('error', () => {
        // The directory went away or cannot be watched any more: poll the files instead.
        w.close();
        if (!closed) poll();
      });
      watchers.push(w);
    }
  } catch {
    poll();
  }
  return {
    close() {
      closed = true;
      if (timer) clearTimeout(timer);
      for (const w of watchers.splice(0)) w.close();
    },
  };
}

function pemText(name, v) {
  if (typeof v === 'string') return v;
  if (v instanceof Uint8Array) return Buffer.from(v.buffer, v.byteOffset, v.byteLength).toString('utf8');
  throw new TypeError(`${name} must be a PEM string or Buffer, got ${describe(v)}`);
}

/**
 * Generates a self-signed ECDSA P-256 certificate (valid 13 days, within the 14 days
 * browsers accept for serverCertificateHashes) for `names` (default localhost, 127.0.0.1,
 * ::1). Returns { cert, key } as PEM plus its hashes.
 */
function generateCertificate({ names = ['localhost', '127.0.0.1', '::1'] } = {}) {
  if (!Array.isArray(names) || names.length === 0) throw new TypeError('names must be a non-empty array of strings');
  names.forEach((n, i) => checkString(`names[${i}]`, n));
  let c;
  try {
    c = native.selfSignedCertificate(names);
  } catch (err) {
    throw translate(err);
  }
  return {
    cert: c.certPem,
    key: c.keyPem,
    sha256: Buffer.from(c.sha256).toString('hex'),
    spkiSha256: c.spkiSha256,
    certificateHashes: [{ algorithm: 'sha-256', value: new Uint8Array(c.sha256) }],
  };
}

module.exports = { checkWatch, readPemFiles, watchCertificate, pemText, generateCertificate };
