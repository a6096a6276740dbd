"""Session requests: what a client asked for, accepted or rejected by the application, and
the queues and handlers that deliver them."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from collections.abc import Awaitable, Callable, Generator, Mapping, Sequence
from types import TracebackType
from typing import Any, Union, cast

from . import _ferrovia
from ._check import Transport, _check_int
from ._session import Session
from ._websocket import WebSocket


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
