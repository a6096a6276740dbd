"""Session requests: routing, rejection, headers, subprotocols and the origin policy."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable

import pytest

import ferrovia
from wtclient import connect_client


async def test_routes_and_catch_all(server: ferrovia.Server) -> None:
    chat = server.requests("/chat")
    rest = server.requests()
    assert chat.path == "/chat" and rest.path is None
    async with connect_client(server.port) as client:
        a = await client.session("/chat?room=1")
        b = await client.session("/other")
        got_chat = await asyncio.wait_for(chat.accept(), 10)
        assert got_chat is not None and got_chat.path == "/chat?room=1"
        got_rest = await asyncio.wait_for(rest.accept(), 10)
        assert got_rest is not None and got_rest.path == "/other"
        # Held: a session whose last reference goes is closed.
        chat_session = await got_chat.accept()
        rest_session = await got_rest.accept()
        assert await a.status() == 200
        assert await b.status() == 200
        assert server.session_count == 2
        del chat_session, rest_session


async def test_unclaimed_path_gets_404_without_catch_all(server: ferrovia.Server) -> None:
    _claimed = server.requests("/a")
    async with connect_client(server.port) as client:
        s = await client.session("/b")
        assert await s.status() == 404


async def test_path_claimed_twice_is_a_value_error(server: ferrovia.Server) -> None:
    _first = server.requests("/dup")
    with pytest.raises(ValueError, match="/dup"):
        server.requests("/dup")
    with pytest.raises(ValueError, match="must start with '/'"):
        server.requests("nope")


@pytest.mark.parametrize("status", [403, 404, 429, 503])
async def test_reject_with_status(server: ferrovia.Server, status: int) -> None:
    requests = server.requests("/r")
    async with connect_client(server.port) as client:
        s = await client.session("/r")
        request = await asyncio.wait_for(requests.accept(), 10)
        assert request is not None
        request.reject(status)
        assert request.answered
        assert await s.status() == status
        with pytest.raises(RuntimeError, match="already"):
            await request.accept()
    assert server.session_count == 0


async def test_request_details_headers_and_subprotocols(server: ferrovia.Server) -> None:
    requests = server.requests("/proto")
    async with connect_client(server.port) as client:
        s = await client.session(
            "/proto?x=1",
            origin="https://localhost:8443",
            protocols=["chat.v2", "chat.v1"],
            headers=[(b"x-token", b"abc")],
        )
        request = await asyncio.wait_for(requests.accept(), 10)
        assert request is not None
        assert request.path == "/proto?x=1"
        assert request.authority == "localhost"
        assert request.origin == "https://localhost:8443"
        assert request.subprotocols == ["chat.v2", "chat.v1"]
        assert request.header("X-Token") == "abc"
        assert ("x-token", "abc") in request.headers
        assert request.remote_address[1] > 0
        assert request.session_id % 4 == 0
        with pytest.raises(ValueError, match="protocol"):
            await request.accept(protocol="chat.v9")
        assert not request.answered
        with pytest.raises(ValueError, match="headers"):
            await request.accept(headers={"bad header": "x"})
        assert not request.answered, "a refused header leaves the request unanswered"
        session = await request.accept(protocol="chat.v1", headers={"x-served-by": "ferrovia"})
        assert session.id == request.session_id
        headers = await s.response_headers()
        assert headers[b":status"] == b"200"
        assert headers[b"wt-protocol"] == b'"chat.v1"'
        assert headers[b"x-served-by"] == b"ferrovia"


@pytest.mark.parametrize(
    ("policy", "origin", "allowed"),
    [
        ("same-host", "http://localhost:1234", True),
        ("same-host", "https://evil.example", False),
        ("same-host", None, True),
        ("*", "https://evil.example", True),
        (["https://app.example"], "https://app.example", True),
        (["https://app.example"], "https://other.example", False),
        (lambda origin, authority: origin.endswith(".trusted"), "https://a.trusted", True),
        (lambda origin, authority: origin.endswith(".trusted"), "https://a.untrusted", False),
    ],
)
async def test_origin_policy(
    policy: ferrovia.OriginPolicy, origin: str | None, allowed: bool
) -> None:
    async with ferrovia.serve("127.0.0.1", 0, allowed_origins=policy) as server:
        requests = server.requests("/o")
        async with connect_client(server.port) as client:
            s = await client.session("/o", origin=origin)
            if allowed:
                request = await asyncio.wait_for(requests.accept(), 10)
                assert request is not None and request.origin == origin
                await request.accept()
                assert await s.status() == 200
            else:
                assert await s.status() == 403
                # The application never saw the refused request.
                with pytest.raises(asyncio.TimeoutError):
                    await asyncio.wait_for(requests.accept(), 0.3)


async def test_failing_origin_callback_denies_and_reports(monkeypatch: pytest.MonkeyPatch) -> None:
    reported: list[BaseException | None] = []
    monkeypatch.setattr(sys, "unraisablehook", lambda u: reported.append(u.exc_value))

    def broken(origin: str, authority: str) -> bool:
        raise RuntimeError("policy bug")

    check: Callable[[str, str], bool] = broken
    async with ferrovia.serve("127.0.0.1", 0, allowed_origins=check) as server:
        _requests = server.requests("/o")
        async with connect_client(server.port) as client:
            s = await client.session("/o", origin="https://x.example")
            assert await s.status() == 403
    assert any(isinstance(e, RuntimeError) and str(e) == "policy bug" for e in reported)


async def test_slow_origin_callables_never_stall_the_network() -> None:
    """Blocking origin checks run off the network threads: while four of them sleep (more
    than the runtime has worker threads), an open session still echoes at once."""
    import time

    def slow(origin: str, authority: str) -> bool:
        if origin == "https://slow.example":
            time.sleep(3)
        return True

    async with ferrovia.serve("127.0.0.1", 0, allowed_origins=slow) as server:
        requests = server.requests("/o")
        async with connect_client(server.port) as client:
            fast = await client.session("/o")
            request = await asyncio.wait_for(requests.accept(), 10)
            assert request is not None
            session = await request.accept()
            assert await fast.status() == 200
            for _ in range(4):
                await client.session("/o", origin="https://slow.example")
            await asyncio.sleep(0.3)  # the checks are running now
            started = time.monotonic()
            stream = fast.open_bidi()
            stream.send(b"ping", end=True)
            reader, writer = await asyncio.wait_for(session.accept_bidirectional_stream(), 2)
            writer.write(await reader.read())
            writer.write_eof()
            assert await stream.read_all(timeout=2) == b"ping"
            assert time.monotonic() - started < 1.5


async def test_async_origin_callable() -> None:
    async def check(origin: str, authority: str) -> bool:
        await asyncio.sleep(0.05)
        return origin == "https://ok.example"

    async with ferrovia.serve("127.0.0.1", 0, allowed_origins=check) as server:
        requests = server.requests("/o")
        async with connect_client(server.port) as client:
            denied = await client.session("/o", origin="https://no.example")
            assert await denied.status() == 403
            allowed = await client.session("/o", origin="https://ok.example")
            request = await asyncio.wait_for(requests.accept(), 10)
            assert request is not None
            await request.accept()
            assert await allowed.status() == 200


async def test_foreign_authority_gets_421(server: ferrovia.Server) -> None:
    _requests = server.requests("/a")
    async with connect_client(server.port, authority="evil.example") as client:
        s = await client.session("/a")
        assert await s.status() == 421
