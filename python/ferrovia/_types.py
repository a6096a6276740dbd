"""Plain value types shared by the facade and the exceptions."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, NamedTuple

CloseInitiator = Literal["local", "remote", "connection"]


@dataclass(frozen=True)
class CloseInfo:
    """How a session ended.

    ``code`` and ``reason`` come from CLOSE_WEBTRANSPORT_SESSION; they are 0 and ``""``
    when the session ended any other way. ``initiator`` says who ended it: this server
    (``"local"``), the client (``"remote"``), or the QUIC connection underneath
    (``"connection"``: idle timeout, loss, shutdown).
    """

    code: int
    reason: str
    initiator: CloseInitiator


@dataclass(frozen=True)
class SessionStats:
    """Statistics of the QUIC connection a session runs on (shared by every session on it)."""

    rtt: float
    """Smoothed round-trip time in seconds."""
    bytes_sent: int
    """UDP payload bytes sent on the connection."""
    bytes_received: int
    """UDP payload bytes received on the connection."""
    packets_sent: int
    """Packets sent on the connection."""
    packets_lost: int
    """Packets declared lost on the connection."""
    congestion_window: int
    """The congestion window in bytes."""
    mtu: int
    """The current path MTU."""
    datagrams_dropped: int
    """Datagrams received for this session but dropped because its queue was full."""


@dataclass(frozen=True)
class ServerStats:
    """A snapshot of a server's counters, from :meth:`Server.stats`. Totals count from the
    server's start; ``connections`` and ``sessions`` are the numbers open at the snapshot."""

    connections: int
    """QUIC and TCP connections open now."""
    sessions: int
    """Sessions open now (WebTransport, QMux and plain WebSockets)."""
    connections_accepted: int
    """Connections admitted since the start."""
    connections_refused: int
    """Connection attempts refused by a limit or because the server was closing."""
    handshakes_failed: int
    """QUIC or TLS handshakes that failed or timed out."""
    sessions_accepted: int
    """Sessions the application accepted."""
    sessions_failed_to_start: int
    """Accepted sessions that ended before they started: the client left before the
    answer, a QMux client sent no transport parameters within ``response_timeout``, or
    ``max_sessions`` was reached after the request arrived. ``accept()`` returns these
    already closed."""
    http_requests: int
    """Ordinary HTTP requests that reached the ASGI application."""
    requests_refused: dict[int, int]
    """Session and WebSocket requests the server answered itself, by status (400, 403,
    404, 421, 429, 503); the application's own rejections are not counted."""
    prometheus: str = field(repr=False, default="")
    """The same snapshot in the Prometheus text format (see :meth:`to_prometheus`)."""

    def to_prometheus(self) -> str:
        """The counters in the Prometheus text exposition format, every name prefixed
        ``ferrovia_``, ready to serve from a ``/metrics`` route."""
        return self.prometheus


class CertificateHash(NamedTuple):
    """One entry for the browser's ``serverCertificateHashes`` option."""

    algorithm: str
    """Always ``"sha-256"``."""
    value: bytes
    """The SHA-256 of the DER certificate."""

    def hex(self) -> str:
        """The hash as lowercase hex, handy for passing to a web page."""
        return self.value.hex()


@dataclass(frozen=True)
class Limits:
    """Bounds that keep memory use predictable whatever the clients do.

    Fields left at ``None`` keep the server's default.
    """

    max_sessions: int | None = None
    """Sessions the whole server accepts at once; more are refused with 503."""
    max_sessions_per_connection: int | None = None
    """Sessions one connection may hold at once (advertised in SETTINGS)."""
    max_bidi_streams: int | None = None
    """Concurrent bidirectional streams a client may open per connection."""
    max_uni_streams: int | None = None
    """Concurrent unidirectional streams a client may open per connection."""
    stream_receive_window: int | None = None
    """Bytes a client may send on one stream before the application reads them."""
    connection_receive_window: int | None = None
    """Bytes a client may send on all streams of a connection before they are read."""
    send_window: int | None = None
    """Bytes this server may have in flight unacknowledged per connection."""
    datagram_queue: int | None = None
    """Received datagrams queued per session before the oldest are dropped."""
    max_buffered_streams: int | None = None
    """Streams that may wait per connection for a session not accepted yet."""
    max_buffered_datagrams: int | None = None
    """Datagrams that may wait per connection for a session not accepted yet."""
    request_queue: int | None = None
    """Session requests that may wait per path for the application; more get 503."""
    max_sessions_per_ip: int | None = None
    """Sessions, open or waiting, from one IP address (one /64 for IPv6); more get 429."""
    max_connections: int | None = None
    """QUIC connections held at once; more are refused."""
    max_connections_per_ip: int | None = None
    """QUIC connections from one IP address (one /64 for IPv6); more are refused."""
    retry_threshold: int | None = None
    """Above this many connections new clients must pass a QUIC Retry first (0: always)."""
    datagram_queue_bytes: int | None = None
    """Bytes of received datagrams queued per session before the oldest are dropped."""
    max_refused_requests: int | None = None
    """Refused requests a connection may make in a burst (refilled one per second); past
    it the connection is closed."""
    request_timeout: float | None = None
    """Seconds a client has to send a stream's header or a request's headers."""
    response_timeout: float | None = None
    """Seconds a client may withhold flow-control credit for a response or capsule before
    the session ends."""
    sessionless_timeout: float | None = None
    """Seconds a connection without any session stays open."""
    max_request_body: int | None = None
    """The largest ordinary HTTP request body in bytes (16 MiB): a declared larger one gets
    413 before the ASGI application runs; a streamed one is cut off at the limit."""
    handler_timeout: float | None = None
    """Seconds the ASGI application has to start its response (30); then 503."""
    max_message_size: int | None = None
    """The largest plain WebSocket message in bytes, received or sent (1 MiB); a larger one
    received closes the WebSocket with 1009."""
    max_concurrent_requests: int | None = None
    """Ordinary HTTP requests handled at once, from the ASGI application's start to the end
    of its response body (1024); more wait for a slot up to ``handler_timeout``, then get
    503."""
    write_timeout: float | None = None
    """Seconds a write toward a TCP-side client (WebSocket and QMux frames, an HTTP
    response) may take before the session or connection ends: a client that stops reading
    (20)."""
