"""A worker of test_fleet.py's run_workers test: serves the group's port and tells each
session which worker took it, in a datagram."""

from __future__ import annotations

import asyncio

import ferrovia


async def serve_index(worker: ferrovia.WorkerInfo) -> None:
    async def handler(request: ferrovia.SessionRequest) -> None:
        session = await request.accept()
        await session.send_datagram(f"worker {worker.index} of {worker.count}".encode())
        await session.wait_closed()

    async with ferrovia.serve("127.0.0.1", worker.port, handler=handler) as server:
        assert server.port == worker.port
        await asyncio.Event().wait()
