"""The exceptions Ferrovia raises. The native module raises these same classes."""

from __future__ import annotations

from typing import Literal

from ._types import CloseInfo, CloseInitiator

ErrorSource = Literal["session", "stream"]


class WebTransportError(Exception):
    """Base class of every WebTransport failure.

    ``source`` is ``"stream"`` when one stream failed and ``"session"`` when the whole
    session did; ``stream_error_code`` carries the peer's application code for stream
    resets and stop requests, and is None otherwise.
    """

    def __init__(
        self,
        message: str,
        *,
        source: ErrorSource = "session",
        stream_error_code: int | None = None,
    ) -> None:
        super().__init__(message)
        self.source: ErrorSource = source
        self.stream_error_code: int | None = stream_error_code


class SessionClosedError(WebTransportError, ConnectionError):
    """The session has ended; ``close_info`` says how (code, reason, who).

    Also a :class:`ConnectionError`, as asyncio raises for a connection that is gone."""

    def __init__(self, message: str, *, code: int, reason: str, initiator: CloseInitiator) -> None:
        super().__init__(message, source="session")
        self.close_info = CloseInfo(code, reason, initiator)


class StreamResetError(WebTransportError, ConnectionResetError):
    """The peer reset the stream it was sending (RESET_STREAM) with ``stream_error_code``.

    Also a :class:`ConnectionResetError`, what an asyncio stream raises when its peer resets."""

    def __init__(self, message: str, *, stream_error_code: int) -> None:
        super().__init__(message, source="stream", stream_error_code=stream_error_code)


class StreamStoppedError(WebTransportError, BrokenPipeError):
    """The peer asked this side to stop sending (STOP_SENDING) with ``stream_error_code``.

    Also a :class:`BrokenPipeError`: the peer no longer reads what is written."""

    def __init__(self, message: str, *, stream_error_code: int) -> None:
        super().__init__(message, source="stream", stream_error_code=stream_error_code)


class StreamClosedError(WebTransportError):
    """The stream was already finished, reset or stopped by this side."""

    def __init__(self, message: str) -> None:
        super().__init__(message, source="stream")


class DatagramTooLargeError(WebTransportError):
    """A datagram of ``size`` bytes does not fit; at most ``max_size`` bytes fit now."""

    def __init__(self, message: str, *, size: int, max_size: int) -> None:
        super().__init__(message, source="session")
        self.size = size
        self.max_size = max_size


class MessageTooLargeError(WebTransportError):
    """A message on a stream announced ``size`` bytes, more than the reader's ``max_size``;
    refused from its length alone, before any of it was buffered."""

    def __init__(self, message: str, *, size: int, max_size: int) -> None:
        super().__init__(message, source="stream")
        self.size = size
        self.max_size = max_size


class MessageTruncatedError(WebTransportError):
    """The stream ended inside a message: ``received`` bytes of ``expected`` (None when
    the length prefix itself was cut) had arrived."""

    def __init__(self, message: str, *, received: int, expected: int | None) -> None:
        super().__init__(message, source="stream")
        self.received = received
        self.expected = expected


class DatagramsUnsupportedError(WebTransportError):
    """The client did not enable datagrams on its connection."""

    def __init__(self, message: str) -> None:
        super().__init__(message, source="session")


class RequestError(WebTransportError):
    """A session request could not be accepted: the client went away or a limit was hit."""

    def __init__(self, message: str) -> None:
        super().__init__(message, source="session")


class CertificateError(WebTransportError, ValueError):
    """A certificate or key could not be read, parsed, matched or generated.

    A :class:`ValueError` (the certificate given is wrong). It also derives from
    :class:`WebTransportError` only so that older ``except WebTransportError`` code keeps
    catching it; catch it as ``CertificateError`` or ``ValueError``."""

    def __init__(self, message: str) -> None:
        super().__init__(message, source="session")


class ServerClosedError(WebTransportError, RuntimeError):
    """The server is shutting down or closed.

    A :class:`RuntimeError`, as asyncio raises for a closed server. It also derives from
    :class:`WebTransportError` only so that older ``except WebTransportError`` code keeps
    catching it; catch it as ``ServerClosedError`` or ``RuntimeError``."""

    def __init__(self, message: str) -> None:
        super().__init__(message, source="session")


class WebSocketClosedError(ConnectionError):
    """A plain WebSocket has closed: ``code`` and ``reason`` of its close frame (1006 when
    the connection dropped without one), and who closed it."""

    def __init__(self, message: str, *, code: int, reason: str, initiator: CloseInitiator) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.initiator: CloseInitiator = initiator
