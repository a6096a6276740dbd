// The demo page: one WebTransport session to /demo carries everything.
//
//   page → server   bidirectional stream per echo message (the server sends it back)
//                   unidirectional stream per chat message (UTF-8 text)
//                   datagram every 1/60 s: u32 seq, u16 x, u16 y (0..65535 across the pad)
//   server → page   one unidirectional "feed" stream of JSON lines: hello, chat, presence, stats
//                   datagrams: u32 tab id, then the 8 bytes a tab sent (relayed to every tab)
//
// The page comes from the same server and port as the session. The browser already trusts
// the certificate for the page (by a flag or an accepted warning); the WebTransport session
// trusts it by the hash in config.json (serverCertificateHashes), which also covers a
// browser that loaded the page over HTTP/3.
//
// The session comes from Ferrovia's browser connector (/client.js): native WebTransport when
// it works, otherwise a QMux session on a WebSocket to the same URL, which the server hands
// to the same code. ?transport=websocket forces it.

import { FerroviaTransport } from './client.js';

const $ = (id) => document.getElementById(id);
const encoder = new TextEncoder();
const decoder = new TextDecoder();

const ui = {
  status: $('status'),
  identity: $('identity'),
  close: $('close'),
  reconnect: $('reconnect'),
  echoForm: $('echo-form'),
  echoInput: $('echo-input'),
  echoSend: $('echo-send'),
  echoLog: $('echo-log'),
  chatForm: $('chat-form'),
  chatInput: $('chat-input'),
  chatSend: $('chat-send'),
  chatLog: $('chat-log'),
  chatPeers: $('chat-peers'),
  pad: $('pad'),
  cursorTable: $('cursor-table'),
  dgSent: $('dg-sent'),
  dgReceived: $('dg-received'),
  dgLost: $('dg-lost'),
  chart: $('chart'),
};

let transport = null;
let me = { id: null, name: '' };
let config = null;

function setStatus(state, text) {
  ui.status.dataset.state = state;
  ui.status.textContent = text;
  const live = state === 'connected';
  for (const b of [ui.close, ui.echoSend, ui.chatSend]) b.disabled = !live;
  ui.reconnect.hidden = live || state === 'connecting';
}

function addLine(list, parts, className) {
  const li = document.createElement('li');
  if (className) li.className = className;
  for (const part of parts) {
    if (typeof part === 'string') li.append(part);
    else {
      const el = document.createElement(part.tag);
      if (part.className) el.className = part.className;
      el.textContent = part.text;
      li.append(el);
    }
  }
  list.append(li);
  while (list.children.length > 200) list.firstElementChild.remove();
  list.scrollTop = list.scrollHeight;
  return li;
}

const hexToBytes = (hex) => Uint8Array.from(hex.match(/../g), (b) => parseInt(b, 16));

// ---------------------------------------------------------------------------------------
// Echo: one bidirectional stream per message

async function readAll(readable) {
  const chunks = [];
  for (const reader = readable.getReader(); ;) {
    const { done, value } = await reader.read();
    if (done) break;
    chunks.push(value);
  }
  const out = new Uint8Array(chunks.reduce((n, c) => n + c.byteLength, 0));
  let offset = 0;
  for (const c of chunks) {
    out.set(c, offset);
    offset += c.byteLength;
  }
  return out;
}

ui.echoForm.addEventListener('submit', async (event) => {
  event.preventDefault();
  const text = ui.echoInput.value;
  if (!transport || !text) return;
  const started = performance.now();
  try {
    const { readable, writable } = await transport.createBidirectionalStream();
    const writer = writable.getWriter();
    await writer.write(encoder.encode(text));
    await writer.close();
    const back = decoder.decode(await readAll(readable));
    const ms = (performance.now() - started).toFixed(1);
    addLine(ui.echoLog, ['↩ ', { tag: 'span', className: 'echoed', text: back }, { tag: 'span', className: 'meta', text: `${ms} ms` }]);
  } catch (err) {
    addLine(ui.echoLog, [`echo failed: ${err.message}`], 'system');
  }
});

// ---------------------------------------------------------------------------------------
// Chat: one unidirectional stream per message; the server's feed brings every tab's lines

ui.chatForm.addEventListener('submit', async (event) => {
  event.preventDefault();
  const text = ui.chatInput.value.trim();
  if (!transport || !text) return;
  ui.chatInput.value = '';
  try {
    const writer = (await transport.createUnidirectionalStream()).getWriter();
    await writer.write(encoder.encode(text));
    await writer.close();
  } catch (err) {
    addLine(ui.chatLog, [`sending failed: ${err.message}`], 'system');
  }
});

function onChat(msg) {
  const time = new Date(msg.at).toLocaleTimeString();
  addLine(ui.chatLog, [{ tag: 'b', text: msg.name }, `: ${msg.text}`, { tag: 'span', className: 'meta', text: time }], msg.id === me.id ? 'self' : '');
}

function onPresence(msg) {
  for (const peer of msg.peers) cursor(peer.id).name = peer.name;
  for (const id of cursors.keys()) if (!msg.peers.some((p) => p.id === id)) cursors.delete(id);
  const names = msg.peers.map((p) => (p.id === me.id ? `${p.name} (you)` : p.name));
  ui.chatPeers.textContent = `${msg.peers.length} ${msg.peers.length === 1 ? 'tab' : 'tabs'} here: ${names.join(', ')}.`;
}

// ---------------------------------------------------------------------------------------
// Cursors: datagrams out at 60 Hz, every tab's datagrams back from the server

const cursors = new Map(); // tab id -> { name, x, y, received, lost, lastSeq, arrivals }
const totals = { sent: 0, received: 0, lost: 0 };
const pointer = { x: 0.5, y: 0.5, inside: false };

function cursor(id) {
  if (!cursors.has(id)) cursors.set(id, { name: `tab ${id}`, x: 0.5, y: 0.5, received: 0, lost: 0, lastSeq: -1, arrivals: [] });
  return cursors.get(id);
}

ui.pad.addEventListener('pointermove', (e) => {
  const r = ui.pad.getBoundingClientRect();
  pointer.x = Math.min(1, Math.max(0, (e.clientX - r.left) / r.width));
  pointer.y = Math.min(1, Math.max(0, (e.clientY - r.top) / r.height));
  pointer.inside = true;
});
ui.pad.addEventListener('pointerleave', () => {
  pointer.inside = false;
});

function position(now) {
  if (pointer.inside) return pointer;
  // Circling on its own keeps the datagram view alive when nobody touches the pad.
  const phase = now / 1500 + (me.id || 0) * 2.4;
  return { x: 0.5 + 0.3 * Math.cos(phase), y: 0.5 + 0.3 * Math.sin(phase) };
}

async function sendCursors(wt) {
  const writable = typeof wt.datagrams.createWritable === 'function' ? wt.datagrams.createWritable() : wt.datagrams.writable;
  const writer = writable.getWriter();
  let seq = 0;
  let inFlight = false;
  const timer = setInterval(() => {
    // A datagram that cannot leave at once is stale a frame later: skip rather than queue.
    if (inFlight) return;
    const { x, y } = position(performance.now());
    const buf = new DataView(new ArrayBuffer(8));
    buf.setUint32(0, seq++);
    buf.setUint16(4, Math.round(x * 65535));
    buf.setUint16(6, Math.round(y * 65535));
    inFlight = true;
    writer.write(new Uint8Array(buf.buffer)).then(
      () => {
        inFlight = false;
        totals.sent += 1;
      },
      () => clearInterval(timer),
    );
  }, 1000 / 60);
  wt.closed.finally(() => clearInterval(timer)).catch(() => {});
}

async function receiveCursors(wt) {
  const reader = wt.datagrams.readable.getReader();
  for (;;) {
    const { done, value } = await reader.read();
    if (done) return;
    if (value.byteLength !== 12) continue;
    const view = new DataView(value.buffer, value.byteOffset, value.byteLength);
    const c = cursor(view.getUint32(0));
    const seq = view.getUint32(4);
    if (seq > c.lastSeq) {
      const gap = c.lastSeq < 0 ? 0 : seq - c.lastSeq - 1;
      c.lost += gap;
      totals.lost += gap;
      c.lastSeq = seq;
      c.x = view.getUint16(8) / 65535;
      c.y = view.getUint16(10) / 65535;
    } else if (c.lost > 0) {
      // Late, not lost: it was counted as a gap when its successor overtook it.
      c.lost -= 1;
      totals.lost -= 1;
    }
    c.received += 1;
    totals.received += 1;
    c.arrivals.push(performance.now());
  }
}

function hue(id) {
  return (id * 137) % 360;
}

function drawPad() {
  const ctx = ui.pad.getContext('2d');
  const { width, height } = ui.pad;
  ctx.clearRect(0, 0, width, height);
  ctx.font = '12px system-ui, sans-serif';
  for (const [id, c] of cursors) {
    const x = c.x * width;
    const y = c.y * height;
    ctx.fillStyle = id === me.id ? '#b8411b' : `hsl(${hue(id)} 55% 45%)`;
    ctx.beginPath();
    ctx.arc(x, y, 7, 0, 2 * Math.PI);
    ctx.fill();
    ctx.fillText(id === me.id ? `${c.name} (you)` : c.name, x + 10, y + 4);
  }
}

function updateCursorTable(now) {
  const rows = [];
  for (const [id, c] of [...cursors].sort((a, b) => a[0] - b[0])) {
    c.arrivals = c.arrivals.filter((t) => now - t < 1000);
    const tr = document.createElement('tr');
    for (const text of [id === me.id ? `${c.name} (you)` : c.name, c.received, c.lost, `${c.arrivals.length} Hz`]) {
      const td = document.createElement('td');
      td.textContent = String(text);
      tr.append(td);
    }
    rows.push(tr);
  }
  ui.cursorTable.replaceChildren(...rows);
  ui.dgSent.textContent = String(totals.sent);
  ui.dgReceived.textContent = String(totals.received);
  ui.dgLost.textContent = String(totals.lost);
}

function frame() {
  drawPad();
  requestAnimationFrame(frame);
}
requestAnimationFrame(frame);
// Numbers also update in the background, where animation frames stop.
setInterval(() => updateCursorTable(performance.now()), 250);

// ---------------------------------------------------------------------------------------
// Session statistics: the server pushes its view of the QUIC connection twice a second

const series = []; // { down, up } in kB/s
let lastStats = null;

function formatBytes(n) {
  if (typeof n !== 'number') return '–';
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KiB`;
  return `${(n / 1024 / 1024).toFixed(2)} MiB`;
}

function onStats(s) {
  $('stat-rtt').textContent = typeof s.rtt === 'number' ? `${s.rtt.toFixed(2)} ms` : '–';
  $('stat-sent').textContent = formatBytes(s.bytesSent);
  $('stat-received').textContent = formatBytes(s.bytesReceived);
  $('stat-lost').textContent = String(s.packetsLost);
  $('stat-cwnd').textContent = formatBytes(s.congestionWindow);
  if (lastStats) {
    const seconds = Math.max(0.001, (s.at - lastStats.at) / 1000);
    series.push({
      down: (s.bytesSent - lastStats.bytesSent) / 1024 / seconds,
      up: (s.bytesReceived - lastStats.bytesReceived) / 1024 / seconds,
    });
    if (series.length > 120) series.shift();
    drawChart();
  }
  lastStats = s;
}

function drawChart() {
  const ctx = ui.chart.getContext('2d');
  const { width, height } = ui.chart;
  ctx.clearRect(0, 0, width, height);
  const peak = Math.max(1, ...series.map((p) => Math.max(p.down, p.up)));
  ctx.fillStyle = '#66707d';
  ctx.font = '11px system-ui, sans-serif';
  ctx.fillText(`${peak.toFixed(1)} kB/s`, 4, 12);
  const step = width / 119;
  for (const [key, color] of [['down', '#b8411b'], ['up', '#2f6fb5']]) {
    ctx.strokeStyle = color;
    ctx.lineWidth = 1.5;
    ctx.beginPath();
    series.forEach((p, i) => {
      const x = width - (series.length - 1 - i) * step;
      const y = height - 2 - (p[key] / peak) * (height - 18);
      if (i === 0) ctx.moveTo(x, y);
      else ctx.lineTo(x, y);
    });
    ctx.stroke();
  }
  ui.chart.dataset.points = String(series.length);
}

// ---------------------------------------------------------------------------------------
// The feed: the server's one long-lived unidirectional stream of JSON lines

async function readFeed(wt) {
  const streams = wt.incomingUnidirectionalStreams.getReader();
  const { value: feed, done } = await streams.read();
  streams.releaseLock();
  if (done) return;
  const reader = feed.getReader();
  const lines = new TextDecoder();
  let pending = '';
  for (;;) {
    const { done: end, value } = await reader.read();
    if (end) return;
    pending += lines.decode(value, { stream: true });
    let newline;
    while ((newline = pending.indexOf('\n')) >= 0) {
      const msg = JSON.parse(pending.slice(0, newline));
      pending = pending.slice(newline + 1);
      if (msg.type === 'hello') {
        me = { id: msg.id, name: msg.name };
        ui.identity.textContent = `you are ${msg.name}`;
      } else if (msg.type === 'chat') onChat(msg);
      else if (msg.type === 'presence') onPresence(msg);
      else if (msg.type === 'stats') onStats(msg);
    }
  }
}

// ---------------------------------------------------------------------------------------
// The session

const forced = new URLSearchParams(location.search).get('transport') === 'websocket';
ui.transportChoice = $('transport-choice');
ui.transportChoice.value = forced ? 'websocket' : 'auto';
ui.transportChoice.addEventListener('change', () => {
  const next = new URL(location.href);
  if (ui.transportChoice.value === 'websocket') next.searchParams.set('transport', 'websocket');
  else next.searchParams.delete('transport');
  location.assign(next);
});

async function connect() {
  if (!window.isSecureContext) {
    setStatus('failed', 'not a secure context: open the page over https://');
    return;
  }
  setStatus('connecting', 'connecting…');
  $('transport').textContent = '';
  config ??= await (await fetch('config.json', { cache: 'no-store' })).json();
  const host = location.hostname.includes(':') && !location.hostname.startsWith('[') ? `[${location.hostname}]` : location.hostname;
  const url = `https://${host}:${config.port}${config.path}`;
  $('wt-url').textContent = url;
  $('wt-hash').textContent = config.certificateHash;
  $('wt-server').textContent = config.server;

  const wt = new FerroviaTransport(url, {
    serverCertificateHashes: [{ algorithm: 'sha-256', value: hexToBytes(config.certificateHash) }],
    transports: forced ? ['qmux'] : undefined,
  });
  transport = wt;
  let closedByMe = false;
  ui.close.onclick = () => {
    closedByMe = true;
    wt.close({ closeCode: 4000, reason: 'close button' });
  };
  wt.closed.then(
    ({ closeCode, reason }) => {
      const who = closedByMe ? 'you' : 'the server';
      setStatus('closed', `closed by ${who}: code ${closeCode}${reason ? `, reason "${reason}"` : ''}`);
    },
    (err) => setStatus('closed', `connection lost: ${err.message}`),
  ).finally(() => {
    if (transport === wt) transport = null;
  });
  try {
    await wt.ready;
  } catch (err) {
    const hint = forced || typeof WebTransport === 'undefined'
      ? ' (the WebSocket needs the certificate this page came with: is the demo server running?)'
      : ' (is the demo server running?)';
    setStatus('failed', `could not connect to ${url}: ${err.message}${hint}`);
    return;
  }
  setStatus('connected', 'connected');
  $('transport').textContent = wt.transport === 'qmux' ? 'over WebSocket (QMux)' : 'over WebTransport';
  $('transport').dataset.transport = wt.transport;
  cursors.clear();
  series.length = 0;
  lastStats = null;
  // The stream helpers end with an error when the session closes; the status shows why.
  readFeed(wt).catch(() => {});
  receiveCursors(wt).catch(() => {});
  sendCursors(wt).catch(() => {});
}

ui.reconnect.addEventListener('click', () => connect());
// Lets the server log say that the tab went away, with a code of its own.
window.addEventListener('pagehide', () => {
  if (transport) transport.close({ closeCode: 4001, reason: 'tab closed' });
});

connect();
