"""Hosting an ASGI 3 application (``serve(..., app=...)``): the ``lifespan`` scope runs
around the server's life, every request that is not a session or WebSocket request runs the
``http`` scope (over HTTP/3, HTTP/2 and HTTP/1.1), and plain WebSockets (RFC 6455 and RFC
8441) for paths that no Ferrovia route claims run the ``websocket`` scope."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import unquote

from . import _ferrovia

logger = logging.getLogger("ferrovia")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Callable[[], Awaitable[Message]], Callable[[Message], Awaitable[None]]], Awaitable[None]]

# What the server answers itself when the application never started a response because
# the request body was cut off.
_BODY_FAILURE_STATUS = {"ERR_BODY_TOO_LARGE": 413, "ERR_BODY_TIMEOUT": 408}
_LIFESPAN_TIMEOUT = 30.0
# How long a WebSocket the application closed (or left open when it returned) may take to
# finish its closing handshake before the task lets go of it.
_WEBSOCKET_CLOSE_TIMEOUT = 5.0


def _watches_files(loop: asyncio.AbstractEventLoop) -> bool:
    """Whether the loop has add_reader (the selector loops and uvloop; not Windows' proactor)."""
    try:
        loop.remove_reader(-1)
    except NotImplementedError:
        return False
    except (ValueError, OSError):
        pass
    return True


class AsgiHost:
    """Runs one ASGI application for a server."""

    def __init__(self, inner: _ferrovia.Server, app: ASGIApp, server: tuple[str, int]) -> None:
        self._inner = inner
        self._app = app
        self._server = server
        self._state: dict[str, Any] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._pull: asyncio.Task[None] | None = None
        self._ws_pull: asyncio.Task[None] | None = None
        self._lifespan: asyncio.Task[None] | None = None
        self._lifespan_in: asyncio.Queue[Message] = asyncio.Queue()
        self._lifespan_out: asyncio.Queue[Message] = asyncio.Queue()

    async def start(self) -> None:
        """Runs the lifespan startup, then starts taking requests."""
        await self._startup()
        if hasattr(self._inner, "enable_http_inbox") and _watches_files(asyncio.get_running_loop()):
            self._pull = asyncio.create_task(self._serve_inbox(self._inner.enable_http_inbox(1024)))
        else:
            self._pull = asyncio.create_task(self._serve(self._inner.enable_http(1024)))
        self._ws_pull = asyncio.create_task(self._serve_websockets(self._inner.unclaimed_websockets()))

    async def stop(self) -> None:
        """After the server closed: lets requests in progress finish, then runs the
        lifespan shutdown."""
        for pull in (self._pull, self._ws_pull):
            if pull is not None:
                await pull
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=_LIFESPAN_TIMEOUT)
        await self._shutdown()

    # ---- lifespan ----

    async def _startup(self) -> None:
        scope: Scope = {"type": "lifespan", "asgi": {"version": "3.0", "spec_version": "2.0"}, "state": self._state}

        async def run() -> None:
            await self._app(scope, self._lifespan_in.get, self._lifespan_out.put)

        self._lifespan = asyncio.create_task(run())
        await self._lifespan_in.put({"type": "lifespan.startup"})
        message = await self._lifespan_reply()
        if message is None:
            return
        if message["type"] == "lifespan.startup.failed":
            raise RuntimeError(f"the ASGI application's startup failed: {message.get('message', '')}")

    async def _shutdown(self) -> None:
        if self._lifespan is None:
            return
        await self._lifespan_in.put({"type": "lifespan.shutdown"})
        message = await self._lifespan_reply()
        if message is not None and message["type"] == "lifespan.shutdown.failed":
            logger.error("the ASGI application's shutdown failed: %s", message.get("message", ""))
        self._lifespan = None

    async def _lifespan_reply(self) -> Message | None:
        """The application's next lifespan message; None when it does not do lifespan (it
        returned or raised instead, which ASGI allows)."""
        assert self._lifespan is not None
        reply = asyncio.ensure_future(self._lifespan_out.get())
        done, _ = await asyncio.wait({reply, self._lifespan}, timeout=_LIFESPAN_TIMEOUT, return_when=asyncio.FIRST_COMPLETED)
        if reply in done:
            return reply.result()
        reply.cancel()
        if self._lifespan in done:
            error = self._lifespan.exception()
            if error is not None:
                logger.debug("the ASGI application does not support lifespan: %r", error)
            self._lifespan = None
            return None
        raise TimeoutError("the ASGI application did not answer its lifespan event in time")

    # ---- http ----

    async def _serve_inbox(self, inbox: _ferrovia.HttpInbox) -> None:
        # The server writes to the inbox's descriptor once per batch of requests; each
        # wake-up takes every request waiting in one call. No awaitable per batch.
        loop = asyncio.get_running_loop()
        create_task = loop.create_task
        ended = loop.create_future()
        tasks = self._tasks

        def ready() -> None:
            batch = inbox.take()
            if batch is None:
                if not ended.done():
                    ended.set_result(None)
                return
            for exchange in batch:
                task = create_task(self._answer(exchange))
                tasks.add(task)
                task.add_done_callback(tasks.discard)

        fd = inbox.fileno()
        loop.add_reader(fd, ready)
        try:
            # Anything queued before the reader was added.
            ready()
            await ended
        finally:
            loop.remove_reader(fd)

    async def _serve(self, requests: _ferrovia.HttpRequests) -> None:
        # Every request already queued comes in one crossing.
        create_task = asyncio.get_running_loop().create_task
        while exchanges := await requests.accept_many(64):
            for exchange in exchanges:
                task = create_task(self._answer(exchange))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

    def _scope(self, head: _ferrovia.HttpHead) -> Scope:
        method, scheme, target, headers, http_version, client, _ = head
        path, _, query = target.partition("?")
        return {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": http_version,
            "method": method,
            "scheme": scheme,
            "path": unquote(path) if "%" in path else path,
            "raw_path": path.encode("latin-1"),
            "query_string": query.encode("latin-1"),
            "root_path": "",
            # `host` first from the authority (HTTP/2 and HTTP/3) when the request has none.
            "headers": headers,
            "client": client,
            "server": self._server,
            "state": dict(self._state),
        }

    async def _answer(self, exchange: _ferrovia.HttpExchange) -> None:
        head = exchange.head()
        method = head[0]
        # A request known to carry no body is answered without a native call.
        body_empty = head[6]
        body_done = False
        body_failure: str | None = None
        start: tuple[int, list[tuple[str, str]]] | None = None
        responded = False
        # The end of the exchange; a future to wait on it is made only when the application
        # asks for the next event after the body.
        finished = False
        waiter: asyncio.Future[None] | None = None

        def finish() -> None:
            nonlocal finished
            finished = True
            if waiter is not None and not waiter.done():
                waiter.set_result(None)

        async def receive() -> Message:
            nonlocal body_done, body_failure, waiter
            if not body_done:
                if body_empty:
                    body_done = True
                    return {"type": "http.request", "body": b"", "more_body": False}
                chunk, failure = await exchange.read_body()
                if failure is not None:
                    body_done, body_failure = True, failure
                    return {"type": "http.disconnect"}
                if chunk is None:
                    body_done = True
                    return {"type": "http.request", "body": b"", "more_body": False}
                return {"type": "http.request", "body": chunk, "more_body": True}
            # After the body, the next event is the end of the exchange.
            if not finished:
                if waiter is None or waiter.done():
                    waiter = asyncio.get_running_loop().create_future()
                await waiter
            return {"type": "http.disconnect"}

        async def send(message: Message) -> None:
            nonlocal start, responded
            kind = message["type"]
            if kind == "http.response.start":
                if start is not None:
                    raise RuntimeError("http.response.start sent twice")
                # Held until the first body message, so that a whole body goes with it.
                start = (
                    int(message["status"]),
                    [(bytes(k).decode("latin-1"), bytes(v).decode("latin-1")) for k, v in message.get("headers", ())],
                )
            elif kind == "http.response.body":
                if start is None:
                    raise RuntimeError("http.response.body before http.response.start")
                if finished:
                    return  # the response is over (or the client left): ignored, as ASGI allows
                data = message.get("body", b"")
                if type(data) is not bytes:
                    data = bytes(data)
                more = bool(message.get("more_body", False))
                if not responded:
                    responded = True
                    if not more:
                        # The whole response in one call (a HEAD answer carries no body).
                        exchange.respond(start[0], start[1], data if data and method != "HEAD" else None)
                        finish()
                        return
                    if not exchange.respond(start[0], start[1], None, True):
                        finish()
                        return
                if data and not await exchange.write(data):
                    finish()
                    return
                if not more:
                    exchange.end()
                    finish()
            else:
                raise RuntimeError(f"unexpected ASGI message {kind!r} in an http scope")

        try:
            await self._app(self._scope(head), receive, send)
        except Exception:
            if body_failure is None:
                logger.exception("the ASGI application failed on %s %s", method, head[2])
            if not responded:
                if body_failure is None:
                    self._plain(exchange, 500, "internal server error\n")
                else:
                    self._plain(exchange, _BODY_FAILURE_STATUS.get(body_failure, 400), f"{body_failure}\n")
            elif not finished:
                await exchange.abort("the application failed")
        else:
            if not responded:
                status = _BODY_FAILURE_STATUS.get(body_failure or "", 400 if body_failure else 500)
                if body_failure is None:
                    why = "before http.response.start" if start is None else "after http.response.start without a body"
                    logger.error(
                        "the ASGI application returned %s on %s %s; answered 500", why, method, head[2]
                    )
                self._plain(exchange, status, "no response\n" if body_failure is None else f"{body_failure}\n")
            elif not finished:
                exchange.end()
        finally:
            finish()

    # ---- websocket ----

    async def _serve_websockets(self, route: _ferrovia.Route) -> None:
        while (request := await route.accept()) is not None:
            task = asyncio.create_task(self._websocket(request))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def _websocket_scope(self, request: _ferrovia.SessionRequest) -> Scope:
        path, _, query = request.path.partition("?")
        headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in request.headers]
        if request.authority and not any(k == b"host" for k, _ in headers):
            headers.insert(0, (b"host", request.authority.encode("latin-1")))
        return {
            "type": "websocket",
            "asgi": {"version": "3.0", "spec_version": "2.4"},
            "http_version": request.http_version,
            # The TCP side is TLS, or sits behind a proxy that terminates TLS.
            "scheme": "wss",
            "path": unquote(path),
            "raw_path": path.encode("latin-1"),
            "query_string": query.encode("latin-1"),
            "root_path": "",
            "headers": headers,
            "client": request.remote_address,
            "server": self._server,
            "subprotocols": request.subprotocols,
            "state": dict(self._state),
            "extensions": {"websocket.http.response": {}},
        }

    async def _websocket(self, request: _ferrovia.SessionRequest) -> None:
        socket: _ferrovia.WebSocket | None = None
        connected = False
        answered = asyncio.Event()
        denial: int | None = None
        closing = False

        async def receive() -> Message:
            nonlocal connected
            if not connected:
                connected = True
                return {"type": "websocket.connect"}
            await answered.wait()
            if socket is None:
                return {"type": "websocket.disconnect", "code": 1006, "reason": ""}
            message = await socket.recv()
            if message is None:
                code, reason, _ = await socket.wait_closed()
                return {"type": "websocket.disconnect", "code": code, "reason": reason}
            if isinstance(message, str):
                return {"type": "websocket.receive", "text": message}
            return {"type": "websocket.receive", "bytes": message}

        def refuse(status: int) -> None:
            request.reject(status)
            answered.set()

        async def send(message: Message) -> None:
            nonlocal socket, denial, closing
            kind = message["type"]
            if kind == "websocket.accept":
                if answered.is_set():
                    raise RuntimeError("websocket.accept after the handshake was answered")
                protocol = message.get("subprotocol")
                if protocol is not None and protocol not in request.subprotocols:
                    raise RuntimeError(f"subprotocol {protocol!r} was not offered by the client ({request.subprotocols})")
                headers = [(bytes(k).decode("latin-1").lower(), bytes(v).decode("latin-1")) for k, v in message.get("headers", [])]
                socket = await request.accept_websocket(protocol, headers)
                answered.set()
            elif kind == "websocket.close":
                if not answered.is_set():
                    refuse(403)
                elif socket is not None and not closing:
                    closing = True
                    socket.close(int(message.get("code") or 1000), message.get("reason") or "")
            elif kind == "websocket.send":
                if socket is None:
                    raise RuntimeError("websocket.send before websocket.accept")
                if closing or socket.close_info is not None:
                    raise ConnectionResetError("the WebSocket is closed")
                data = message.get("bytes")
                try:
                    await socket.send((message.get("text") or "") if data is None else bytes(data))
                except Exception as e:
                    if socket.close_info is not None:
                        raise ConnectionResetError("the WebSocket is closed") from e
                    raise
            elif kind == "websocket.http.response.start":
                if answered.is_set() or denial is not None:
                    raise RuntimeError("websocket.http.response.start after the handshake was answered")
                denial = int(message["status"])
            elif kind == "websocket.http.response.body":
                if denial is None:
                    raise RuntimeError("websocket.http.response.body before websocket.http.response.start")
                if not message.get("more_body", False) and not answered.is_set():
                    # A refusal's status goes out; its body is not carried (the status and
                    # the server's own text say why).
                    refuse(denial if 300 <= denial <= 599 else 403)
            else:
                raise RuntimeError(f"unexpected ASGI message {kind!r} in a websocket scope")

        try:
            await self._app(self._websocket_scope(request), receive, send)
            status, code = 403, 1000
        except Exception:
            logger.exception("the ASGI application failed on WebSocket %s", request.path)
            status, code = 500, 1011
        # What the application left unanswered or open: 403 (as ASGI asks of a scope that
        # ends before accepting) or 500, a close with 1000 or 1011.
        with contextlib.suppress(Exception):
            if not answered.is_set():
                refuse(status)
            elif socket is not None and not closing:
                socket.close(code, "")
        if socket is not None:
            # Holds the WebSocket until its closing handshake is done.
            with contextlib.suppress(Exception):
                await asyncio.wait_for(socket.wait_closed(), _WEBSOCKET_CLOSE_TIMEOUT)

    @staticmethod
    def _plain(exchange: _ferrovia.HttpExchange, status: int, text: str) -> None:
        exchange.respond(status, [("content-type", "text/plain; charset=utf-8")], text.encode())
