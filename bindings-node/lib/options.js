'use strict';
// The options of Server.listen(): the known option and limit names, and nativeOptions(),
// which checks them and turns them into what the native listen() takes (the fleet options
// through fleet.js).

const fleet = require('./fleet.js');
const { describe, checkInt, checkString, checkObject, MAX_U32 } = require('./check.js');
const { checkWatch, pemText } = require('./certificate.js');

const LIMIT_NAMES = [
  'maxSessions',
  'maxSessionsPerConnection',
  'maxBidiStreams',
  'maxUniStreams',
  'streamReceiveWindow',
  'connectionReceiveWindow',
  'sendWindow',
  'datagramQueue',
  'maxBufferedStreams',
  'maxBufferedDatagrams',
  'requestQueue',
  'maxSessionsPerIp',
  'maxConnections',
  'maxConnectionsPerIp',
  'retryThreshold',
  'datagramQueueBytes',
  'maxRefusedRequests',
  'requestTimeout',
  'responseTimeout',
  'sessionlessTimeout',
  'maxRequestBody',
  'handlerTimeout',
  'maxMessageSize',
  'maxConcurrentRequests',
  'writeTimeout',
];

const KNOWN_OPTIONS = new Set([
  'fetch',
  'overrideGlobalObjects',
  'client',
  'signal',
  'logLevel',
  'tcp',
  'host',
  'port',
  'certificate',
  'names',
  'origins',
  'idleTimeout',
  'keepAlive',
  'congestionControl',
  'webSocketCompression',
  'limits',
  'reusePort',
  'connectionIds',
  'fleetSecret',
]);

function nativeOptions(options) {
  const o = options === undefined ? {} : checkObject('options', options);
  for (const key of Object.keys(o)) {
    if (!KNOWN_OPTIONS.has(key)) throw new TypeError(`unknown option ${JSON.stringify(key)}`);
  }
  const out = { host: '::', port: 4433 };
  if (o.host !== undefined) {
    out.host = checkString('options.host', o.host);
    if (!/^[0-9a-fA-F.:]+$/.test(out.host)) {
      throw new RangeError(`options.host must be an IP address such as '::' or '127.0.0.1', got ${JSON.stringify(out.host)}`);
    }
  }
  if (o.port !== undefined) out.port = checkInt('options.port', o.port, 0, 65535);

  const cert = o.certificate === undefined ? 'self-signed' : o.certificate;
  if (cert === 'self-signed') {
    if (o.names !== undefined) {
      if (!Array.isArray(o.names) || o.names.length === 0) throw new TypeError('options.names must be a non-empty array of strings');
      out.names = o.names.map((n, i) => checkString(`options.names[${i}]`, n));
    }
  } else if (typeof cert === 'string') {
    throw new RangeError(`options.certificate must be 'self-signed', { cert, key } or { certFile, keyFile }, got ${JSON.stringify(cert)}`);
  } else {
    checkObject('options.certificate', cert);
    if (cert.cert !== undefined || cert.key !== undefined) {
      out.certPem = pemText('options.certificate.cert', cert.cert);
      out.keyPem = pemText('options.certificate.key', cert.key);
    } else if (cert.certFile !== undefined || cert.keyFile !== undefined) {
      out.certFile = checkString('options.certificate.certFile', cert.certFile);
      out.keyFile = checkString('options.certificate.keyFile', cert.keyFile);
    } else {
      throw new TypeError('options.certificate must have cert and key (PEM) or certFile and keyFile');
    }
    checkWatch('options.certificate', cert);
    if (o.names !== undefined) throw new TypeError('options.names only applies to a self-signed certificate');
  }

  if (o.origins !== undefined) {
    if (o.origins === 'same-host' || o.origins === 'any') out.originPolicy = o.origins;
    else if (Array.isArray(o.origins)) {
      out.originPolicy = 'list';
      out.allowedOrigins = o.origins.map((v, i) => checkString(`options.origins[${i}]`, v));
    } else {
      throw new TypeError(`options.origins must be 'same-host', 'any' or an array of origins, got ${describe(o.origins)}`);
    }
  }
  if (o.idleTimeout !== undefined) out.idleTimeoutMs = checkInt('options.idleTimeout', o.idleTimeout, 0, 2 ** 31);
  if (o.keepAlive !== undefined) out.keepAliveMs = checkInt('options.keepAlive', o.keepAlive, 0, 2 ** 31);
  if (o.congestionControl !== undefined) {
    const cc = checkString('options.congestionControl', o.congestionControl);
    if (!['cubic', 'newreno', 'bbr'].includes(cc)) {
      throw new RangeError(`options.congestionControl must be 'cubic', 'newreno' or 'bbr', got ${JSON.stringify(cc)}`);
    }
    out.congestionController = cc;
  }
  if (o.webSocketCompression !== undefined && o.webSocketCompression !== false) {
    const c = o.webSocketCompression === true ? 'deflate' : o.webSocketCompression;
    if (c !== 'deflate' && c !== 'deflate-no-context') {
      throw new RangeError(
        `options.webSocketCompression must be true, false, 'deflate' or 'deflate-no-context', got ${describe(o.webSocketCompression)}`,
      );
    }
    out.webSocketCompression = c;
  }
  if (o.tcp !== undefined && o.tcp !== true) {
    if (o.tcp === false) out.tcp = 'off';
    else {
      checkObject('options.tcp', o.tcp);
      for (const key of Object.keys(o.tcp)) {
        if (!['host', 'port', 'behindTlsProxy', 'trustedProxies'].includes(key)) throw new TypeError(`unknown option tcp.${key}`);
      }
      out.tcp = o.tcp.behindTlsProxy === true ? 'plain-behind-tls-proxy' : 'tls';
      if (o.tcp.behindTlsProxy !== undefined && typeof o.tcp.behindTlsProxy !== 'boolean') {
        throw new TypeError('options.tcp.behindTlsProxy must be a boolean');
      }
      if (o.tcp.trustedProxies !== undefined) {
        if (o.tcp.behindTlsProxy !== true) {
          throw new TypeError('options.tcp.trustedProxies applies only with behindTlsProxy: true');
        }
        if (!Array.isArray(o.tcp.trustedProxies)) {
          throw new TypeError(`options.tcp.trustedProxies must be an array of addresses or CIDR ranges, got ${describe(o.tcp.trustedProxies)}`);
        }
        out.trustedProxies = o.tcp.trustedProxies.map((r, i) => checkString(`options.tcp.trustedProxies[${i}]`, r));
      }
      if (o.tcp.host !== undefined) out.tcpHost = checkString('options.tcp.host', o.tcp.host);
      if (o.tcp.port !== undefined) out.tcpPort = checkInt('options.tcp.port', o.tcp.port, 0, 65535);
      if (o.tcp.port === undefined && o.tcp.behindTlsProxy !== true) {
        throw new TypeError('options.tcp needs a port (or true for the UDP port, false for none)');
      }
    }
  }
  if (o.limits !== undefined) {
    checkObject('options.limits', o.limits);
    out.limits = {};
    for (const key of Object.keys(o.limits)) {
      if (!LIMIT_NAMES.includes(key)) throw new TypeError(`unknown option limits.${key}`);
      const max = key === 'sendWindow' || key === 'maxRequestBody' || key === 'maxMessageSize' ? Number.MAX_SAFE_INTEGER : MAX_U32;
      // A retry threshold of 0 means: always ask for address validation.
      const min = key === 'retryThreshold' ? 0 : 1;
      out.limits[key] = checkInt(`options.limits.${key}`, o.limits[key], min, max);
    }
  }
  fleet.fleetOptions(o, out);
  return out;
}

module.exports = { LIMIT_NAMES, KNOWN_OPTIONS, nativeOptions };
