"""File uploads with progress and an integrity check.

    python examples/python/upload.py [--port 4433] [--host ::] [--dir DIR] [--max-size BYTES]

Browsers connect to ``https://localhost:4433/upload`` and send each file on its own
bidirectional stream: a header line ``SIZE SHA256HEX NAME\\n``, then exactly SIZE bytes,
then FIN. The server answers on the same stream with ``progress BYTES\\n`` lines as data
arrives, then ``ok SIZE SHA256HEX\\n`` once the file is stored under ``--dir`` (default: the
system temp directory's ``ferrovia-uploads``), or ``error REASON\\n``. A file whose SHA-256
differs from the header's is not kept.

Prints JSON lines: ``listening`` (with the directory), then one ``upload`` event per file.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import os
import re
import tempfile
from pathlib import Path

import ferrovia

PROGRESS_EVERY = 256 * 1024
HEADER = re.compile(r"^(\d+) ([0-9a-f]{64}) (.+)$")


def emit(event: str, **fields: object) -> None:
    print(json.dumps({"event": event, **fields}, separators=(",", ":")), flush=True)


class Refused(Exception):
    """An upload the server does not keep; the message goes back to the client."""

    def __init__(self, reason: str, name: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.name = name


def safe_name(name: str) -> str:
    """A name that stays inside the upload directory whatever the client sent."""
    base = re.sub(r"[^\w.-]", "_", name.replace("\\", "/").rsplit("/", 1)[-1], flags=re.ASCII)
    return base.lstrip(".")[:100] or "upload"


async def receive(
    reader: ferrovia.StreamReader, writer: ferrovia.StreamWriter, directory: Path, max_size: int
) -> tuple[str, int, str, Path]:
    try:
        line = await reader.readuntil(b"\n")
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError):
        raise Refused("stream ended before the header") from None
    match = HEADER.match(line[:-1].decode(errors="replace"))
    if not match:
        raise Refused('bad header: expected "SIZE SHA256HEX NAME"')
    size, expected, name = int(match[1]), match[2], safe_name(match[3])
    if size > max_size:
        raise Refused(f"too large: {size} bytes, the limit is {max_size}", name)
    directory.mkdir(parents=True, exist_ok=True)
    final = directory / name
    partial = directory / f"{name}.part-{os.getpid()}-{reader.id}"
    digest = hashlib.sha256()
    received = reported = 0
    try:
        with open(partial, "wb") as f:
            while chunk := await reader.read(256 * 1024):
                received += len(chunk)
                if received > size:
                    raise Refused(f"more than the announced {size} bytes", name)
                digest.update(chunk)
                f.write(chunk)
                if received - reported >= PROGRESS_EVERY or received == size:
                    reported = received
                    writer.write(f"progress {received}\n".encode())
                    await writer.drain()
        if received != size:
            raise Refused(f"got {received} of {size} bytes", name)
        actual = digest.hexdigest()
        if actual != expected:
            raise Refused(f"checksum mismatch: received data has SHA-256 {actual}", name)
        partial.replace(final)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return name, size, actual, final


async def upload(
    reader: ferrovia.StreamReader, writer: ferrovia.StreamWriter, directory: Path, max_size: int
) -> None:
    try:
        name, size, sha256, path = await receive(reader, writer, directory, max_size)
    except (Refused, ferrovia.WebTransportError, OSError) as e:
        refused = e if isinstance(e, Refused) else Refused(f"failed: {e}")
        emit("upload", ok=False, reason=refused.reason, name=refused.name)
        with contextlib.suppress(ferrovia.WebTransportError):
            writer.write(f"error {refused.reason}\n".encode())
            writer.write_eof()
            await writer.drain()
            # Tell the client to stop sending the rest of a rejected file.
            reader.stop(1)
        return
    with contextlib.suppress(ferrovia.WebTransportError):
        writer.write(f"ok {size} {sha256}\n".encode())
        writer.write_eof()
        await writer.drain()
    emit("upload", ok=True, name=name, size=size, sha256=sha256, path=str(path))


async def serve_session(session: ferrovia.Session, directory: Path, max_size: int) -> None:
    tasks: set[asyncio.Task[None]] = set()
    async for reader, writer in session.incoming_bidirectional_streams():
        task = asyncio.ensure_future(upload(reader, writer, directory, max_size))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    await asyncio.gather(*tasks, return_exceptions=True)


async def main() -> None:
    parser = argparse.ArgumentParser(description="Ferrovia upload example")
    parser.add_argument("--port", type=int, default=4433)
    parser.add_argument("--host", default="::")
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()) / "ferrovia-uploads")
    parser.add_argument("--max-size", type=int, default=1 << 30)
    args = parser.parse_args()
    directory = args.dir.resolve()
    sessions: set[asyncio.Task[None]] = set()
    async with ferrovia.serve(args.host.strip("[]"), args.port) as server:
        # Claim the requests before announcing the port, so none arrives unclaimed (404).
        requests = server.requests("/upload")
        emit("listening", port=server.port, certificateHash=server.certificate.sha256_hex(), dir=str(directory))
        async for request in requests:
            try:
                session = await request.accept()
            except ferrovia.WebTransportError:
                continue
            task = asyncio.ensure_future(serve_session(session, directory, args.max_size))
            sessions.add(task)
            task.add_done_callback(sessions.discard)


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())
