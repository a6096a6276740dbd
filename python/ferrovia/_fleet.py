"""Fleet settings of :func:`ferrovia.serve` and :func:`run_workers`: several processes
serving one port, the parent holding every worker's sockets in order."""

from __future__ import annotations

import asyncio
import inspect
import multiprocessing
import multiprocessing.connection
import os
import socket
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Union

from . import _ferrovia

__all__ = ["ConnectionIds", "WorkerInfo", "Workers", "current_worker", "run_workers"]


@dataclass(frozen=True)
class ConnectionIds:
    """QUIC-LB (draft-ietf-quic-load-balancers) connection IDs: every connection ID the
    server issues carries ``server_id`` in plaintext, so a load balancer that reads it
    routes a client back to this server after the client's address changes.

    ``server_id`` is 1 to 15 bytes (``bytes``, a hex ``str`` or a sequence of byte
    values); ``config_id`` the config rotation codepoint, 0 to 6; ``nonce_length`` 4 to 18
    bytes, with the server ID at most 19."""

    server_id: Union[bytes, str, Sequence[int]]
    config_id: int = 0
    nonce_length: int = 8

    def _native(self) -> tuple[bytes, int, int]:
        sid = self.server_id
        if isinstance(sid, (bytes, bytearray, memoryview)):
            raw = bytes(sid)
        elif isinstance(sid, str):
            try:
                raw = bytes.fromhex(sid)
            except ValueError:
                raise ValueError(f"connection_ids.server_id must be hex digits in pairs, got {sid!r}") from None
        else:
            values = [b for b in sid if isinstance(b, int) and not isinstance(b, bool)] if isinstance(sid, Sequence) else []
            if not isinstance(sid, Sequence) or len(values) != len(sid):
                raise TypeError(
                    f"connection_ids.server_id must be bytes, a hex str or a sequence of ints, not {type(sid).__name__}"
                )
            if not all(0 <= b <= 255 for b in values):
                raise ValueError("connection_ids.server_id values must be 0..255")
            raw = bytes(values)
        if not 1 <= len(raw) <= 15:
            raise ValueError(f"connection_ids.server_id must be 1 to 15 bytes, got {len(raw)}")
        for name, value, low, high in (
            ("config_id", self.config_id, 0, 6),
            ("nonce_length", self.nonce_length, 4, 18),
        ):
            if not isinstance(value, int) or isinstance(value, bool):
                raise TypeError(f"connection_ids.{name} must be int, not {type(value).__name__}")
            if not low <= value <= high:
                raise ValueError(f"connection_ids.{name} must be in {low}..{high}, got {value}")
        if len(raw) + self.nonce_length > 19:
            raise ValueError(
                f"connection_ids: server_id ({len(raw)} bytes) and nonce_length ({self.nonce_length}) must add up to 19 at most"
            )
        return raw, self.config_id, self.nonce_length


def _fleet_secret(secret: bytes | str | None) -> bytes | None:
    if secret is None:
        return None
    if isinstance(secret, str):
        raw = secret.encode()
    elif isinstance(secret, (bytes, bytearray, memoryview)):
        raw = bytes(secret)
    else:
        raise TypeError(f"fleet_secret must be bytes or str, not {type(secret).__name__}")
    if len(raw) < 32:
        raise ValueError(f"fleet_secret must be at least 32 bytes, got {len(raw)}")
    return raw


@dataclass(frozen=True)
class WorkerInfo:
    """Which worker of :func:`run_workers` this process is, and the group's address."""

    index: int
    count: int
    host: str
    port: int
    tcp: bool


# This process's place in a group, and its inherited sockets (kept open here).
_worker: WorkerInfo | None = None
_worker_sockets: tuple[socket.socket, socket.socket | None] | None = None
_worker_taken = False


def current_worker() -> WorkerInfo | None:
    """In a worker of :func:`run_workers`, which one; ``None`` elsewhere."""
    return _worker


def _take_worker(port: int) -> tuple[int, int, int | None] | None:
    """For the first server on the group's port in a worker: (index, UDP fd, TCP fd)."""
    global _worker_taken
    if _worker is None or _worker_sockets is None or _worker_taken or port != _worker.port:
        return None
    _worker_taken = True
    udp, tcp = _worker_sockets
    return _worker.index, udp.fileno(), None if tcp is None else tcp.fileno()


def _worker_main(
    target: Callable[[WorkerInfo], Any],
    info: WorkerInfo,
    udp: socket.socket,
    tcp: socket.socket | None,
) -> None:
    global _worker, _worker_sockets
    _worker = info
    _worker_sockets = (udp, tcp)
    result = target(info)
    if inspect.iscoroutine(result):
        asyncio.run(result)


class Workers:
    """The worker processes of :func:`run_workers`; a context manager that closes them."""

    def __init__(
        self,
        group: _ferrovia.ReusePortGroup,
        target: Callable[[WorkerInfo], Any],
        info: Callable[[int], WorkerInfo],
        count: int,
        restart: bool,
    ) -> None:
        self._group = group
        self._target = target
        self._info = info
        self._count = count
        self._restart = restart
        self._context = multiprocessing.get_context("spawn")
        self._lock = threading.Lock()
        self._closing = False
        self._processes: list[multiprocessing.process.BaseProcess] = []
        self._started: list[float] = []
        for index in range(count):
            self._processes.append(self._spawn(index))
            self._started.append(time.monotonic())
        self._monitor: threading.Thread | None = None
        if restart:
            self._monitor = threading.Thread(target=self._watch, name="ferrovia-workers", daemon=True)
            self._monitor.start()

    @property
    def port(self) -> int:
        """The port every worker serves."""
        return self._group.port

    @property
    def count(self) -> int:
        """The number of workers."""
        return self._count

    @property
    def processes(self) -> list[multiprocessing.process.BaseProcess]:
        """The worker processes; a restarted worker replaces its entry."""
        with self._lock:
            return list(self._processes)

    def _spawn(self, index: int) -> multiprocessing.process.BaseProcess:
        # Duplicates for the child: multiprocessing passes their descriptors to it.
        udp = socket.socket(fileno=os.dup(self._group.udp_fd(index)))
        tcp_fd = self._group.tcp_fd(index)
        tcp = None if tcp_fd < 0 else socket.socket(fileno=os.dup(tcp_fd))
        try:
            process = self._context.Process(
                target=_worker_main,
                args=(self._target, self._info(index), udp, tcp),
                name=f"ferrovia-worker-{index}",
            )
            process.start()
        finally:
            udp.close()
            if tcp is not None:
                tcp.close()
        return process

    def _watch(self) -> None:
        # The parent still holds the worker's sockets: a new worker takes its place. One
        # that dies at once is restarted after a pause rather than in a tight loop.
        while True:
            with self._lock:
                if self._closing:
                    return
                alive = [p.sentinel for p in self._processes if p.is_alive()]
            if alive:
                multiprocessing.connection.wait(alive, timeout=0.5)
            else:
                time.sleep(0.5)
            with self._lock:
                if self._closing:
                    return
                for index, process in enumerate(self._processes):
                    if process.is_alive():
                        continue
                    if time.monotonic() - self._started[index] < 1.0:
                        continue  # died at once: restarted a round later
                    self._processes[index] = self._spawn(index)
                    self._started[index] = time.monotonic()

    def close(self, timeout: float = 10.0) -> None:
        """Stops every worker (SIGTERM, then SIGKILL after ``timeout`` seconds), waits for
        them to exit and closes the sockets."""
        with self._lock:
            self._closing = True
            processes = list(self._processes)
        if self._monitor is not None:
            self._monitor.join()
        for process in processes:
            if process.is_alive():
                process.terminate()
        deadline = time.monotonic() + timeout
        for process in processes:
            process.join(max(0.0, deadline - time.monotonic()))
            if process.is_alive():
                process.kill()
                process.join()
        self._group.close()

    def __enter__(self) -> Workers:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def run_workers(
    count: int,
    target: Callable[[WorkerInfo], Any],
    *,
    host: str = "::",
    port: int = 4433,
    tcp: bool = True,
    restart: bool = True,
) -> Workers:
    """Runs ``target(worker_info)`` in ``count`` worker processes that share one port.

    This process opens every worker's UDP socket (and, with ``tcp``, a TCP listener) in
    order in a ``SO_REUSEPORT`` group that routes QUIC packets by connection ID, so that
    sessions survive client address changes, and keeps them open: a worker that exits is
    replaced (with ``restart``) without losing its place. In a worker, the first
    :func:`ferrovia.serve` on ``worker_info.port`` serves on the worker's sockets.

    Workers are started with the ``spawn`` method: ``target`` must be importable (a
    module-level function), and the script must guard its start with
    ``if __name__ == "__main__":``. A coroutine function is run with :func:`asyncio.run`.
    Linux only."""
    if not sys.platform.startswith("linux"):
        raise RuntimeError("run_workers needs Linux (SO_REUSEPORT with connection ID steering)")
    if not isinstance(count, int) or isinstance(count, bool):
        raise TypeError(f"count must be int, not {type(count).__name__}")
    if not 1 <= count <= 256:
        raise ValueError(f"count must be 1..256, got {count}")
    if not callable(target):
        raise TypeError(f"target must be a function, not {type(target).__name__}")
    if not isinstance(host, str):
        raise TypeError(f"host must be str, not {type(host).__name__}")
    if not isinstance(port, int) or isinstance(port, bool) or not 0 <= port <= 65535:
        raise ValueError(f"port must be 0..65535, got {port!r}")
    group = _ferrovia.ReusePortGroup.bind(host, port, count, bool(tcp))

    def info(index: int) -> WorkerInfo:
        return WorkerInfo(index, count, host, group.port, group.tcp_fd(index) >= 0)

    return Workers(group, target, info, count, restart)
