#!/usr/bin/env node
'use strict';
// `npx ferrovia cert`: writes a self-signed certificate a browser accepts through
// `serverCertificateHashes`, and prints everything needed to use it. The options, messages
// and exit codes match `python -m ferrovia cert`, so docs can describe one command.

const fs = require('node:fs');
const net = require('node:net');
const path = require('node:path');
const { createHash, X509Certificate } = require('node:crypto');

const DEFAULT_NAMES = ['localhost', '127.0.0.1', '::1'];
const USAGE_EXIT = 2;
const FAILURE_EXIT = 1;

const HELP = `Usage: ferrovia cert [options]

Writes a self-signed ECDSA P-256 certificate (valid 13 days: browsers accept at most 14
for serverCertificateHashes) and its private key, then prints the certificate's SHA-256
(hex, base64 and as a serverCertificateHashes snippet), the SHA-256 of its public key
and the matching Chrome flags.

Options:
  --name NAME    DNS name or IP address to certify; repeat for several
                 (default: localhost, 127.0.0.1, ::1)
  --out DIR      directory for cert.pem and key.pem (default: the current directory;
                 created if missing)
  --cert FILE    certificate path (default: DIR/cert.pem)
  --key FILE     private key path (default: DIR/key.pem)
  --port PORT    UDP port shown in the snippet and the Chrome flags (default: 4433)
  --force        overwrite existing files
  --json         print one JSON object instead of text
  -h, --help     show this help
`;

const TOP_HELP = `Usage: ferrovia <command> [options]

Commands:
  cert    write a self-signed certificate and key, print its hashes

Run \`ferrovia cert --help\` for the options.
`;

class UsageError extends Error {}

const DNS_LABEL = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/i;

/** Returns the name as the certificate should carry it, or throws UsageError. */
function checkName(raw) {
  const name = raw.startsWith('[') && raw.endsWith(']') ? raw.slice(1, -1) : raw;
  if (net.isIP(name)) return name;
  const labels = name.startsWith('*.') ? name.slice(2).split('.') : name.split('.');
  if (name.length > 0 && name.length <= 253 && labels.every((l) => DNS_LABEL.test(l))) return name.toLowerCase();
  throw new UsageError(`--name ${JSON.stringify(raw)} is neither a DNS name nor an IP address`);
}

function parseArgs(argv) {
  const opts = { names: [], out: '.', cert: null, key: null, port: 4433, force: false, json: false, help: false };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    const eq = arg.startsWith('--') ? arg.indexOf('=') : -1;
    const flag = eq > 0 ? arg.slice(0, eq) : arg;
    const inline = eq > 0 ? arg.slice(eq + 1) : undefined;
    const value = () => {
      if (inline !== undefined) return inline;
      const next = argv[i + 1];
      if (next === undefined || next.startsWith('--')) throw new UsageError(`${flag} needs a value`);
      i += 1;
      return next;
    };
    const noValue = () => {
      if (inline !== undefined) throw new UsageError(`${flag} takes no value`);
    };
    switch (flag) {
      case '--name':
        opts.names.push(checkName(value()));
        break;
      case '--out':
        opts.out = value();
        break;
      case '--cert':
        opts.cert = value();
        break;
      case '--key':
        opts.key = value();
        break;
      case '--port': {
        const v = value();
        const port = /^\d+$/.test(v) ? Number(v) : NaN;
        if (!(port >= 1 && port <= 65535)) throw new UsageError(`--port must be a number from 1 to 65535, got ${JSON.stringify(v)}`);
        opts.port = port;
        break;
      }
      case '--force':
        noValue();
        opts.force = true;
        break;
      case '--json':
        noValue();
        opts.json = true;
        break;
      case '-h':
      case '--help':
        opts.help = true;
        break;
      default:
        throw new UsageError(arg.startsWith('-') ? `unknown option ${arg}` : `unexpected argument ${JSON.stringify(arg)}`);
    }
  }
  if (opts.names.length === 0) opts.names = DEFAULT_NAMES.slice();
  opts.cert = opts.cert ?? path.join(opts.out, 'cert.pem');
  opts.key = opts.key ?? path.join(opts.out, 'key.pem');
  if (path.resolve(opts.cert) === path.resolve(opts.key)) throw new UsageError('--cert and --key must be different files');
  return opts;
}

function isoSeconds(date) {
  return date.toISOString().replace(/\.\d{3}Z$/, 'Z');
}

/** The host a page would put in its WebTransport URL: the first DNS name, else the first IP. */
function urlHost(names) {
  const host = names.find((n) => !net.isIP(n)) ?? names[0];
  const plain = host.startsWith('*.') ? `www.${host.slice(2)}` : host;
  return net.isIPv6(plain) ? `[${plain}]` : plain;
}

function describe(opts, generated) {
  const x509 = new X509Certificate(generated.cert);
  const der = x509.raw;
  const spkiDer = x509.publicKey.export({ type: 'spki', format: 'der' });
  const notBefore = new Date(x509.validFrom);
  const notAfter = new Date(x509.validTo);
  const authority = `${urlHost(opts.names)}:${opts.port}`;
  const base64 = createHash('sha256').update(der).digest('base64');
  return {
    certFile: opts.cert,
    keyFile: opts.key,
    names: opts.names,
    notBefore: isoSeconds(notBefore),
    notAfter: isoSeconds(notAfter),
    validDays: Math.round((notAfter - notBefore) / 86400000),
    sha256Hex: createHash('sha256').update(der).digest('hex'),
    sha256Base64: base64,
    spkiSha256Base64: createHash('sha256').update(spkiDer).digest('base64'),
    url: `https://${authority}/`,
    snippet: [
      `const transport = new WebTransport('https://${authority}/', {`,
      '  serverCertificateHashes: [{',
      "    algorithm: 'sha-256',",
      `    value: Uint8Array.from(atob('${base64}'), (c) => c.charCodeAt(0)),`,
      '  }],',
      '});',
    ].join('\n'),
    chromeFlags: [
      `--origin-to-force-quic-on=${authority}`,
      `--ignore-certificate-errors-spki-list=${createHash('sha256').update(spkiDer).digest('base64')}`,
    ],
  };
}

function report(info) {
  const indent = (text) => text.replace(/^/gm, '  ');
  return `Wrote a self-signed ECDSA P-256 certificate for ${info.names.join(', ')}
  certificate  ${info.certFile}
  private key  ${info.keyFile}  (keep it private)
  valid        ${info.notBefore} to ${info.notAfter} (${info.validDays} days; browsers accept at most 14)

SHA-256 of the certificate:
  hex     ${info.sha256Hex}
  base64  ${info.sha256Base64}

In the page (serverCertificateHashes):
${indent(info.snippet)}

SHA-256 of the public key (SPKI, base64):
  ${info.spkiSha256Base64}

Chrome flags to trust it without serverCertificateHashes (e.g. from an https page):
  ${info.chromeFlags.join(' \\\n    ')}

Browsers accept a certificate through serverCertificateHashes for at most 14 days:
run this command again before ${info.notAfter.slice(0, 10)}.
`;
}

function writeFiles(opts, generated) {
  for (const file of [opts.cert, opts.key]) {
    if (!opts.force && fs.existsSync(file)) {
      throw new Error(`${file} already exists; pass --force to overwrite it`);
    }
  }
  for (const file of [opts.cert, opts.key]) {
    const dir = path.dirname(file);
    try {
      fs.mkdirSync(dir, { recursive: true });
    } catch (err) {
      throw new Error(`cannot create the directory ${dir}: ${err.message}`);
    }
  }
  try {
    fs.writeFileSync(opts.cert, generated.cert);
    // The key is a secret: readable by its owner only, even when overwriting a looser file.
    fs.writeFileSync(opts.key, generated.key, { mode: 0o600 });
    fs.chmodSync(opts.key, 0o600);
  } catch (err) {
    throw new Error(`cannot write ${err.path || 'the files'}: ${err.message}`);
  }
}

function cert(argv) {
  const opts = parseArgs(argv);
  if (opts.help) {
    process.stdout.write(HELP);
    return 0;
  }
  // Loaded here so that `--help` and argument errors work even without the native module.
  const { generateCertificate } = require('./index.js');
  const generated = generateCertificate({ names: opts.names });
  writeFiles(opts, generated);
  const info = describe(opts, generated);
  process.stdout.write(opts.json ? `${JSON.stringify(info, null, 2)}\n` : report(info));
  return 0;
}

function main(argv) {
  const [command, ...rest] = argv;
  try {
    if (command === undefined) {
      process.stderr.write(TOP_HELP);
      return USAGE_EXIT;
    }
    if (command === '-h' || command === '--help' || command === 'help') {
      process.stdout.write(TOP_HELP);
      return 0;
    }
    if (command === 'cert') return cert(rest);
    throw new UsageError(`unknown command ${JSON.stringify(command)}`);
  } catch (err) {
    if (err instanceof UsageError) {
      const where = command === 'cert' ? 'ferrovia cert' : 'ferrovia';
      process.stderr.write(`${where}: ${err.message}\nRun \`${where} --help\` for usage.\n`);
      return USAGE_EXIT;
    }
    process.stderr.write(`ferrovia ${command}: ${err.message}\n`);
    return FAILURE_EXIT;
  }
}

process.exitCode = main(process.argv.slice(2));
