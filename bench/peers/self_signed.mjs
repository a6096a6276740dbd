// A fresh self-signed certificate for the Node peers of the Ferrovia benchmarks.
//
// Node can make keys but not certificates, so the few DER structures of an X.509 v3
// certificate are written here (RFC 5280), signed with node:crypto.

import { generateKeyPairSync, randomBytes, sign } from 'node:crypto';

function length(n) {
  if (n < 0x80) return Buffer.from([n]);
  const bytes = [];
  for (; n > 0; n >>= 8) bytes.unshift(n & 0xff);
  return Buffer.from([0x80 | bytes.length, ...bytes]);
}
const tlv = (tag, ...parts) => {
  const body = Buffer.concat(parts);
  return Buffer.concat([Buffer.from([tag]), length(body.length), body]);
};
const sequence = (...parts) => tlv(0x30, ...parts);
const set = (...parts) => tlv(0x31, ...parts);
function oid(dotted) {
  const [a, b, ...rest] = dotted.split('.').map(Number);
  const bytes = [40 * a + b];
  for (const n of rest) {
    const base128 = [n & 0x7f];
    for (let v = n >>> 7; v > 0; v >>>= 7) base128.unshift(0x80 | (v & 0x7f));
    bytes.push(...base128);
  }
  return tlv(0x06, Buffer.from(bytes));
}
function time(date) {
  // UTCTime, YYMMDDHHMMSSZ (valid until 2050).
  const text = date.toISOString().replace(/[-:T]/g, '').slice(2, 14);
  return tlv(0x17, Buffer.from(`${text}Z`, 'ascii'));
}

/**
 * A self-signed ECDSA P-256 certificate for localhost and 127.0.0.1, valid 10 days:
 * `{ cert, key }` in PEM, and `der`, the certificate whose SHA-256 the peers announce.
 */
export function selfSigned() {
  const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const ecdsaWithSha256 = sequence(oid('1.2.840.10045.4.3.2'));
  const name = sequence(set(sequence(oid('2.5.4.3'), tlv(0x0c, Buffer.from('localhost')))));
  const serial = randomBytes(16);
  serial[0] &= 0x7f; // a positive INTEGER
  const now = Date.now();
  const subjectAltName = sequence(
    tlv(0x82, Buffer.from('localhost')), // dNSName
    tlv(0x87, Buffer.from([127, 0, 0, 1])), // iPAddress
  );
  const tbs = sequence(
    tlv(0xa0, tlv(0x02, Buffer.from([2]))), // version v3
    tlv(0x02, serial),
    ecdsaWithSha256,
    name,
    sequence(time(new Date(now - 3600e3)), time(new Date(now + 10 * 86400e3))),
    name,
    publicKey.export({ type: 'spki', format: 'der' }),
    tlv(0xa3, sequence(sequence(oid('2.5.29.17'), tlv(0x04, subjectAltName)))),
  );
  // node:crypto signs ECDSA in the DER form X.509 wants.
  const signature = sign('sha256', tbs, privateKey);
  const der = sequence(tbs, ecdsaWithSha256, tlv(0x03, Buffer.from([0]), signature));
  const pem = `-----BEGIN CERTIFICATE-----\n${der.toString('base64').match(/.{1,64}/g).join('\n')}\n-----END CERTIFICATE-----\n`;
  return { cert: pem, key: privateKey.export({ type: 'pkcs8', format: 'pem' }), der };
}

/** `--port P --host H` (defaults 4433 and 127.0.0.1), as every server in the suite takes. */
export function parseArgs(argv) {
  const out = { port: 4433, host: '127.0.0.1' };
  for (let i = 0; i < argv.length; i++) {
    const value = argv[i + 1];
    if (argv[i] === '--port' && value !== undefined) out.port = Number(argv[++i]);
    else if (argv[i] === '--host' && value !== undefined) out.host = argv[++i].replace(/^\[|\]$/g, '');
    else throw new Error(`unknown argument ${JSON.stringify(argv[i])}`);
  }
  return out;
}
