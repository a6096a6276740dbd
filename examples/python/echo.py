"""An echo server for trying Ferrovia from a browser, and the server the browser tests run
against when they check the Python package.

    python examples/python/echo.py --port 4433

It prints JSON lines on stdout: first ``{"event":"listening",...}`` with the port and the
certificate hash for ``serverCertificateHashes``, then one line per session event.

Paths: ``/echo`` echoes bidi streams, uni streams (on a new uni stream) and datagrams;
``/open`` opens a uni and a bidi stream toward the client; ``/close?code=N&reason=R``
closes the session after 300 ms; ``/reject?status=S`` rejects; ``/reset?code=N`` resets
and stops every incoming bidi stream. Any other path gets 404.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Coroutine
from typing import Any
from urllib.parse import parse_qs, urlsplit

import ferrovia

ROUTES = {"/echo", "/open", "/close", "/reject", "/reset"}


def emit(event: str, **fields: object) -> None:
    print(json.dumps({"event": event, **fields}, separators=(",", ":")), flush=True)


def query_param(path: str, key: str) -> str | None:
    values = parse_qs(urlsplit(path).query).get(key)
    return values[0] if values else None


def int_param(path: str, key: str, default: int) -> int:
    try:
        return int(query_param(path, key) or "")
    except ValueError:
        return default


async def echo_bidi(reader: ferrovia.StreamReader, writer: ferrovia.StreamWriter) -> None:
    try:
        async for chunk in reader:
            writer.write(chunk)
            await writer.drain()
        writer.write_eof()
    except ferrovia.StreamResetError as e:
        emit("stream-reset", code=e.stream_error_code)
        writer.reset(e.stream_error_code or 0)
    except ferrovia.WebTransportError:
        pass


async def echo_uni(session: ferrovia.Session, reader: ferrovia.StreamReader) -> None:
    try:
        data = await reader.read()
        writer = await session.open_unidirectional_stream()
        writer.write(data)
        writer.write_eof()
        await writer.drain()
    except ferrovia.StreamResetError as e:
        emit("stream-reset", code=e.stream_error_code)
    except ferrovia.WebTransportError:
        pass


async def echo(session: ferrovia.Session) -> None:
    tasks: set[asyncio.Task[None]] = set()

    def spawn(coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coro)
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    async def bidi() -> None:
        async for reader, writer in session.incoming_bidirectional_streams():
            spawn(echo_bidi(reader, writer))

    async def uni() -> None:
        async for reader in session.incoming_unidirectional_streams():
            spawn(echo_uni(session, reader))

    async def datagrams() -> None:
        async for data in session.incoming_datagrams():
            try:
                await session.send_datagram(data)
            except ferrovia.WebTransportError:
                pass

    await asyncio.gather(bidi(), uni(), datagrams())


async def open_streams(session: ferrovia.Session) -> None:
    try:
        uni = await session.open_unidirectional_stream()
        uni.write(b"hello uni")
        uni.write_eof()
        reader, writer = await session.open_bidirectional_stream()
        writer.write(b"hello bidi")
        writer.write_eof()
        reply = await reader.read()
        emit("bidi-reply", data=reply.decode(errors="replace"))
    except ferrovia.WebTransportError:
        pass
    await session.wait_closed()


async def reset_streams(session: ferrovia.Session, code: int) -> None:
    async def refuse(reader: ferrovia.StreamReader, writer: ferrovia.StreamWriter) -> None:
        # Refuse the stream once the client has said something on it, as a server reading
        # a request would: a reset that overtakes the page's first write makes Chromium
        # report that write's failure without the code.
        try:
            await asyncio.wait_for(reader.read(1), 2)
        except (asyncio.TimeoutError, ferrovia.WebTransportError):
            pass
        writer.reset(code)
        reader.stop((code + 1) & 0xFFFF_FFFF)

    tasks: set[asyncio.Task[None]] = set()
    async for reader, writer in session.incoming_bidirectional_streams():
        task = asyncio.create_task(refuse(reader, writer))
        tasks.add(task)
        task.add_done_callback(tasks.discard)


async def close_later(session: ferrovia.Session, path: str) -> None:
    await asyncio.sleep(0.3)
    session.close(int_param(path, "code", 0), query_param(path, "reason") or "")


async def run_session(session: ferrovia.Session, route: str, path: str) -> None:
    if route == "/echo":
        work = echo(session)
    elif route == "/open":
        work = open_streams(session)
    elif route == "/close":
        work = close_later(session, path)
    else:
        work = reset_streams(session, int_param(path, "code", 1))
    info, _ = await asyncio.gather(session.wait_closed(), work)
    emit("closed", path=session.path, code=info.code, reason=info.reason, remote=info.initiator == "remote")


async def web_socket(request: ferrovia.SessionRequest) -> None:
    """Plain WebSockets on /ws: echo every message; with ?close=CODE&reason=R close after one."""
    path = request.path
    http = {"2": "HTTP/2", "1.1": "HTTP/1.1"}.get(request.http_version, request.http_version)
    origin = request.origin
    ws = await request.accept_websocket()
    emit("websocket", path=path, http=http, origin=origin)
    close = query_param(path, "close")

    async def work() -> None:
        try:
            async for message in ws:
                await ws.send(message)
                if close:
                    await ws.close(int(close), query_param(path, "reason") or "")
        except ferrovia.WebSocketClosedError:
            pass

    task = asyncio.ensure_future(work())
    code, reason = await ws.wait_closed()
    await task
    info = ws.close_info
    emit("websocket-closed", path=path, code=code, reason=reason, remote=info is not None and info.initiator == "remote")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=4433)
    # "::" listens on IPv6 and IPv4 at once: Chromium sends `localhost` to ::1, Firefox
    # to 127.0.0.1.
    parser.add_argument("--host", default="::")
    args = parser.parse_args()

    certificate = ferrovia.Certificate.self_signed(["localhost", "127.0.0.1", "::1"])
    # Browsers offer permessage-deflate on every WebSocket; /ws compresses.
    async with ferrovia.serve(
        args.host.strip("[]"), args.port, certificate=certificate, websocket_compression="deflate"
    ) as server:
        # Claim the requests before announcing the port, so none arrives unclaimed (404).
        requests = server.requests()
        sockets = server.requests("/ws", websockets=True)
        socket_tasks: set[asyncio.Task[None]] = set()

        async def web_sockets() -> None:
            async for request in sockets:
                task = asyncio.ensure_future(web_socket(request))
                socket_tasks.add(task)
                task.add_done_callback(socket_tasks.discard)

        serving_sockets = asyncio.ensure_future(web_sockets())
        emit(
            "listening",
            port=server.port,
            certificateHash=certificate.sha256_hex(),
            spki=certificate.spki_sha256_base64(),
        )
        sessions: set[asyncio.Task[None]] = set()
        async for request in requests:
            path = request.path
            route = urlsplit(path).path
            if route not in ROUTES:
                request.reject(404)
                continue
            if route == "/reject":
                try:
                    request.reject(int_param(path, "status", 403))
                except ValueError:
                    pass  # not an error status: dropping the request answers 404
                continue
            protocol = request.subprotocols[0] if request.subprotocols else None
            origin = request.origin
            try:
                session = await request.accept(protocol=protocol)
            except ferrovia.WebTransportError as e:
                print(f"accept failed: {e}", flush=True, file=sys.stderr)
                continue
            emit("session", path=path, origin=origin, protocol=protocol, transport=session.transport)
            task = asyncio.ensure_future(run_session(session, route, path))
            sessions.add(task)
            task.add_done_callback(sessions.discard)


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass
