"""What the server does on its own, seen from Python: its log events on the ``ferrovia``
logger (requests it refuses, with their reason) and its counters, also as Prometheus text.
The client is aioquic (tests/python/wtclient.py) and the ``websockets`` library."""

from __future__ import annotations

import asyncio
import logging
import ssl
import sys
from pathlib import Path

import pytest
import websockets
from websockets.exceptions import InvalidStatus

import ferrovia

sys.path.insert(0, str(Path(__file__).parent))

from wtclient import connect_client  # noqa: E402


async def _until(check: object, timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():  # type: ignore[operator]
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.02)


async def test_refusals_reach_the_ferrovia_logger_and_the_counters(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="ferrovia")
    async with ferrovia.serve("127.0.0.1", 0) as server:
        requests = server.requests("/chat")
        async with connect_client(server.port) as client:
            refused = await client.session("/nowhere")
            assert await refused.status() == 404
            wanted = await client.session("/chat")
            request = await requests.accept()
            assert request is not None
            session = await request.accept()
            assert await wanted.status() == 200
        tls = ssl.create_default_context(cadata=server.certificate.chain_pem())
        with pytest.raises(InvalidStatus) as foreign:
            async with websockets.connect(
                f"wss://localhost:{server.port}/chat", ssl=tls, origin="https://elsewhere.example"  # type: ignore[arg-type]
            ):
                pass
        assert foreign.value.response.status_code == 403

        def refusals() -> list[logging.LogRecord]:
            return [r for r in caplog.records if r.name == "ferrovia" and r.getMessage().startswith("request refused")]

        await _until(lambda: len(refusals()) >= 2)
        by_status = {getattr(r, "ferrovia_fields")["status"]: r for r in refusals()}
        assert set(by_status) == {"404", "403"}
        not_found = by_status["404"]
        assert not_found.levelno == logging.INFO
        assert getattr(not_found, "ferrovia_fields")["path"] == "/nowhere"
        assert getattr(not_found, "ferrovia_fields")["reason"] == "no route for the path"
        assert "status=404" in not_found.getMessage() and "reason=no route for the path" in not_found.getMessage()
        assert getattr(by_status["403"], "ferrovia_fields")["reason"] == "origin not allowed"

        stats = server.stats()
        assert stats.requests_refused == {403: 1, 404: 1}
        assert stats.sessions_accepted == 1
        assert stats.connections_accepted >= 2
        text = stats.to_prometheus()
        assert 'ferrovia_requests_refused_total{status="404"} 1\n' in text
        assert "# TYPE ferrovia_sessions_accepted_total counter\n" in text
        session.close()
        await _until(lambda: server.stats().sessions == 0)


async def test_by_default_only_warnings_and_errors_are_forwarded(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="ferrovia")
    async with ferrovia.serve("127.0.0.1", 0) as server:
        async with connect_client(server.port) as client:
            refused = await client.session("/nowhere")
            assert await refused.status() == 404
        await asyncio.sleep(0.3)
        assert server.stats().requests_refused == {404: 1}
    assert not [r for r in caplog.records if r.name == "ferrovia" and r.levelno < logging.WARNING]
