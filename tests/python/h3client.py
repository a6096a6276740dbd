"""A small HTTP/3 client on aioquic's H3Connection, independent of Ferrovia's code: one
request per stream, the request body streamed in chunks, the response body handed over
chunk by chunk so large downloads can be hashed without holding them."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

from aioquic.asyncio.client import connect
from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.h3.connection import H3_ALPN, H3Connection
from aioquic.h3.events import DataReceived, H3Event, HeadersReceived
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.events import QuicEvent, StreamReset


@dataclass
class Response:
    """What came back on one request stream."""

    headers: asyncio.Future[list[tuple[bytes, bytes]]]
    chunks: asyncio.Queue[bytes | None] = field(default_factory=asyncio.Queue)
    reset: int | None = None

    async def status(self, timeout: float = 30.0) -> int:
        """The `:status` of the response."""
        headers = await asyncio.wait_for(self.headers, timeout)
        return int(dict(headers)[b":status"])

    async def header(self, name: bytes) -> bytes | None:
        """A response header's value."""
        return dict(await self.headers).get(name)

    async def each_chunk(self, sink: Callable[[bytes], None], timeout: float = 60.0) -> None:
        """Feeds every body chunk to `sink` until the end; raises on a reset stream."""

        async def run() -> None:
            while (chunk := await self.chunks.get()) is not None:
                sink(chunk)
            if self.reset is not None:
                raise ConnectionResetError(f"stream reset with {self.reset:#x}")

        await asyncio.wait_for(run(), timeout)

    async def body(self, timeout: float = 60.0) -> bytes:
        """The whole body."""
        parts: list[bytes] = []
        await self.each_chunk(parts.append, timeout)
        return b"".join(parts)


class H3Client(QuicConnectionProtocol):
    """An aioquic connection that sends HTTP/3 requests."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self._http = H3Connection(self._quic)
        self._responses: dict[int, Response] = {}

    def request(
        self, method: str, path: str, authority: str, headers: list[tuple[bytes, bytes]] | None = None, end: bool = True
    ) -> tuple[int, Response]:
        """Sends a request head; returns the stream ID (for a body) and the response."""
        stream_id = self._quic.get_next_available_stream_id()
        fields = [
            (b":method", method.encode()),
            (b":scheme", b"https"),
            (b":authority", authority.encode()),
            (b":path", path.encode()),
            *(headers or []),
        ]
        self._http.send_headers(stream_id, fields, end_stream=end)
        response = Response(headers=asyncio.get_running_loop().create_future())
        self._responses[stream_id] = response
        self.transmit()
        return stream_id, response

    async def send_body(self, stream_id: int, data: bytes, chunk: int = 256 * 1024) -> None:
        """Sends `data` as DATA frames and ends the stream; aioquic holds what flow control
        does not let out yet."""
        for i in range(0, len(data), chunk):
            self._http.send_data(stream_id, data[i : i + chunk], end_stream=i + chunk >= len(data))
            self.transmit()
            await asyncio.sleep(0)
        if not data:
            self._http.send_data(stream_id, b"", end_stream=True)
            self.transmit()

    def quic_event_received(self, event: QuicEvent) -> None:
        if isinstance(event, StreamReset) and event.stream_id in self._responses:
            r = self._responses[event.stream_id]
            r.reset = event.error_code
            if not r.headers.done():
                r.headers.set_exception(ConnectionResetError(f"reset with {event.error_code:#x}"))
            r.chunks.put_nowait(None)
        for h3_event in self._http.handle_event(event):
            self._h3_event(h3_event)

    def _h3_event(self, event: H3Event) -> None:
        if isinstance(event, HeadersReceived):
            r = self._responses.get(event.stream_id)
            if r is not None and not r.headers.done():
                r.headers.set_result(event.headers)
                if event.stream_ended:
                    r.chunks.put_nowait(None)
        elif isinstance(event, DataReceived):
            r = self._responses.get(event.stream_id)
            if r is not None:
                if event.data:
                    r.chunks.put_nowait(event.data)
                if event.stream_ended:
                    r.chunks.put_nowait(None)


@contextlib.asynccontextmanager
async def connect_h3(port: int, host: str = "127.0.0.1") -> AsyncIterator[H3Client]:
    """An HTTP/3 connection to a server with a self-signed certificate."""
    config = QuicConfiguration(is_client=True, alpn_protocols=H3_ALPN, server_name="localhost")
    config.verify_mode = ssl.CERT_NONE
    async with connect(host, port, configuration=config, create_protocol=H3Client) as client:
        assert isinstance(client, H3Client)
        yield client
