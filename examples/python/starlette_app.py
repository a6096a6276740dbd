"""Ferrovia inside a Starlette app under uvicorn: uvicorn serves the app over HTTPS on TCP,
Ferrovia serves WebTransport on UDP at the same port number, and the WebSockets that reach
the app under ``/rt`` (QMux sessions from the browser connector, plain WebSockets) are
carried into Ferrovia's routes by ``server.asgi()``, so one set of handlers serves every
client.

    python examples/python/starlette_app.py [--port 4433] [--host ::]

Open https://localhost:4433/ (accept the self-signed certificate once: the WebSocket
fallback needs a certificate the browser trusts). The page loads the browser connector
from ``/client.js``, opens a session on ``/rt/echo`` and a plain WebSocket on ``/rt/ws``.

Routes: ``/`` the page, ``/client.js`` the connector, ``/api/time`` JSON;
``/rt/echo`` echoes every bidi stream of a session (WebTransport or QMux);
``/rt/ws`` echoes plain WebSocket messages, and with ``?close=CODE&reason=R`` closes
after the first echo.

It prints JSON lines on stdout: ``{"event":"listening","port":P,"certificateHash":...,
"spki":...}`` once the page is served, then ``session``/``closed`` for sessions and
``websocket``/``websocket-closed`` for plain WebSockets.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import socket
import tempfile
import time
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, JSONResponse
from starlette.routing import Mount, Route

import ferrovia

PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>ferrovia + starlette</title></head>
<body>
<p>transport: <b id="transport">connecting…</b></p>
<p>stream echo: <span id="echo"></span></p>
<p>WebSocket echo: <span id="ws"></span></p>
<script type="module">
import { connect } from '/client.js';
const hash = new Uint8Array('__HASH__'.match(/../g).map((h) => parseInt(h, 16)));
const t = await connect(location.origin + '/rt/echo', {
  serverCertificateHashes: [{ algorithm: 'sha-256', value: hash }],
});
document.getElementById('transport').textContent = t.transport;
const { readable, writable } = await t.createBidirectionalStream();
const writer = writable.getWriter();
await writer.write(new TextEncoder().encode('hello from ' + t.transport));
await writer.close();
let text = '';
for await (const chunk of readable) text += new TextDecoder().decode(chunk, { stream: true });
document.getElementById('echo').textContent = text;
t.close({ closeCode: 0, reason: 'page done' });

const ws = new WebSocket(location.origin.replace(/^http/, 'ws') + '/rt/ws');
ws.onopen = () => ws.send('hello over a plain WebSocket');
ws.onmessage = (e) => {
  document.getElementById('ws').textContent = e.data;
  ws.close(1000, 'page done');
};
</script>
</body></html>
"""


def emit(event: str, **fields: object) -> None:
    print(json.dumps({"event": event, **fields}, separators=(",", ":")), flush=True)


def query_param(path: str, key: str) -> str | None:
    values = parse_qs(urlsplit(path).query).get(key)
    return values[0] if values else None


async def echo_stream(reader: ferrovia.StreamReader, writer: ferrovia.StreamWriter) -> None:
    try:
        async for chunk in reader:
            writer.write(chunk)
            await writer.drain()
        writer.write_eof()
    except ferrovia.WebTransportError:
        pass


async def echo_session(request: ferrovia.SessionRequest) -> None:
    path = request.path
    session = await request.accept()
    emit("session", path=path, transport=session.transport)
    streams: set[asyncio.Task[None]] = set()
    async for reader, writer in session.incoming_bidirectional_streams():
        task = asyncio.create_task(echo_stream(reader, writer))
        streams.add(task)
        task.add_done_callback(streams.discard)
    info = await session.wait_closed()
    emit("closed", path=path, transport=session.transport, code=info.code, reason=info.reason, initiator=info.initiator)


async def echo_websocket(request: ferrovia.SessionRequest) -> None:
    path = request.path
    ws = await request.accept_websocket()
    emit("websocket", path=path, transport=request.transport)
    close = query_param(path, "close")
    try:
        async for message in ws:
            await ws.send(message)
            if close:
                await ws.close(int(close), query_param(path, "reason") or "")
    except ferrovia.WebSocketClosedError:
        pass
    code, reason = await ws.wait_closed()
    info = ws.close_info
    emit("websocket-closed", path=path, code=code, reason=reason, initiator=info.initiator if info else None)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=4433)
    # "::" takes IPv6 and IPv4 on both sockets: browsers send `localhost` to ::1 or 127.0.0.1.
    parser.add_argument("--host", default="::")
    args = parser.parse_args()
    host = args.host.strip("[]")

    certificate = ferrovia.Certificate.self_signed(["localhost", "127.0.0.1", "::1"])
    # UDP only: uvicorn owns the TCP port and hands WebSockets under /rt to Ferrovia.
    async with ferrovia.serve(host, args.port, certificate=certificate, tcp=False) as server:
        # Claim the routes before the app can receive anything.
        echo_requests = server.requests("/rt/echo")
        ws_requests = server.requests("/rt/ws", websockets=True)

        page = PAGE.replace("__HASH__", certificate.sha256_hex())

        async def index(request: Request) -> HTMLResponse:
            return HTMLResponse(page)

        async def client_js(request: Request) -> FileResponse:
            return FileResponse(ferrovia.client_js_path(), media_type="text/javascript")

        async def api_time(request: Request) -> JSONResponse:
            return JSONResponse({"now": time.time()})

        app = Starlette(
            routes=[
                Route("/", index),
                Route("/client.js", client_js),
                Route("/api/time", api_time),
                Mount("/rt", app=server.asgi()),
            ]
        )

        # The TCP socket at the UDP port's number, taking IPv4 too when bound to "::".
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind((host, server.port))

        # uvicorn reads TLS from files; they are needed only while it loads its SSL context.
        with tempfile.TemporaryDirectory() as tmp:
            cert_file, key_file = Path(tmp, "cert.pem"), Path(tmp, "key.pem")
            cert_file.write_text(certificate.chain_pem())
            key_file.write_text(certificate.key_pem())
            config = uvicorn.Config(
                app, ssl_certfile=cert_file, ssl_keyfile=key_file, log_level="warning", lifespan="off"
            )
            config.load()
        web = uvicorn.Server(config)

        tasks: set[asyncio.Task[None]] = set()

        async def dispatch(requests: ferrovia.Requests, websockets: bool) -> None:
            async for request in requests:
                task = asyncio.create_task(echo_websocket(request) if websockets else echo_session(request))
                tasks.add(task)
                task.add_done_callback(tasks.discard)

        dispatching = [
            asyncio.create_task(dispatch(echo_requests, websockets=False)),
            asyncio.create_task(dispatch(ws_requests, websockets=True)),
        ]
        signal.signal(signal.SIGTERM, lambda signum, frame: None)
        serving = asyncio.create_task(web.serve(sockets=[sock]))
        while not web.started and not serving.done():
            await asyncio.sleep(0.02)
        if web.started:
            emit(
                "listening",
                port=server.port,
                certificateHash=certificate.sha256_hex(),
                spki=certificate.spki_sha256_base64(),
            )
        # uvicorn shuts down on SIGINT/SIGTERM and then raises the signal again; a no-op
        # SIGTERM handler for that second one lets Ferrovia close below (`async with`).
        await serving
        for task in dispatching:
            task.cancel()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass
