"""A chat room: every message a browser sends is broadcast to every session in the room.

    python examples/python/chat.py [--port 4433] [--host ::]

Browsers connect to ``https://localhost:4433/chat?name=NAME``. A client sends each message
on its own unidirectional stream (UTF-8, at most 4 KiB); the server sends every line of the
room (``NAME: text``, ``* NAME joined``, ``* NAME left``) to each member on a new
unidirectional stream. Streams are independent, so two lines sent at nearly the same moment
may arrive in either order.

Prints JSON lines: ``{"event":"listening",...}`` with the port and certificate hash, then
``join``, ``message`` and ``leave`` events.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
from collections.abc import Coroutine
from typing import Any
from urllib.parse import parse_qs, urlsplit

import ferrovia

MAX_MESSAGE = 4096


def emit(event: str, **fields: object) -> None:
    print(json.dumps({"event": event, **fields}, separators=(",", ":")), flush=True)


class Room:
    def __init__(self) -> None:
        self.members: set[ferrovia.Session] = set()
        self.tasks: set[asyncio.Task[None]] = set()

    def spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(work)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def broadcast(self, line: str) -> None:
        # One slow member must not hold up the others: each delivery runs on its own.
        for member in list(self.members):
            self.spawn(send_line(member, line))


async def send_line(session: ferrovia.Session, line: str) -> None:
    with contextlib.suppress(ferrovia.WebTransportError):
        writer = await session.open_unidirectional_stream()
        writer.write(line.encode())
        writer.write_eof()
        await writer.drain()


async def read_message(reader: ferrovia.StreamReader) -> str | None:
    data = bytearray()
    while chunk := await reader.read(MAX_MESSAGE + 1):
        data += chunk
        if len(data) > MAX_MESSAGE:
            reader.stop(0)
            return None
    return data.decode(errors="replace").strip()


async def deliver(room: Room, name: str, reader: ferrovia.StreamReader) -> None:
    with contextlib.suppress(ferrovia.WebTransportError):
        text = await read_message(reader)
        if text:
            emit("message", name=name, text=text)
            room.broadcast(f"{name}: {text}")


async def member(room: Room, name: str, session: ferrovia.Session) -> None:
    room.members.add(session)
    emit("join", name=name)
    room.broadcast(f"* {name} joined")
    async for reader in session.incoming_unidirectional_streams():
        room.spawn(deliver(room, name, reader))
    info = await session.wait_closed()
    room.members.discard(session)
    emit("leave", name=name, code=info.code, reason=info.reason)
    room.broadcast(f"* {name} left")


async def main() -> None:
    parser = argparse.ArgumentParser(description="Ferrovia chat room example")
    parser.add_argument("--port", type=int, default=4433)
    parser.add_argument("--host", default="::")
    args = parser.parse_args()
    room = Room()
    async with ferrovia.serve(args.host.strip("[]"), args.port) as server:
        # Claim the requests before announcing the port, so none arrives unclaimed (404).
        requests = server.requests("/chat")
        emit("listening", port=server.port, certificateHash=server.certificate.sha256_hex())
        async for request in requests:
            name = (parse_qs(urlsplit(request.path).query).get("name") or ["anonymous"])[0][:32]
            try:
                session = await request.accept()
            except ferrovia.WebTransportError:
                continue
            room.spawn(member(room, name, session))


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())
