"""Ferrovia inside a Starlette app served by uvicorn: the app serves HTTP, and WebSockets
reaching the mounted ``server.asgi()`` come out of the Ferrovia server's routes."""

from __future__ import annotations

import asyncio
import socket

import pytest
import uvicorn
import websockets
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Mount, Route
from websockets.exceptions import InvalidStatus

import ferrovia


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_starlette_under_uvicorn_carries_websockets_into_ferrovia_routes() -> None:
    async with ferrovia.serve("127.0.0.1", 0, tcp=False) as server:
        async def time(request: object) -> JSONResponse:
            return JSONResponse({"ok": True})

        app = Starlette(routes=[Route("/api", time), Mount("/rt", app=server.asgi())])
        port = free_port()
        config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
        web = uvicorn.Server(config)
        serving = asyncio.create_task(web.serve())
        while not web.started:
            await asyncio.sleep(0.02)
        try:
            chat = server.requests("/rt/chat", websockets=True)

            async def echo() -> None:
                request = await chat.accept()
                assert request is not None
                assert request.transport == "websocket"
                assert request.path == "/rt/chat?room=1"
                ws = await request.accept_websocket(protocol="chat.v1")
                async for message in ws:
                    await ws.send(message)

            task = asyncio.create_task(echo())
            async with websockets.connect(
                f"ws://127.0.0.1:{port}/rt/chat?room=1",
                subprotocols=["chat.v1"],  # type: ignore[list-item]
            ) as client:
                assert client.subprotocol == "chat.v1"
                await client.send("through uvicorn")
                assert await client.recv() == "through uvicorn"
                await client.send(b"\x00\x01binary")
                assert await client.recv() == b"\x00\x01binary"
            await asyncio.wait_for(task, 10)

            # The server closes: the client sees its code and reason, and the server's side
            # learns of a clean close only once the client's reply came back through uvicorn.
            closer = server.requests("/rt/closer", websockets=True)

            async def close_after_one() -> tuple[int, str, str | None]:
                request = await closer.accept()
                assert request is not None
                ws = await request.accept_websocket()
                async for message in ws:
                    await ws.send(message)
                    await ws.close(4002, "server done")
                code, reason = await ws.wait_closed()
                return code, reason, ws.close_info.initiator if ws.close_info else None

            task2 = asyncio.create_task(close_after_one())
            async with websockets.connect(f"ws://127.0.0.1:{port}/rt/closer") as client:
                await client.send("once")
                assert await client.recv() == "once"
                await client.wait_closed()
                assert (client.close_code, client.close_reason) == (4002, "server done")
            assert await asyncio.wait_for(task2, 10) == (4002, "server done", "local")

            # A path no Ferrovia route claims is refused.
            with pytest.raises(InvalidStatus) as info:
                async with websockets.connect(f"ws://127.0.0.1:{port}/rt/nowhere"):
                    pass
            assert info.value.response.status_code in (403, 404)
            # The app's own HTTP routes are untouched.
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET /api HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            response = await reader.read()
            assert response.startswith(b"HTTP/1.1 200") and b'"ok":true' in response
            writer.close()
        finally:
            web.should_exit = True
            await serving


async def test_the_browser_connector_ships_in_the_package_and_serves_from_starlette() -> None:
    from pathlib import Path

    from starlette.responses import FileResponse

    path = ferrovia.client_js_path()
    repo_copy = Path(__file__).resolve().parents[2] / "bindings-node" / "lib" / "client.mjs"
    # The installed package holds the same module as the npm package's ferrovia/client.
    assert path.is_file() and path.read_bytes() == repo_copy.read_bytes()

    async def client_js(request: object) -> FileResponse:
        return FileResponse(ferrovia.client_js_path(), media_type="text/javascript")

    app = Starlette(routes=[Route("/client.js", client_js)])
    port = free_port()
    web = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off"))
    serving = asyncio.create_task(web.serve())
    while not web.started:
        await asyncio.sleep(0.02)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /client.js HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        head, _, body = (await reader.read()).partition(b"\r\n\r\n")
        writer.close()
        assert head.startswith(b"HTTP/1.1 200") and b"text/javascript" in head
        assert body == repo_copy.read_bytes()
        assert b"export class FerroviaTransport" in body
    finally:
        web.should_exit = True
        await serving
