"""Ferrovia: an HTTP/3 WebTransport server for asyncio.

::

    import asyncio, ferrovia

    async def main() -> None:
        async with ferrovia.serve(port=4433) as server:
            print(server.certificate_hashes[0].hex())
            async for request in server.requests("/echo"):
                session = await request.accept()
                ...

    asyncio.run(main())

Every awaitable here waits on the network without holding the interpreter, and can be
cancelled like any asyncio operation: cancelling a task blocked in a read, an accept or a
datagram receive drops the operation and loses no data.
"""

from __future__ import annotations

import asyncio
import atexit
import collections
import contextlib
import logging
import os
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Generator, Iterable, Mapping, MutableMapping, Sequence
from dataclasses import fields
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Union, cast

from . import _ferrovia
from ._errors import (
    CertificateError,
    DatagramsUnsupportedError,
    MessageTooLargeError,
    MessageTruncatedError,
    DatagramTooLargeError,
    RequestError,
    ServerClosedError,
    SessionClosedError,
    StreamClosedError,
    StreamResetError,
    StreamStoppedError,
    WebSocketClosedError,
    WebTransportError,
)
from ._http import AsgiHost
from ._fleet import ConnectionIds, WorkerInfo, Workers, current_worker, run_workers
from ._fleet import _fleet_secret, _take_worker
from ._types import CertificateHash, CloseInfo, CloseInitiator, Limits, ServerStats, SessionStats

# Let native operations that are still settling finish before the interpreter shuts down.
atexit.register(_ferrovia._quiesce, 0.5)
# Registered after, so it runs first: no log record goes into a finalizing interpreter.
atexit.register(_ferrovia._stop_logging)

__version__: str = _ferrovia.__version__

__all__ = [
    "CertificateError",
    "CertificateHash",
    "Certificate",
    "CloseInfo",
    "CloseInitiator",
    "CongestionController",
    "DatagramTooLargeError",
    "DatagramsUnsupportedError",
    "MessageTooLargeError",
    "DEFAULT_MAX_MESSAGE_SIZE",
    "MessageTruncatedError",
    "Limits",
    "OriginPolicy",
    "RequestError",
    "RequestHandler",
    "Requests",
    "Server",
    "ServerClosedError",
    "ServerStats",
    "Serving",
    "Session",
    "SessionClosedError",
    "SessionRequest",
    "SessionStats",
    "StreamClosedError",
    "StreamReader",
    "StreamResetError",
    "StreamStoppedError",
    "StreamWriter",
    "WebTransportError",
    "WebSocket",
    "WebSocketClosedError",
    "Transport",
    "client_js_path",
    "serve",
    "ConnectionIds",
    "WorkerInfo",
    "Workers",
    "current_worker",
    "run_workers",
]

OriginPolicy = Union[Literal["same-host", "*"], Sequence[str], Callable[[str, str], bool]]
"""Which ``origin`` headers are accepted: ``"same-host"`` (the origin's host must equal the
requested host), ``"*"`` (any), a list of exact origins, or ``callback(origin, authority)``.
Requests without ``origin`` (non-browser clients) always pass; refused ones get 403."""

Transport = Literal["webtransport", "qmux", "websocket"]
"""What carries a request: WebTransport over HTTP/3, QMux over a WebSocket, or a plain
WebSocket."""

CongestionController = Literal["cubic", "newreno", "bbr"]
"""The QUIC congestion controller."""

StrPath = Union[str, "os.PathLike[str]"]

_U32 = 0xFFFF_FFFF
_DEFAULT_LIMIT = 64 * 1024
_READ_CHUNK = 1 << 20
_ITER_CHUNK = 64 * 1024
#: The largest message :meth:`StreamReader.messages` takes unless told otherwise: 1 MiB.
DEFAULT_MAX_MESSAGE_SIZE = 1 << 20


def _check_int(name: str, value: object, low: int, high: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    if not low <= value <= high:
        raise ValueError(f"{name} must be in {low}..{high}, got {value}")
    return value


def _check_code(name: str, value: object) -> int:
    return _check_int(name, value, 0, _U32)


def _check_bytes(name: str, value: object) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, (bytearray, memoryview)):
        return bytes(value)
    raise TypeError(f"{name} must be bytes-like, not {type(value).__name__}")


def _check_seconds(name: str, value: object, *, allow_none: bool) -> float | None:
    if value is None and allow_none:
        return None
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise TypeError(f"{name} must be a number of seconds, not {type(value).__name__}")
    if not value > 0 or value != value or value == float("inf"):
        raise ValueError(f"{name} must be a positive, finite number of seconds, got {value}")
    return float(value)


class Certificate:
    """A TLS certificate chain with its private key."""

    __slots__ = ("_inner",)

    def __init__(self, inner: _ferrovia.Certificate) -> None:
        """Wraps a native certificate; use the class methods to make one."""
        self._inner = inner

    @classmethod
    def self_signed(cls, names: Sequence[str] = ("localhost", "127.0.0.1", "::1")) -> Certificate:
        """A fresh ECDSA P-256 certificate valid for 13 days, as browsers require for
        ``serverCertificateHashes``. ``names`` are DNS names or IP addresses."""
        if isinstance(names, str) or not all(isinstance(n, str) for n in names):
            raise TypeError("names must be a sequence of str")
        return cls(_ferrovia.Certificate.self_signed(list(names)))

    @classmethod
    def from_pem(cls, cert: str | bytes, key: str | bytes) -> Certificate:
        """A chain and key from PEM text (``str`` or ``bytes``)."""
        return cls(_ferrovia.Certificate.from_pem(cert, key))

    @classmethod
    def from_pem_files(cls, cert_path: StrPath, key_path: StrPath) -> Certificate:
        """A chain and key from PEM files."""
        return cls(_ferrovia.Certificate.from_pem_files(os.fspath(cert_path), os.fspath(key_path)))

    def sha256(self) -> bytes:
        """SHA-256 of the DER leaf certificate."""
        return self._inner.sha256()

    def sha256_hex(self) -> str:
        """SHA-256 of the DER leaf certificate as lowercase hex."""
        return self._inner.sha256_hex()

    def spki_sha256_base64(self) -> str:
        """Base64 SHA-256 of the public key, for Chrome's
        ``--ignore-certificate-errors-spki-list``."""
        return self._inner.spki_sha256_base64()

    def der(self) -> bytes:
        """The DER leaf certificate."""
        return self._inner.der()

    def chain_pem(self) -> str:
        """The certificate chain as PEM."""
        return self._inner.chain_pem()

    def key_pem(self) -> str:
        """The private key as PEM."""
        return self._inner.key_pem()

    def __repr__(self) -> str:
        return f"<ferrovia.Certificate sha256={self.sha256_hex()}>"


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
        if self._buffer:
            for message in decoder.push(self._take(len(self._buffer))):
                yield message
        while not self._eof:
            chunk = await self._next_chunk(max(decoder.wanted, _ITER_CHUNK))
            if chunk:
                for message in decoder.push(chunk):
                    yield message
        decoder.finish()

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


def _close_info(raw: tuple[int, str, CloseInitiator]) -> CloseInfo:
    return CloseInfo(raw[0], raw[1], raw[2])


# What _ferrovia.Session.ready() waits for and reports.
_READY_BI = 1
_READY_UNI = 2
_READY_DATAGRAM = 4
_READY_CLOSED = 8
_READY_DRAINING = 16


class Session:
    """An accepted WebTransport session.

    ``async with session:`` closes it (code 0) when the block ends.
    """

    __slots__ = ("_inner", "_waiters", "_native", "_asked", "_ended")

    def __init__(self, inner: _ferrovia.Session) -> None:
        """Wraps a native session; sessions come from :meth:`SessionRequest.accept`."""
        self._inner = inner
        # The accepts, receives and waits blocked on this session: (kind, future to wake).
        # They share one native wait, because each pending native call holds a task and a
        # way back into the event loop (a few KiB): an idle session keeps one, not one per
        # kind. A woken caller takes its item with a synchronous try, so a caller cancelled
        # after the wake takes nothing and loses nothing.
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []
        # The pending native wait and the kinds it waits for.
        self._native: asyncio.Future[int] | None = None
        self._asked = 0
        # The native wait reported the end: waiting is over for every kind.
        self._ended = False

    async def _wait(self, kind: int) -> None:
        """Returns once ``kind`` may be ready (someone else may take it first) or the session
        has ended."""
        if self._ended:
            # The tries report the end themselves; this keeps a caller from looping on a
            # session that has ended if one did not.
            info = self.close_info or CloseInfo(0, "", "connection")
            raise SessionClosedError("session closed", code=info.code, reason=info.reason, initiator=info.initiator)
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self._native is None:
            self._ask(self._wanted() | kind)
        elif not self._asked & kind:
            # Widened in place: replacing the pending wait would cost a new one.
            self._asked |= kind
            self._inner.set_interest(self._asked)
        self._waiters.append((kind, waiter))
        try:
            await waiter
        except BaseException:
            if not waiter.done() or waiter.cancelled():
                self._forget(kind, waiter)
            raise

    def _wanted(self) -> int:
        want = 0
        for kind, waiter in self._waiters:
            if not waiter.done():
                want |= kind
        return want

    def _ask(self, want: int) -> None:
        native = self._inner.ready(want)
        native.add_done_callback(self._on_ready)
        self._native = native
        self._asked = want

    def _forget(self, kind: int, waiter: asyncio.Future[None]) -> None:
        """Drops a cancelled waiter, and narrows the native wait to what is still wanted."""
        with contextlib.suppress(ValueError):
            self._waiters.remove((kind, waiter))
        native = self._native
        if native is None:
            return
        want = self._wanted()
        if want == 0:
            # Nobody waits: a wait left pending would keep the session alive.
            self._native = None
            self._asked = 0
            native.cancel()
        elif want != self._asked:
            self._asked = want
            self._inner.set_interest(want)

    def _on_ready(self, native: asyncio.Future[int]) -> None:
        if native is not self._native:
            return  # cancelled by _forget
        self._native = None
        self._asked = 0
        waiters, self._waiters = self._waiters, []
        error = None if native.cancelled() else native.exception()
        if error is not None:
            for _, waiter in waiters:
                if not waiter.done():
                    waiter.set_exception(error)
            return
        bits = 0 if native.cancelled() else native.result()
        if bits & _READY_CLOSED:
            self._ended = True
        for kind, waiter in waiters:
            if waiter.done():
                continue
            if bits & (kind | _READY_CLOSED):
                waiter.set_result(None)
            else:
                self._waiters.append((kind, waiter))
        want = self._wanted()
        if want:
            try:
                self._ask(want)
            except Exception as e:
                waiters, self._waiters = self._waiters, []
                for _, waiter in waiters:
                    waiter.set_exception(e)

    @property
    def id(self) -> int:
        """The session ID (the QUIC stream ID of its CONNECT request)."""
        return self._inner.id

    @property
    def path(self) -> str:
        """The request path with its query, e.g. ``/chat?room=1``."""
        return self._inner.path

    @property
    def transport(self) -> Literal["webtransport", "qmux"]:
        """What carries the session: ``"webtransport"`` (HTTP/3) or ``"qmux"`` (a WebSocket,
        for clients without WebTransport; datagrams are reliable there)."""
        return cast(Literal["webtransport", "qmux"], self._inner.transport)

    @property
    def subprotocol(self) -> str | None:
        """The subprotocol chosen at accept (``protocol=``), if any."""
        return self._inner.protocol

    @property
    def remote_address(self) -> tuple[str, int]:
        """The client's ``(host, port)``."""
        return self._inner.remote_address

    @property
    def max_datagram_size(self) -> int:
        """The largest datagram payload that fits in one packet now (0 without datagrams)."""
        return self._inner.max_datagram_size

    @property
    def is_draining(self) -> bool:
        """Whether the client asked to wrap up the session (DRAIN)."""
        return self._inner.is_draining

    @property
    def close_info(self) -> CloseInfo | None:
        """How the session ended, or None while it is open."""
        raw = self._inner.close_info
        return None if raw is None else _close_info(raw)

    async def accept_bidirectional_stream(self) -> tuple[StreamReader, StreamWriter]:
        """The next bidirectional stream the client opens, as ``(reader, writer)``; raises
        :class:`SessionClosedError` once the session has ended."""
        while (pair := self._inner.try_accept_bi()) is None:
            await self._wait(_READY_BI)
        return StreamReader(pair[0]), StreamWriter(pair[1])

    async def accept_unidirectional_stream(self) -> StreamReader:
        """The next unidirectional stream the client opens; raises
        :class:`SessionClosedError` once the session has ended."""
        while (reader := self._inner.try_accept_uni()) is None:
            await self._wait(_READY_UNI)
        return StreamReader(reader)

    async def incoming_bidirectional_streams(self) -> AsyncIterator[tuple[StreamReader, StreamWriter]]:
        """``(reader, writer)`` for each bidirectional stream the client opens, until the
        session ends."""
        while True:
            try:
                pair = await self.accept_bidirectional_stream()
            except SessionClosedError:
                return
            yield pair

    async def incoming_unidirectional_streams(self) -> AsyncIterator[StreamReader]:
        """A reader for each unidirectional stream the client opens, until the session ends."""
        while True:
            try:
                reader = await self.accept_unidirectional_stream()
            except SessionClosedError:
                return
            yield reader

    async def open_bidirectional_stream(
        self, *, priority: int = 0
    ) -> tuple[StreamReader, StreamWriter]:
        """Opens a bidirectional stream toward the client, waiting for stream credit.
        ``priority`` is :meth:`StreamWriter.set_priority`'s, given at open."""
        priority = _check_int("priority", priority, -(2**31), 2**31 - 1)
        r, w = await self._inner.open_bi()
        writer = StreamWriter(w)
        if priority:
            writer.set_priority(priority)
        return StreamReader(r), writer

    async def open_unidirectional_stream(self, *, priority: int = 0) -> StreamWriter:
        """Opens a unidirectional stream toward the client, waiting for stream credit.
        ``priority`` is :meth:`StreamWriter.set_priority`'s, given at open."""
        priority = _check_int("priority", priority, -(2**31), 2**31 - 1)
        writer = StreamWriter(await self._inner.open_uni())
        if priority:
            writer.set_priority(priority)
        return writer

    async def send_datagram(self, data: bytes | bytearray | memoryview) -> None:
        """Sends one datagram, waiting while the send buffer is full. Raises
        :class:`DatagramTooLargeError` beyond :attr:`max_datagram_size`."""
        payload = _check_bytes("data", data)
        if not self._inner.try_send_datagram(payload):
            await self._inner.send_datagram(payload)

    async def receive_datagram(self) -> bytes:
        """The next datagram from the client; raises :class:`SessionClosedError` once the
        session has ended."""
        while (data := self._inner.try_receive_datagram()) is None:
            await self._wait(_READY_DATAGRAM)
        return data

    async def incoming_datagrams(self) -> AsyncIterator[bytes]:
        """Each datagram from the client, until the session ends."""
        while True:
            try:
                data = await self.receive_datagram()
            except SessionClosedError:
                return
            yield data

    def close(self, code: int = 0, reason: str = "") -> None:
        """Closes the session with an application ``code`` and ``reason`` (UTF-8, cut to
        1024 bytes). Later calls do nothing."""
        if not isinstance(reason, str):
            raise TypeError(f"reason must be str, not {type(reason).__name__}")
        self._inner.close(_check_code("code", code), reason)

    async def wait_closed(self) -> CloseInfo:
        """Waits until the session has ended, however it ended, and says how."""
        if self._inner.close_info is None:
            await self._wait(_READY_CLOSED)
        # Recorded before the end is reported; the fallback is for a session torn down
        # without its close being recorded.
        return self.close_info or CloseInfo(0, "", "connection")

    def drain(self) -> None:
        """Asks the client to wrap up (DRAIN_WEBTRANSPORT_SESSION) without closing yet."""
        self._inner.drain()

    async def wait_draining(self) -> None:
        """Waits until the client asks this server to wrap up the session (or at once if it
        already did); a session that ends undrained leaves this waiting until cancelled."""
        if self._inner.is_draining:
            return
        if self._inner.close_info is None:
            await self._wait(_READY_DRAINING)
            if self._inner.is_draining:
                return
        await asyncio.get_running_loop().create_future()

    def stats(self) -> SessionStats:
        """Statistics of the connection the session runs on."""
        raw = self._inner.stats()
        return SessionStats(
            rtt=float(raw["rtt"]),
            bytes_sent=int(raw["bytes_sent"]),
            bytes_received=int(raw["bytes_received"]),
            packets_sent=int(raw["packets_sent"]),
            packets_lost=int(raw["packets_lost"]),
            congestion_window=int(raw["congestion_window"]),
            mtu=int(raw["mtu"]),
            datagrams_dropped=int(raw["datagrams_dropped"]),
        )

    async def __aenter__(self) -> Session:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<ferrovia.Session id={self.id} path={self.path!r}>"


class WebSocket:
    """A plain WebSocket session, with the names of the ``websockets`` library:
    :meth:`recv`, :meth:`send`, ``async for message in ws``, :meth:`close`,
    :meth:`wait_closed`. Text arrives as ``str``, binary as ``bytes``.
    """

    __slots__ = ("_inner",)

    def __init__(self, inner: _ferrovia.WebSocket) -> None:
        """Wraps a native WebSocket; they come from :meth:`SessionRequest.accept_websocket`."""
        self._inner = inner

    @property
    def path(self) -> str:
        """The request path with its query."""
        return self._inner.path

    @property
    def subprotocol(self) -> str | None:
        """The subprotocol chosen at accept, if any."""
        return self._inner.protocol

    @property
    def remote_address(self) -> tuple[str, int]:
        """The client's ``(host, port)``."""
        return self._inner.remote_address

    @property
    def close_code(self) -> int | None:
        """The close code once closed (1005 without one, 1006 when the connection dropped)."""
        info = self._inner.close_info
        return None if info is None else info[0]

    @property
    def close_reason(self) -> str | None:
        """The close reason once closed."""
        info = self._inner.close_info
        return None if info is None else info[1]

    @property
    def close_info(self) -> CloseInfo | None:
        """How it closed (code, reason, who), once closed."""
        info = self._inner.close_info
        return None if info is None else _close_info(info)

    async def recv(self) -> str | bytes:
        """The next message. Raises :class:`WebSocketClosedError` once the WebSocket has
        closed (``code`` and ``reason`` say how)."""
        message = await self._inner.recv()
        if message is None:
            code, reason, initiator = await self._inner.wait_closed()
            raise WebSocketClosedError(f"WebSocket closed with {code}", code=code, reason=reason, initiator=initiator)
        return message

    async def send(self, message: str | bytes | bytearray | memoryview) -> None:
        """Sends a text (``str``) or binary message; returns once it is queued for the
        socket (a slow client makes this wait)."""
        if not isinstance(message, (str, bytes, bytearray, memoryview)):
            raise TypeError(f"message must be str or bytes-like, not {type(message).__name__}")
        await self._inner.send(message if isinstance(message, str) else bytes(message))

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Closes with ``code`` (1000; a registered code such as 1001, 1008 or 1011; or
        3000..4999 for the application) and ``reason``,
        and waits for the closing handshake."""
        _check_int("code", code, 0, 65535)
        if not isinstance(reason, str):
            raise TypeError(f"reason must be str, not {type(reason).__name__}")
        self._inner.close(code, reason)
        await self._inner.wait_closed()

    async def wait_closed(self) -> tuple[int, str]:
        """Waits until the WebSocket has closed; returns ``(code, reason)``."""
        code, reason, _ = await self._inner.wait_closed()
        return code, reason

    def __aiter__(self) -> AsyncIterator[str | bytes]:
        return self._messages()

    async def _messages(self) -> AsyncIterator[str | bytes]:
        # Like the websockets library: a normal close ends the iteration, anything else
        # raises.
        while True:
            message = await self._inner.recv()
            if message is None:
                return
            yield message

    async def __aenter__(self) -> WebSocket:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"<ferrovia.WebSocket path={self.path!r}>"


class _Answered:
    """What :meth:`SessionRequest.reject` returns: already done, and awaitable."""

    __slots__ = ()

    def __await__(self) -> Generator[Any, None, None]:
        return
        yield

    def __repr__(self) -> str:
        return "<answered>"


_ANSWERED = _Answered()


class SessionRequest:
    """A client asking to open a session: inspect it, then :meth:`accept` or :meth:`reject`.

    A request dropped unanswered is rejected with 404.
    """

    __slots__ = ("_inner", "_answer")

    def __init__(self, inner: _ferrovia.SessionRequest) -> None:
        """Wraps a native request; requests come from :meth:`Server.requests`."""
        self._inner = inner
        # What accept() returned, for a failing handler's session to be closed.
        self._answer: Session | WebSocket | None = None

    @property
    def path(self) -> str:
        """The ``:path`` with its query, e.g. ``/chat?room=1``."""
        return self._inner.path

    @property
    def authority(self) -> str:
        """The ``:authority``: the host (and port) the client asked for."""
        return self._inner.authority

    @property
    def url(self) -> str:
        """``https://authority/path?query`` as the client asked for it (as Node's
        ``request.url``); parse it with :func:`urllib.parse.urlsplit`."""
        return f"https://{self._inner.authority}{self._inner.path}"

    @property
    def origin(self) -> str | None:
        """The ``origin`` header (browsers always send it)."""
        return self._inner.origin

    @property
    def headers(self) -> list[tuple[str, str]]:
        """Every regular header in the order received; names are lowercase."""
        return self._inner.headers

    def header(self, name: str) -> str | None:
        """The first value of header ``name`` (case-insensitive), or None."""
        name = name.lower()
        for k, v in self._inner.headers:
            if k == name:
                return v
        return None

    @property
    def subprotocols(self) -> list[str]:
        """Subprotocols the client offered (``wt-available-protocols``), preferred first."""
        return self._inner.subprotocols

    @property
    def remote_address(self) -> tuple[str, int]:
        """The client's ``(host, port)``."""
        return self._inner.remote_address

    @property
    def session_id(self) -> int:
        """The ID the session will have."""
        return self._inner.session_id

    @property
    def transport(self) -> Transport:
        """What the client asked for: ``"webtransport"`` (HTTP/3), ``"qmux"`` (a session
        over a WebSocket) or ``"websocket"`` (a plain WebSocket, see
        :meth:`accept_websocket`)."""
        return cast(Transport, self._inner.transport)

    @property
    def http_version(self) -> str:
        """The HTTP version the request came over: ``"3"``, ``"2"`` or ``"1.1"``."""
        return self._inner.http_version

    @property
    def answered(self) -> bool:
        """Whether :meth:`accept` or :meth:`reject` was already called."""
        return self._inner.answered

    def _answer_args(
        self,
        protocol: str | None,
        headers: Mapping[str, str] | Sequence[tuple[str, str]] | None,
    ) -> list[tuple[str, str]]:
        if protocol is not None:
            if not isinstance(protocol, str):
                raise TypeError(f"protocol must be str or None, not {type(protocol).__name__}")
            if protocol not in self.subprotocols:
                raise ValueError(
                    f"protocol: {protocol!r} was not offered by the client (offered: {self.subprotocols})"
                )
        pairs: list[tuple[str, str]] = []
        if headers is not None:
            items = headers.items() if isinstance(headers, Mapping) else headers
            for item in items:
                k, v = item
                if not isinstance(k, str) or not isinstance(v, str):
                    raise TypeError("headers must map str names to str values")
                pairs.append((k, v))
        return pairs

    async def accept_websocket(
        self,
        *,
        protocol: str | None = None,
        headers: Mapping[str, str] | Sequence[tuple[str, str]] | None = None,
    ) -> WebSocket:
        """Accepts a plain WebSocket request (``transport == "websocket"``, on a path
        claimed with ``websockets=True``) and returns it."""
        pairs = self._answer_args(protocol, headers)
        socket = WebSocket(await self._inner.accept_websocket(protocol, pairs))
        self._answer = socket
        return socket

    async def accept(
        self,
        *,
        protocol: str | None = None,
        headers: Mapping[str, str] | Sequence[tuple[str, str]] | None = None,
    ) -> Session:
        """Accepts with 200 and returns the session. ``protocol`` must be one of
        :attr:`subprotocols` (sent back as ``wt-protocol``, or in ``Sec-WebSocket-Protocol``
        for QMux); ``headers`` are added to the response (lowercase names). A plain
        WebSocket request is accepted with :meth:`accept_websocket` instead."""
        pairs = self._answer_args(protocol, headers)
        session = Session(await self._inner.accept(protocol, pairs))
        self._answer = session
        return session

    def reject(
        self,
        status: int = 404,
        *,
        headers: Mapping[str, str] | Sequence[tuple[str, str]] | None = None,
    ) -> _Answered:
        """Rejects with an HTTP ``status`` in 300..599 (e.g. 401, 403, 404) and optional
        response ``headers`` (lowercase names), e.g. ``{"www-authenticate": "Bearer"}``.
        The answer goes out in the background; a bad status or header raises without
        answering, so the request can still be used. The result may be awaited (as in
        Node, where ``reject`` returns a promise) or not: the request is answered either
        way."""
        status = _check_int("status", status, 300, 599)
        pairs = self._answer_args(None, headers)
        self._inner.reject(status, pairs)
        return _ANSWERED

    def __repr__(self) -> str:
        return f"<ferrovia.SessionRequest path={self.path!r} origin={self.origin!r}>"


class Requests:
    """Session requests as an async iterator: for one path (query ignored), or for every
    path without its own iterator. Ends when the server closes or :meth:`close` is called;
    ``async with server.requests(path) as requests:`` closes it when the block ends.

    Cancelling an :meth:`accept` loses nothing: a request that arrives afterwards comes out
    of the next one."""

    __slots__ = ("_source", "_ready", "_natives", "_on_close", "path", "__weakref__")

    def __init__(
        self,
        source: _ferrovia.Server | _ferrovia.Route,
        path: str | None,
        on_close: Callable[[Requests], None] | None = None,
    ) -> None:
        """Made by :meth:`Server.requests`."""
        self._source: _ferrovia.Server | _ferrovia.Route | None = source
        # Requests taken from the native queue that no accept() has returned yet. Claims the
        # path (or, for the catch-all, unrouted paths) right away; a request that is already
        # waiting is kept for the first accept.
        self._ready: collections.deque[_ferrovia.SessionRequest] = collections.deque()
        first = source.try_accept()
        if first is not None:
            self._ready.append(first)
        # Each native accept in flight, with the future of the accept() waiting on it (None
        # or done once that call was cancelled: the next accept() takes it over).
        self._natives: dict[_NativeAccept, asyncio.Future[_ferrovia.SessionRequest | None] | None] = {}
        self._on_close = on_close
        self.path = path
        """The path claimed, or None for the catch-all."""

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._source is None

    async def accept(self) -> SessionRequest | None:
        """The next request, or None once the server is closing or :meth:`close` was called."""
        if self._ready:
            return SessionRequest(self._ready.popleft())
        source = self._source
        if source is None:
            return None
        raw = source.try_accept()
        if raw is not None:
            return SessionRequest(raw)
        waiter: asyncio.Future[_ferrovia.SessionRequest | None] = asyncio.get_running_loop().create_future()
        native = next((n for n, w in self._natives.items() if w is None or w.done()), None)
        if native is None:
            native = source.accept()
            native.add_done_callback(self._settle)
        self._natives[native] = waiter
        raw = await waiter
        return None if raw is None else SessionRequest(raw)

    def _settle(self, native: _NativeAccept) -> None:
        waiter = self._natives.pop(native, None)
        if native.cancelled():
            return
        error = native.exception()
        raw = None if error is not None else native.result()
        if waiter is not None and not waiter.done():
            if error is not None:
                waiter.set_exception(error)
            else:
                waiter.set_result(raw)
        elif raw is not None:
            self._deliver(raw)

    def _deliver(self, raw: _ferrovia.SessionRequest) -> None:
        """Hands a request to a waiting accept(), or keeps it for the next one."""
        if self._source is None:
            with contextlib.suppress(Exception):
                raw.reject(404)
            return
        for waiter in self._natives.values():
            if waiter is not None and not waiter.done():
                waiter.set_result(raw)
                return
        self._ready.append(raw)

    def close(self) -> None:
        """Stops taking requests: the path is released (later requests for it get 404 until
        it is claimed again), pending :meth:`accept` calls return None and iteration ends.
        Closing the catch-all sends unclaimed paths back to 404 once no other catch-all is
        open. Later calls do nothing."""
        if self._source is None:
            return
        self._source = None
        natives, self._natives = self._natives, {}
        for native, waiter in natives.items():
            # Dropping the native accept lets go of the route, which gives the path back.
            native.cancel()
            if waiter is not None and not waiter.done():
                waiter.set_result(None)
        while self._ready:
            with contextlib.suppress(Exception):
                self._ready.popleft().reject(404)
        on_close, self._on_close = self._on_close, None
        if on_close is not None:
            on_close(self)

    def __aiter__(self) -> Requests:
        return self

    async def __anext__(self) -> SessionRequest:
        request = await self.accept()
        if request is None:
            raise StopAsyncIteration
        return request

    async def __aenter__(self) -> Requests:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = " closed" if self.closed else ""
        return f"<ferrovia.Requests path={self.path!r}{state}>"


_NativeAccept = asyncio.Future[Union[_ferrovia.SessionRequest, None]]


RequestHandler = Callable[[SessionRequest], Awaitable[None]]
"""An async function that answers one request: ``async def handler(request) -> None``."""

_logger = logging.getLogger("ferrovia")


async def _run_handler(handler: RequestHandler, request: SessionRequest) -> None:
    try:
        await handler(request)
    except asyncio.CancelledError:
        # The server is closing (or someone cancelled the task) before an answer.
        if not request.answered:
            with contextlib.suppress(Exception):
                request.reject(503)
        raise
    except Exception:
        _logger.exception("the handler for %s failed", request.path)
        with contextlib.suppress(Exception):
            answer = request._answer
            if not request.answered:
                request.reject(500)
            elif isinstance(answer, Session):
                answer.close(0, "internal error")
            elif isinstance(answer, WebSocket):
                answer._inner.close(1011, "internal error")


class Server:
    """A listening WebTransport server; ``async with`` closes it on exit."""

    __slots__ = ("_inner", "_closed", "_http", "_tasks", "_catch_alls", "_refusing", "_closed_event")

    def __init__(self, inner: _ferrovia.Server) -> None:
        """Wraps a native server; use :func:`serve`."""
        self._inner = inner
        self._closed = False
        self._http: AsgiHost | None = None
        # Handler calls and the loops that start them, held so that none is collected while
        # it runs; close() cancels and awaits what is left.
        self._tasks: set[asyncio.Task[None]] = set()
        # Open catch-all iterators; once the last one closes, unclaimed paths get 404 again.
        self._catch_alls: weakref.WeakSet[Requests] = weakref.WeakSet()
        self._refusing: asyncio.Task[None] | None = None
        self._closed_event = asyncio.Event()

    @property
    def local_address(self) -> tuple[str, int]:
        """The bound ``(host, port)``."""
        return self._inner.local_address()

    @property
    def host(self) -> str:
        """The bound IP address."""
        return self.local_address[0]

    @property
    def port(self) -> int:
        """The bound UDP port (the real one when 0 was asked for)."""
        return self.local_address[1]

    @property
    def certificate(self) -> Certificate:
        """The certificate new connections get."""
        return Certificate(self._inner.certificate())

    @property
    def certificate_hashes(self) -> list[CertificateHash]:
        """The value for a browser's ``serverCertificateHashes`` option: the current
        certificate's hash and, in the day before a self-signed certificate is renewed, the
        next one's too, so a page given the whole list keeps connecting after the switch."""
        return [CertificateHash("sha-256", h) for h in self._inner.certificate_hashes()]

    def set_certificate(self, certificate: Certificate) -> None:
        """Serves ``certificate`` to connections made from now on."""
        if not isinstance(certificate, Certificate):
            raise TypeError(f"certificate must be a ferrovia.Certificate, not {type(certificate).__name__}")
        self._inner.set_certificate(certificate._inner)

    @property
    def session_count(self) -> int:
        """Sessions open right now (plain WebSockets included)."""
        return self._inner.session_count()

    @property
    def connection_count(self) -> int:
        """QUIC and TCP connections open right now."""
        return self._inner.connection_count()

    def drain(self) -> None:
        """Starts a drain, as before a deploy: new session and WebSocket requests get 503,
        open sessions are asked to drain (a browser's ``WebTransport.draining`` resolves)
        and go on until they end. The
        socket stays bound and the ASGI app keeps answering HTTP. :meth:`wait_drained`
        waits for the last session; :meth:`close` ends what is left."""
        self._inner.drain()

    @property
    def draining(self) -> bool:
        """Whether :meth:`drain` was called."""
        return self._inner.is_draining()

    async def wait_drained(self) -> None:
        """Waits until no session or WebSocket is open."""
        await self._inner.drained()

    def stats(self) -> ServerStats:
        """The server's counters: what it admitted, refused and answered itself (each such
        refusal is also logged at INFO on the ``ferrovia`` logger with its reason).
        ``server.stats().to_prometheus()`` is the text for a ``/metrics`` route."""
        conns, sessions, accepted, refused, failed, sessions_total, http, by_status, text, lost = self._inner.stats()
        return ServerStats(
            connections=conns,
            sessions=sessions,
            connections_accepted=accepted,
            connections_refused=refused,
            handshakes_failed=failed,
            sessions_accepted=sessions_total,
            sessions_failed_to_start=lost,
            http_requests=http,
            requests_refused=dict(by_status),
            prometheus=text,
        )

    @property
    def tcp_address(self) -> tuple[str, int] | None:
        """The ``(host, port)`` of the TCP side (QMux sessions and WebSockets), or None
        when it is off. Its port is :attr:`port` unless ``serve(tcp=...)`` moved it."""
        return self._inner.tcp_address()

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._closed

    def requests(self, path: str | None = None, *, websockets: bool = False) -> Requests:
        """Requests for ``path`` (exact, query ignored; claimed from this call on), or with
        no path, requests for every path nobody claimed (before the first catch-all is made,
        those get 404). With ``websockets=True`` the path also takes plain WebSocket
        requests (without it they get 400). The path is released by :meth:`Requests.close`
        (or when the iterator is garbage-collected). Raises ValueError if the path is
        already claimed."""
        if not isinstance(websockets, bool):
            raise TypeError(f"websockets must be bool, not {type(websockets).__name__}")
        if path is None:
            if websockets:
                raise ValueError("websockets=True needs a path: plain WebSockets only go to paths that ask for them")
            requests = Requests(self._inner, None, self._catch_all_closed)
            self._catch_alls.add(requests)
            return requests
        if not isinstance(path, str):
            raise TypeError(f"path must be str or None, not {type(path).__name__}")
        return Requests(self._inner.route(path, websockets), path)

    def route(self, path: str, handler: RequestHandler, *, websockets: bool = False) -> Requests:
        """Calls ``await handler(request)`` for each request to ``path``, each call in its own
        task, which the server keeps until it ends and cancels in :meth:`close`. A handler
        that raises is logged on the ``"ferrovia"`` logger; if it had not answered, the
        request gets 500, and if it had, the session it accepted is closed (a WebSocket with
        1011). Claims the path like :meth:`requests` (ValueError if it is taken) and returns
        its :class:`Requests`: ``close()`` it to stop routing and release the path."""
        if not callable(handler):
            raise TypeError(f"handler must be an async function, not {type(handler).__name__}")
        if not isinstance(path, str):
            raise TypeError(f"path must be str, not {type(path).__name__}")
        asyncio.get_running_loop()  # outside a loop, fail before claiming the path
        requests = self.requests(path, websockets=websockets)
        self._spawn(self._dispatch(requests, handler), f"ferrovia route {path}")
        return requests

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _dispatch(self, requests: Requests, handler: RequestHandler) -> None:
        try:
            async for request in requests:
                self._spawn(_run_handler(handler, request), f"ferrovia handler {request.path}")
        except Exception:
            _logger.exception("taking requests for %s failed", requests.path or "unclaimed paths")
        finally:
            requests.close()

    def _catch_all_closed(self, requests: Requests) -> None:
        self._catch_alls.discard(requests)
        if self._catch_alls or self._closed or self._refusing is not None:
            return
        try:
            self._refusing = self._spawn(self._refuse_unclaimed(), "ferrovia: 404 for unclaimed paths")
        except RuntimeError:
            pass  # no running loop: nothing can answer them

    async def _refuse_unclaimed(self) -> None:
        # The core keeps queueing unclaimed requests once a catch-all existed: answer them
        # 404 until a catch-all is open again, then hand it the one in hand and stop.
        try:
            while True:
                raw = self._inner.try_accept()
                if raw is None:
                    raw = await self._inner.accept()
                if raw is None:
                    return
                taker = next(iter(self._catch_alls), None)
                if taker is not None:
                    taker._deliver(raw)
                    return
                with contextlib.suppress(Exception):
                    raw.reject(404)
        finally:
            self._refusing = None

    def _route_unclaimed(self, handler: RequestHandler) -> None:
        self._spawn(self._dispatch(self.requests(), handler), "ferrovia catch-all handler")

    async def serve_forever(self) -> None:
        """Waits until the server is closed: returns once :meth:`close` (called elsewhere,
        e.g. from a handler or a signal handler) has finished. Cancelling it closes the
        server, like :meth:`asyncio.Server.serve_forever`."""
        try:
            await self._closed_event.wait()
        except asyncio.CancelledError:
            await self.close()
            raise

    def asgi(self) -> ASGIApp:
        """An ASGI 3 application that carries WebSocket connections reaching another server
        (uvicorn, Hypercorn; a Starlette or FastAPI app) into this server's routes: mount it
        (``app.mount("/rt", server.asgi())``) and QMux sessions and plain WebSockets for the
        mounted paths come out of :meth:`requests` as if they had reached this server's own
        TCP side, with the same origin policy and limits. Routes are matched on the full path
        (the mount prefix included). HTTP requests to it get 404."""
        return _asgi_app(self)

    async def close(self, grace: float = 2.0) -> None:
        """Shuts down: stops accepting, asks every session to drain, waits up to ``grace``
        seconds for them to end, then closes the rest (code 0, "server shutting down").
        The default, 2 s, is Node's ``close()`` default too: sessions that end promptly on
        DRAIN end cleanly; ``close(0)`` closes at once."""
        if not isinstance(grace, (int, float)) or isinstance(grace, bool):
            raise TypeError(f"grace must be a number of seconds, not {type(grace).__name__}")
        if grace < 0 or grace != grace:
            raise ValueError(f"grace must be >= 0, got {grace}")
        self._closed = True
        try:
            await self._inner.close(float(grace))
            await self._stop_tasks()
            host, self._http = self._http, None
            if host is not None:
                await host.stop()
        finally:
            self._closed_event.set()

    async def _stop_tasks(self) -> None:
        # A handler may close the server itself: it is left to finish on its own.
        current = asyncio.current_task()
        while True:
            tasks = [t for t in self._tasks if t is not current and not t.done()]
            if not tasks:
                return
            for task in tasks:
                task.cancel()
            await asyncio.wait(tasks)

    async def __aenter__(self) -> Server:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def __repr__(self) -> str:
        host, port = self.local_address
        return f"<ferrovia.Server {host!r} port={port}>"


ASGIApp = Callable[
    [MutableMapping[str, Any], Callable[[], Awaitable[MutableMapping[str, Any]]], Callable[[MutableMapping[str, Any]], Awaitable[None]]],
    Awaitable[None],
]
"""An ASGI 3 application."""

# Headers the ASGI server writes itself when it accepts a WebSocket.
_HANDSHAKE_HEADERS = ("upgrade", "connection", "sec-websocket-accept", "sec-websocket-protocol", "sec-websocket-extensions")


# How long a server-initiated close waits for the client's reply through the ASGI server.
_ASGI_CLOSE_REPLY_TIMEOUT = 5.0


def _asgi_app(server: Server) -> ASGIApp:
    async def app(
        scope: MutableMapping[str, Any],
        receive: Callable[[], Awaitable[MutableMapping[str, Any]]],
        send: Callable[[MutableMapping[str, Any]], Awaitable[None]],
    ) -> None:
        if scope["type"] == "lifespan":
            while True:
                event = await receive()
                if event["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif event["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "websocket":
            await send({"type": "http.response.start", "status": 404, "headers": [(b"content-type", b"text/plain")]})
            await send({"type": "http.response.body", "body": b"not found\n"})
            return
        await receive()  # websocket.connect
        # ASGI servers disagree on whether `path` includes the mount prefix (`root_path`).
        root, path = scope.get("root_path", ""), scope["path"]
        if root and not path.startswith(root):
            path = root + path
        query = scope.get("query_string", b"")
        if query:
            path += "?" + query.decode("latin-1")
        headers = [(k.decode("latin-1").lower(), v.decode("latin-1")) for k, v in scope.get("headers", [])]
        host = next((v for k, v in headers if k == "host"), "")
        http2 = scope.get("http_version") == "2"
        client = scope.get("client") or ("127.0.0.1", 0)
        status, out_headers, body, upgraded = await server._inner.websocket_handshake(
            "CONNECT" if http2 else "GET",
            http2,
            path,
            host,
            headers,
            (str(client[0]), int(client[1])),
            scope.get("scheme") == "wss",
        )
        if upgraded is None:
            if "websocket.http.response" in scope.get("extensions", {}):
                await send(
                    {
                        "type": "websocket.http.response.start",
                        "status": status,
                        "headers": [(b"content-type", b"text/plain; charset=utf-8")],
                    }
                )
                await send({"type": "websocket.http.response.body", "body": body.encode()})
            else:
                # Without the extension the ASGI server answers 403.
                await send({"type": "websocket.close", "code": 1008})
            return
        subprotocol = next((v for k, v in out_headers if k == "sec-websocket-protocol"), None)
        extra = [(k.encode(), v.encode()) for k, v in out_headers if k not in _HANDSHAKE_HEADERS]
        await send({"type": "websocket.accept", "subprotocol": subprotocol, "headers": extra})
        pipe = upgraded.run_messages()

        async def inbound() -> None:
            while True:
                event = await receive()
                if event["type"] == "websocket.receive":
                    if event.get("bytes") is not None:
                        await pipe.push("binary", data=event["bytes"])
                    else:
                        await pipe.push("text", text=event.get("text") or "")
                elif event["type"] == "websocket.disconnect":
                    await pipe.push("close", code=event.get("code", 1005), reason=event.get("reason") or "")
                    return

        reading = asyncio.create_task(inbound())
        try:
            while True:
                message = await pipe.pull()
                if message is None:
                    return
                kind, payload = message
                if kind == "text":
                    await send({"type": "websocket.send", "text": payload})
                elif kind == "binary":
                    await send({"type": "websocket.send", "bytes": payload})
                else:
                    code, reason = payload
                    await send({"type": "websocket.close", "code": code, "reason": reason})
                    # The close handshake ends with the client's reply, which the ASGI server
                    # hands over as `websocket.disconnect`; until it is pushed, the session
                    # cannot tell a clean close from a lost connection.
                    await asyncio.wait({reading}, timeout=_ASGI_CLOSE_REPLY_TIMEOUT)
                    return
        except (OSError, RuntimeError):
            # The client went away while we were sending; the session already knows.
            return
        finally:
            if not reading.done():
                reading.cancel()

    return app


_CLIENT_PATH = "/ferrovia/client.js"


def _serve_client(server: Server, path: str, app: ASGIApp | None) -> ASGIApp:
    """An ASGI application answering GET and HEAD on ``path`` with the browser connector
    and this server's certificate hashes, and everything else with ``app`` (404 without one)."""
    connector = (Path(__file__).parent / "client.js").read_text(encoding="utf-8")

    async def client_app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"] == path and scope["method"] in ("GET", "HEAD"):
            body = server._inner.client_module(connector).encode()
            headers = [
                (b"content-type", b"text/javascript; charset=utf-8"),
                (b"content-length", str(len(body)).encode()),
                # The hashes change when the certificate is renewed.
                (b"cache-control", b"no-cache"),
            ]
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            await send({"type": "http.response.body", "body": b"" if scope["method"] == "HEAD" else body})
        elif app is not None:
            await app(scope, receive, send)
        elif scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
        elif scope["type"] == "http":
            await send({"type": "http.response.start", "status": 404, "headers": [(b"content-length", b"0")]})
            await send({"type": "http.response.body", "body": b""})
        elif scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1000})

    return client_app


class Serving:
    """What :func:`serve` returns: ``await`` it for the :class:`Server`, or use it directly
    as ``async with serve(...) as server``."""

    __slots__ = ("_bind", "_server", "_app", "_handler", "_client")

    def __init__(
        self,
        bind: Callable[[], Server],
        app: ASGIApp | None = None,
        handler: RequestHandler | None = None,
        client: str | None = None,
    ) -> None:
        """Made by :func:`serve`."""
        self._bind = bind
        self._server: Server | None = None
        self._app = app
        self._handler = handler
        self._client = client

    async def _start(self) -> Server:
        if self._server is None:
            server = self._bind()
            app = self._app
            if self._client is not None:
                app = _serve_client(server, self._client, app)
            if app is not None:
                host = AsgiHost(server._inner, app, server.local_address)
                try:
                    await host.start()
                except BaseException:
                    await server._inner.close(0.001)
                    raise
                server._http = host
            if self._handler is not None:
                server._route_unclaimed(self._handler)
            self._server = server
        return self._server

    def __await__(self) -> Generator[Any, None, Server]:
        return self._start().__await__()

    def __getattr__(self, name: str) -> Any:
        # Only reached for names Serving lacks: most likely a Server attribute used on
        # `serve(...)` without `await`.
        if not name.startswith("_") and hasattr(Server, name):
            raise AttributeError(
                f"'Serving' object has no attribute {name!r}: serve() needs `await` "
                f"(server = await ferrovia.serve(...)) or `async with ferrovia.serve(...) as server:`",
                name=name,
                obj=self,
            )
        raise AttributeError(f"'Serving' object has no attribute {name!r}", name=name, obj=self)

    async def __aenter__(self) -> Server:
        return await self._start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._server is not None:
            await self._server.close()


_LIMIT_SECONDS = ("request_timeout", "response_timeout", "sessionless_timeout", "handler_timeout", "write_timeout")


def _limits_dict(limits: Limits | None) -> dict[str, int]:
    """The limits as integers; timeouts travel in milliseconds."""
    if limits is None:
        return {}
    if not isinstance(limits, Limits):
        raise TypeError(f"limits must be a ferrovia.Limits, not {type(limits).__name__}")
    out: dict[str, int] = {}
    for f in fields(limits):
        value = getattr(limits, f.name)
        if value is None:
            continue
        if f.name in _LIMIT_SECONDS:
            seconds = _check_seconds(f"limits.{f.name}", value, allow_none=False)
            assert seconds is not None
            out[f.name + "_ms"] = max(1, round(seconds * 1000))
        else:
            # Every count is at least 1, as the Node package checks them; 0 retry threshold
            # means: always ask for address validation.
            low = 0 if f.name == "retry_threshold" else 1
            out[f.name] = _check_int(f"limits.{f.name}", value, low, 2**63 - 1)
    return out


def client_js_path() -> Path:
    """The browser connector, ``client.js``: an ES module to serve to pages, the same file as
    the npm package's ``ferrovia/client``. It gives a page a ``WebTransport``-shaped object
    over native WebTransport, or over a QMux session on a WebSocket to the same URL when
    WebTransport is missing or fails (see docs/client.md). Serve it with any static-file
    route, e.g. ``FileResponse(ferrovia.client_js_path(), media_type="text/javascript")``."""
    return Path(__file__).resolve().parent / "client.js"


# The names of the self-signed certificate serve() makes (and renews).
_SELF_SIGNED_NAMES = ["localhost", "127.0.0.1", "::1"]


def serve(
    host: str = "::",
    port: int = 4433,
    *,
    certificate: Certificate | Literal["self-signed"] | tuple[StrPath, StrPath] = "self-signed",
    allowed_origins: OriginPolicy = "same-host",
    idle_timeout: float | None = 30.0,
    keep_alive: float | None = 10.0,
    congestion_controller: CongestionController = "cubic",
    limits: Limits | None = None,
    tcp: bool | tuple[str, int] = True,
    tcp_behind_tls_proxy: bool = False,
    trusted_proxies: Sequence[str] | None = None,
    app: ASGIApp | None = None,
    handler: RequestHandler | None = None,
    reuse_port: bool = False,
    connection_ids: ConnectionIds | None = None,
    fleet_secret: bytes | str | None = None,
    client: bool | str = False,
) -> Serving:
    """Starts a WebTransport server on UDP ``host``:``port``.

    ``host`` ``"::"`` listens on IPv6 and IPv4 at once; port 0 picks a free port (read it
    back from :attr:`Server.port`). ``certificate`` is ``"self-signed"`` (a fresh
    certificate for localhost, 127.0.0.1 and ::1, whose hash browsers accept through
    ``serverCertificateHashes``), a ``(cert_path, key_path)`` pair of PEM files, or a
    :class:`Certificate`. Arguments are checked at once; the socket is bound when the
    result is awaited or entered.

    ``app`` is an ASGI 3 application (Starlette, FastAPI, ...) that answers every ordinary
    HTTP request, one that is not a session or WebSocket request, over HTTP/3, HTTP/2 and
    HTTP/1.1 on the same port. Its ``lifespan`` startup runs before the server is returned
    (a failed startup raises) and its shutdown after :meth:`Server.close`.

    ``client=True`` serves the browser connector at ``/ferrovia/client.js`` (or at the path
    given instead of ``True``), before ``app`` sees the request: the module
    ``ferrovia/client`` with one more export, ``serverCertificateHashes``, this server's
    certificate hashes as ``connect(url, { serverCertificateHashes })`` takes them (empty for
    a CA's certificate, which pages trust without hashes).

    ``handler`` is an async function called with each session request for a path no
    :meth:`Server.requests` or :meth:`Server.route` claims, as :meth:`Server.route` calls
    its handler.

    ``tcp_behind_tls_proxy`` serves the TCP side without TLS, only for running behind a
    TLS-terminating proxy; ``trusted_proxies`` (addresses or CIDR ranges, loopback by
    default) are the peers whose ``Forwarded`` / ``X-Forwarded-For`` and
    ``X-Forwarded-Proto`` headers are believed. Any other peer is taken for a client.

    ``reuse_port`` sets ``SO_REUSEPORT``, so that several processes share the port (see
    :func:`run_workers` for the steering that keeps moving clients on their process).
    ``connection_ids`` makes connection IDs a QUIC-LB load balancer routes by;
    ``fleet_secret`` (at least 32 bytes, shared by every member of a fleet) derives the
    stateless-reset and Retry-token keys from it. In a worker of :func:`run_workers`,
    the first server on the worker's port serves on the worker's sockets.
    """
    # The server's own events go to this logger from its level at this moment on.
    _ferrovia._set_log_level(logging.getLogger("ferrovia").getEffectiveLevel())
    if app is not None and not callable(app):
        raise TypeError(f"app must be an ASGI application (a callable), not {type(app).__name__}")
    if handler is not None and not callable(handler):
        raise TypeError(f"handler must be an async function, not {type(handler).__name__}")
    if client is True:
        client_path: str | None = _CLIENT_PATH
    elif client is False:
        client_path = None
    elif isinstance(client, str) and client.startswith("/"):
        client_path = client
    else:
        raise TypeError(f"client must be a bool or a path starting with '/', not {client!r}")
    if not isinstance(host, str):
        raise TypeError(f"host must be str, not {type(host).__name__}")
    _check_int("port", port, 0, 65535)
    if isinstance(certificate, Certificate):
        cert_factory: Callable[[], Certificate] = lambda: certificate
    elif certificate == "self-signed":
        cert_factory = Certificate.self_signed
    elif isinstance(certificate, tuple) and len(certificate) == 2:
        cert_path, key_path = certificate
        cert_factory = lambda: Certificate.from_pem_files(cert_path, key_path)
    else:
        raise TypeError(
            "certificate must be \"self-signed\", a (cert_path, key_path) tuple or a ferrovia.Certificate"
        )
    if isinstance(allowed_origins, str):
        if allowed_origins not in ("same-host", "*"):
            raise ValueError(
                f"allowed_origins must be \"same-host\", \"*\", a list of origins or a callable, got {allowed_origins!r}"
            )
        origins: object = allowed_origins
    elif callable(allowed_origins):
        origins = allowed_origins
    else:
        origins = list(allowed_origins)
        if not all(isinstance(o, str) for o in origins):
            raise TypeError("allowed_origins must hold only str origins")
    idle = _check_seconds("idle_timeout", idle_timeout, allow_none=True)
    alive = _check_seconds("keep_alive", keep_alive, allow_none=True)
    if idle is not None and alive is not None and alive >= idle:
        raise ValueError(f"keep_alive ({alive}) must be shorter than idle_timeout ({idle})")
    if congestion_controller not in ("cubic", "newreno", "bbr"):
        raise ValueError(
            f"congestion_controller must be \"cubic\", \"newreno\" or \"bbr\", got {congestion_controller!r}"
        )
    limit_values = _limits_dict(limits)
    if not isinstance(reuse_port, bool):
        raise TypeError(f"reuse_port must be bool, not {type(reuse_port).__name__}")
    if connection_ids is not None and not isinstance(connection_ids, ConnectionIds):
        raise TypeError(f"connection_ids must be a ferrovia.ConnectionIds, not {type(connection_ids).__name__}")
    native_ids = None if connection_ids is None else connection_ids._native()
    secret = _fleet_secret(fleet_secret)
    tcp_address: tuple[str, int] | None = None
    if tcp is True:
        tcp_mode = "plain-behind-tls-proxy" if tcp_behind_tls_proxy else "same-port"
        if tcp_behind_tls_proxy:
            tcp_address = (host, 0)
    elif tcp is False:
        if tcp_behind_tls_proxy:
            raise ValueError("tcp_behind_tls_proxy needs tcp")
        tcp_mode = "off"
    elif isinstance(tcp, tuple) and len(tcp) == 2 and isinstance(tcp[0], str):
        tcp_address = (tcp[0], _check_int("tcp port", tcp[1], 0, 65535))
        tcp_mode = "plain-behind-tls-proxy" if tcp_behind_tls_proxy else "tls"
    else:
        raise TypeError("tcp must be True, False or a (host, port) tuple")
    proxies: list[str] | None = None
    if trusted_proxies is not None:
        if not tcp_behind_tls_proxy:
            raise ValueError("trusted_proxies applies only with tcp_behind_tls_proxy=True")
        if isinstance(trusted_proxies, str) or not all(isinstance(r, str) for r in trusted_proxies):
            raise TypeError("trusted_proxies must be a list of str addresses or CIDR ranges")
        proxies = list(trusted_proxies)

    def bind() -> Server:
        cert = cert_factory()
        return Server(
            _ferrovia.Server.bind(
                host,
                port,
                cert._inner,
                allowed_origins=origins,
                idle_timeout=idle,
                keep_alive=alive,
                congestion_controller=congestion_controller,
                limits=limit_values,
                tcp=tcp_mode,
                tcp_address=tcp_address,
                trusted_proxies=proxies,
                # A self-signed certificate is renewed before its 13 days run out.
                renew_self_signed=_SELF_SIGNED_NAMES if certificate == "self-signed" else None,
                reuse_port=reuse_port,
                connection_ids=native_ids,
                fleet_secret=secret,
                worker=_take_worker(port),
            )
        )

    return Serving(bind, app, handler, client_path)
