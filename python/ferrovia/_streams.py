"""The halves of a WebTransport stream, shaped like asyncio's StreamReader and
StreamWriter, and messages on a stream."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable

from . import _ferrovia
from ._check import _check_bytes, _check_code, _check_int
from ._errors import MessageTooLargeError


_DEFAULT_LIMIT = 64 * 1024
_READ_CHUNK = 1 << 20
_ITER_CHUNK = 64 * 1024
#: The largest message :meth:`StreamReader.messages` takes unless told otherwise: 1 MiB.
DEFAULT_MAX_MESSAGE_SIZE = 1 << 20


class StreamReader:
    """The receiving half of a WebTransport stream, shaped like :class:`asyncio.StreamReader`.

    ``async for chunk in reader`` yields the data as it arrives (not line by line) until the
    peer finishes the stream.
    """

    __slots__ = ("_inner", "_buffer", "_eof", "_limit")

    def __init__(self, inner: _ferrovia.Reader, limit: int = _DEFAULT_LIMIT) -> None:
        """Wraps a native reader; readers come from a :class:`Session`."""
        self._inner = inner
        self._buffer = bytearray()
        self._eof = False
        self._limit = limit

    @property
    def id(self) -> int:
        """The QUIC stream ID."""
        return self._inner.id

    async def _next_chunk(self, max_size: int) -> bytes:
        chunk = self._inner.try_read(max_size)
        if chunk is None:
            chunk = (await self._inner.read(max_size)).take()
        if not chunk:
            self._eof = True
        return chunk

    def _take(self, n: int) -> bytes:
        data = bytes(self._buffer[:n])
        del self._buffer[:n]
        return data

    async def read(self, n: int = -1) -> bytes:
        """Up to ``n`` bytes as soon as any are available; with ``n < 0``, everything up to
        the end of the stream. ``b""`` means the peer finished the stream."""
        if not isinstance(n, int) or isinstance(n, bool):
            raise TypeError(f"n must be an int, not {type(n).__name__}")
        if n == 0:
            return b""
        if n < 0:
            parts = [self._take(len(self._buffer))]
            while not self._eof:
                parts.append(await self._next_chunk(_READ_CHUNK))
            return b"".join(parts)
        if self._buffer:
            return self._take(n)
        if self._eof:
            return b""
        return await self._next_chunk(min(n, _READ_CHUNK))

    async def readexactly(self, n: int) -> bytes:
        """Exactly ``n`` bytes; raises :class:`asyncio.IncompleteReadError` if the stream ends
        first (its ``partial`` holds what arrived)."""
        _check_int("n", n, 0, 1 << 62)
        while len(self._buffer) < n and not self._eof:
            chunk = await self._next_chunk(min(n - len(self._buffer), _READ_CHUNK))
            if not self._buffer and len(chunk) == n:
                return chunk
            self._buffer += chunk
        if len(self._buffer) < n:
            partial = self._take(len(self._buffer))
            raise asyncio.IncompleteReadError(partial, n)
        return self._take(n)

    async def readuntil(self, separator: bytes = b"\n") -> bytes:
        """Data up to and including ``separator``. Raises
        :class:`asyncio.IncompleteReadError` if the stream ends first, and
        :class:`asyncio.LimitOverrunError` (data stays buffered) past the reader's limit."""
        separator = _check_bytes("separator", separator)
        if not separator:
            raise ValueError("separator must not be empty")
        offset = 0
        while True:
            i = self._buffer.find(separator, offset)
            if i >= 0:
                end = i + len(separator)
                if end > self._limit:
                    raise asyncio.LimitOverrunError(
                        "separator found, but the chunk is longer than the limit", i
                    )
                return self._take(end)
            offset = max(0, len(self._buffer) + 1 - len(separator))
            if offset > self._limit:
                raise asyncio.LimitOverrunError(
                    "separator not found, and the chunk exceeds the limit", offset
                )
            if self._eof:
                raise asyncio.IncompleteReadError(self._take(len(self._buffer)), None)
            self._buffer += await self._next_chunk(_ITER_CHUNK)

    async def readline(self) -> bytes:
        """One line including ``b"\\n"``; at the end of the stream, whatever is left."""
        try:
            return await self.readuntil(b"\n")
        except asyncio.IncompleteReadError as e:
            return e.partial

    async def messages(self, max_size: int = DEFAULT_MAX_MESSAGE_SIZE) -> AsyncIterator[bytes]:
        """The stream read as messages, each one whole, as :meth:`StreamWriter.write_message`
        and the browser's ``MessageStream`` send them (a QUIC varint length, then the
        bytes). A message longer than ``max_size`` raises :class:`MessageTooLargeError`
        before any of it is buffered; a stream that ends inside a message raises
        :class:`MessageTruncatedError`. Bytes already buffered by ``readline()`` and the
        like are read first."""
        _check_int("max_size", max_size, 0, 1 << 62)
        decoder = _ferrovia.MessageDecoder(max_size)
        chunk = self._take(len(self._buffer))
        try:
            while True:
                if chunk:
                    batch = decoder.push(chunk)
                    while batch:
                        for message in batch:
                            yield message
                        batch = decoder.take_batch()
                if self._eof:
                    decoder.finish()
                    return
                chunk = await self._next_chunk(_ITER_CHUNK)
        except MessageTooLargeError:
            # Nothing more of this stream will be read: the peer may stop sending.
            self.stop()
            raise

    def at_eof(self) -> bool:
        """True once the peer finished the stream and everything was read."""
        return self._eof and not self._buffer

    def stop(self, code: int = 0) -> None:
        """Asks the peer to stop sending (STOP_SENDING) with an application ``code``;
        pending and later reads raise :class:`StreamClosedError`."""
        self._inner.stop(_check_code("code", code))

    def __aiter__(self) -> StreamReader:
        return self

    async def __anext__(self) -> bytes:
        data = await self.read(_ITER_CHUNK)
        if not data:
            raise StopAsyncIteration
        return data

    def __repr__(self) -> str:
        return f"<ferrovia.StreamReader id={self.id} eof={self._eof}>"


class StreamWriter:
    """The sending half of a WebTransport stream, shaped like :class:`asyncio.StreamWriter`.

    ``write`` queues data and returns at once; ``await drain()`` waits until the queue is
    short again. Once more than the high-water mark (1 MiB unless changed with
    :meth:`set_write_buffer_limits`) is waiting, ``write`` raises :class:`BufferError`
    rather than buffering without bound. A writer dropped without :meth:`write_eof`
    finishes the stream.
    """

    __slots__ = ("_inner",)

    def __init__(self, inner: _ferrovia.Writer) -> None:
        """Wraps a native writer; writers come from a :class:`Session`."""
        self._inner = inner

    @property
    def id(self) -> int:
        """The QUIC stream ID."""
        return self._inner.id

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Queues ``data`` for sending."""
        self._inner.write(_check_bytes("data", data))

    def writelines(self, data: Iterable[bytes | bytearray | memoryview]) -> None:
        """Queues each item of ``data``."""
        for item in data:
            self.write(item)

    def write_message(self, message: str | bytes | bytearray | memoryview) -> None:
        """Queues one message (a ``str`` goes as UTF-8) for :meth:`StreamReader.messages`
        or the browser's ``MessageStream`` on the other side: its length as a QUIC varint,
        then its bytes, queued as one piece. Raises :class:`BufferError` past the
        high-water mark, as :meth:`write` does."""
        data = message.encode() if isinstance(message, str) else _check_bytes("message", message)
        self._inner.write(_ferrovia.encode_message_frame(data))

    async def drain(self) -> None:
        """Waits until the queued data is down to the low-water mark; raises the stream's
        error (:class:`StreamStoppedError`, :class:`SessionClosedError`, ...) if writing failed."""
        inner = self._inner
        if inner.buffered <= inner.write_buffer_limits[1]:
            inner.check()
            return
        await inner.wait_drained()

    def get_write_buffer_size(self) -> int:
        """Bytes queued but not yet taken by the stream."""
        return self._inner.buffered

    def get_write_buffer_limits(self) -> tuple[int, int]:
        """``(high, low)`` water marks in bytes."""
        return self._inner.write_buffer_limits

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        """Sets the water marks: ``write`` refuses data while more than ``high`` bytes
        wait, and ``drain`` returns at ``low`` or below (default ``high // 4``)."""
        if high is None:
            high = self._inner.write_buffer_limits[0]
        _check_int("high", high, 1, 1 << 40)
        if low is None:
            low = high // 4
        _check_int("low", low, 0, high)
        self._inner.set_write_buffer_limits(high, low)

    def can_write_eof(self) -> bool:
        """Always True: streams can be half-closed."""
        return True

    def write_eof(self) -> None:
        """Finishes the stream (FIN) after the queued data."""
        self._inner.write_eof()

    def close(self) -> None:
        """Finishes the stream gracefully, like :meth:`write_eof`."""
        self._inner.write_eof()

    def is_closing(self) -> bool:
        """True once :meth:`write_eof`, :meth:`close` or :meth:`reset` was called."""
        return self._inner.is_closing()

    async def wait_closed(self) -> None:
        """Waits until the peer has acknowledged everything after :meth:`write_eof` (or the
        stream was reset by this side); raises if the peer stopped the stream or the session
        ended first."""
        await self._inner.wait_closed()

    def reset(self, code: int = 0) -> None:
        """Abandons the stream (RESET_STREAM) with an application ``code``; queued data is
        discarded."""
        self._inner.reset(_check_code("code", code))

    def set_priority(self, priority: int) -> None:
        """Streams with a higher priority are sent first (default 0)."""
        self._inner.set_priority(_check_int("priority", priority, -(2**31), 2**31 - 1))

    def __repr__(self) -> str:
        return f"<ferrovia.StreamWriter id={self.id} buffered={self.get_write_buffer_size()}>"
