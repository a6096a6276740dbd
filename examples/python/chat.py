"""A chat room: every message a browser sends is broadcast to every session in the room.

    python examples/python/chat.py [--port 4433] [--host ::]
    python examples/python/chat.py --redis redis://HOST:6379 [--room lobby] [--presence-ttl 30]
    python examples/python/chat.py --nats nats://HOST:4222 [--room lobby]

Browsers connect to ``https://localhost:4433/chat?name=NAME``. A client sends each message
on its own unidirectional stream (UTF-8, at most 4 KiB); the server sends every line of the
room (``NAME: text``, ``* NAME joined``, ``* NAME left``) to each member on a new
unidirectional stream. Streams are independent, so two lines sent at nearly the same moment
may arrive in either order.

With ``--redis`` or ``--nats``, several servers share one room: each line is also published
on ``ferrovia.chat.<room>`` and every server hands what the others publish to its own
members. With ``--redis`` the room also keeps presence with expiry, and ``/who`` answers the
sender with ``* members: ann, bob``. See docs/scaling.md.

Prints JSON lines: ``{"event":"listening",...}`` with the port and certificate hash, then
``join``, ``message`` and ``leave`` events; with a broker also ``remote`` (a line from
another server), ``who``, and ``broker`` events for its connection state and failures.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import re
import sys
import uuid
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

import ferrovia

if TYPE_CHECKING:
    # Only for the type checker: the plain room runs without either client installed.
    import nats.aio.client
    import nats.aio.msg
    import redis.asyncio

MAX_MESSAGE = 4096
# Lines on their way to each member. A member that takes no more streams (it never grants
# stream credit, or reads nothing) would otherwise pile up one pending delivery per line for
# as long as the room talks: past this many it is closed instead.
MAX_PENDING = 64
SLOW_MEMBER = 1


def emit(event: str, **fields: object) -> None:
    print(json.dumps({"event": event, **fields}, separators=(",", ":")), flush=True)


class Room:
    def __init__(self) -> None:
        self.members: set[ferrovia.Session] = set()
        self.tasks: set[asyncio.Task[None]] = set()
        self.pending: dict[ferrovia.Session, int] = {}

    def spawn(self, work: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.ensure_future(work)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    def deliver(self, line: str) -> None:
        # One slow member must not hold up the others: each delivery runs on its own.
        for member in list(self.members):
            waiting = self.pending.get(member, 0)
            if waiting >= MAX_PENDING:
                self.members.discard(member)
                member.close(SLOW_MEMBER, f"too slow: {MAX_PENDING} lines waiting")
                continue
            self.pending[member] = waiting + 1
            self.spawn(self._send(member, line))

    async def _send(self, member: ferrovia.Session, line: str) -> None:
        try:
            await send_line(member, line)
        finally:
            left = self.pending.pop(member) - 1
            if left:
                self.pending[member] = left


# -------------------------------------------------------------------------------------------
# Fan-out across servers
#
# Each published line carries the id of the server that wrote it; a server delivers its own
# lines to its members at once and skips them when they come back from the broker. The
# alternative (deliver only what the subscription returns) would stop the room on every
# server while the broker is away; this way members of one server keep talking to each
# other, and only the other servers miss those lines. The id is random per process, so a
# restarted server never mistakes an old line for its own.

INSTANCE = str(uuid.uuid4())


class BrokerUnreachable(Exception):
    pass


def broker_event(broker: str, state: str, **fields: object) -> None:
    emit("broker", broker=broker, state=state, **fields)


class Bus:
    """What a room needs from a broker; the NATS one has no presence."""

    name = ""
    has_presence = False

    def __init__(self, room: Room, subject: str) -> None:
        self.room = room
        self.subject = subject

    def envelope(self, line: str) -> bytes:
        return json.dumps({"from": INSTANCE, "line": line}, separators=(",", ":")).encode()

    def received(self, raw: bytes | str) -> None:
        try:
            message = json.loads(raw)
            origin, line = message["from"], message["line"]
            if not isinstance(origin, str) or not isinstance(line, str):
                raise TypeError("from and line must be strings")
        except (ValueError, TypeError, KeyError):
            text = raw.decode(errors="replace") if isinstance(raw, bytes) else raw
            broker_event(self.name, "dropped", reason="not a chat envelope", raw=text[:200])
            return
        if origin == INSTANCE:
            return
        emit("remote", line=line)
        self.room.deliver(line)

    def publish(self, line: str) -> None:
        raise NotImplementedError

    async def join(self, session: ferrovia.Session, name: str) -> None:
        pass

    async def leave(self, session: ferrovia.Session) -> None:
        pass

    async def who(self) -> list[str]:
        raise NotImplementedError

    async def close(self) -> None:
        pass


class RedisBus(Bus):
    """PUBLISH/SUBSCRIBE for lines, a sorted set for presence.

    Each entry's score is the moment it expires, on the Redis server's clock (TIME), so
    servers whose clocks disagree still agree on who is gone. Every server pushes its own
    members' expiry forward every third of the TTL; a server that dies stops doing so and
    its members drop out after at most one TTL.
    """

    name = "redis"
    has_presence = True

    def __init__(self, room: Room, subject: str, client: redis.asyncio.Redis, ttl: float) -> None:
        super().__init__(room, subject)
        self.client = client
        self.key = f"{subject}.members"
        self.ttl_ms = round(ttl * 1000)
        self.local: dict[ferrovia.Session, str] = {}
        self.sequence = 0
        self.pubsub = client.pubsub()
        self.background: list[asyncio.Task[None]] = []

    @classmethod
    async def open(cls, room: Room, subject: str, url: str, ttl: float) -> RedisBus:
        import redis.asyncio
        import redis.exceptions

        client = redis.asyncio.Redis.from_url(url)
        try:
            await client.ping()
        except (redis.exceptions.RedisError, OSError) as err:
            await client.aclose()
            raise BrokerUnreachable(f"cannot reach Redis at {url}: {err}") from err
        bus = cls(room, subject, client, ttl)
        await bus.pubsub.subscribe(subject)
        bus.background = [asyncio.create_task(bus.listen()), asyncio.create_task(bus.keep_alive())]
        return bus

    async def listen(self) -> None:
        import redis.exceptions

        subscribed = False
        down = False
        while True:
            try:
                async for message in self.pubsub.listen():
                    if message["type"] == "message":
                        self.received(message["data"])
                    elif message["type"] == "subscribe":
                        # The client subscribes again on every new connection.
                        if subscribed:
                            # The pool's idle connections went down with the old server,
                            # and the client would send the next PUBLISH on one of them
                            # (lost, "Connection closed by server"): open fresh ones.
                            with contextlib.suppress(redis.exceptions.RedisError, OSError):
                                await self.client.connection_pool.disconnect(inuse_connections=False)
                            broker_event("redis", "reconnected", role="subscriber")
                            # A Redis that restarted may have lost the set: put this
                            # server's members back at once.
                            self.room.spawn(self.keep_alive_once())
                        subscribed = True
                        down = False
            except (redis.exceptions.ConnectionError, OSError) as err:
                # The next listen() connects again and renews the subscription; one line
                # per outage is enough.
                if not down:
                    broker_event("redis", "disconnected", role="subscriber", message=str(err))
                down = True
                await asyncio.sleep(1)

    async def now_ms(self) -> int:
        seconds, micros = await self.client.time()
        return seconds * 1000 + micros // 1000

    async def refresh(self) -> None:
        if not self.local:
            return
        expires = await self.now_ms() + self.ttl_ms
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.zadd(self.key, dict.fromkeys(self.local.values(), expires))
            # The key itself expires too, so a room everyone left without a goodbye
            # leaves nothing.
            pipe.pexpire(self.key, self.ttl_ms)
            await pipe.execute()

    async def keep_alive_once(self) -> None:
        import redis.exceptions

        try:
            await self.refresh()
        except (redis.exceptions.RedisError, OSError) as err:
            broker_event("redis", "error", role="presence", message=str(err))

    async def keep_alive(self) -> None:
        while True:
            await asyncio.sleep(self.ttl_ms / 3000)
            await self.keep_alive_once()

    def publish(self, line: str) -> None:
        self.room.spawn(self.send(line))

    async def send(self, line: str) -> None:
        import redis.exceptions

        try:
            await self.client.publish(self.subject, self.envelope(line))
        except (redis.exceptions.RedisError, OSError) as err:
            broker_event("redis", "lost", line=line, message=str(err))

    async def join(self, session: ferrovia.Session, name: str) -> None:
        # Entries are unique per session, so two members called "ann" are both listed.
        self.sequence += 1
        self.local[session] = f"{INSTANCE}/{self.sequence}/{name}"
        await self.refresh()

    async def leave(self, session: ferrovia.Session) -> None:
        entry = self.local.pop(session, None)
        if entry is not None:
            await self.client.zrem(self.key, entry)

    async def who(self) -> list[str]:
        now = await self.now_ms()
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.zremrangebyscore(self.key, "-inf", now)
            pipe.zrangebyscore(self.key, f"({now}", "+inf")
            _, entries = await pipe.execute()
        return sorted(entry.decode().split("/", 2)[2] for entry in entries)

    async def close(self) -> None:
        for task in self.background:
            task.cancel()
        await asyncio.gather(*self.background, return_exceptions=True)
        with contextlib.suppress(Exception):
            if self.local:
                await self.client.zrem(self.key, *self.local.values())
        # Closing the pool also closes the subscription's connection.
        await self.client.aclose()


class NatsBus(Bus):
    """Core NATS publish/subscribe only, no presence (see docs/scaling.md)."""

    name = "nats"

    def __init__(self, room: Room, subject: str, client: nats.aio.client.Client) -> None:
        super().__init__(room, subject)
        self.client = client

    @classmethod
    async def open(cls, room: Room, subject: str, url: str) -> NatsBus:
        import nats

        connected = False
        last_error: list[Exception] = []

        async def on_error(err: Exception) -> None:
            if connected:
                broker_event("nats", "error", message=str(err))
            else:
                last_error.append(err)

        async def on_disconnected() -> None:
            broker_event("nats", "disconnected")

        async def on_reconnected() -> None:
            broker_event("nats", "reconnected")

        # Retrying for ever (-1) also applies to the first connection, which would then
        # hang on a broker that is not there: give that one a few seconds instead.
        try:
            client = await asyncio.wait_for(
                nats.connect(
                    url,
                    error_cb=on_error,
                    disconnected_cb=on_disconnected,
                    reconnected_cb=on_reconnected,
                    max_reconnect_attempts=-1,
                    reconnect_time_wait=1,
                    connect_timeout=2,
                ),
                timeout=3,
            )
        except (asyncio.TimeoutError, OSError, nats.errors.Error) as err:
            cause = last_error[-1] if last_error else err
            raise BrokerUnreachable(f"cannot reach NATS at {url}: {cause or type(cause).__name__}") from err
        connected = True
        bus = cls(room, subject, client)

        async def on_message(msg: nats.aio.msg.Msg) -> None:
            bus.received(msg.data)

        await client.subscribe(subject, cb=on_message)
        # The subscription reaches the server before any line this server publishes.
        await client.flush()
        return bus

    def publish(self, line: str) -> None:
        self.room.spawn(self.send(line))

    async def send(self, line: str) -> None:
        import nats.errors

        # While reconnecting the client buffers what is published; past its buffer, or
        # once closed, it refuses.
        try:
            await self.client.publish(self.subject, self.envelope(line))
        except nats.errors.Error as err:
            broker_event("nats", "lost", line=line, message=str(err) or type(err).__name__)

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.client.drain()


# -------------------------------------------------------------------------------------------


async def send_line(session: ferrovia.Session, line: str) -> None:
    with contextlib.suppress(ferrovia.WebTransportError):
        writer = await session.open_unidirectional_stream()
        writer.write(line.encode())
        writer.write_eof()
        await writer.drain()


async def read_message(reader: ferrovia.StreamReader) -> str | None:
    data = bytearray()
    while chunk := await reader.read(MAX_MESSAGE + 1):
        data += chunk
        if len(data) > MAX_MESSAGE:
            reader.stop(0)
            return None
    return data.decode(errors="replace").strip()


def say(room: Room, bus: Bus | None, line: str) -> None:
    room.deliver(line)
    if bus is not None:
        bus.publish(line)


async def presence(bus: Bus, work: Coroutine[Any, Any, None]) -> None:
    try:
        await work
    except Exception as err:  # a broker failure must not end the session
        broker_event(bus.name, "error", role="presence", message=str(err))


async def before_announcing(room: Room, bus: Bus, change: Coroutine[Any, Any, None]) -> None:
    # Presence changes before the join or leave is announced, so whoever hears of it finds
    # the list agreeing; but a broker that is away must not hold the room up for over a second.
    await asyncio.wait({room.spawn(presence(bus, change))}, timeout=1)


async def who(bus: Bus, name: str, session: ferrovia.Session) -> None:
    try:
        names = await bus.who()
    except Exception as err:  # the member still gets an answer
        broker_event(bus.name, "error", role="presence", message=str(err))
        await send_line(session, "* members: unknown, the broker is unreachable")
        return
    emit("who", name=name, members=names)
    await send_line(session, f"* members: {', '.join(names)}")


async def deliver(room: Room, bus: Bus | None, name: str, session: ferrovia.Session, reader: ferrovia.StreamReader) -> None:
    with contextlib.suppress(ferrovia.WebTransportError):
        text = await read_message(reader)
        if not text:
            return
        if text == "/who" and bus is not None and bus.has_presence:
            await who(bus, name, session)
            return
        emit("message", name=name, text=text)
        say(room, bus, f"{name}: {text}")


async def member(room: Room, bus: Bus | None, name: str, session: ferrovia.Session) -> None:
    room.members.add(session)
    if bus is not None:
        await before_announcing(room, bus, bus.join(session, name))
    emit("join", name=name)
    say(room, bus, f"* {name} joined")
    async for reader in session.incoming_unidirectional_streams():
        room.spawn(deliver(room, bus, name, session, reader))
    info = await session.wait_closed()
    room.members.discard(session)
    if bus is not None:
        await before_announcing(room, bus, bus.leave(session))
    emit("leave", name=name, code=info.code, reason=info.reason)
    say(room, bus, f"* {name} left")


async def main() -> None:
    parser = argparse.ArgumentParser(description="Ferrovia chat room example")
    parser.add_argument("--port", type=int, default=4433)
    parser.add_argument("--host", default="::")
    brokers = parser.add_mutually_exclusive_group()
    brokers.add_argument("--redis", metavar="URL", help="share the room through Redis, e.g. redis://localhost:6379")
    brokers.add_argument("--nats", metavar="URL", help="share the room through NATS, e.g. nats://localhost:4222")
    parser.add_argument("--room", default="lobby", help="published on ferrovia.chat.ROOM")
    parser.add_argument("--presence-ttl", type=float, default=30.0, help="seconds (Redis)")
    args = parser.parse_args()
    # The room is a NATS subject token and part of Redis keys: no dots, spaces or wildcards.
    if not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", args.room):
        parser.error(f"--room must be 1-64 of A-Z a-z 0-9 _ -, not {args.room!r}")
    if args.presence_ttl <= 0:
        parser.error("--presence-ttl must be a positive number of seconds")
    room = Room()
    subject = f"ferrovia.chat.{args.room}"
    bus: Bus | None = None
    if args.redis:
        bus = await RedisBus.open(room, subject, args.redis, args.presence_ttl)
    elif args.nats:
        bus = await NatsBus.open(room, subject, args.nats)
    try:
        async with ferrovia.serve(args.host.strip("[]"), args.port) as server:
            # Claim the requests before announcing the port, so none arrives unclaimed (404).
            requests = server.requests("/chat")
            emit("listening", port=server.port, certificateHash=server.certificate.sha256_hex())
            async for request in requests:
                name = (parse_qs(urlsplit(request.path).query).get("name") or ["anonymous"])[0][:32]
                try:
                    session = await request.accept()
                except ferrovia.WebTransportError:
                    continue
                room.spawn(member(room, bus, name, session))
    finally:
        if bus is not None:
            await bus.close()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass
    except BrokerUnreachable as err:
        print(f"chat: {err}", file=sys.stderr)
        sys.exit(2)
