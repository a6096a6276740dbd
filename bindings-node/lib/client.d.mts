// Type declarations of 'ferrovia/client' (bindings-node/lib/client.mjs): the browser
// connector. Self-contained on purpose, so it type-checks with or without the DOM lib.

/** How a session reached the server. */
export type TransportKind = 'webtransport' | 'qmux';

/** Tuning of the QMux-over-WebSocket fallback; every field has a default. */
export interface QmuxOptions {
  /** WebSocket bufferedAmount above which stream data and datagrams wait (262144). */
  highWaterMark?: number;
  /** Connection receive window we advertise, re-offered as the page reads (16 MiB). */
  maxData?: number;
  /** Receive window per stream we advertise, re-offered as the page reads (1 MiB). */
  maxStreamData?: number;
  /** Streams of each direction the server may have open toward us (100). */
  maxStreams?: number;
  /** Idle timeout in ms, advertised and enforced; 0 for none (30000). */
  idleTimeout?: number;
  /** Milliseconds between our QX_PINGs (10000). */
  keepAlive?: number;
  /** Milliseconds for the WebSocket and the server's transport parameters (10000). */
  connectTimeout?: number;
  /** Received datagrams held for the page before the oldest is dropped (1024). */
  datagramQueue?: number;
  /** The WebSocket constructor to use (globalThis.WebSocket). */
  WebSocket?: new (url: string, protocols?: string | string[]) => unknown;
}

/** A certificate hash for native WebTransport's serverCertificateHashes. */
export interface CertificateHash {
  algorithm: string;
  value: ArrayBuffer | ArrayBufferView;
}

export interface FerroviaTransportOptions {
  /** Passed to native WebTransport; WSS relies on normal TLS trust. */
  serverCertificateHashes?: CertificateHash[];
  /** Application protocols (W3C); over QMux offered as `qmux-02.<protocol>` tokens. */
  protocols?: string[];
  /** Attempts in order of preference. Default: native first, but QMux first on Safari and every iOS browser. */
  transports?: TransportKind[];
  /** Milliseconds to wait for an attempt to be ready before also starting the next (3000). */
  fallbackAfter?: number;
  /** Leaves QMux out: its datagrams are reliable. */
  requireUnreliable?: boolean;
  allowPooling?: boolean;
  congestionControl?: 'default' | 'throughput' | 'low-latency';
  qmux?: QmuxOptions;
}

export interface WebTransportCloseInfo {
  closeCode?: number;
  reason?: string;
}

export interface BidirectionalStream {
  readonly readable: ReadableStream<Uint8Array>;
  readonly writable: WritableStream<ArrayBuffer | ArrayBufferView>;
}

export interface DatagramDuplexStream {
  readonly readable: ReadableStream<Uint8Array>;
  readonly writable: WritableStream<ArrayBuffer | ArrayBufferView>;
  /** A further writable for datagrams (over native WebTransport only where the browser has it; else it shares `writable`'s writer). */
  createWritable(options?: unknown): WritableStream<ArrayBuffer | ArrayBufferView>;
  /** 0 until ready. Datagrams above it are dropped, as W3C specifies. */
  readonly maxDatagramSize: number;
}

/** One connection attempt, as `attempts` reports it. */
export interface ConnectAttempt {
  transport: TransportKind;
  /** Milliseconds from construction to the outcome. */
  ms: number;
  outcome: 'pending' | 'ready' | 'failed' | 'abandoned';
  error?: string;
  /** The HTTP status when the server refused the session. */
  status?: number;
}

/** The global WebTransportError where the browser has one, else an equivalent DOMException subclass. */
export declare const WebTransportError: {
  new (message?: string, options?: { streamErrorCode?: number | null }): WebTransportError;
  new (init?: { message?: string; streamErrorCode?: number | null }): WebTransportError;
  prototype: WebTransportError;
};
export interface WebTransportError extends Error {
  readonly source: 'stream' | 'session';
  readonly streamErrorCode: number | null;
  /** From `connect()` / `ready` when the server refused the session: its HTTP status. */
  readonly status?: number;
  /** With `status`: the refusal's response headers (lower-case names). */
  readonly headers?: Record<string, string>;
}

/**
 * A W3C-WebTransport-shaped session over native WebTransport (HTTP/3) or, where that is
 * missing, rejected or not ready within `fallbackAfter`, QMux over a WebSocket to the same URL.
 * Errors are WebTransportErrors; over QMux stream codes are full u32 values.
 */
export declare class FerroviaTransport {
  constructor(url: string | URL, options?: FerroviaTransportOptions);
  readonly url: string;
  readonly ready: Promise<void>;
  readonly closed: Promise<WebTransportCloseInfo>;
  /** Native WebTransport's DRAIN; never settles over QMux, which has none. */
  readonly draining: Promise<void>;
  /** Which transport won; null until ready. */
  readonly transport: TransportKind | null;
  /** The application protocol the server chose, or ''. */
  readonly protocol: string;
  /** 'pending' until ready; 'reliable-only' over QMux. */
  readonly reliability: 'pending' | 'reliable-only' | 'supports-unreliable';
  readonly attempts: ConnectAttempt[];
  /**
   * Why native WebTransport was not used when QMux won after trying it (its error, or
   * "not ready within N ms"); null when native won or was not tried. The first such
   * fallback on a page is also reported with console.warn.
   */
  readonly fallbackReason: string | null;
  /** The underlying native WebTransport or QMux session (null until ready). */
  readonly session: unknown;
  readonly datagrams: DatagramDuplexStream;
  readonly incomingBidirectionalStreams: ReadableStream<BidirectionalStream>;
  readonly incomingUnidirectionalStreams: ReadableStream<ReadableStream<Uint8Array>>;
  createBidirectionalStream(options?: unknown): Promise<BidirectionalStream>;
  createUnidirectionalStream(options?: unknown): Promise<WritableStream<ArrayBuffer | ArrayBufferView>>;
  /** Native statistics; {} over QMux. */
  getStats(): Promise<unknown>;
  /** Over QMux: CONNECTION_CLOSE 0x1d with the code (u32) and reason (≤ 1024 UTF-8 bytes), then WebSocket close 1000. */
  close(closeInfo?: WebTransportCloseInfo): void;
}

/** `new FerroviaTransport(url, options)`, resolved once ready. */
export declare function connect(url: string | URL, options?: FerroviaTransportOptions): Promise<FerroviaTransport>;

/** Options of a {@link MessageStream}. */
export interface MessageStreamOptions {
  /** The largest message read, in bytes (default 1 MiB); a longer one throws ERR_MESSAGE_TOO_LARGE. */
  maxMessageSize?: number;
  /** Yield messages as strings (UTF-8) instead of bytes. */
  text?: boolean;
}

/**
 * Messages on a stream instead of bytes, the framing the server's MessageStream (Node) and
 * `reader.messages()` / `writer.write_message()` (Python) use: each message is its length
 * as a QUIC varint, then its bytes.
 */
export declare class MessageStream<T extends Uint8Array | string = Uint8Array | string> implements AsyncIterable<T> {
  constructor(
    stream:
      | { readonly readable?: ReadableStream<Uint8Array>; readonly writable?: WritableStream<ArrayBuffer | ArrayBufferView> }
      | ReadableStream<Uint8Array>
      | WritableStream<ArrayBuffer | ArrayBufferView>,
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
  send(message: string | ArrayBuffer | ArrayBufferView): Promise<void>;
  /** Finishes the writable side (FIN) after the messages sent. */
  close(): Promise<void>;
  /** Resets the writable side with the reason's streamErrorCode (else 0); never rejects. */
  abort(reason?: unknown): Promise<void>;
}

/** Codec and session internals for tests; not a stable API. */
export declare const _internal: Record<string, unknown>;
