"""Ordinary HTTP beside WebTransport on one port, from independent clients: the Rust
`site` example (examples/rust/site.rs, an HTTP handler plus a session route) driven by
aioquic's HTTP/3 client and by httpx over HTTP/2 and HTTP/1.1. Bodies of 64 MiB go up and
down by SHA-256; a handler panic answers 500 and the server goes on; the TCP side
advertises HTTP/3 with Alt-Svc."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

sys.path.insert(0, str(Path(__file__).parent))

from h3client import connect_h3  # noqa: E402
from wtclient import connect_client  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
TARGET = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
SITE = TARGET / "debug" / "examples" / "site"
BIG = 64 * 1024 * 1024


def pattern(n: int) -> bytes:
    """The bytes /download sends: byte i is i % 251."""
    block = bytes(i % 251 for i in range(251))
    return (block * (n // 251 + 1))[:n]


@pytest.fixture
async def site() -> AsyncIterator[int]:
    assert SITE.exists(), f"{SITE} is missing: cargo build -p ferrovia --examples"
    proc = await asyncio.create_subprocess_exec(
        str(SITE), "--port", "0", "--host", "127.0.0.1", stdout=asyncio.subprocess.PIPE
    )
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), 30)
    event = json.loads(line)
    assert event["event"] == "listening"
    try:
        yield int(event["port"])
    finally:
        proc.terminate()
        await proc.wait()


async def test_http3_get_upload_download_and_errors_from_aioquic(site: int) -> None:
    authority = f"localhost:{site}"
    async with connect_h3(site) as client:
        _, hello = client.request("GET", "/api/hello", authority)
        assert await hello.status() == 200
        assert await hello.header(b"content-type") == b"application/json"
        assert json.loads(await hello.body())["version"] == "HTTP/3"

        payload = os.urandom(BIG)
        stream, upload = client.request(
            "POST", "/upload", authority, [(b"content-length", str(BIG).encode())], end=False
        )
        await client.send_body(stream, payload)
        assert await upload.status(60) == 200
        assert json.loads(await upload.body()) == {"bytes": BIG, "sha256": hashlib.sha256(payload).hexdigest()}

        _, download = client.request("GET", f"/download?bytes={BIG}", authority)
        assert await download.status() == 200
        digest = hashlib.sha256()
        await download.each_chunk(digest.update)
        assert digest.hexdigest() == hashlib.sha256(pattern(BIG)).hexdigest()

        # A handler that panics answers 500; the same connection goes on being served.
        _, panics = client.request("GET", "/panic", authority)
        assert await panics.status() == 500
        _, missing = client.request("GET", "/nowhere", authority)
        assert await missing.status() == 404
        # A foreign authority is not ours to answer.
        _, foreign = client.request("GET", "/api/hello", "evil.example")
        assert await foreign.status() == 421
        # A declared body over the limit (256 MiB here) is refused before the handler.
        _, too_big = client.request("POST", "/upload", authority, [(b"content-length", str(1 << 30).encode())], end=False)
        assert await too_big.status() == 413


async def test_the_same_port_serves_a_webtransport_session_beside_http3_requests(site: int) -> None:
    async with connect_client(site) as client:
        session = await client.session("/echo")
        assert await session.status() == 200
        stream = session.open_bidi()
        await stream.write_all(b"hello beside HTTP")
        assert await stream.read_all() == b"hello beside HTTP"


@pytest.mark.parametrize("http2", [False, True])
async def test_http2_and_http11_from_httpx_with_alt_svc(site: int, http2: bool) -> None:
    base = f"https://localhost:{site}"
    async with httpx.AsyncClient(http1=not http2, http2=http2, verify=False, timeout=60) as client:
        hello = await client.get(f"{base}/api/hello")
        assert hello.status_code == 200
        assert hello.http_version == ("HTTP/2" if http2 else "HTTP/1.1")
        assert hello.json()["version"] == hello.http_version
        # Browsers that came over TCP learn where HTTP/3 is.
        assert hello.headers["alt-svc"] == f'h3=":{site}"; ma=86400'

        payload = os.urandom(BIG)

        async def chunks() -> AsyncIterator[bytes]:
            for i in range(0, BIG, 1 << 20):
                yield payload[i : i + (1 << 20)]

        upload = await client.post(f"{base}/upload", content=chunks())
        assert upload.status_code == 200
        assert upload.json() == {"bytes": BIG, "sha256": hashlib.sha256(payload).hexdigest()}

        digest = hashlib.sha256()
        async with client.stream("GET", f"{base}/download?bytes={BIG}") as download:
            assert download.status_code == 200
            async for chunk in download.aiter_raw():
                digest.update(chunk)
        assert digest.hexdigest() == hashlib.sha256(pattern(BIG)).hexdigest()

        assert (await client.get(f"{base}/panic")).status_code == 500
        assert (await client.get(f"{base}/api/hello")).status_code == 200
