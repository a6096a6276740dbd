// Type-checked (tsc --noEmit) against the package's declarations; run by api.test.mjs.
import {
  MessageStream,
  Server,
  WebTransportError,
  WebTransportReceiveStream,
  WebTransportSendStream,
  generateCertificate,
  toDuplex,
  type AddressInUseError,
  type WebTransportCloseInfo,
  type WebTransportConnectionStats,
  type WebTransportReceiveStreamStats,
  type WebTransportSendStreamStats,
  type WebTransportSession,
} from 'ferrovia';

async function main(): Promise<void> {
  const { cert, key, certificateHashes } = generateCertificate({ names: ['localhost'] });
  const server = await Server.listen({ port: 0, certificate: { cert, key }, origins: 'any', limits: { maxSessions: 10 } });
  const hash: Uint8Array = server.certificateHashes[0].value;
  const site = await Server.listen({
    port: 0,
    limits: { maxRequestBody: 1 << 20, handlerTimeout: 5000 },
    client: true,
    fetch: async (request: Request, info) => Response.json({ path: new URL(request.url).pathname, from: info.remoteAddress, v: info.httpVersion }),
  });
  await site.close();
  console.log(server.port, hash.length, certificateHashes.length);

  server.route('/chat', async (request) => {
    const session = await request.accept({ protocol: request.subprotocols[0] ?? null });
    const writer = session.datagrams.writable.getWriter();
    await writer.write(new TextEncoder().encode('hi'));
    for await (const stream of session.incomingBidirectionalStreams) {
      const messages = new MessageStream<string>(stream, { text: true, maxMessageSize: 4096 });
      for await (const line of messages) {
        if (messages.bufferedAmount < 65536) await messages.send(line.toUpperCase());
        else await messages.abort(new WebTransportError('too slow', { streamErrorCode: 1 }));
      }
      await messages.close();
    }
    const info: WebTransportCloseInfo = await session.closed;
    console.log(info.closeCode, info.reason, info.initiator);
  });

  for await (const request of server.requests('/echo')) {
    if (request.origin === null) {
      await request.reject(401, { headers: { 'www-authenticate': 'Bearer' } });
      continue;
    }
    const session = await request.accept();
    const stats = await session.getStats();
    console.log(stats.smoothedRtt, session.datagrams.maxDatagramSize);
    for await (const bidi of session.incomingBidirectionalStreams) {
      const duplex = toDuplex(bidi);
      duplex.on('error', (e: unknown) => {
        if (e instanceof WebTransportError) console.log(e.source, e.streamErrorCode, e.code);
      });
    }
    const uni = await session.createUnidirectionalStream({ sendOrder: 1 });
    await uni.getWriter().abort(new WebTransportError('done', { streamErrorCode: 7 }));
    session.close({ closeCode: 1, reason: 'bye' });
  }
  await server.close({ grace: 100 });
}

async function lifecycle(certFile: string, keyFile: string): Promise<void> {
  const controller = new AbortController();
  try {
    await using server = await Server.listen({ port: 4433, certificate: { certFile, keyFile, watch: true }, signal: controller.signal });
    server.setCertificate({ certFile, keyFile, watch: false });
    for await (const request of server.requests('/x')) {
      await using session = await request.accept();
      console.log(session.id);
      break;
    }
  } catch (e) {
    const err = e as Partial<AddressInUseError>;
    if (err.code === 'EADDRINUSE') console.log(err.transport, err.address, err.port, err.errno, err.syscall, err.ferroviaCode);
  }
  controller.abort();
}

async function streams(session: WebTransportSession): Promise<void> {
  const send: WebTransportSendStream = await session.createUnidirectionalStream({ sendOrder: Number.MAX_SAFE_INTEGER, sendGroup: null });
  send.sendOrder = -1;
  const sent: WebTransportSendStreamStats = await send.getStats();
  console.log(sent.bytesWritten, sent.bytesSent, sent.bytesAcknowledged, send.sendGroup);
  const { readable, writable } = await session.createBidirectionalStream();
  const w: WritableStream = writable;
  console.log(w.locked);
  const reader = readable.getReader({ mode: 'byob' });
  const { value, done } = await reader.read(new Uint8Array(4096));
  console.log(value?.byteLength, done);
  reader.releaseLock();
  for await (const incoming of session.incomingUnidirectionalStreams) {
    if (incoming instanceof WebTransportReceiveStream) {
      const got: WebTransportReceiveStreamStats = await incoming.getStats();
      console.log(got.bytesReceived, got.bytesRead);
    }
    for await (const chunk of incoming) console.log(chunk.byteLength);
  }
  const conn: WebTransportConnectionStats = await session.getStats();
  console.log(conn.minRtt ?? 'n/a', conn.packetsReceived, conn.bytesLost);
  toDuplex({ readable, writable });
}

void main();
void lifecycle('cert.pem', 'key.pem');
