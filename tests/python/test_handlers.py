"""Handlers run by the server (route, serve(handler=)), closing request iterators, and
serve_forever."""

from __future__ import annotations

import asyncio
import logging

import pytest

import ferrovia
from wtclient import connect_client


async def echo(request: ferrovia.SessionRequest) -> None:
    session = await request.accept()
    async for reader, writer in session.incoming_bidirectional_streams():
        writer.write(await reader.read())
        writer.write_eof()


async def test_route_handler_echoes(server: ferrovia.Server) -> None:
    requests = server.route("/echo", echo)
    assert requests.path == "/echo" and not requests.closed
    async with connect_client(server.port) as client:
        for _ in range(2):  # each call runs in its own task
            remote = await client.session("/echo")
            assert await remote.status() == 200
            stream = remote.open_bidi()
            stream.send(b"hello", end=True)
            assert await stream.read_all() == b"hello"


async def test_handler_raising_before_answer_gets_500_and_is_logged(
    server: ferrovia.Server, caplog: pytest.LogCaptureFixture
) -> None:
    async def broken(request: ferrovia.SessionRequest) -> None:
        raise LookupError("no such room")

    caplog.set_level(logging.ERROR, logger="ferrovia")
    server.route("/broken", broken)
    async with connect_client(server.port) as client:
        remote = await client.session("/broken?room=9")
        assert await remote.status() == 500
    records = [r for r in caplog.records if r.name == "ferrovia" and r.exc_info]
    assert len(records) == 1
    assert "/broken?room=9" in records[0].getMessage()
    assert records[0].exc_info is not None and isinstance(records[0].exc_info[1], LookupError)


async def test_handler_raising_after_accept_closes_session_and_server_keeps_serving(
    server: ferrovia.Server, caplog: pytest.LogCaptureFixture
) -> None:
    async def flaky(request: ferrovia.SessionRequest) -> None:
        session = await request.accept()
        if request.path.endswith("fail"):
            raise RuntimeError("boom")
        reader, writer = await session.accept_bidirectional_stream()
        writer.write(await reader.read())
        writer.write_eof()
        await session.wait_closed()

    caplog.set_level(logging.ERROR, logger="ferrovia")
    server.route("/flaky", flaky)
    async with connect_client(server.port) as client:
        bad = await client.session("/flaky?fail")
        assert await bad.status() == 200
        assert await asyncio.wait_for(bad.closed, 10) == (0, "internal error")
        good = await client.session("/flaky")
        assert await good.status() == 200
        stream = good.open_bidi()
        stream.send(b"still here", end=True)
        assert await stream.read_all() == b"still here"
    assert any(r.name == "ferrovia" and r.exc_info and isinstance(r.exc_info[1], RuntimeError) for r in caplog.records)


async def test_route_path_taken_is_a_value_error(server: ferrovia.Server) -> None:
    _claimed = server.requests("/dup")
    with pytest.raises(ValueError, match="/dup"):
        server.route("/dup", echo)
    with pytest.raises(TypeError, match="handler"):
        server.route("/x", "not a function")  # type: ignore[arg-type]
    # The failed calls claimed nothing.
    server.route("/x", echo).close()


async def test_catch_all_handler() -> None:
    seen: list[str] = []

    async def fallback(request: ferrovia.SessionRequest) -> None:
        seen.append(request.path)
        request.reject(418 if request.path == "/teapot" else 404)

    async with ferrovia.serve("127.0.0.1", 0, handler=fallback) as server:
        server.route("/echo", echo)
        async with connect_client(server.port) as client:
            assert await (await client.session("/teapot")).status() == 418
            assert await (await client.session("/anything?q=1")).status() == 404
            assert await (await client.session("/echo")).status() == 200
    assert seen == ["/teapot", "/anything?q=1"]
    with pytest.raises(TypeError, match="handler"):
        ferrovia.serve("127.0.0.1", 0, handler=42)  # type: ignore[arg-type]


async def test_requests_close_releases_the_path(server: ferrovia.Server) -> None:
    requests = server.requests("/r")
    waiting = asyncio.create_task(requests.accept())
    await asyncio.sleep(0.05)
    requests.close()
    requests.close()  # idempotent
    assert requests.closed
    assert await asyncio.wait_for(waiting, 5) is None
    assert await requests.accept() is None
    assert [r async for r in requests] == []
    async with connect_client(server.port) as client:
        assert await (await client.session("/r")).status() == 404
    # The path can be claimed again.
    again = server.requests("/r")
    async with connect_client(server.port) as client:
        remote = await client.session("/r")
        request = await asyncio.wait_for(again.accept(), 10)
        assert request is not None
        request.reject(403)
        assert await remote.status() == 403


async def test_async_with_requests_closes_on_exit(server: ferrovia.Server) -> None:
    async with connect_client(server.port) as client:
        async with server.requests("/w") as requests:
            remote = await client.session("/w")
            async for request in requests:
                await request.accept()
                break
            assert await remote.status() == 200
        assert requests.closed
        assert await (await client.session("/w")).status() == 404


async def test_closing_the_catch_all_gives_unclaimed_paths_404_again(server: ferrovia.Server) -> None:
    async with connect_client(server.port) as client:
        async with server.requests() as rest:
            remote = await client.session("/a")
            request = await asyncio.wait_for(rest.accept(), 10)
            assert request is not None
            request.reject(410)
            assert await remote.status() == 410
        assert await (await client.session("/b")).status() == 404
        # A new catch-all takes them again.
        rest = server.requests()
        remote = await client.session("/c")
        request = await asyncio.wait_for(rest.accept(), 10)
        assert request is not None and request.path == "/c"
        request.reject(409)
        assert await remote.status() == 409


async def test_route_close_stops_routing(server: ferrovia.Server) -> None:
    requests = server.route("/echo", echo)
    requests.close()
    async with connect_client(server.port) as client:
        assert await (await client.session("/echo")).status() == 404


async def test_serve_forever_returns_when_closed(server: ferrovia.Server) -> None:
    forever = asyncio.create_task(server.serve_forever())
    await asyncio.sleep(0.05)
    assert not forever.done()
    await server.close()
    await asyncio.wait_for(forever, 5)
    assert forever.done() and not forever.cancelled()
    # On a closed server it returns at once.
    await asyncio.wait_for(server.serve_forever(), 5)


async def test_serve_forever_closes_the_server_when_cancelled() -> None:
    async with ferrovia.serve("127.0.0.1", 0) as server:
        forever = asyncio.create_task(server.serve_forever())
        await asyncio.sleep(0.05)
        forever.cancel()
        with pytest.raises(asyncio.CancelledError):
            await forever
        assert server.closed
        with pytest.raises(ferrovia.ServerClosedError):
            server.requests("/late")


async def test_close_from_a_handler_ends_serve_forever() -> None:
    answered = asyncio.Event()

    async def stop(request: ferrovia.SessionRequest) -> None:
        request.reject(503)
        await answered.wait()  # closing at once could cut the answer off
        await server.close()

    async with ferrovia.serve("127.0.0.1", 0) as server:
        server.route("/stop", stop)
        forever = asyncio.create_task(server.serve_forever())
        async with connect_client(server.port) as client:
            assert await (await client.session("/stop")).status() == 503
            answered.set()
        await asyncio.wait_for(forever, 10)
        assert server.closed


async def test_close_cancels_and_awaits_handler_tasks() -> None:
    started = asyncio.Event()
    tasks: list[asyncio.Task[object]] = []
    cleaned_up: list[str] = []
    unanswered: list[ferrovia.SessionRequest] = []

    async def slow(request: ferrovia.SessionRequest) -> None:
        unanswered.append(request)
        task = asyncio.current_task()
        assert task is not None
        tasks.append(task)
        started.set()
        try:
            await asyncio.Event().wait()  # never answers by itself
        finally:
            cleaned_up.append(request.path)

    async def accepted(request: ferrovia.SessionRequest) -> None:
        session = await request.accept()
        task = asyncio.current_task()
        assert task is not None
        tasks.append(task)
        await session.wait_closed()

    server = await ferrovia.serve("127.0.0.1", 0, handler=slow)
    server.route("/held", accepted)
    async with connect_client(server.port) as client:
        held = await client.session("/held")
        assert await held.status() == 200
        waiting = await client.session("/slow")
        await asyncio.wait_for(started.wait(), 10)
        await server.close()
        assert not waiting.response.done()  # the connection went away unanswered
    assert cleaned_up == ["/slow"]
    # The cancelled handler's request was refused (503) rather than left to the collector.
    assert unanswered[0].answered
    assert len(tasks) == 2 and all(t.done() for t in tasks)
    assert not server._tasks  # no task left behind


def test_connection_failures_are_connection_errors() -> None:
    closed = ferrovia.SessionClosedError("gone", code=0, reason="", initiator="connection")
    assert isinstance(closed, ConnectionError) and isinstance(closed, ferrovia.WebTransportError)
    assert str(closed) == "gone" and closed.close_info.initiator == "connection"
    reset = ferrovia.StreamResetError("reset", stream_error_code=7)
    assert isinstance(reset, ConnectionResetError) and reset.stream_error_code == 7
    stopped = ferrovia.StreamStoppedError("stopped", stream_error_code=8)
    assert isinstance(stopped, BrokenPipeError) and stopped.source == "stream"
    assert isinstance(ferrovia.CertificateError("bad"), ValueError)
    assert isinstance(ferrovia.ServerClosedError("closed"), RuntimeError)
    for cls in (ferrovia.StreamClosedError, ferrovia.DatagramsUnsupportedError, ferrovia.RequestError):
        assert not issubclass(cls, OSError)
