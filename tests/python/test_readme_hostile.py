"""The README's and the docs' accept loops against hostile clients: QMux clients that never
send their transport parameters. Before, ``await request.accept()`` raised for them after
``response_timeout``, which ended the ``async for`` loop's task (the route answered nobody
from then on); now it returns a session that is already closed, and both loops go on."""

from __future__ import annotations

import asyncio
import ssl

import websockets

import ferrovia


def tls_for(server: ferrovia.Server) -> ssl.SSLContext:
    return ssl.create_default_context(cadata=server.certificate.chain_pem())


async def test_silent_qmux_clients_stop_neither_the_route_handler_nor_the_requests_loop() -> None:
    limits = ferrovia.Limits(response_timeout=0.5)
    async with ferrovia.serve("127.0.0.1", 0, limits=limits) as server:
        address = server.tcp_address
        assert address is not None
        closed_reasons: list[str] = []

        # The README's handler, as written there.
        async def echo(request: ferrovia.SessionRequest) -> None:
            session = await request.accept()  # WebTransport or QMux alike
            async for reader, writer in session.incoming_bidirectional_streams():
                writer.write(await reader.read())
                writer.write_eof()
            closed_reasons.append((await session.wait_closed()).reason)

        server.route("/echo", echo)

        # docs/python.md's loop.
        async def loop() -> None:
            async for request in server.requests("/chat"):
                session = await request.accept()
                asyncio.get_running_loop().create_task(session.wait_closed())

        loop_task = asyncio.create_task(loop())
        ctx = tls_for(server)
        silent = []
        for path in ("/echo", "/chat"):
            for _ in range(5):
                silent.append(
                    await websockets.connect(
                        f"wss://localhost:{address[1]}{path}", ssl=ctx, subprotocols=["qmux-02"]  # type: ignore[list-item]
                    )
                )
        await asyncio.sleep(1.5)
        assert not loop_task.done(), loop_task
        # Both paths still answer at once.
        for path in ("/echo", "/chat"):
            started = asyncio.get_running_loop().time()
            late = await asyncio.wait_for(
                websockets.connect(f"wss://localhost:{address[1]}{path}", ssl=ctx, subprotocols=["qmux-02"]),  # type: ignore[list-item]
                5,
            )
            assert asyncio.get_running_loop().time() - started < 2
            await late.close()
        assert server.stats().sessions_failed_to_start >= 10
        assert any("transport parameters" in r for r in closed_reasons), closed_reasons
        for ws in silent:
            await ws.close()
        loop_task.cancel()
