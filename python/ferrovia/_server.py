"""The server: routes, certificates, drain, counters and shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import weakref
from collections.abc import Coroutine
from types import TracebackType
from typing import Any

from . import _ferrovia
from ._certificate import Certificate
from ._http import AsgiHost
from ._mount import ASGIApp, _asgi_app
from ._request import RequestHandler, Requests, _logger, _run_handler
from ._types import CertificateHash, ServerStats


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
        return _asgi_app(self._inner)

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
