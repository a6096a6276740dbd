"""Cancellation, shutdown and panics: the asyncio contract around the native layer."""

from __future__ import annotations

import asyncio
import gc
import socket
from collections.abc import Callable
from typing import Any

import pytest

import ferrovia
from ferrovia import _ferrovia
from conftest import Pair, open_pair
from wtclient import connect_client


async def test_cancelled_read_loses_nothing(pair: Pair) -> None:
    stream = pair.remote.open_bidi()
    stream.send(b"a")
    reader, _writer = await asyncio.wait_for(pair.session.accept_bidirectional_stream(), 10)
    assert await reader.read(1) == b"a"
    for _ in range(50):
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(reader.read(100), 0.005)
    task = asyncio.ensure_future(reader.readexactly(5))
    await asyncio.sleep(0.1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    # The cancelled reads released the stream: data sent afterwards arrives in full.
    stream.send(b"later", end=True)
    assert await asyncio.wait_for(reader.read(), 10) == b"later"


async def test_cancelled_accepts_and_datagram_receive(server: ferrovia.Server) -> None:
    requests = server.requests("/c")
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(requests.accept(), 0.1)
    async with connect_client(server.port) as client:
        remote = await client.session("/c")
        request = await asyncio.wait_for(requests.accept(), 10)
        assert request is not None
        session = await request.accept()
        assert await remote.status() == 200

        # Each cancelled wait must drop its native operation: one left behind would hold
        # the queue (the next accept would hang) or swallow the next item.
        for _ in range(50):
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(session.accept_bidirectional_stream(), 0.005)
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(session.receive_datagram(), 0.005)

        remote.send_datagram(b"dgram")
        assert await asyncio.wait_for(session.receive_datagram(), 10) == b"dgram"
        stream = remote.open_bidi()
        stream.send(b"s", end=True)
        reader, _ = await asyncio.wait_for(session.accept_bidirectional_stream(), 10)
        assert await reader.read() == b"s"


class _CountingSession:
    """A native session that records the waits asked of it."""

    def __init__(self, inner: _ferrovia.Session, on_ready: Callable[[int], None]) -> None:
        self._inner = inner
        self._on_ready = on_ready

        self._interest = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def set_interest(self, interest: int) -> None:
        self._interest = interest
        self._inner.set_interest(interest)

    def ready(self) -> asyncio.Future[int]:
        self._on_ready(self._interest)
        return self._inner.ready()


async def test_one_native_wait_serves_every_kind_and_a_cancelled_accept_loses_nothing(
    pair: Pair,
) -> None:
    session = pair.session
    asked: list[int] = []
    cancel_on_wake: list[asyncio.Task[Any]] = []

    def on_ready(interest: int) -> None:
        asked.append(interest)
        # Asked again right after a wake, before the woken tasks run: once the accept was
        # woken, this is the moment a cancellation would lose an item the wait had taken.
        if cancel_on_wake and all(kind != 1 for kind, _ in session._waiters):
            for task in cancel_on_wake:
                task.cancel()
            cancel_on_wake.clear()

    session._inner = _CountingSession(session._inner, on_ready)  # type: ignore[assignment]
    bi = asyncio.ensure_future(session.accept_bidirectional_stream())
    uni = asyncio.ensure_future(session.accept_unidirectional_stream())
    datagrams = [asyncio.ensure_future(session.receive_datagram()) for _ in range(2)]
    closed = asyncio.ensure_future(session.wait_closed())
    draining = asyncio.ensure_future(session.wait_draining())
    await asyncio.sleep(0.1)
    # Every kind waits on one native wait, widened as each kind came.
    assert asked == [1]
    assert session._asked == 31

    # A bidirectional stream and a datagram arrive together; the woken accept is
    # cancelled before it runs. Neither is lost.
    cancel_on_wake.append(bi)
    stream = pair.remote.open_bidi()
    stream.send(b"kept", end=True)
    pair.remote.send_datagram(b"d1")
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(bi, 10)
    done, _ = await asyncio.wait(datagrams, timeout=10, return_when=asyncio.FIRST_COMPLETED)
    assert [t.result() for t in done] == [b"d1"]
    reader, _writer = await asyncio.wait_for(session.accept_bidirectional_stream(), 10)
    assert await asyncio.wait_for(reader.read(), 10) == b"kept"

    # The other datagram receive is still waiting, and so is every other kind.
    pair.remote.send_datagram(b"d2")
    (second,) = [t for t in datagrams if t not in done]
    assert await asyncio.wait_for(second, 10) == b"d2"
    pair.remote.open_uni().send(b"u", end=True)
    assert await asyncio.wait_for((await asyncio.wait_for(uni, 10)).read(), 10) == b"u"
    assert not closed.done() and not draining.done()

    pair.remote.close(3, "done")
    assert await asyncio.wait_for(closed, 10) == ferrovia.CloseInfo(3, "done", "remote")
    # A session that ended undrained is never drained.
    await asyncio.sleep(0.1)
    assert not draining.done()
    draining.cancel()
    with pytest.raises(ferrovia.SessionClosedError):
        await session.accept_bidirectional_stream()
    with pytest.raises(ferrovia.SessionClosedError):
        await session.receive_datagram()
    assert session._native is None


async def test_a_session_nothing_refers_to_stays_open_until_closed(server: ferrovia.Server) -> None:
    # As in Node: collecting the Python objects (and the waits cancelled on them) does not
    # close the session; either side's close does, and nothing of it is left after.
    requests = server.requests("/let-go")
    async with connect_client(server.port) as client:
        remote = await client.session("/let-go")
        request = await asyncio.wait_for(requests.accept(), 10)
        assert request is not None
        session = await request.accept()
        assert await remote.status() == 200
        for wait in (session.wait_closed, session.accept_bidirectional_stream, session.receive_datagram):
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(wait(), 0.05)
        assert session._native is None
        del session, request, wait
        gc.collect()
        await asyncio.sleep(0.3)
        assert not remote.closed.done(), "a collected session was closed"
        assert server.session_count == 1
        remote.close(7, "client done")
        assert await asyncio.wait_for(remote.closed, 10) in ((7, "client done"), None)
        for _ in range(100):
            if server.session_count == 0:
                break
            await asyncio.sleep(0.02)
        assert server.session_count == 0


async def test_cancelling_a_session_handler_task(pair: Pair) -> None:
    async def handler() -> None:
        async for reader, writer in pair.session.incoming_bidirectional_streams():
            writer.write(await reader.read())
            writer.write_eof()

    task = asyncio.ensure_future(handler())
    await asyncio.sleep(0.1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    # A new handler takes over the same session.
    task = asyncio.ensure_future(handler())
    stream = pair.remote.open_bidi()
    stream.send(b"still here", end=True)
    assert await stream.read_all() == b"still here"
    task.cancel()


async def test_clean_shutdown() -> None:
    server = await ferrovia.serve("127.0.0.1", 0)
    port = server.port
    requests = server.requests("/s")
    async with connect_client(port) as client:
        remote = await client.session("/s")
        request = await asyncio.wait_for(requests.accept(), 10)
        assert request is not None
        session = await request.accept()
        assert await remote.status() == 200
        pending = asyncio.ensure_future(requests.accept())
        await server.close(grace=0.2)
        # Open sessions end with code 0, pending accepts end, iteration stops.
        assert await asyncio.wait_for(pending, 5) is None
        assert [r async for r in requests] == []
        info = await asyncio.wait_for(session.wait_closed(), 5)
        assert info.code == 0
        assert await asyncio.wait_for(remote.closed, 5) in ((0, "server shutting down"), None)
        assert server.session_count == 0
        with pytest.raises(ferrovia.ServerClosedError):
            server.requests("/late")
    del server, requests, session, request
    gc.collect()
    # The UDP port is free again.
    async with ferrovia.serve("127.0.0.1", port) as again:
        assert again.port == port


async def test_await_serve_then_async_with() -> None:
    async with await ferrovia.serve("127.0.0.1", 0) as server:
        assert server.port > 0
    assert server.closed


def test_a_forgotten_await_on_serve_says_so() -> None:
    serving = ferrovia.serve("127.0.0.1", 0)
    with pytest.raises(AttributeError, match="serve\\(\\) needs `await`"):
        serving.route  # type: ignore[attr-defined]  # noqa: B018
    with pytest.raises(AttributeError, match="no attribute 'nonsense'$"):
        serving.nonsense  # type: ignore[attr-defined]  # noqa: B018


async def test_port_in_use_is_an_os_error() -> None:
    import errno
    import socket

    async with ferrovia.serve("127.0.0.1", 0) as server:
        with pytest.raises(OSError) as info:
            await ferrovia.serve("127.0.0.1", server.port)
        assert "cannot bind" in str(info.value)
        assert info.value.errno == errno.EADDRINUSE
    # The TCP side's port in use (UDP free): the same OSError, naming TCP.
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(OSError) as info:
            await ferrovia.serve("127.0.0.1", 0, tcp=("127.0.0.1", port))
        assert "cannot bind TCP" in str(info.value)
        assert info.value.errno == errno.EADDRINUSE


async def test_rust_panic_becomes_an_exception_and_the_server_keeps_serving(server: ferrovia.Server) -> None:
    with pytest.raises(BaseException, match="deliberate panic in a synchronous call") as sync_info:
        _ferrovia._panic_for_tests()
    assert type(sync_info.value).__name__ == "PanicException"
    with pytest.raises(BaseException, match="deliberate panic inside a future") as async_info:
        await _ferrovia._panic_for_tests(in_future=True)
    assert type(async_info.value).__name__ == "PanicException"
    async with open_pair(server, "/after-panic") as pair:
        stream = pair.remote.open_bidi()
        stream.send(b"alive", end=True)
        reader, writer = await asyncio.wait_for(pair.session.accept_bidirectional_stream(), 10)
        writer.write(await reader.read())
        writer.write_eof()
        assert await stream.read_all() == b"alive"


async def test_dual_stack_default_host() -> None:
    if not socket.has_ipv6:
        pytest.fail("IPv6 is needed for the dual-stack default")
    async with ferrovia.serve(port=0) as server:
        assert server.host == "::"
        requests = server.requests("/v4")
        async with connect_client(server.port, host="127.0.0.1") as client:
            remote = await client.session("/v4")
            request = await asyncio.wait_for(requests.accept(), 10)
            assert request is not None
            await request.accept()
            assert await remote.status() == 200


async def test_a_value_produced_for_a_cancelled_await_is_not_lost(pair: Pair) -> None:
    # The race a cancellation can lose: the stream (or the bytes) arrived and were
    # handed to the future, but the awaiting task was cancelled before taking them.
    # Reproduce it deterministically by letting the native future finish and then
    # dropping it unclaimed. (The session's wait only reports a stream: the stream is
    # taken by the accept that runs afterwards.)
    native = pair.session._inner
    native.set_interest(1)
    pending = native.ready()
    stream = pair.remote.open_bidi()
    stream.send(b"first bytes", end=False)
    assert await asyncio.wait_for(asyncio.shield(pending), 10) == 1
    del pending
    gc.collect()
    reader, writer = await asyncio.wait_for(pair.session.accept_bidirectional_stream(), 10)

    pending_read = reader._inner.read(4)
    await asyncio.wait_for(asyncio.shield(pending_read), 10)
    del pending_read
    gc.collect()
    stream.send(b" and the rest", end=True)
    assert await asyncio.wait_for(reader.read(), 10) == b"first bytes and the rest"
    writer.write(b"ok")
    writer.write_eof()
    assert await asyncio.wait_for(stream.read_all(), 10) == b"ok"


async def test_a_closed_server_frees_its_port_at_once() -> None:
    first = await ferrovia.serve("127.0.0.1", 0)
    port = first.port
    await first.close()
    # `first` is still referenced: nothing waits for garbage collection.
    async with ferrovia.serve("127.0.0.1", port) as second:
        assert second.port == port
        assert second.tcp_address == ("127.0.0.1", port)
    assert first.closed



async def test_drain_refuses_new_sessions_while_open_ones_finish() -> None:
    async with ferrovia.serve("127.0.0.1", 0) as server:
        requests = server.requests("/d")
        async with connect_client(server.port) as client:
            first = await client.session("/d")
            request = await requests.accept()
            assert request is not None
            session = await request.accept()
            assert await first.status() == 200
            server.drain()
            assert server.draining
            late = await client.session("/d")
            assert await late.status() == 503
            # The open session goes on.
            stream = first.open_bidi()
            await stream.write_all(b"still here")
            reader, writer = await session.accept_bidirectional_stream()
            writer.write(await reader.read())
            writer.write_eof()
            assert await stream.read_all() == b"still here"
            waiting = asyncio.ensure_future(server.wait_drained())
            await asyncio.sleep(0.2)
            assert not waiting.done(), "a session is still open"
            session.close(0, "done")
            await asyncio.wait_for(waiting, 10)
        assert server.stats().requests_refused.get(503) == 1
