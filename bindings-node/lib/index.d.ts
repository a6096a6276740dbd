// Type declarations of the `ferrovia` package (see docs/node.md).

import type { Duplex, DuplexOptions, Readable, ReadableOptions, Writable, WritableOptions } from 'node:stream';
import { ReadableStream, WritableStream } from 'node:stream/web';
import type { ChildProcess } from 'node:child_process';
import { EventEmitter } from 'node:events';

/** A hash for the browser's `serverCertificateHashes` option. */
export interface CertificateHash {
  algorithm: 'sha-256';
  value: Uint8Array;
}

/** Resource limits; each defaults to the core's value. All are positive integers. */
export interface Limits {
  /** Sessions open at once across the server (10000). */
  maxSessions?: number;
  /** Sessions one QUIC connection may carry (16). */
  maxSessionsPerConnection?: number;
  /** Concurrent bidirectional streams a client may open per connection (100). */
  maxBidiStreams?: number;
  /** Concurrent unidirectional streams a client may open per connection (100). */
  maxUniStreams?: number;
  /** Receive window per stream in bytes (4 MiB). */
  streamReceiveWindow?: number;
  /** Receive window per connection in bytes (16 MiB). */
  connectionReceiveWindow?: number;
  /** Send window per connection in bytes (16 MiB). */
  sendWindow?: number;
  /** Incoming datagrams queued per session before the oldest are dropped (1024). */
  datagramQueue?: number;
  /** Streams held for a session that does not exist yet (64). */
  maxBufferedStreams?: number;
  /** Datagrams held for a session that does not exist yet (256). */
  maxBufferedDatagrams?: number;
  /** Requests queued per path before new ones get 503 (128). */
  requestQueue?: number;
  /** Sessions, open or waiting, from one IP address (one /64 for IPv6) before 429 (1024). */
  maxSessionsPerIp?: number;
  /** QUIC connections held at once; more are refused (10000). */
  maxConnections?: number;
  /** QUIC connections from one IP address (one /64 for IPv6) (256). */
  maxConnectionsPerIp?: number;
  /** Above this many connections, new clients must pass a QUIC Retry first; 0 always (1000). */
  retryThreshold?: number;
  /** Bytes of received datagrams queued per session before the oldest are dropped (1 MiB). */
  datagramQueueBytes?: number;
  /** Refused requests a connection may make in a burst, refilled 1/s; past it the connection closes (64). */
  maxRefusedRequests?: number;
  /** Milliseconds a client has to send a stream's header or request headers (10000). */
  requestTimeout?: number;
  /** Milliseconds a client may withhold credit for a response or capsule before the session ends (5000). */
  responseTimeout?: number;
  /** Milliseconds a connection without any session stays open (10000). */
  sessionlessTimeout?: number;
  /** The largest ordinary HTTP request body in bytes: declared larger gets 413, streamed larger fails with ERR_BODY_TOO_LARGE (16 MiB). */
  maxRequestBody?: number;
  /** Milliseconds the `fetch` handler has to return a Response before the request gets 503 (30000). */
  handlerTimeout?: number;
  /** Ordinary HTTP requests handled at once, from the `fetch` handler's start to the end of its response body; more wait for a slot up to `handlerTimeout`, then get 503 (1024). */
  maxConcurrentRequests?: number;
  /** The largest plain WebSocket message in bytes, received or sent; a larger one received closes with 1009 (1 MiB). */
  maxMessageSize?: number;
  /** Milliseconds a write toward a TCP-side client (WebSocket and QMux frames, an HTTP response) may take before the session or connection ends: a client that stops reading (20000). */
  writeTimeout?: number;
}

/** The second argument of the `fetch` handler. */
export interface FetchInfo {
  /** The client's IP address (behind a TLS-terminating proxy: the forwarded client). */
  remoteAddress: string | null;
  /** The client's port (0 when a proxy forwarded the address). */
  remotePort: number | null;
  /** '1.1', '2.0' or '3.0'. */
  httpVersion: string;
}

/** Answers ordinary HTTP requests: the handler style of Deno.serve, Bun.serve and Hono. */
export type FetchHandler = (request: Request, info: FetchInfo) => Response | Promise<Response>;

/** PEM certificate chain and private key, as text or bytes. */
export interface PemCertificate {
  cert: string | Uint8Array;
  key: string | Uint8Array;
}

/** Paths of PEM files. */
export interface PemFiles {
  certFile: string;
  keyFile: string;
  /**
   * Reload the pair whenever either file changes (after 200 ms of quiet). A pair that
   * fails to load (half written, mismatched) is logged on `ferrovia:log` and the current
   * certificate stays. The watching never keeps the process alive and ends with close()
   * or the next setCertificate().
   */
  watch?: boolean;
}

/** Options of `Server.listen`. */
export interface ListenOptions {
  /** IP address to bind ('::', the default, serves IPv6 and IPv4). */
  host?: string;
  /** UDP port (4433); 0 picks a free one. */
  port?: number;
  /** 'self-signed' (default), PEM text, or PEM files. */
  certificate?: 'self-signed' | PemCertificate | PemFiles;
  /** Names of the self-signed certificate (localhost, 127.0.0.1, ::1). */
  names?: string[];
  /** Which page origins may open sessions: 'same-host' (default), 'any', or a list. */
  origins?: 'same-host' | 'any' | string[];
  /** Idle timeout in ms (0 disables). */
  idleTimeout?: number;
  /** Keep-alive interval in ms (0 disables). */
  keepAlive?: number;
  /** QUIC congestion controller ('cubic'). */
  congestionControl?: 'cubic' | 'newreno' | 'bbr';
  /**
   * permessage-deflate (RFC 7692) on plain WebSockets of this server's TCP side; off by
   * default. `true` or `'deflate'` keeps each side's context between messages (best ratio,
   * about 220 KiB per connection once used); `'deflate-no-context'` compresses each
   * message alone (no state while idle).
   */
  webSocketCompression?: boolean | 'deflate' | 'deflate-no-context';
  /** Resource limits. */
  limits?: Limits;
  /**
   * The TCP side (QMux sessions and plain WebSockets for clients without WebTransport
   * over HTTP/3): `true` (default) listens with TLS on the UDP port number; `false` turns
   * it off; `{ host, port }` moves it; `{ port, behindTlsProxy: true }` listens without
   * TLS, only for running behind a TLS-terminating proxy. `trustedProxies` (addresses or
   * CIDR ranges such as `'10.0.0.0/8'`; loopback by default) are the peers whose
   * `Forwarded` / `X-Forwarded-For` and `X-Forwarded-Proto` headers are believed: the
   * per-address limits then apply to the client they name. Any other peer is a client.
   */
  tcp?: boolean | { host?: string; port?: number; behindTlsProxy?: boolean; trustedProxies?: string[] };
  /**
   * Answers every ordinary HTTP request (not a session or WebSocket request) over HTTP/3,
   * HTTP/2 and HTTP/1.1, bodies streamed both ways; a Hono app runs with `fetch: app.fetch`.
   * A handler that throws gets 500 (logged with console.error).
   */
  fetch?: FetchHandler;
  /**
   * With `fetch` (or `client`), `Response` in this process becomes a lighter one that keeps
   * a string or bytes body, its status and headers as given, and builds Node's own
   * Response only when something else is asked of it (its body stream, `text()`,
   * `clone()`...); it is still `instanceof Response`, and Node's own responses (from
   * `fetch()`) still are too. The handler's Request is light the same way. `false` leaves
   * the global `Response` alone (responses then cost what Node's cost). Default `true`,
   * as @hono/node-server does.
   */
  overrideGlobalObjects?: boolean;
  /**
   * `true` serves the browser connector at `/ferrovia/client.js` (or at the path given),
   * before `fetch` sees the request: `ferrovia/client` with one more export,
   * `serverCertificateHashes`, this server's certificate hashes as `connect(url, {
   * serverCertificateHashes })` takes them (empty for a CA's certificate).
   */
  client?: boolean | string;
  /**
   * The most verbose server log events forwarded ('warn', the default; 'off', 'error',
   * 'info', 'debug', 'trace'). They are published on the `ferrovia:log` diagnostics
   * channel as {@link LogEvent}s; with no subscriber, warnings and errors go to stderr.
   * Process-wide: the last server started sets it.
   */
  logLevel?: 'off' | 'error' | 'warn' | 'info' | 'debug' | 'trace';
  /**
   * Aborting closes the server (like `net.Server.listen({ signal })`); a signal already
   * aborted rejects with an `AbortError` (`code: 'ABORT_ERR'`, `cause`: the reason).
   */
  signal?: AbortSignal;
  /**
   * Sets SO_REUSEPORT on the UDP socket and the TCP listener, so that several processes
   * (or servers) share the port; the kernel spreads clients by a hash of their address.
   * Without the steering that {@link runWorkers} sets up, a client whose address changes
   * lands on a sibling that does not hold its session. Linux and other Unixes; `false`.
   */
  reusePort?: boolean;
  /** Connection IDs a QUIC-LB load balancer routes by (see {@link ConnectionIdOptions}). */
  connectionIds?: ConnectionIdOptions;
  /**
   * The secret (at least 32 bytes; a string counts its UTF-8 bytes) every member of a
   * fleet shares: stateless resets and Retry tokens of one member are valid at all. Use
   * it together with `connectionIds`.
   */
  fleetSecret?: string | Uint8Array;
}

/**
 * QUIC-LB (draft-ietf-quic-load-balancers) connection IDs: every connection ID this
 * server issues carries `serverId` in plaintext, so a load balancer that reads it routes
 * a client back here after its address changes.
 */
export interface ConnectionIdOptions {
  /** This server's ID: 1 to 15 bytes, as bytes or hex. */
  serverId: Uint8Array | number[] | string;
  /** The config rotation codepoint, 0 (default) to 6. */
  configId?: number;
  /** Nonce bytes after the server ID: 4 to 18, 8 by default; with it at most 19. */
  nonceLength?: number;
}

/** Options of {@link runWorkers}. */
export interface RunWorkersOptions {
  /** The address the group binds ('::'). */
  host?: string;
  /** The port (4433); 0 picks one, read back from `Workers.port`. */
  port?: number;
  /** Whether the group opens TCP listeners for the TCP side too (true). */
  tcp?: boolean;
  /** Arguments of each worker. */
  args?: string[];
  /** Environment variables added to each worker's. */
  env?: Record<string, string>;
  /** Node options of each worker (this process's by default). */
  execArgv?: string[];
  /** Start a new worker in place of one that exits (true). */
  restart?: boolean;
}

/** Which worker of {@link runWorkers} this process is. */
export interface WorkerInfo {
  readonly index: number;
  readonly count: number;
  readonly host: string;
  readonly port: number;
  readonly tcp: boolean;
}

/** The worker processes of {@link runWorkers}. */
export class Workers extends EventEmitter {
  private constructor();
  /** The port every worker serves. */
  readonly port: number;
  /** The number of workers. */
  readonly count: number;
  /** The worker processes; a restarted worker replaces its entry. */
  readonly processes: ChildProcess[];
  /** Stops every worker (SIGTERM, SIGKILL after `timeout` ms) and closes the sockets. */
  close(options?: { timeout?: number }): Promise<void>;
  on(event: 'message', listener: (message: unknown, index: number) => void): this;
  on(event: 'exit', listener: (index: number, code: number | null, signal: NodeJS.Signals | null) => void): this;
  on(event: 'error', listener: (err: Error) => void): this;
}

/**
 * Runs `count` copies of the module `script` as processes that share one port: this
 * process opens every worker's sockets in order in a SO_REUSEPORT group that routes
 * QUIC packets by connection ID (so sessions survive client address changes) and keeps
 * them for restarts. In a worker, the first `Server.listen` on that port (or without a
 * port) serves on the worker's sockets. Linux only.
 */
export function runWorkers(count: number, script: string | URL, options?: RunWorkersOptions): Workers;

/** In a worker of {@link runWorkers}, which one; `null` elsewhere. */
export const currentWorker: WorkerInfo | null;

/**
 * How `Server.listen` fails when its UDP or TCP port is taken: the shape of `net`'s
 * error, with Ferrovia's own name in `ferroviaCode`.
 */
export interface AddressInUseError extends Error {
  code: 'EADDRINUSE';
  /** Ferrovia's name for it. */
  ferroviaCode: 'ERR_ADDRESS_IN_USE';
  /** The negated OS error number (-98 on Linux), as in `net`. */
  errno: number;
  syscall: 'bind';
  /** The address that could not be bound. */
  address: string;
  port: number;
  /** Which socket it was: the UDP one (WebTransport) or the TCP side. */
  transport: 'udp' | 'tcp';
}

/** A server log event, as published on the `ferrovia:log` diagnostics channel. */
export interface LogEvent {
  level: 'error' | 'warn' | 'info' | 'debug' | 'trace';
  /** The module that emitted it, e.g. 'ferrovia::stats'. */
  target: string;
  message: string;
  /** Structured fields: session_id, remote, status, reason, path, ... */
  fields: Record<string, string>;
  /** The message followed by its fields, as one line. */
  line: string;
}

/** A snapshot of a server's counters, from {@link Server.stats}. */
export interface ServerStats {
  /** QUIC and TCP connections open now. */
  connections: number;
  /** Sessions open now (WebTransport, QMux, plain WebSockets). */
  sessions: number;
  /** Connections admitted since the start. */
  connectionsAccepted: number;
  /** Connection attempts refused by a limit or while closing. */
  connectionsRefused: number;
  /** QUIC or TLS handshakes that failed or timed out. */
  handshakesFailed: number;
  /** Sessions the application accepted. */
  sessionsAccepted: number;
  /**
   * Accepted sessions that ended before they started: the client left before the answer,
   * a QMux client sent no transport parameters within `responseTimeout`, or `maxSessions`
   * was reached after the request arrived. `accept()` resolves these already closed.
   */
  sessionsFailedToStart: number;
  /** Ordinary HTTP requests that reached the fetch handler. */
  httpRequests: number;
  /** Session and WebSocket requests the server answered itself, by status (400, 403, 404, 421, 429, 503). */
  requestsRefused: Record<number, number>;
  /** The same snapshot in the Prometheus text format, for a /metrics route. */
  toPrometheus(): string;
}

/** What carries a request or a session. */
export type Transport = 'webtransport' | 'qmux' | 'websocket';

/** Options of `WebTransportError`. */
export interface WebTransportErrorOptions {
  source?: 'stream' | 'session';
  streamErrorCode?: number | null;
  code?: string;
  closeCode?: number;
  reason?: string;
}

/** A WebTransport failure, with the peer's stream error code when there is one. */
export class WebTransportError extends Error {
  constructor(message?: string, options?: WebTransportErrorOptions);
  readonly name: 'WebTransportError';
  /** Whether a stream or the whole session failed. */
  readonly source: 'stream' | 'session';
  /** The peer's RESET_STREAM / STOP_SENDING code, or null. */
  readonly streamErrorCode: number | null;
  /** A stable name: ERR_STREAM_RESET, ERR_STREAM_STOPPED, ERR_SESSION_CLOSED, ... */
  readonly code?: string;
  /** For ERR_SESSION_CLOSED: the session's close code. */
  readonly closeCode?: number;
  /** For ERR_SESSION_CLOSED: the session's close reason. */
  readonly reason?: string;
  /** For ERR_DATAGRAM_TOO_LARGE: the size given. */
  readonly size?: number;
  /** For ERR_DATAGRAM_TOO_LARGE: the largest size that fits. */
  readonly maxDatagramSize?: number;
}

/** How a session ended. */
export interface WebTransportCloseInfo {
  closeCode: number;
  reason: string;
  /** Who ended it: this server, the client, or the connection underneath. */
  initiator: 'local' | 'remote' | 'connection';
}

/**
 * Statistics of the session's QUIC connection: the W3C `WebTransportConnectionStats`
 * members quinn can fill, plus `timestamp`, `congestionWindow` and `mtu`. The others
 * (`rttVariation`, `bytesSentOverhead`, `bytesAcknowledged`, `estimatedSendRate`,
 * `atSendCapacity`, and the datagram counters other than `droppedIncoming`) are undefined.
 */
export interface WebTransportConnectionStats {
  /** Milliseconds since the epoch when the statistics were taken. */
  timestamp: number;
  /** QUIC packet bytes sent (UDP payloads), retransmissions included. */
  bytesSent: number;
  /** QUIC packet bytes received (UDP payloads). */
  bytesReceived: number;
  /** Bytes in packets declared lost (0 over QMux). */
  bytesLost: number;
  packetsSent: number;
  /** UDP datagrams received (a datagram may coalesce packets during the handshake). */
  packetsReceived: number;
  /** Packets declared lost (0 over QMux). */
  packetsLost: number;
  /** Smoothed round-trip time in ms. */
  smoothedRtt: number;
  /** Smallest round-trip time seen in ms; undefined over QMux. */
  minRtt?: number;
  /** Not reported by quinn. */
  rttVariation?: undefined;
  congestionWindow: number;
  mtu: number;
  datagrams: { droppedIncoming: number };
}

/** The former name of `WebTransportConnectionStats`. */
export type WebTransportStats = WebTransportConnectionStats;

/** W3C `WebTransportSendStreamStats`. */
export interface WebTransportSendStreamStats {
  /** Bytes the stream has taken from writes. */
  bytesWritten: number;
  /**
   * Bytes sent at least once. An estimate: equal to `bytesWritten`, since QUIC sends
   * what it has taken as flow and congestion control allow and quinn keeps no per-stream
   * count; exact once `bytesAcknowledged` has caught up.
   */
  bytesSent: number;
  /**
   * Bytes the peer acknowledged: 0 until the stream is closed and every byte is
   * acknowledged, then `bytesWritten` (quinn reports acknowledgement of a whole stream only).
   */
  bytesAcknowledged: number;
}

/** W3C `WebTransportReceiveStreamStats`. */
export interface WebTransportReceiveStreamStats {
  /**
   * Bytes received, as far as known: equal to `bytesRead` (a lower bound), since quinn does
   * not tell how much waits in its buffer; exact once the stream has been read to its end.
   */
  bytesReceived: number;
  /** Bytes handed to readers of the stream. */
  bytesRead: number;
}

/**
 * The sending half of a stream (W3C `WebTransportSendStream`): a `WritableStream` of byte
 * chunks with a mutable `sendOrder` and `getStats()`.
 */
export class WebTransportSendStream extends WritableStream<ArrayBufferView | ArrayBuffer> {
  private constructor();
  /**
   * Higher is sent first among the connection's streams; any safe integer (TypeError for a
   * non-number, RangeError otherwise). Takes effect at once, even for bytes already written.
   * Mapped to QUIC's 32-bit priorities by clamping: order is kept, but values beyond ±2^31
   * share the end priorities.
   */
  sendOrder: number;
  /** Send groups are not supported: always null, and only null may be set. */
  sendGroup: null;
  getStats(): Promise<WebTransportSendStreamStats>;
}

/**
 * The receiving half of a stream (W3C `WebTransportReceiveStream`): a readable byte stream.
 * `getReader({ mode: 'byob' })` reads into the caller's buffers; the default reader yields
 * Uint8Array chunks.
 */
export class WebTransportReceiveStream extends ReadableStream<Uint8Array> {
  private constructor();
  getStats(): Promise<WebTransportReceiveStreamStats>;
}

/** A bidirectional stream (W3C `WebTransportBidirectionalStream`). */
export class WebTransportBidirectionalStream {
  private constructor();
  readonly readable: WebTransportReceiveStream;
  readonly writable: WebTransportSendStream;
}

/** Options when opening a stream (W3C `WebTransportSendStreamOptions`). */
export interface WebTransportSendStreamOptions {
  /** Higher values are sent first; any safe integer (0 when absent or null). */
  sendOrder?: number | null;
  /** Not supported: only null (or absent). */
  sendGroup?: null;
}

/** Datagrams of a session. */
export class DatagramDuplexStream {
  private constructor();
  /** Incoming datagrams; ends when the session ends. */
  readonly readable: ReadableStream<Uint8Array>;
  /** A default writable, created on first use. */
  readonly writable: WritableStream<ArrayBufferView | ArrayBuffer>;
  /** A new writable of datagrams. */
  createWritable(): WritableStream<ArrayBufferView | ArrayBuffer>;
  /** Sends one datagram; rejects with ERR_DATAGRAM_TOO_LARGE when it cannot fit. */
  send(data: ArrayBufferView | ArrayBuffer): Promise<void>;
  /** The largest payload that fits in one datagram right now. */
  readonly maxDatagramSize: number;
}

/** An accepted session, shaped like the browser's `WebTransport`. */
export class WebTransportSession {
  private constructor();
  readonly ready: Promise<void>;
  readonly closed: Promise<WebTransportCloseInfo>;
  readonly draining: Promise<void>;
  readonly datagrams: DatagramDuplexStream;
  readonly id: number;
  readonly path: string;
  /** The subprotocol chosen at accept, or ''. */
  readonly protocol: string;
  /** 'webtransport' (HTTP/3) or 'qmux' (over a WebSocket; datagrams are reliable there). */
  readonly transport: 'webtransport' | 'qmux';
  readonly remoteAddress: string;
  readonly remotePort: number;
  readonly incomingBidirectionalStreams: ReadableStream<WebTransportBidirectionalStream>;
  readonly incomingUnidirectionalStreams: ReadableStream<WebTransportReceiveStream>;
  createBidirectionalStream(options?: WebTransportSendStreamOptions): Promise<WebTransportBidirectionalStream>;
  createUnidirectionalStream(options?: WebTransportSendStreamOptions): Promise<WebTransportSendStream>;
  close(closeInfo?: { closeCode?: number; reason?: string }): void;
  drain(): void;
  getStats(): Promise<WebTransportConnectionStats>;
  /** `await using`: closes with code 0 and waits for `closed`. */
  [Symbol.asyncDispose](): Promise<void>;
}

/** Options of `SessionRequest.accept`. */
export interface AcceptOptions {
  /** One of `request.subprotocols`, sent back as `wt-protocol`. */
  protocol?: string | null;
  /** Extra response headers. */
  headers?: Record<string, string> | Array<[string, string]>;
}

/** The options of `reject()`. */
export interface RejectOptions {
  /** Extra response headers. */
  headers?: Record<string, string> | Array<[string, string]>;
}

/** A session request waiting for `accept()` or `reject()`. */
export class SessionRequest {
  private constructor();
  /** `:path`, including the query. */
  readonly path: string;
  /** `:authority`. */
  readonly authority: string;
  /** `https://authority/path`. */
  readonly url: string;
  /** The `origin` header, or null. */
  readonly origin: string | null;
  /** Regular headers by lower-case name (repeats joined with ', '). */
  readonly headers: Readonly<Record<string, string>>;
  /** Regular headers as [name, value] pairs in arrival order. */
  readonly rawHeaders: ReadonlyArray<readonly [string, string]>;
  /** Subprotocols offered by the client, in preference order. */
  readonly subprotocols: readonly string[];
  readonly remoteAddress: string;
  readonly remotePort: number;
  /** What the client asked for. */
  readonly transport: Transport;
  /** The HTTP version the request came over: '3.0', '2.0' or '1.1'. */
  readonly httpVersion: '3.0' | '2.0' | '1.1';
  /** Whether accept() or reject() already answered the request. */
  readonly answered: boolean;
  /** Accepts a WebTransport or QMux session. */
  accept(options?: AcceptOptions): Promise<WebTransportSession>;
  /** Accepts a plain WebSocket (`transport === 'websocket'`). */
  acceptWebSocket(options?: AcceptOptions): Promise<WebSocketSession>;
  /**
   * Rejects with a status in 300..599 (default 404) and optional response headers
   * (`{ headers: { 'www-authenticate': 'Bearer' } }`). A bad status or header throws
   * without answering.
   */
  reject(status?: number, options?: RejectOptions): Promise<void>;
}

/** Requests for one path. */
export class RequestStream implements AsyncIterable<SessionRequest> {
  private constructor();
  readonly path: string;
  /** The next request, or null once closed. */
  next(): Promise<SessionRequest | null>;
  /** Releases the path; new requests for it get 404. */
  close(): void;
  [Symbol.asyncIterator](): AsyncIterator<SessionRequest>;
}

/** Options of `Server.requests`. */
export interface RequestsOptions {
  /** Also take plain WebSocket requests for this path (without it they get 400). */
  webSockets?: boolean;
}

/** Options of `Server.route`. */
export interface RouteOptions extends RequestsOptions {
  /** Called with what a handler threw (default: console.error). */
  onError?: (error: unknown) => void;
}

/** How a plain WebSocket closed. */
export interface WebSocketCloseInfo {
  closeCode: number;
  reason: string;
  initiator: 'local' | 'remote' | 'connection';
}

/** A plain WebSocket, shaped like the WHATWG `WebSocketStream`. */
export class WebSocketSession implements AsyncIterable<string | Uint8Array> {
  private constructor();
  /** `wss://authority/path`. */
  readonly url: string;
  readonly opened: Promise<{ protocol: string; extensions: string }>;
  readonly closed: Promise<WebSocketCloseInfo>;
  readonly path: string;
  readonly protocol: string;
  readonly transport: 'websocket';
  readonly remoteAddress: string;
  readonly remotePort: number;
  /** Text messages as strings, binary ones as Uint8Arrays. */
  readonly readable: ReadableStream<string | Uint8Array>;
  /** A write resolves once the message is queued for the socket. */
  readonly writable: WritableStream<string | ArrayBuffer | ArrayBufferView>;
  send(message: string | ArrayBuffer | ArrayBufferView): Promise<void>;
  /** closeCode 1000 (default), 1001..1003, 1007..1014 or 3000..4999. */
  close(closeInfo?: { closeCode?: number; reason?: string }): void;
  /** `await using`: closes with 1000 and waits for `closed`. */
  [Symbol.asyncDispose](): Promise<void>;
  [Symbol.asyncIterator](): AsyncIterator<string | Uint8Array>;
}

/** A WebTransport server. */
export class Server {
  private constructor();
  static listen(options?: ListenOptions): Promise<Server>;
  readonly port: number;
  readonly host: string;
  address(): { address: string; port: number };
  readonly certificateHashes: CertificateHash[];
  readonly certificate: { sha256: string; spkiSha256: string; pem: string };
  /** Replaces the certificate for new connections; `{ certFile, keyFile, watch: true }` keeps reloading the files. */
  setCertificate(certificate: PemCertificate | PemFiles): void;
  /** Sessions open right now (plain WebSockets included). */
  readonly sessionCount: number;
  /** QUIC and TCP connections open right now. */
  readonly connectionCount: number;
  /** The server's counters. */
  stats(): ServerStats;
  /** Refuses new sessions (503) and asks open ones to drain; they go on until they end. */
  drain(): void;
  /** Whether `drain()` was called. */
  readonly draining: boolean;
  /** Resolves once no session or WebSocket is open. */
  drained(): Promise<void>;
  /** The TCP port of the QMux and WebSocket side, or null when off. */
  readonly tcpPort: number | null;
  /** Requests for `path`, or for every path without a route when omitted. */
  requests(path?: string, options?: RequestsOptions): AsyncIterable<SessionRequest>;
  route(path: string, handler: (request: SessionRequest) => unknown, options?: RouteOptions): RequestStream;
  /**
   * Carries a WebSocket upgrade another HTTP/1.1 server received (its 'upgrade' event):
   * QMux sessions and plain WebSockets come out of this server's routes as usual.
   */
  handleUpgrade(req: import('node:http').IncomingMessage, socket: import('node:stream').Duplex, head: Buffer): Promise<void>;
  /** Carries an RFC 8441 extended CONNECT a `node:http2` server received. */
  handleStream(stream: import('node:http2').ServerHttp2Stream, headers: import('node:http2').IncomingHttpHeaders): Promise<void>;
  /** Graceful shutdown; `grace` in ms (2000). */
  close(options?: { grace?: number }): Promise<void>;
  /** `await using server = await Server.listen(...)`: `close()` with the default grace. */
  [Symbol.asyncDispose](): Promise<void>;
}

/** A generated self-signed certificate. */
export interface GeneratedCertificate {
  cert: string;
  key: string;
  /** Hex SHA-256 of the DER certificate. */
  sha256: string;
  /** Base64 SHA-256 of the SubjectPublicKeyInfo. */
  spkiSha256: string;
  certificateHashes: CertificateHash[];
}

export function generateCertificate(options?: { names?: string[] }): GeneratedCertificate;

export function toDuplex(
  stream: { readonly readable: ReadableStream<Uint8Array>; readonly writable: WritableStream<ArrayBufferView | ArrayBuffer> },
  options?: DuplexOptions,
): Duplex;
export function toDuplex(stream: ReadableStream<Uint8Array>, options?: ReadableOptions): Readable;
export function toDuplex(stream: WritableStream<ArrayBufferView | ArrayBuffer>, options?: WritableOptions): Writable;

/** Options of a {@link MessageStream}. */
export interface MessageStreamOptions {
  /** The largest message read, in bytes (default 1 MiB); a longer one throws ERR_MESSAGE_TOO_LARGE. */
  maxMessageSize?: number;
  /** Yield messages as strings (UTF-8) instead of bytes. */
  text?: boolean;
}

/**
 * Messages on a stream instead of bytes: each message is its length (a QUIC varint) and
 * then its bytes, the framing `ferrovia/client` uses in the browser. Iterate it to read;
 * `send()` to write.
 */
export class MessageStream<T extends Uint8Array | string = Uint8Array | string> implements AsyncIterable<T> {
  constructor(
    stream:
      | { readonly readable?: ReadableStream<Uint8Array>; readonly writable?: WritableStream<ArrayBufferView | ArrayBuffer> }
      | ReadableStream<Uint8Array>
      | WritableStream<ArrayBufferView | ArrayBuffer>,
    options?: MessageStreamOptions,
  );
  /** The largest message this side reads. */
  readonly maxMessageSize: number;
  /** Bytes of messages given to `send()` that the stream has not taken yet, each counted as at least 64. */
  readonly bufferedAmount: number;
  /** Resolves once the writable side is closed; rejects when it failed. */
  readonly closed: Promise<void>;
  [Symbol.asyncIterator](): AsyncGenerator<T, void, undefined>;
  /** Sends one message (a string goes as UTF-8); resolves once the stream took it. Left unawaited, a failure is no unhandled rejection. */
  send(message: string | ArrayBufferView | ArrayBuffer): Promise<void>;
  /** Finishes the writable side (FIN) after the messages sent. */
  close(): Promise<void>;
  /** Resets the writable side with the reason's `streamErrorCode` (else 0); never rejects. */
  abort(reason?: unknown): Promise<void>;
}
