"""Session-level behaviour: datagrams, close codes and reasons, stream reset/stop codes,
drain and statistics, seen from both ends."""

from __future__ import annotations

import asyncio
import os

import pytest

import ferrovia
from conftest import Pair


async def test_datagrams_both_ways(pair: Pair) -> None:
    assert pair.session.max_datagram_size > 1000
    sent = [os.urandom(100) + bytes([i]) for i in range(10)]
    for d in sent:
        pair.remote.send_datagram(d)
    received = [await asyncio.wait_for(pair.session.receive_datagram(), 10) for _ in sent]
    # Loopback does not lose or reorder here; a datagram that did would fail loudly.
    assert received == sent
    for d in received:
        await pair.session.send_datagram(d[::-1])
    back = [await asyncio.wait_for(pair.remote.datagrams.get(), 10) for _ in sent]
    assert back == [d[::-1] for d in sent]


async def test_datagram_too_large(pair: Pair) -> None:
    limit = pair.session.max_datagram_size
    with pytest.raises(ferrovia.DatagramTooLargeError) as info:
        await pair.session.send_datagram(b"x" * (limit + 1))
    assert info.value.size == limit + 1
    assert info.value.max_size == limit
    assert info.value.source == "session"
    await pair.session.send_datagram(b"x" * limit)
    assert await asyncio.wait_for(pair.remote.datagrams.get(), 10) == b"x" * limit


async def test_client_close_code_and_reason_reach_server(pair: Pair) -> None:
    pair.remote.close(7, "bye from client")
    info = await asyncio.wait_for(pair.session.wait_closed(), 10)
    assert info == ferrovia.CloseInfo(7, "bye from client", "remote")
    assert pair.session.close_info == info
    # Everything after the close reports it.
    with pytest.raises(ferrovia.SessionClosedError) as err:
        await pair.session.open_bidirectional_stream()
    assert err.value.close_info == info
    with pytest.raises(ferrovia.SessionClosedError):
        await pair.session.receive_datagram()
    assert [x async for x in pair.session.incoming_bidirectional_streams()] == []


async def test_server_close_code_and_reason_reach_client(pair: Pair) -> None:
    assert pair.session.close_info is None
    pair.session.close(4242, "server bye")
    assert await asyncio.wait_for(pair.remote.closed, 10) == (4242, "server bye")
    info = await pair.session.wait_closed()
    assert info == ferrovia.CloseInfo(4242, "server bye", "local")


async def test_close_reason_is_cut_to_1024_bytes(pair: Pair) -> None:
    pair.session.close(1, "é" * 600)
    code, reason = await asyncio.wait_for(pair.remote.closed, 10)
    assert code == 1
    assert len(reason.encode()) <= 1024
    assert reason == "é" * 512


async def test_session_context_manager_closes_with_code_0(pair: Pair) -> None:
    async with pair.session:
        pass
    assert await asyncio.wait_for(pair.remote.closed, 10) == (0, "")


@pytest.mark.parametrize("code", [0, 30, 1000, 0xFFFF_FFFF])
async def test_client_reset_code_reaches_server_reader(pair: Pair, code: int) -> None:
    stream = pair.remote.open_bidi()
    stream.send(b"some data")
    reader, _writer = await asyncio.wait_for(pair.session.accept_bidirectional_stream(), 10)
    assert await reader.read(100) == b"some data"
    stream.reset(code)
    with pytest.raises(ferrovia.StreamResetError) as info:
        await asyncio.wait_for(reader.read(100), 10)
    assert info.value.stream_error_code == code
    assert info.value.source == "stream"


async def test_client_stop_code_reaches_server_writer(pair: Pair) -> None:
    stream = pair.remote.open_bidi()
    stream.send(b"hi")
    _reader, writer = await asyncio.wait_for(pair.session.accept_bidirectional_stream(), 10)
    stream.stop(78)

    async def write_until_error() -> None:
        for _ in range(1000):
            writer.write(b"y" * 1024)
            await writer.drain()
            await asyncio.sleep(0.01)

    with pytest.raises(ferrovia.StreamStoppedError) as info:
        await asyncio.wait_for(write_until_error(), 10)
    assert info.value.stream_error_code == 78
    with pytest.raises(ferrovia.StreamStoppedError):
        writer.write(b"more")


async def test_server_reset_and_stop_codes_reach_client(pair: Pair) -> None:
    stream = pair.remote.open_bidi()
    stream.send(b"x")
    reader, writer = await asyncio.wait_for(pair.session.accept_bidirectional_stream(), 10)
    writer.write(b"partial")
    await writer.drain()
    writer.reset(30)
    reader.stop(1000)
    assert await asyncio.wait_for(stream.reset_code, 10) == 30
    assert await asyncio.wait_for(stream.stop_code, 10) == 1000
    with pytest.raises(ferrovia.StreamClosedError):
        await reader.read(10)
    with pytest.raises(ferrovia.StreamClosedError):
        writer.write(b"after reset")


async def test_stop_while_a_read_is_pending(pair: Pair) -> None:
    stream = pair.remote.open_bidi()
    stream.send(b"x")
    reader, _writer = await asyncio.wait_for(pair.session.accept_bidirectional_stream(), 10)
    assert await reader.read(1) == b"x"
    pending = asyncio.ensure_future(reader.read(10))
    await asyncio.sleep(0.1)
    reader.stop(5)
    with pytest.raises(ferrovia.StreamClosedError):
        await asyncio.wait_for(pending, 10)
    assert await asyncio.wait_for(stream.stop_code, 10) == 5


async def test_drain_request_and_stats(pair: Pair) -> None:
    pair.session.drain()
    for _ in range(100):
        if 0x78AE in pair.remote.capsule_types:
            break
        await asyncio.sleep(0.05)
    assert 0x78AE in pair.remote.capsule_types
    stats = pair.session.stats()
    assert stats.bytes_sent > 0 and stats.bytes_received > 0 and stats.packets_sent > 0
    assert stats.mtu >= 1200
    assert 0 < stats.rtt < 1
    assert pair.session.is_draining is False
    assert pair.session.path == "/t"
    assert pair.session.remote_address[0] in ("127.0.0.1", "::ffff:127.0.0.1")


async def test_a_drain_from_the_client(pair: Pair) -> None:
    waiting = asyncio.ensure_future(pair.session.wait_draining())
    closed = asyncio.ensure_future(pair.session.wait_closed())
    await asyncio.sleep(0.05)
    assert not waiting.done()
    pair.remote.drain()
    await asyncio.wait_for(waiting, 10)
    assert pair.session.is_draining
    # Once drained, at once; the session itself stays open.
    await asyncio.wait_for(pair.session.wait_draining(), 1)
    assert not closed.done()
    pair.remote.close()
    assert await asyncio.wait_for(closed, 10) == ferrovia.CloseInfo(0, "", "remote")
    await asyncio.wait_for(pair.session.wait_draining(), 1)


async def test_a_handler_that_returns_after_finishing_a_stream_loses_nothing(
    server: ferrovia.Server,
) -> None:
    """A handler that finishes a stream and returns, dropping every reference: the client
    gets every byte, and the session stays open (garbage collection does not close it)
    until the client closes it."""
    import gc

    from wtclient import connect_client

    payload = os.urandom(4 << 20)
    requests = server.requests("/dropped")
    async with connect_client(server.port) as client:
        remote = await client.session("/dropped")
        ended_at_close: list[bool] = []
        remote.closed.add_done_callback(
            lambda _: ended_at_close.extend(s.ended for s in client.streams.values())
        )

        async def handler(request: ferrovia.SessionRequest) -> None:
            session = await request.accept()
            writer = await session.open_unidirectional_stream()
            writer.write(payload)
            writer.write_eof()
            await writer.drain()

        request = await asyncio.wait_for(requests.accept(), 10)
        assert request is not None
        await handler(request)
        del request
        gc.collect()
        stream = await asyncio.wait_for(remote.incoming_uni.get(), 10)
        assert await stream.read_all() == payload
        await asyncio.sleep(0.3)
        assert not remote.closed.done(), "garbage collection closed the session"
        remote.close(0, "")
        assert await asyncio.wait_for(remote.closed, 10) in ((0, ""), None)
        assert ended_at_close == [True]
