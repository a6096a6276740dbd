"""Completes a WebTransport echo against a server installed from the release artefacts.

    python tests/prebuilt/echo_client.py PORT [LABEL]

Opens a session on /echo, sends random bytes on a bidirectional stream (several chunks
and FIN), and exits non-zero unless exactly the same bytes come back before the server's
FIN. The client is aioquic (tests/python/wtclient.py), which shares no code with Ferrovia.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "python"))

from wtclient import connect_client  # noqa: E402

# Larger than the initial stream window, so flow control has to move for the echo to finish.
PAYLOAD_BYTES = 3 * 1024 * 1024 + 517


async def echo(port: int) -> tuple[int, str]:
    payload = os.urandom(PAYLOAD_BYTES)
    async with connect_client(port, max_stream_data=1 << 20) as client:
        session = await client.session("/echo")
        status = await session.status()
        if status != 200:
            raise AssertionError(f"CONNECT /echo answered {status}")
        stream = session.open_bidi()
        send = asyncio.ensure_future(stream.write_all(payload, chunk=64 * 1024))
        back = await stream.read_all(timeout=60)
        await send
        session.close(0, "done")
    if back != payload:
        raise AssertionError(
            f"echo differs: sent {len(payload)} bytes sha256 {hashlib.sha256(payload).hexdigest()}, "
            f"got {len(back)} bytes sha256 {hashlib.sha256(back).hexdigest()}"
        )
    return len(back), hashlib.sha256(back).hexdigest()


def main() -> None:
    port = int(sys.argv[1])
    label = sys.argv[2] if len(sys.argv) > 2 else "server"
    size, digest = asyncio.run(asyncio.wait_for(echo(port), 90))
    print(f"{label}: WebTransport echo of {size} bytes intact (sha256 {digest[:16]}...)")


if __name__ == "__main__":
    main()
