"""Streams through the Python API, driven by an independent aioquic client."""

from __future__ import annotations

import asyncio
import hashlib
import os

import pytest

import ferrovia
from conftest import Pair, open_pair


async def echo_streams(session: ferrovia.Session) -> None:
    async def one(reader: ferrovia.StreamReader, writer: ferrovia.StreamWriter) -> None:
        async for chunk in reader:
            writer.write(chunk)
            await writer.drain()
        writer.write_eof()

    tasks = set()
    async for reader, writer in session.incoming_bidirectional_streams():
        tasks.add(asyncio.ensure_future(one(reader, writer)))


async def test_bidi_echo(pair: Pair) -> None:
    server = asyncio.ensure_future(echo_streams(pair.session))
    try:
        stream = pair.remote.open_bidi()
        stream.send(b"hello ", end=False)
        stream.send(b"ferrovia", end=True)
        assert await stream.read_all() == b"hello ferrovia"
    finally:
        server.cancel()


async def test_uni_streams_both_ways(pair: Pair) -> None:
    data = os.urandom(100 * 1024 + 7)
    up = pair.remote.open_uni()
    await up.write_all(data)
    reader = await asyncio.wait_for(pair.session.accept_unidirectional_stream(), 10)
    received = await reader.read()
    assert received == data
    assert reader.at_eof()

    writer = await pair.session.open_unidirectional_stream()
    writer.write(received[::-1])
    writer.write_eof()
    await writer.drain()
    down = await asyncio.wait_for(pair.remote.incoming_uni.get(), 10)
    assert await down.read_all() == data[::-1]
    await asyncio.wait_for(writer.wait_closed(), 10)


async def test_server_opened_bidi_stream(pair: Pair) -> None:
    reader, writer = await pair.session.open_bidirectional_stream()
    writer.write(b"ping from server")
    writer.write_eof()
    stream = await asyncio.wait_for(pair.remote.incoming_bidi.get(), 10)
    assert await stream.read_all() == b"ping from server"
    stream.send(b"pong from client", end=True)
    assert await reader.read() == b"pong from client"


async def test_streams_opened_with_a_priority(pair: Pair) -> None:
    # Priority at open, as Node's sendOrder: the streams carry their data as any other, and
    # a priority outside i32 is refused before a stream is opened.
    for bad in (2**31, -(2**31) - 1):
        with pytest.raises(ValueError, match="priority"):
            await pair.session.open_unidirectional_stream(priority=bad)
    with pytest.raises(TypeError, match="priority"):
        await pair.session.open_bidirectional_stream(priority="high")  # type: ignore[arg-type]
    writer = await pair.session.open_unidirectional_stream(priority=7)
    writer.write(b"urgent")
    writer.write_eof()
    down = await asyncio.wait_for(pair.remote.incoming_uni.get(), 10)
    assert await down.read_all() == b"urgent"
    reader, bidi = await pair.session.open_bidirectional_stream(priority=-3)
    bidi.write(b"later")
    bidi.write_eof()
    stream = await asyncio.wait_for(pair.remote.incoming_bidi.get(), 10)
    assert await stream.read_all() == b"later"


async def test_64_mib_through_one_stream_by_sha256(pair: Pair) -> None:
    size = 64 << 20
    data = os.urandom(size)
    server_digest = hashlib.sha256()

    async def echo_one() -> int:
        reader, writer = await pair.session.accept_bidirectional_stream()
        total = 0
        async for chunk in reader:
            server_digest.update(chunk)
            total += len(chunk)
            writer.write(chunk)
            await writer.drain()
        writer.write_eof()
        await writer.wait_closed()
        return total

    server = asyncio.ensure_future(echo_one())
    stream = pair.remote.open_bidi()
    sent, received = await asyncio.gather(stream.write_all(data, chunk=1 << 20), stream.read_all(timeout=120))
    assert await asyncio.wait_for(server, 30) == size
    expected = hashlib.sha256(data).hexdigest()
    assert server_digest.hexdigest() == expected
    assert len(received) == size
    assert hashlib.sha256(received).hexdigest() == expected


async def test_200_concurrent_streams(pair: Pair) -> None:
    server = asyncio.ensure_future(echo_streams(pair.session))
    try:
        payloads = [os.urandom(2048) + i.to_bytes(4, "big") for i in range(200)]
        streams = [pair.remote.open_bidi() for _ in payloads]
        for s, p in zip(streams, payloads):
            s.send(p, end=True)
        echoed = await asyncio.gather(*(s.read_all(timeout=60) for s in streams))
        assert echoed == payloads
        assert len({s.stream_id for s in streams}) == 200
    finally:
        server.cancel()


async def test_reader_asyncio_api(pair: Pair) -> None:
    stream = pair.remote.open_bidi()
    stream.send(b"line one\nline two\nrest:ABCDEFGH", end=True)
    reader, _writer = await pair.session.accept_bidirectional_stream()
    assert await reader.readline() == b"line one\n"
    assert await reader.readuntil(b"\n") == b"line two\n"
    assert await reader.readuntil(b":") == b"rest:"
    assert await reader.readexactly(4) == b"ABCD"
    with pytest.raises(asyncio.IncompleteReadError) as info:
        await reader.readexactly(10)
    assert info.value.partial == b"EFGH"
    assert reader.at_eof()
    assert await reader.read() == b""
    assert await reader.read(10) == b""


async def test_readuntil_limit_and_iteration(pair: Pair) -> None:
    stream = pair.remote.open_bidi()
    blob = b"x" * (70 * 1024)
    stream.send(blob, end=True)
    reader, _writer = await pair.session.accept_bidirectional_stream()
    with pytest.raises(asyncio.LimitOverrunError):
        await reader.readuntil(b"\n")
    collected = b"".join([chunk async for chunk in reader])
    assert collected == blob


async def test_writer_buffer_is_bounded(server: ferrovia.Server) -> None:
    async with open_pair(server, max_stream_data=64 * 1024) as pair:
        stream = pair.remote.open_bidi()
        stream.send(b"go")
        _reader, writer = await pair.session.accept_bidirectional_stream()
        writer.set_write_buffer_limits(high=256 * 1024)
        assert writer.get_write_buffer_limits() == (256 * 1024, 64 * 1024)
        chunk = b"z" * (64 * 1024)
        written = 0
        with pytest.raises(BufferError, match="drain"):
            for _ in range(1024):
                writer.write(chunk)
                written += len(chunk)
        assert written <= 256 * 1024 + len(chunk) + (1 << 20)
        assert 128 * 1024 <= writer.get_write_buffer_size() <= 256 * 1024 + len(chunk)

        # drain() returns once the queue is down to the low-water mark; writing goes on.
        reading = asyncio.ensure_future(stream.read_all(timeout=30))
        await asyncio.wait_for(writer.drain(), 30)
        assert writer.get_write_buffer_size() <= 64 * 1024
        writer.write(b"end")
        writer.write_eof()
        got = await reading
        assert len(got) == written + 3
        assert got.endswith(b"zzend")


async def test_write_after_eof_raises(pair: Pair) -> None:
    writer = await pair.session.open_unidirectional_stream()
    writer.write_eof()
    assert writer.is_closing()
    with pytest.raises(ferrovia.StreamClosedError):
        writer.write(b"late")


def framed(payload: bytes) -> bytes:
    """One message as the wire carries it, encoded here by hand (not by Ferrovia) so the test
    checks the format: a QUIC varint length, then the bytes."""
    n = len(payload)
    if n < 64:
        head = bytes([n])
    elif n < 16384:
        head = (0x4000 | n).to_bytes(2, "big")
    else:
        head = (0x8000_0000 | n).to_bytes(4, "big")
    return head + payload


async def test_messages_arrive_whole_both_ways(pair: Pair) -> None:
    sizes = [(i * 7919) % 70_000 for i in range(120)] + [0, 63, 64, 16383, 16384]
    sent = [os.urandom(n) for n in sizes]
    wire = b"".join(framed(m) for m in sent)

    async def echo() -> int:
        reader, writer = await pair.session.accept_bidirectional_stream()
        # A line first: messages() must start with what readline() left buffered.
        assert await reader.readline() == b"hello\n"
        count = 0
        async for message in reader.messages(max_size=100_000):
            writer.write_message(message)
            await writer.drain()
            count += 1
        writer.write_message("done ✓")
        writer.write_eof()
        return count

    server = asyncio.ensure_future(echo())
    stream = pair.remote.open_bidi()
    data = b"hello\n" + wire
    for i in range(0, len(data), 4099):
        stream.send(data[i : i + 4099], end=False)
    stream.send(b"", end=True)
    echoed = await asyncio.wait_for(stream.read_all(), 30)
    assert await asyncio.wait_for(server, 10) == len(sent)
    expected = wire + framed("done ✓".encode())
    assert hashlib.sha256(echoed).hexdigest() == hashlib.sha256(expected).hexdigest()


async def test_a_message_too_large_or_cut_short_raises(pair: Pair) -> None:
    stream = pair.remote.open_bidi()
    stream.send(framed(b"x" * 200_000)[:4], end=False)
    reader, _ = await asyncio.wait_for(pair.session.accept_bidirectional_stream(), 10)
    with pytest.raises(ferrovia.MessageTooLargeError) as too_large:
        async for _message in reader.messages(max_size=100_000):
            pass
    assert (too_large.value.size, too_large.value.max_size) == (200_000, 100_000)

    stream = pair.remote.open_bidi()
    stream.send(framed(b"whole") + framed(b"cut short")[:4], end=True)
    reader, _ = await asyncio.wait_for(pair.session.accept_bidirectional_stream(), 10)
    got = []
    with pytest.raises(ferrovia.MessageTruncatedError) as cut:
        async for message in reader.messages(max_size=100):
            got.append(message)
    assert got == [b"whole"]
    assert (cut.value.received, cut.value.expected) == (3, 9)


async def test_messages_before_one_too_large_are_read_first(pair: Pair) -> None:
    stream = pair.remote.open_bidi()
    # One write, so the three arrive in one chunk: two whole messages, then a prefix of 300.
    stream.send(framed(b"a") + framed(b"b") + framed(b"x" * 300)[:2], end=False)
    reader, _ = await asyncio.wait_for(pair.session.accept_bidirectional_stream(), 10)
    got = []
    with pytest.raises(ferrovia.MessageTooLargeError):
        async for message in reader.messages(max_size=100):
            got.append(message)
    assert got == [b"a", b"b"]
    # Thousands of tiny messages come through whole and in order.
    stream = pair.remote.open_bidi()
    stream.send(b"".join(framed(str(i).encode()) for i in range(5000)), end=True)
    reader, _ = await asyncio.wait_for(pair.session.accept_bidirectional_stream(), 10)
    assert [m async for m in reader.messages()] == [str(i).encode() for i in range(5000)]
