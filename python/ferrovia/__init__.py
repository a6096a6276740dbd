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

import atexit

from . import _ferrovia
from ._certificate import Certificate
from ._check import CongestionController, OriginPolicy, Transport
from ._errors import (
    CertificateError,
    DatagramsUnsupportedError,
    DatagramTooLargeError,
    MessageTooLargeError,
    MessageTruncatedError,
    RequestError,
    ServerClosedError,
    SessionClosedError,
    StreamClosedError,
    StreamResetError,
    StreamStoppedError,
    WebSocketClosedError,
    WebTransportError,
)
from ._fleet import ConnectionIds, WorkerInfo, Workers, current_worker, run_workers
from ._request import RequestHandler, Requests, SessionRequest
from ._server import Server
from ._serving import Serving, client_js_path, serve
from ._session import Session
from ._streams import DEFAULT_MAX_MESSAGE_SIZE, StreamReader, StreamWriter
from ._types import CertificateHash, CloseInfo, CloseInitiator, Limits, ServerStats, SessionStats
from ._websocket import WebSocket

# The package's modules, one concept each: _certificate (certificates), _streams (stream
# halves and messages), _session (sessions), _websocket (plain WebSockets), _request
# (session requests, their queues and handlers), _server (the server), _mount (the server
# inside another ASGI server), _serving (serve() and the browser connector), _http (hosting
# an ASGI application), _fleet (many processes on one port), _errors, _types, _check, and
# _ferrovia, the native module underneath.

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
