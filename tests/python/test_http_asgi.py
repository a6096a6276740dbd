"""A Starlette application hosted by ``serve(..., app=...)``: ordinary HTTP on the same port
as WebTransport, over HTTP/3 (aioquic's client) and HTTP/2 and HTTP/1.1 (httpx), with the
lifespan around the server's life, 64 MiB both ways by SHA-256, streaming responses,
errors, and a session beside the requests."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

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

    return Starlette(
        routes=[
            Route("/", index),
            Route("/api/hello", hello),
            Route("/upload", upload, methods=["POST"]),
            Route("/download", download),
            Route("/boom", boom),
            Route("/slow", slow),
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
    assert events == ["startup", "shutdown"]


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
