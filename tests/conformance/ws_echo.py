"""The Python package's server for the conformance suites (scripts/conformance.sh):
Autobahn|Testsuite's fuzzingclient against the plain WebSocket echo on ``/``.

    python tests/conformance/ws_echo.py [--behind-tls-proxy]

Listens on 127.0.0.1, port 0, self-signed certificate, the TCP side on the UDP port number
with TLS (``--behind-tls-proxy``: on its own port without TLS, for ws://), messages up to
16 MiB (Autobahn's 9.* cases send 16 MiB), permessage-deflate on (cases 12.* and 13.*). Prints one JSON line once listening:
{"port": N, "tcpPort": N, "tls": true}. Exits on SIGTERM or SIGINT.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys

import ferrovia


async def echo(request: ferrovia.SessionRequest) -> None:
    ws = await request.accept_websocket()
    try:
        # Text comes back as text (str), binary as binary (bytes).
        async for message in ws:
            await ws.send(message)
    except ferrovia.WebSocketClosedError:
        pass  # the client closed or broke the connection mid-echo: Autobahn does so on purpose
    await ws.wait_closed()


async def main() -> None:
    args = sys.argv[1:]
    plain = "--behind-tls-proxy" in args
    unknown = [a for a in args if a != "--behind-tls-proxy"]
    if unknown:
        raise SystemExit(f"unknown arguments {unknown!r}")

    async with ferrovia.serve(
        "127.0.0.1",
        0,
        certificate="self-signed",
        # Test clients send an Origin of their own (or none); the origin policy is not under test.
        allowed_origins="*",
        limits=ferrovia.Limits(max_message_size=16 * 1024 * 1024),
        tcp=("127.0.0.1", 0) if plain else True,
        tcp_behind_tls_proxy=plain,
        # permessage-deflate, for Autobahn's cases 12.* and 13.* (the others do not offer it).
        websocket_compression="deflate",
    ) as server:
        # Claimed before the port is printed, so no request arrives unclaimed.
        sockets = server.requests("/", websockets=True)
        tcp = server.tcp_address
        assert tcp is not None
        print(json.dumps({"port": server.port, "tcpPort": tcp[1], "tls": not plain}), flush=True)

        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, lambda: asyncio.ensure_future(server.close(grace=0.2)))

        tasks: set[asyncio.Task[None]] = set()
        async for request in sockets:
            if request.transport != "websocket":
                request.reject(404)
                continue
            task = asyncio.ensure_future(echo(request))
            tasks.add(task)
            task.add_done_callback(tasks.discard)


if __name__ == "__main__":
    asyncio.run(main())
