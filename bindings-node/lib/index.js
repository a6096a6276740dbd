'use strict';
// The Node.js face of Ferrovia: W3C WebTransport shapes (ReadableStream, WritableStream,
// promises) on the server side, over the promise-returning native classes. Everything
// here is translation and argument checking; protocol behaviour lives in the Rust core.
//
// This file only gathers the public API; the code lives in one module per concept, each
// requiring only those listed before it:
//
//   native.js       finds the native module (a local build, else the prebuilt package)
//   check.js        argument checks (TypeError/RangeError naming the argument), toBuffer,
//                   the AbortSignal option, MAX_U32 and asyncDispose
//   errors.js       WebTransportError and the translation of native errors (translate,
//                   rethrow, codeOf, the EADDRINUSE shape of a bind failure)
//   log.js          log levels and the `ferrovia:log` diagnostics channel
//   fleet.js        the fleet options of listen() and runWorkers()' worker processes
//   certificate.js  PEM files and text, watching certificate files, generateCertificate
//   options.js      Server.listen() options, checked and turned into the native ones
//   streams.js      WebTransportReceiveStream, SendStream and BidirectionalStream, the
//                   INTERNAL constructor token, sendOrder, pulled(), toDuplex
//   message.js      MessageStream: length-prefixed messages on a stream
//   session.js      WebTransportSession, DatagramDuplexStream and the SessionWaker
//   websocket.js    WebSocketSession: a plain WebSocket shaped like WebSocketStream
//   request.js      SessionRequest and RequestStream
//   http.js         the `fetch` handler path for ordinary HTTP requests, and the connector
//   server.js       Server, upgrades from other HTTP servers, runWorkers

const native = require('./native.js');
const fleet = require('./fleet.js');
const { WebTransportError } = require('./errors.js');
const { generateCertificate } = require('./certificate.js');
const { WebTransportReceiveStream, WebTransportSendStream, WebTransportBidirectionalStream, toDuplex } = require('./streams.js');
const { MessageStream } = require('./message.js');
const { DatagramDuplexStream, WebTransportSession } = require('./session.js');
const { WebSocketSession } = require('./websocket.js');
const { SessionRequest, RequestStream } = require('./request.js');
const { Server, runWorkers } = require('./server.js');

module.exports = {
  runWorkers,
  Workers: fleet.Workers,
  currentWorker: fleet.currentWorker,
  Server,
  SessionRequest,
  RequestStream,
  WebTransportSession,
  WebSocketSession,
  DatagramDuplexStream,
  WebTransportBidirectionalStream,
  WebTransportSendStream,
  WebTransportReceiveStream,
  WebTransportError,
  MessageStream,
  toDuplex,
  generateCertificate,
};
Object.defineProperty(module.exports, '__native', { value: native, enumerable: false });
