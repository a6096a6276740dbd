"""Fleet settings of the Python package: reuse_port, connection_ids and fleet_secret, and
run_workers() starting worker processes that share one port, reached by the aioquic
client (wtclient.py) over WebTransport."""

from __future__ import annotations

import asyncio
import sys

import pytest

import ferrovia
from fleet_worker import serve_index
from wtclient import connect_client

linux = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="SO_REUSEPORT groups are tested on Linux")


@linux
async def test_two_servers_share_a_port_only_with_reuse_port() -> None:
    async with ferrovia.serve("127.0.0.1", 0, reuse_port=True) as a:
        async with ferrovia.serve("127.0.0.1", a.port, reuse_port=True) as b:
            assert b.port == a.port
        with pytest.raises(OSError):
            async with ferrovia.serve("127.0.0.1", a.port):
                pass


async def test_connection_ids_and_fleet_secret_are_accepted() -> None:
    for server_id in (b"\xfe\x01", "fe0102", [9, 9, 9, 9, 9, 9, 9, 9]):
        ids = ferrovia.ConnectionIds(server_id, config_id=1, nonce_length=6)
        async with ferrovia.serve("127.0.0.1", 0, tcp=False, connection_ids=ids, fleet_secret="s" * 32) as server:
            assert server.port != 0
    async with ferrovia.serve("127.0.0.1", 0, tcp=False, fleet_secret=bytes(32)):
        pass


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"connection_ids": ferrovia.ConnectionIds("xyz")}, ValueError, "hex digits in pairs"),
        ({"connection_ids": ferrovia.ConnectionIds(b"")}, ValueError, "1 to 15 bytes, got 0"),
        ({"connection_ids": ferrovia.ConnectionIds(bytes(16))}, ValueError, "1 to 15 bytes, got 16"),
        ({"connection_ids": ferrovia.ConnectionIds([256])}, ValueError, "values must be 0..255"),
        ({"connection_ids": ferrovia.ConnectionIds(7)}, TypeError, "server_id must be bytes"),  # type: ignore[arg-type]
        ({"connection_ids": ferrovia.ConnectionIds(b"\x01", config_id=7)}, ValueError, "config_id must be in 0..6"),
        ({"connection_ids": ferrovia.ConnectionIds(b"\x01", nonce_length=3)}, ValueError, "nonce_length must be in 4..18"),
        ({"connection_ids": ferrovia.ConnectionIds(bytes(15), nonce_length=5)}, ValueError, "add up to 19 at most"),
        ({"connection_ids": {"server_id": b"\x01"}}, TypeError, "must be a ferrovia.ConnectionIds"),
        ({"fleet_secret": "too short"}, ValueError, "at least 32 bytes, got 9"),
        ({"fleet_secret": 42}, TypeError, "fleet_secret must be bytes or str"),
        ({"reuse_port": "yes"}, TypeError, "reuse_port must be bool"),
    ],
)
def test_bad_settings_are_refused_at_once(kwargs: dict[str, object], error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        ferrovia.serve("127.0.0.1", 0, **kwargs)  # type: ignore[arg-type]


def test_this_process_is_not_a_worker() -> None:
    assert ferrovia.current_worker() is None


@linux
async def test_run_workers_serves_one_port_from_two_processes() -> None:
    with ferrovia.run_workers(2, serve_index, host="127.0.0.1", port=0, restart=False) as workers:
        assert workers.count == 2
        assert workers.port != 0
        seen: set[bytes] = set()
        deadline = asyncio.get_running_loop().time() + 60
        # Each client comes from a new port; the kernel spreads them over both workers.
        while len(seen) < 2 and asyncio.get_running_loop().time() < deadline:
            try:
                async with connect_client(workers.port) as client:
                    remote = await client.session("/who")
                    assert await remote.status() == 200
                    seen.add(await asyncio.wait_for(remote.datagrams.get(), 10))
                    remote.close()
            except (ConnectionError, asyncio.TimeoutError):
                await asyncio.sleep(0.2)  # a worker still starting
        assert seen == {b"worker 0 of 2", b"worker 1 of 2"}
        processes = workers.processes
        assert all(p.is_alive() for p in processes)
    assert not any(p.is_alive() for p in processes)


def test_run_workers_checks_its_arguments() -> None:
    with pytest.raises(ValueError, match="count must be 1..256"):
        ferrovia.run_workers(0, serve_index)
    with pytest.raises(TypeError, match="target must be a function"):
        ferrovia.run_workers(1, "serve_index")  # type: ignore[arg-type]
