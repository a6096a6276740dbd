"""A plain WebSocket session, with the names of the websockets library."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from types import TracebackType

from . import _ferrovia
from ._check import _check_int
from ._errors import WebSocketClosedError
from ._session import _close_info
from ._types import CloseInfo

# Messages taken or queued in a row without a pass through the event loop.
_FAST_STREAK = 32


class WebSocket:
    """A plain WebSocket session, with the names of the ``websockets`` library:
    :meth:`recv`, :meth:`send`, ``async for message in ws``, :meth:`close`,
    :meth:`wait_closed`. Text arrives as ``str``, binary as ``bytes``.
    """

    __slots__ = ("_inner", "_streak_length")

    def __init__(self, inner: _ferrovia.WebSocket) -> None:
        """Wraps a native WebSocket; they come from :meth:`SessionRequest.accept_websocket`."""
        self._inner = inner
        self._streak_length = 0

    def _streak(self) -> bool:
        """Counts a receive or send since the last pass through the event loop; False
        every _FAST_STREAK of them, when the caller yields to the loop first, so that a
        peer that keeps the buffers full cannot starve the other tasks."""
        self._streak_length += 1
        if self._streak_length >= _FAST_STREAK:
            self._streak_length = 0
            return False
        return True

    async def _next(self) -> str | bytes | None:
        """The next message, None once closed cleanly: one already waiting is taken
        without the event loop."""
        if not self._streak():
            # Before taking anything: a cancellation here loses no message.
            await asyncio.sleep(0)
        message = self._inner.try_recv()
        if message is not None:
            return message
        self._streak_length = 0
        return await self._inner.recv()

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
        message = await self._next()
        if message is None:
            code, reason, initiator = await self._inner.wait_closed()
            raise WebSocketClosedError(f"WebSocket closed with {code}", code=code, reason=reason, initiator=initiator)
        return message

    async def send(self, message: str | bytes | bytearray | memoryview) -> None:
        """Sends a text (``str``) or binary message; returns once it is queued for the
        socket (a slow client makes this wait)."""
        if not isinstance(message, (str, bytes, bytearray, memoryview)):
            raise TypeError(f"message must be str or bytes-like, not {type(message).__name__}")
        data = message if isinstance(message, str) else bytes(message)
        if not self._streak():
            await asyncio.sleep(0)
        if self._inner.try_send(data):
            return
        self._streak_length = 0
        await self._inner.send(data)

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
        while (message := await self._next()) is not None:
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
