"""The Ferrovia demo on Python: the same page and protocol as examples/demo/server.mjs.

    python examples/demo/server.py [--port 4433] [--host ::]

One server and one port for everything: a small ASGI application hosted by Ferrovia serves
the page (HTTP/2 and HTTP/1.1 on TCP, HTTP/3 on UDP), the page opens its WebTransport
session to the same origin, trusting the fresh self-signed certificate by the hash it
fetches from /config.json, and the same port takes the page's WebSocket fallback (QMux
sessions) on TCP, handled by the same code. --port is the port (UDP and TCP); 0 picks a
free one. The protocol is described at the top of demo.js.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Coroutine, MutableMapping
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


class Site:
    """The page, its script and style, the browser connector and the config the page reads:
    an ASGI application, so any ASGI framework could take its place."""

    def __init__(self) -> None:
        self.config = b"{}"

    async def __call__(
        self,
        scope: MutableMapping[str, Any],
        receive: Callable[[], Awaitable[MutableMapping[str, Any]]],
        send: Callable[[MutableMapping[str, Any]], Awaitable[None]],
    ) -> None:
        if scope["type"] != "http":
            return  # no lifespan work to do
        path, method = scope["path"], scope["method"]
        if path == "/config.json":
            status, ctype, body = 200, "application/json", self.config
        elif method not in ("GET", "HEAD"):
            status, ctype, body = 405, "text/plain", b"method not allowed\n"
        elif path == "/client.js":
            # The browser connector, shipped in the package.
            status, ctype, body = 200, "text/javascript; charset=utf-8", ferrovia.client_js_path().read_bytes()
        elif path in STATIC:
            name, ctype = STATIC[path]
            status, body = 200, (HERE / name).read_bytes()
        else:
            status, ctype, body = 404, "text/plain", b"not found\n"
        headers = [(b"content-type", ctype.encode()), (b"cache-control", b"no-store")]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def fail(message: str) -> NoReturn:
    print(f"demo: {message}", file=sys.stderr)
    sys.exit(2)


async def main() -> None:
    parser = argparse.ArgumentParser(description="The Ferrovia demo server")
    parser.add_argument("--port", type=int, default=4433, help="the port, UDP and TCP (0: any)")
    parser.add_argument("--http-port", help=argparse.SUPPRESS)
    parser.add_argument("--host", default=None, help="IP address to listen on (default: every address, IPv6 and IPv4)")
    args = parser.parse_args()
    if args.http_port is not None:
        fail("--http-port is gone: the page now comes from the same port as the sessions (--port)")
    host = args.host.strip("[]") if args.host else None

    site = Site()
    try:
        wt = await ferrovia.serve(host or "::", args.port, app=site)
    except (ferrovia.WebTransportError, OSError) as e:
        fail(f"cannot listen on port {args.port}: {e}; pick another with --port")
    certificate = wt.certificate
    site.config = json.dumps(
        {
            "port": wt.port,
            "path": "/demo",
            "certificateHash": certificate.sha256_hex(),
            "server": f"Python {sys.version.split()[0]}",
        }
    ).encode()
    origin = f"https://localhost:{wt.port}"

    print(
        f"""
Ferrovia demo (Python)

  Open          {origin}/   in Chrome or Firefox; open it in several tabs
  Trust         the page needs the browser to trust the certificate on TCP, once:
                Chrome/Chromium: start it with
                  --user-data-dir=/tmp/ferrovia-demo --ignore-certificate-errors-spki-list={certificate.spki_sha256_base64()}
                or, in any browser, open the page and accept the certificate warning
  WebTransport  {origin}/demo   (UDP port {wt.port}; the page trusts it by hash)
  WebSocket     wss://localhost:{wt.port}/demo     (TCP port {wt.port}, the fallback)
  Certificate   self-signed ECDSA P-256 for localhost, 127.0.0.1, ::1, valid 13 days
  SHA-256       {certificate.sha256_hex()}
                (the page passes it as serverCertificateHashes)
  SPKI          {certificate.spki_sha256_base64()}

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
    await wt.close(grace=1.0)
    accepting.cancel()
    log("stopped")


if __name__ == "__main__":
    asyncio.run(main())
