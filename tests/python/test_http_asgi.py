"""A Starlette application hosted by ``serve(..., app=...)``: ordinary HTTP on the same port
as WebTransport, over HTTP/3 (aioquic's client) and HTTP/2 and HTTP/1.1 (httpx), with the
lifespan around the server's life, 64 MiB both ways by SHA-256, streaming responses,
errors, a session beside the requests, and the app's WebSocket routes (the ``websocket``
scope) for paths no Ferrovia route claims, reached by the ``websockets`` library."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import ssl
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets
from websockets.exceptions import ConnectionClosed, InvalidStatus
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

import ferrovia

sys.path.insert(0, str(Path(__file__).parent))

from h3client import connect_h3  # noqa: E402
from wtclient import connect_client  # noqa: E402

BIG = 64 * 1024 * 1024


def pattern(n: int) -> bytes:
    block = bytes(i % 251 for i in range(251))
    return (block * (n // 251 + 1))[:n]


def make_app(events: list[str]) -> Starlette:
    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, str]]:
        events.append("startup")
        yield {"greeting": "hello from the lifespan"}
        events.append("shutdown")

    async def index(request: Request) -> HTMLResponse:
        return HTMLResponse("<!doctype html><title>ferrovia + starlette</title><p>hello from starlette</p>")

    async def hello(request: Request) -> JSONResponse:
        return JSONResponse(
            {
                "greeting": request.state.greeting,
                "version": request.scope["http_version"],
                "url": str(request.url),
                "query": request.query_params.get("q"),
                "client": request.client.host if request.client else None,
            }
        )

    async def upload(request: Request) -> JSONResponse:
        digest = hashlib.sha256()
        size = 0
        async for chunk in request.stream():
            digest.update(chunk)
            size += len(chunk)
        return JSONResponse({"bytes": size, "sha256": digest.hexdigest()})

    async def download(request: Request) -> StreamingResponse:
        total = int(request.query_params["bytes"])

        async def chunks() -> AsyncIterator[bytes]:
            block = pattern(251 * 261)  # 65,511 bytes: a whole number of 251-byte periods
            sent = 0
            while sent < total:
                n = min(len(block), total - sent)
                yield block[:n]
                sent += n

        return StreamingResponse(chunks(), media_type="application/octet-stream", headers={"content-length": str(total)})

    async def boom(request: Request) -> Response:
        raise RuntimeError("on purpose")

    async def slow(request: Request) -> PlainTextResponse:
        await asyncio.sleep(5)
        return PlainTextResponse("too late")

    async def ws_echo(websocket: WebSocket) -> None:
        offered = websocket.scope["subprotocols"]
        await websocket.accept(subprotocol="chat.v1" if "chat.v1" in offered else None, headers=[(b"x-app", b"starlette")])
        events.append(f"ws-open {websocket.scope['http_version']} {websocket.url.path} {websocket.query_params.get('room')}")
        try:
            while True:
                message = await websocket.receive()
                if message["type"] == "websocket.disconnect":
                    events.append(f"ws-disconnect {message['code']} {message.get('reason', '')}")
                    return
                if message.get("text") == "bye":
                    await websocket.close(4001, "bye to you")
                    return
                if message.get("text") is not None:
                    await websocket.send_text(message["text"])
                else:
                    await websocket.send_bytes(message["bytes"])
        except WebSocketDisconnect as e:
            events.append(f"ws-disconnect {e.code}")

    async def ws_deny(websocket: WebSocket) -> None:
        await websocket.send_denial_response(PlainTextResponse("no token", status_code=401))

    async def ws_fail_before(websocket: WebSocket) -> None:
        raise RuntimeError("on purpose, before accept")

    async def ws_fail_after(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.receive_text()
        raise RuntimeError("on purpose, after accept")

    return Starlette(
        routes=[
            Route("/", index),
            Route("/api/hello", hello),
            Route("/upload", upload, methods=["POST"]),
            Route("/download", download),
            Route("/boom", boom),
            Route("/slow", slow),
            WebSocketRoute("/ws/echo", ws_echo),
            WebSocketRoute("/ws/deny", ws_deny),
            WebSocketRoute("/ws/fail-before", ws_fail_before),
            WebSocketRoute("/ws/fail-after", ws_fail_after),
            WebSocketRoute("/claimed", ws_echo),
        ],
        lifespan=lifespan,
    )


@pytest.fixture
async def site(caplog: pytest.LogCaptureFixture) -> AsyncIterator[tuple[ferrovia.Server, list[str]]]:
    caplog.set_level(logging.CRITICAL, logger="ferrovia")
    events: list[str] = []
    limits = ferrovia.Limits(max_request_body=128 * 1024 * 1024, handler_timeout=1.0)
    server = await ferrovia.serve("127.0.0.1", 0, app=make_app(events), limits=limits)
    try:
        assert events == ["startup"], "the lifespan ran before serve() returned"
        yield server, events
    finally:
        await server.close()
    assert [e for e in events if not e.startswith("ws-")] == ["startup", "shutdown"]


async def test_http3_from_aioquic(site: tuple[ferrovia.Server, list[str]]) -> None:
    server, _ = site
    authority = f"localhost:{server.port}"
    async with connect_h3(server.port) as client:
        _, hello = client.request("GET", "/api/hello?q=h3", authority)
        assert await hello.status() == 200
        body = json.loads(await hello.body())
        assert body == {
            "greeting": "hello from the lifespan",
            "version": "3",
            "url": f"https://{authority}/api/hello?q=h3",
            "query": "h3",
            "client": "127.0.0.1",
        }
        payload = os.urandom(BIG)
        stream, upload = client.request("POST", "/upload", authority, [(b"content-length", str(BIG).encode())], end=False)
        await client.send_body(stream, payload)
        assert await upload.status(60) == 200
        assert json.loads(await upload.body()) == {"bytes": BIG, "sha256": hashlib.sha256(payload).hexdigest()}
        _, download = client.request("GET", f"/download?bytes={BIG}", authority)
        assert await download.status() == 200
        digest = hashlib.sha256()
        await download.each_chunk(digest.update)
        assert digest.hexdigest() == hashlib.sha256(pattern(BIG)).hexdigest()
        # Errors: Starlette's 500, a handler past handler_timeout gets 503, the connection goes on.
        _, boom = client.request("GET", "/boom", authority)
        assert await boom.status() == 500
        _, slow = client.request("GET", "/slow", authority)
        assert await slow.status() == 503
        _, missing = client.request("GET", "/missing", authority)
        assert await missing.status() == 404


@pytest.mark.parametrize("http2", [False, True])
async def test_http2_and_http11_from_httpx(site: tuple[ferrovia.Server, list[str]], http2: bool) -> None:
    server, _ = site
    base = f"https://localhost:{server.port}"
    async with httpx.AsyncClient(http1=not http2, http2=http2, verify=False, timeout=60) as client:
        hello = await client.get(f"{base}/api/hello?q=tcp")
        assert hello.status_code == 200
        assert hello.json()["version"] == ("2" if http2 else "1.1")
        assert hello.json()["url"] == f"{base}/api/hello?q=tcp"
        assert hello.headers["alt-svc"] == f'h3=":{server.port}"; ma=86400'
        page = await client.get(f"{base}/")
        assert "hello from starlette" in page.text

        payload = os.urandom(BIG)

        async def chunks() -> AsyncIterator[bytes]:
            for i in range(0, BIG, 1 << 20):
                yield payload[i : i + (1 << 20)]

        upload = await client.post(f"{base}/upload", content=chunks())
        assert upload.json() == {"bytes": BIG, "sha256": hashlib.sha256(payload).hexdigest()}
        digest = hashlib.sha256()
        async with client.stream("GET", f"{base}/download?bytes={BIG}") as download:
            async for chunk in download.aiter_raw():
                digest.update(chunk)
        assert digest.hexdigest() == hashlib.sha256(pattern(BIG)).hexdigest()
        assert (await client.get(f"{base}/boom")).status_code == 500
        assert (await client.get(f"{base}/api/hello")).status_code == 200


async def test_a_burst_of_requests_each_gets_its_own_answer(site: tuple[ferrovia.Server, list[str]]) -> None:
    # 300 requests in flight on one HTTP/2 connection and 16 HTTP/1.1 ones: the server
    # hands them to the event loop in batches; every one is answered, and with its own URL.
    server, _ = site
    base = f"https://localhost:{server.port}"
    limits = httpx.Limits(max_connections=16)
    async with (
        httpx.AsyncClient(http2=True, verify=False, timeout=60) as two,
        httpx.AsyncClient(http1=True, verify=False, timeout=60, limits=limits) as one,
    ):
        replies = await asyncio.gather(
            *(two.get(f"{base}/api/hello?q={i}") for i in range(300)),
            *(one.get(f"{base}/api/hello?q=h1-{i}") for i in range(64)),
        )
    assert [r.status_code for r in replies] == [200] * 364
    urls = [r.json()["url"] for r in replies]
    assert urls == [f"{base}/api/hello?q={i}" for i in range(300)] + [f"{base}/api/hello?q=h1-{i}" for i in range(64)]
    assert {r.json()["version"] for r in replies[:300]} == {"2"}


async def test_a_session_beside_the_app(site: tuple[ferrovia.Server, list[str]]) -> None:
    server, _ = site
    requests = server.requests("/echo")
    async with connect_client(server.port) as client:
        remote = await client.session("/echo")
        request = await requests.accept()
        assert request is not None
        session = await request.accept()
        assert await remote.status() == 200
        stream = remote.open_bidi()
        await stream.write_all(b"beside starlette")
        reader, writer = await session.accept_bidirectional_stream()
        writer.write(await reader.read())
        writer.write_eof()
        assert await stream.read_all() == b"beside starlette"


async def test_the_apps_websocket_routes_take_paths_no_ferrovia_route_claims(
    site: tuple[ferrovia.Server, list[str]],
) -> None:
    server, events = site
    tls = ssl.create_default_context(cadata=server.certificate.chain_pem())
    base = f"wss://localhost:{server.port}"
    async with websockets.connect(f"{base}/ws/echo?room=1", ssl=tls, subprotocols=["chat.v1"]) as client:  # type: ignore[list-item]
        assert client.subprotocol == "chat.v1"
        assert client.response is not None and client.response.headers["x-app"] == "starlette"
        await client.send("hello ✓")
        assert await client.recv() == "hello ✓"
        blob = os.urandom(300_000)
        await client.send(blob)
        assert await client.recv() == blob
        await client.send("bye")
        with pytest.raises(ConnectionClosed) as closed:
            await client.recv()
        assert (closed.value.rcvd is not None and closed.value.rcvd.code, closed.value.rcvd and closed.value.rcvd.reason) == (4001, "bye to you")
    assert "ws-open 1.1 /ws/echo 1" in events
    assert server.session_count == 0 or await _until(lambda: server.session_count == 0)

    # The client closes: the app sees the code and reason.
    async with websockets.connect(f"{base}/ws/echo", ssl=tls) as client:
        await client.send("ping")
        assert await client.recv() == "ping"
        await client.close(4321, "client leaves")
    assert await _until(lambda: "ws-disconnect 4321 client leaves" in events), events

    # Refusals: a denial response's status, 403 for a path the app has no route for (its
    # router closes before accepting), 500 for an app that fails before accepting.
    for path, status in (("/ws/deny", 401), ("/ws/nowhere", 403), ("/ws/fail-before", 500)):
        with pytest.raises(InvalidStatus) as refused:
            async with websockets.connect(f"{base}{path}", ssl=tls):
                pass
        assert refused.value.response.status_code == status, path

    # An app that fails after accepting: 1011.
    async with websockets.connect(f"{base}/ws/fail-after", ssl=tls) as client:
        await client.send("boom")
        with pytest.raises(ConnectionClosed) as closed:
            await client.recv()
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1011

    # A path a Ferrovia route claims for WebSockets goes to the route, not to the app.
    route = server.requests("/claimed", websockets=True)

    async def serve_claimed() -> None:
        request = await route.accept()
        assert request is not None
        ws = await request.accept_websocket()
        await ws.send(f"ferrovia got {await ws.recv()}")
        await ws.close(1000, "")

    task = asyncio.create_task(serve_claimed())
    async with websockets.connect(f"{base}/claimed", ssl=tls) as client:
        await client.send("hi")
        assert await client.recv() == "ferrovia got hi"
    await asyncio.wait_for(task, 10)

    # The server's origin policy applies to the app's WebSockets too.
    with pytest.raises(InvalidStatus) as foreign:
        async with websockets.connect(f"{base}/ws/echo", ssl=tls, origin="https://elsewhere.example"):  # type: ignore[arg-type]
            pass
    assert foreign.value.response.status_code == 403
    assert await _until(lambda: server.session_count == 0)


async def _until(check: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        if asyncio.get_running_loop().time() > deadline:
            return False
        await asyncio.sleep(0.02)
    return True


async def test_a_failed_startup_raises_and_a_declared_body_over_the_limit_gets_413() -> None:
    @contextlib.asynccontextmanager
    async def failing(app: Starlette) -> AsyncIterator[None]:
        raise RuntimeError("no database")
        yield

    with pytest.raises(RuntimeError, match="startup failed"):
        await ferrovia.serve("127.0.0.1", 0, app=Starlette(lifespan=failing))
    with pytest.raises(TypeError, match="app must be an ASGI application"):
        ferrovia.serve("127.0.0.1", 0, app="nope")  # type: ignore[arg-type]

    seen: list[str] = []

    async def upload(request: Request) -> PlainTextResponse:
        seen.append("called")
        return PlainTextResponse(str(len(await request.body())))

    limits = ferrovia.Limits(max_request_body=1000)
    async with ferrovia.serve("127.0.0.1", 0, app=Starlette(routes=[Route("/u", upload, methods=["POST"])]), limits=limits) as server:
        async with httpx.AsyncClient(verify=False) as client:
            too_big = await client.post(f"https://localhost:{server.port}/u", content=b"x" * 5000)
            assert too_big.status_code == 413
            assert seen == []
            ok = await client.post(f"https://localhost:{server.port}/u", content=b"x" * 500)
            assert ok.text == "500"


async def test_an_app_that_returns_without_responding_is_logged_and_answered_500(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def app(scope: dict[str, object], receive: Callable[..., object], send: Callable[..., object]) -> None:
        if scope["type"] == "http" and scope["path"] == "/half":
            await send({"type": "http.response.start", "status": 200, "headers": []})  # type: ignore[misc]

    caplog.set_level(logging.ERROR, logger="ferrovia")
    async with ferrovia.serve("127.0.0.1", 0, app=app) as server:
        base = f"https://localhost:{server.port}"
        async with httpx.AsyncClient(verify=False, timeout=10) as client:
            for path, why in (("/none", "before http.response.start"), ("/half", "without a body")):
                r = await client.get(f"{base}{path}")
                assert r.status_code == 500
                assert r.text == "no response\n"
                assert any(why in m and path in m for m in caplog.messages), caplog.messages


def test_an_event_loop_without_add_reader_is_served_through_the_awaited_queue() -> None:
    # Windows' proactor loop has no add_reader; the host then awaits requests instead of
    # watching the inbox. A selector loop that refuses add_reader stands in for it here.
    class NoReaders(asyncio.SelectorEventLoop):
        def add_reader(self, *args: Any, **kwargs: Any) -> None:
            raise NotImplementedError

        def remove_reader(self, *args: Any, **kwargs: Any) -> bool:
            raise NotImplementedError

    async def main() -> list[str]:
        events: list[str] = []
        server = await ferrovia.serve("127.0.0.1", 0, app=make_app(events))
        try:
            base = f"https://localhost:{server.port}"
            async with httpx.AsyncClient(http2=True, verify=False, timeout=30) as client:
                replies = await asyncio.gather(*(client.get(f"{base}/api/hello?q={i}") for i in range(20)))
            assert [r.json()["query"] for r in replies] == [str(i) for i in range(20)]
        finally:
            await server.close()
        return events

    loop = NoReaders()
    try:
        events = loop.run_until_complete(main())
    finally:
        loop.close()
    assert events == ["startup", "shutdown"]
