"""Type aliases and argument checks shared by the modules of the package."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Literal, Union


OriginPolicy = Union[Literal["same-host", "*"], Sequence[str], Callable[[str, str], bool]]
"""Which ``origin`` headers are accepted: ``"same-host"`` (the origin's host must equal the
requested host), ``"*"`` (any), a list of exact origins, or ``callback(origin, authority)``.
Requests without ``origin`` (non-browser clients) always pass; refused ones get 403."""

Transport = Literal["webtransport", "qmux", "websocket"]
"""What carries a request: WebTransport over HTTP/3, QMux over a WebSocket, or a plain
WebSocket."""

CongestionController = Literal["cubic", "newreno", "bbr"]
"""The QUIC congestion controller."""

StrPath = Union[str, "os.PathLike[str]"]

_U32 = 0xFFFF_FFFF


def _check_int(name: str, value: object, low: int, high: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    if not low <= value <= high:
        raise ValueError(f"{name} must be in {low}..{high}, got {value}")
    return value


def _check_code(name: str, value: object) -> int:
    return _check_int(name, value, 0, _U32)


def _check_bytes(name: str, value: object) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, (bytearray, memoryview)):
        return bytes(value)
    raise TypeError(f"{name} must be bytes-like, not {type(value).__name__}")


def _check_seconds(name: str, value: object, *, allow_none: bool) -> float | None:
    if value is None and allow_none:
        return None
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise TypeError(f"{name} must be a number of seconds, not {type(value).__name__}")
    if not value > 0 or value != value or value == float("inf"):
        raise ValueError(f"{name} must be a positive, finite number of seconds, got {value}")
    return float(value)
