"""Mounting the server in another ASGI server (Server.asgi()): WebSocket connections that
reach uvicorn or Hypercorn carried into the server's routes."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from . import _ferrovia


ASGIApp = Callable[
    [MutableMapping[str, Any], Callable[[], Awaitable[MutableMapping[str, Any]]], Callable[[MutableMapping[str, Any]], Awaitable[None]]],
    Awaitable[None],
]
"""An ASGI 3 application."""

# Headers the ASGI server writes itself when it accepts a WebSocket.
_HANDSHAKE_HEADERS = ("upgrade", "connection", "sec-websocket-accept", "sec-websocket-protocol", "sec-websocket-extensions")


# How long a server-initiated close waits for the client's reply through the ASGI server.
_ASGI_CLOSE_REPLY_TIMEOUT = 5.0


def _asgi_app(inner: _ferrovia.Server) -> ASGIApp:
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
        status, out_headers, body, upgraded = await inner.websocket_handshake(
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
