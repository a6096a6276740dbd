"""serve(): checking the arguments, binding the server, hosting the ASGI application and
serving the browser connector."""

from __future__ import annotations

import logging
from collections.abc import Callable, Generator, Sequence
from dataclasses import fields
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

from . import _ferrovia
from ._certificate import Certificate
from ._check import CongestionController, OriginPolicy, StrPath, _check_int, _check_seconds
from ._fleet import ConnectionIds, _fleet_secret, _take_worker
from ._http import AsgiHost
from ._mount import ASGIApp
from ._request import RequestHandler
from ._server import Server
from ._types import Limits


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
    websocket_compression: Literal["deflate", "deflate-no-context"] | None = None,
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

    ``websocket_compression`` turns on permessage-deflate (RFC 7692) for plain WebSockets
    on this server's TCP side (off by default): ``"deflate"`` keeps each side's context
    between messages (the best ratio; about 220 KiB per connection once used),
    ``"deflate-no-context"`` compresses each message alone (no state while idle).

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
    if websocket_compression not in (None, "deflate", "deflate-no-context"):
        raise ValueError(
            f'websocket_compression must be "deflate", "deflate-no-context" or None, got {websocket_compression!r}'
        )
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
                websocket_compression=websocket_compression,
            )
        )

    return Serving(bind, app, handler, client_path)
