"""Fixtures: a Ferrovia server on a free loopback port, and client/server session pairs."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import ferrovia

sys.path.insert(0, str(Path(__file__).parent))

from wtclient import ClientSession, WebTransportClient, connect_client  # noqa: E402


@pytest.fixture
async def server() -> AsyncIterator[ferrovia.Server]:
    async with ferrovia.serve("127.0.0.1", 0) as s:
        yield s


@dataclass
class Pair:
    """Both ends of one session: the server's and the client's."""

    session: ferrovia.Session
    client: WebTransportClient
    remote: ClientSession


@contextlib.asynccontextmanager
async def open_pair(server: ferrovia.Server, path: str = "/t", **client_kw: int) -> AsyncIterator[Pair]:
    """Connects a client to ``path`` and accepts the session on the server."""
    requests = server.requests(path)
    async with connect_client(server.port, **client_kw) as client:
        remote = await client.session(path)
        request = await requests.accept()
        assert request is not None
        session = await request.accept()
        assert await remote.status() == 200
        yield Pair(session, client, remote)


@pytest.fixture
async def pair(server: ferrovia.Server) -> AsyncIterator[Pair]:
    async with open_pair(server) as p:
        yield p
