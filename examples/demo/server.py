"""The Ferrovia demo on Python: the same page and protocol as examples/demo/server.mjs.

    python examples/demo/server.py [--port 4433] [--http-port 8080] [--host ::]

The page is served over plain HTTP on localhost (a secure context, so it may use
WebTransport); the WebTransport endpoint has a fresh self-signed certificate whose hash the
page fetches from /config.json. The same port takes the page's WebSocket fallback (QMux
sessions) on TCP, handled by the same code. --port is the UDP port of the endpoint, --http-port the TCP
port of the page; 0 picks a free one. The protocol is described at the top of demo.js.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import signal
import socket
import sys
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import ferrovia

HERE = Path(__file__).resolve().parent
STATIC = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/index.html": ("index.html", "text/html; charset=utf-8"),
    "/demo.js": ("demo.js", "text/javascript; charset=utf-8"),
    "/demo.css": ("demo.css", "text/css; charset=utf-8"),
}
CHAT_MAX_BYTES = 2000
STATS_EVERY = 0.5
# A tab that stops reading its feed must not make the server buffer without bound.
FEED_MAX_PENDING = 256 * 1024


def log(line: str) -> None:
    print(f"{time.strftime('%H:%M:%S')}  {line}", flush=True)


@dataclass(eq=False)
class Tab:
    id: int
    session: ferrovia.Session
    feed: ferrovia.StreamWriter
    name: str = ""
    tasks: set[asyncio.Task[None]] = field(default_factory=set)

    def spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(work)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)


class Room:
    def __init__(self) -> None:
        self.tabs: dict[int, Tab] = {}
        self.ids = itertools.count(1)

    def send(self, tab: Tab, message: dict[str, Any]) -> None:
        if tab.feed.get_write_buffer_size() > FEED_MAX_PENDING:
            tab.session.close(4002, "not reading the feed")
            return
        with contextlib.suppress(ferrovia.WebTransportError, BufferError):
            tab.feed.write(json.dumps(message, separators=(",", ":")).encode() + b"\n")

    def broadcast(self, message: dict[str, Any]) -> None:
        for tab in list(self.tabs.values()):
            self.send(tab, message)

    def presence(self) -> None:
        peers = [{"id": t.id, "name": t.name} for t in self.tabs.values()]
        self.broadcast({"type": "presence", "peers": peers})

    async def echo(self, tab: Tab) -> None:
        async def pipe(reader: ferrovia.StreamReader, writer: ferrovia.StreamWriter) -> None:
            with contextlib.suppress(ferrovia.WebTransportError):
                async for chunk in reader:
                    writer.write(chunk)
                    await writer.drain()
                writer.write_eof()
                await writer.drain()

        async for reader, writer in tab.session.incoming_bidirectional_streams():
            tab.spawn(pipe(reader, writer))

    async def chat(self, tab: Tab) -> None:
        async def post(reader: ferrovia.StreamReader) -> None:
            data = bytearray()
            with contextlib.suppress(ferrovia.WebTransportError):
                while chunk := await reader.read(CHAT_MAX_BYTES + 1):
                    data += chunk
                    if len(data) > CHAT_MAX_BYTES:
                        reader.stop(0)
                        return
            text = data.decode(errors="replace")
            if text.strip():
                log(f"chat     {tab.name}: {text}")
                self.broadcast({"type": "chat", "id": tab.id, "name": tab.name, "text": text, "at": int(time.time() * 1000)})

        async for reader in tab.session.incoming_unidirectional_streams():
            tab.spawn(post(reader))

    async def cursors(self, tab: Tab) -> None:
        prefix = tab.id.to_bytes(4, "big")
        async for datagram in tab.session.incoming_datagrams():
            if len(datagram) != 8:
                continue
            for other in list(self.tabs.values()):
                with contextlib.suppress(ferrovia.WebTransportError):
                    await other.session.send_datagram(prefix + datagram)

    async def stats(self, tab: Tab) -> None:
        while tab.session.close_info is None:
            s = tab.session.stats()
            self.send(
                tab,
                {
                    "type": "stats",
                    "at": int(time.time() * 1000),
                    "rtt": s.rtt * 1000,
                    "bytesSent": s.bytes_sent,
                    "bytesReceived": s.bytes_received,
                    "packetsLost": s.packets_lost,
                    "congestionWindow": s.congestion_window,
                },
            )
            await asyncio.sleep(STATS_EVERY)

    async def serve(self, request: ferrovia.SessionRequest) -> None:
        origin = request.origin or "a non-browser client"
        host, port = request.remote_address
        session = await request.accept()
        tab_id = next(self.ids)
        try:
            feed = await session.open_unidirectional_stream()
        except ferrovia.WebTransportError:
            return  # closed before it started
        tab = Tab(tab_id, session, feed, name=f"tab {tab_id}")
        where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        over = "WebSocket (QMux)" if session.transport == "qmux" else "WebTransport"
        log(f"open     {tab.name} from {origin} ({where}) over {over}")
        self.tabs[tab_id] = tab
        self.send(tab, {"type": "hello", "id": tab_id, "name": tab.name})
        self.presence()
        for work in (self.echo(tab), self.chat(tab), self.cursors(tab), self.stats(tab)):
            tab.spawn(work)
        info = await session.wait_closed()
        self.tabs.pop(tab_id, None)
        by = {"remote": "by the browser", "local": "by the server", "connection": "with the connection"}
        log(f"closed   {tab.name} {by.get(info.initiator, '')}: code {info.code}, reason {json.dumps(info.reason)}")
        self.presence()
        for task in list(tab.tasks):
            task.cancel()


def http_socket(host: str | None, port: int) -> socket.socket:
    """A listening TCP socket; for "::", one dual-stack socket so that port 0 gives one port
    for IPv6 and IPv4 (asyncio would open one socket per family, each on its own port)."""
    family = socket.AF_INET6 if host is None or ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    sock.bind((host or "::", port))
    sock.listen(128)
    sock.setblocking(False)
    return sock


async def handle_http(config: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
        while True:
            request = await reader.readuntil(b"\r\n\r\n")
            method, target = (request.split(b"\r\n", 1)[0].decode("latin-1").split(" ") + ["", ""])[:2]
            path = target.split("?", 1)[0]
            if path == "/config.json":
                status, ctype, body = "200 OK", "application/json", config
            elif path == "/client.js" and method == "GET":
                # The browser connector, shipped in the package.
                status, ctype, body = "200 OK", "text/javascript; charset=utf-8", ferrovia.client_js_path().read_bytes()
            elif path in STATIC and method == "GET":
                name, ctype = STATIC[path]
                status, body = "200 OK", (HERE / name).read_bytes()
            else:
                status, ctype, body = "404 Not Found", "text/plain", b"not found\n"
            head = (
                f"HTTP/1.1 {status}\r\ncontent-type: {ctype}\r\ncontent-length: {len(body)}\r\n"
                "cache-control: no-store\r\n\r\n"
            )
            writer.write(head.encode() + body)
            await writer.drain()
    writer.close()


def fail(message: str) -> NoReturn:
    print(f"demo: {message}", file=sys.stderr)
    sys.exit(2)


async def main() -> None:
    parser = argparse.ArgumentParser(description="The Ferrovia demo server")
    parser.add_argument("--port", type=int, default=4433, help="UDP port of the WebTransport endpoint (0: any)")
    parser.add_argument("--http-port", type=int, default=8080, help="TCP port of the page (0: any)")
    parser.add_argument("--host", default=None, help="IP address to listen on (default: every address, IPv6 and IPv4)")
    args = parser.parse_args()
    host = args.host.strip("[]") if args.host else None

    try:
        wt = await ferrovia.serve(host or "::", args.port)
    except ferrovia.WebTransportError as e:
        fail(f"cannot listen on UDP port {args.port}: {e}; pick another with --port")
    except OSError as e:
        fail(f"cannot listen on UDP port {args.port}: {e}; pick another with --port")
    certificate = wt.certificate
    config = json.dumps(
        {
            "port": wt.port,
            "path": "/demo",
            "certificateHash": certificate.sha256_hex(),
            "server": f"Python {sys.version.split()[0]}",
        }
    ).encode()
    try:
        web = await asyncio.start_server(
            lambda r, w: handle_http(config, r, w), sock=http_socket(host, args.http_port)
        )
    except OSError as e:
        fail(f"cannot serve the page on TCP port {args.http_port}: {e.strerror or e}; pick another with --http-port")
    http_port = web.sockets[0].getsockname()[1]

    print(
        f"""
Ferrovia demo (Python)

  Open          http://localhost:{http_port}/   in Chrome or Firefox; open it in several tabs
  WebTransport  https://localhost:{wt.port}/demo   (UDP port {wt.port})
  WebSocket     wss://localhost:{wt.port}/demo     (TCP port {wt.port}; the fallback needs a trusted certificate)
  Certificate   self-signed ECDSA P-256 for localhost, 127.0.0.1, ::1, valid 13 days
  SHA-256       {certificate.sha256_hex()}
                (the page passes it as serverCertificateHashes: no flags, no CA)
  SPKI          {certificate.spki_sha256_base64()}
                (for the WebSocket fallback, start Chromium with
                --ignore-certificate-errors-spki-list=<this>, or open https://localhost:{wt.port}/
                once and accept the certificate)

Press Ctrl-C to stop.
""",
        flush=True,
    )

    room = Room()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    async def accept() -> None:
        sessions: set[asyncio.Task[None]] = set()
        async for request in wt.requests("/demo"):
            task = asyncio.ensure_future(room.serve(request))
            sessions.add(task)
            task.add_done_callback(sessions.discard)

    accepting = asyncio.ensure_future(accept())
    await stop.wait()
    count = len(room.tabs)
    log(f"stopping: closing {count} {'session' if count == 1 else 'sessions'}")
    # A second Ctrl-C while draining: stop at once.
    loop.add_signal_handler(signal.SIGINT, lambda: sys.exit(130))
    web.close()
    await wt.close(grace=1.0)
    accepting.cancel()
    log("stopped")


if __name__ == "__main__":
    asyncio.run(main())
