"""A game-state loop over datagrams: clients send their input, the server moves every player
at a fixed tick rate and sends the whole state to every client each tick.

    python examples/python/gamestate.py [--port 4433] [--host ::] [--tick-hz 20]

Browsers connect to ``https://localhost:4433/game``. The server first sends the player's id
on a unidirectional stream (``{"id":N}``). Then, in datagrams (big-endian):

- client → server, input: ``u32 seq, i8 dx, i8 dy`` (the direction held, -1..1);
- server → client, state: ``u32 tick, u16 count``, then ``count`` × ``(u32 id, i16 x,
  i16 y, u32 last input seq)``.

Datagrams may be lost: a lost input is replaced by the next one, a lost state by the next
tick's, which is why the state is sent whole rather than as changes.

Prints JSON lines: ``listening``, then ``join`` and ``leave`` events.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import struct
from dataclasses import dataclass

import ferrovia

WORLD = 1000
SPEED = 10
INPUT = struct.Struct("!Ibb")
HEADER = struct.Struct("!IH")
ENTRY = struct.Struct("!IhhI")


def emit(event: str, **fields: object) -> None:
    print(json.dumps({"event": event, **fields}, separators=(",", ":")), flush=True)


def sign(v: int) -> int:
    return (v > 0) - (v < 0)


@dataclass
class Player:
    session: ferrovia.Session
    x: int = WORLD // 2
    y: int = WORLD // 2
    dx: int = 0
    dy: int = 0
    seq: int = 0


players: dict[int, Player] = {}


async def play(player_id: int, session: ferrovia.Session) -> None:
    with contextlib.suppress(ferrovia.WebTransportError):
        hello = await session.open_unidirectional_stream()
        hello.write(json.dumps({"id": player_id}).encode())
        hello.write_eof()
        await hello.drain()
        player = players[player_id] = Player(session)
        emit("join", id=player_id)
        async for data in session.incoming_datagrams():
            if len(data) != INPUT.size:
                continue
            seq, dx, dy = INPUT.unpack(data)
            # Inputs can arrive out of order; an older one must not undo a newer one.
            if seq > player.seq:
                player.seq, player.dx, player.dy = seq, sign(dx), sign(dy)
    info = await session.wait_closed()
    players.pop(player_id, None)
    emit("leave", id=player_id, code=info.code, reason=info.reason)


async def step(tick: int) -> None:
    for p in players.values():
        p.x = min(WORLD, max(0, p.x + p.dx * SPEED))
        p.y = min(WORLD, max(0, p.y + p.dy * SPEED))
    for p in list(players.values()):
        # Whatever fits one datagram; a real game would send each client what is near it.
        shown = list(players.items())[: (p.session.max_datagram_size - HEADER.size) // ENTRY.size]
        state = HEADER.pack(tick, len(shown)) + b"".join(
            ENTRY.pack(i, q.x, q.y, q.seq) for i, q in shown
        )
        with contextlib.suppress(ferrovia.WebTransportError):
            await p.session.send_datagram(state)


async def ticker(hz: int) -> None:
    loop = asyncio.get_running_loop()
    start = loop.time()
    for tick in itertools.count(1):
        await step(tick)
        # Sleeping until the next slot, not for a fixed time, keeps the rate from drifting.
        await asyncio.sleep(max(0.0, start + tick / hz - loop.time()))


async def main() -> None:
    parser = argparse.ArgumentParser(description="Ferrovia datagram game-state example")
    parser.add_argument("--port", type=int, default=4433)
    parser.add_argument("--host", default="::")
    parser.add_argument("--tick-hz", type=int, default=20, choices=range(1, 241), metavar="1..240")
    args = parser.parse_args()
    tasks: set[asyncio.Task[None]] = set()
    async with ferrovia.serve(args.host.strip("[]"), args.port) as server:
        # Claim the requests before announcing the port, so none arrives unclaimed (404).
        requests = server.requests("/game")
        emit("listening", port=server.port, certificateHash=server.certificate.sha256_hex(), tickHz=args.tick_hz)
        loop_task = asyncio.ensure_future(ticker(args.tick_hz))
        ids = itertools.count(1)
        async for request in requests:
            try:
                session = await request.accept()
            except ferrovia.WebTransportError:
                continue
            task = asyncio.ensure_future(play(next(ids), session))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        loop_task.cancel()


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())
