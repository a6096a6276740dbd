// Page-side steps for the framework browser tests (tests/node/frameworks-browser.test.mjs,
// tests/demo/starlette-browser.test.mjs). Each runs inside a page that the framework app
// served over HTTPS, so it cannot close over Node variables: everything it needs comes in
// its one JSON argument, and it returns plain JSON.

/** What the page is: where it came from and whether it is a secure context. */
export const describePage = () => ({
  protocol: location.protocol,
  title: document.title,
  secure: window.isSecureContext,
});

/**
 * Imports the browser connector from the app (`/client.js`), opens a QMux session on
 * `path` (same origin, so a WebSocket through the framework's port), echoes `size` random
 * bytes on one bidi stream and closes with `closeCode`/`reason`.
 */
export const qmuxEcho = async ({ path, size, closeCode, reason }) => {
  const within = (p, ms, label) => {
    let timer;
    return Promise.race([
      Promise.resolve(p).finally(() => clearTimeout(timer)),
      new Promise((_, reject) => {
        timer = setTimeout(() => reject(new Error(`${label}: timed out after ${ms} ms`)), ms);
      }),
    ]);
  };
  const hex = async (bytes) => Array.from(new Uint8Array(await crypto.subtle.digest('SHA-256', bytes)), (b) => b.toString(16).padStart(2, '0')).join('');
  const { connect } = await import(`${location.origin}/client.js`);
  const t = await within(connect(`${location.origin}${path}`, { transports: ['qmux'] }), 10000, 'connect');
  const data = new Uint8Array(size);
  for (let i = 0; i < size; i += 65536) crypto.getRandomValues(data.subarray(i, Math.min(size, i + 65536)));
  const { readable, writable } = await within(t.createBidirectionalStream(), 5000, 'createBidirectionalStream');
  const reading = (async () => {
    const reader = readable.getReader();
    const chunks = [];
    let total = 0;
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      chunks.push(value);
      total += value.byteLength;
    }
    const out = new Uint8Array(total);
    let at = 0;
    for (const c of chunks) {
      out.set(c, at);
      at += c.byteLength;
    }
    return out;
  })();
  const writer = writable.getWriter();
  for (let i = 0; i < size; i += 16384) await within(writer.write(data.slice(i, Math.min(size, i + 16384))), 10000, `write at ${i}`);
  await within(writer.close(), 10000, 'FIN');
  const echoed = await within(reading, 15000, 'reading the echo');
  let same = echoed.byteLength === data.byteLength;
  for (let i = 0; same && i < data.byteLength; i++) same = echoed[i] === data[i];
  t.close({ closeCode, reason });
  const closed = await within(t.closed, 5000, 'closed');
  return {
    transport: t.transport,
    sent: data.byteLength,
    received: echoed.byteLength,
    same,
    sentSha256: await hex(data),
    receivedSha256: await hex(echoed),
    closed: { closeCode: closed.closeCode, reason: closed.reason },
  };
};

/**
 * A plain `new WebSocket('wss://<page host>/<path>')` through the app: sends `message`,
 * waits for the echo, then closes with `closeCode`/`reason` (when given) or waits for the
 * server to close. Returns what the page saw, close event included.
 */
export const webSocketEcho = async ({ path, message, closeCode, reason }) => {
  const ws = new WebSocket(`${location.origin.replace(/^https:/, 'wss:')}${path}`);
  const events = [];
  const closed = new Promise((resolve) => {
    ws.onclose = (e) => resolve({ code: e.code, reason: e.reason, wasClean: e.wasClean });
  });
  const timeout = (ms, label) => new Promise((_, reject) => setTimeout(() => reject(new Error(`${label}: timed out after ${ms} ms; events ${JSON.stringify(events)}`)), ms));
  ws.onerror = () => events.push('error');
  await Promise.race([
    new Promise((resolve, reject) => {
      ws.onopen = resolve;
      closed.then((c) => reject(new Error(`closed before open: ${JSON.stringify(c)}`)));
    }),
    timeout(10000, 'open'),
  ]);
  const reply = new Promise((resolve) => {
    ws.onmessage = (e) => resolve(e.data);
  });
  ws.send(message);
  const echoed = await Promise.race([reply, timeout(10000, 'echo')]);
  if (closeCode !== undefined) ws.close(closeCode, reason);
  const close = await Promise.race([closed, timeout(10000, 'close')]);
  return { url: ws.url, protocol: ws.protocol, echoed, close, events };
};
