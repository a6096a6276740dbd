"""A WebTransport or QMux session: streams, datagrams, close and drain."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from types import TracebackType
from typing import Literal, cast

from . import _ferrovia
from ._check import _check_bytes, _check_code, _check_int
from ._errors import SessionClosedError
from ._streams import StreamReader, StreamWriter
from ._types import CloseInfo, CloseInitiator, SessionStats


def _close_info(raw: tuple[int, str, CloseInitiator]) -> CloseInfo:
    return CloseInfo(raw[0], raw[1], raw[2])


# What _ferrovia.Session.ready() waits for and reports.
# The bits of the native Session.ready, from the core.
_READY_BI = _ferrovia.READY_BI
_READY_UNI = _ferrovia.READY_UNI
_READY_DATAGRAM = _ferrovia.READY_DATAGRAM
_READY_CLOSED = _ferrovia.READY_CLOSED
_READY_DRAINING = _ferrovia.READY_DRAINING


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
        self._inner.set_interest(want)
        native = self._inner.ready()
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
