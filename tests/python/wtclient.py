"""A small WebTransport client on aioquic's HTTP/3 layer, independent of Ferrovia's code.

It speaks the draft-02 dialect browsers use: extended CONNECT with ``:protocol
webtransport``, streams and datagrams through aioquic's WebTransport support, and the
CLOSE_WEBTRANSPORT_SESSION capsule, which aioquic leaves to the application, parsed and
written here.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import struct
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from aioquic.asyncio.client import connect
from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.buffer import Buffer, BufferReadError, encode_uint_var
from aioquic.h3.connection import H3_ALPN, FrameType, H3Connection, H3Stream
from aioquic.h3.events import (
    DataReceived,
    DatagramReceived,
    H3Event,
    HeadersReceived,
    WebTransportStreamDataReceived,
)
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.events import QuicEvent, StopSendingReceived, StreamReset

CLOSE_CAPSULE = 0x2843
DRAIN_CAPSULE = 0x78AE
FIRST_WT_CODE = 0x52E4A40FA8DB


def code_to_http3(code: int) -> int:
    """WebTransport application code -> HTTP/3 error code (draft-ietf-webtrans-http3)."""
    return FIRST_WT_CODE + code + code // 0x1E


def code_from_http3(h3: int) -> int | None:
    """HTTP/3 error code -> WebTransport application code, None outside the range."""
    if h3 < FIRST_WT_CODE or (h3 - FIRST_WT_CODE) % 0x1F == 0x1E:
        return None
    shifted = h3 - FIRST_WT_CODE
    return shifted - shifted // 0x1F


@dataclass
class ClientStream:
    """One WebTransport stream as the client sees it."""

    client: WebTransportClient
    stream_id: int
    data: asyncio.Queue[bytes | None] = field(default_factory=asyncio.Queue)
    received: int = 0
    ended: bool = False
    reset_code: asyncio.Future[int | None] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )
    stop_code: asyncio.Future[int | None] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )

    def send(self, data: bytes, end: bool = False) -> None:
        """Queues data (and FIN) and transmits."""
        self.client._quic.send_stream_data(self.stream_id, data, end_stream=end)
        self.client.transmit()

    def reset(self, code: int) -> None:
        """RESET_STREAM with a WebTransport code."""
        self.client._quic.reset_stream(self.stream_id, code_to_http3(code))
        self.client.transmit()

    def stop(self, code: int) -> None:
        """STOP_SENDING with a WebTransport code."""
        self.client._quic.stop_stream(self.stream_id, code_to_http3(code))
        self.client.transmit()

    async def read_all(self, timeout: float = 30.0) -> bytes:
        """Everything until FIN; raises ConnectionResetError on RESET_STREAM."""
        return await asyncio.wait_for(self._read_all(), timeout)

    async def _read_all(self) -> bytes:
        parts: list[bytes] = []
        while True:
            chunk = await self.data.get()
            if chunk is None:
                if self.reset_code.done():
                    raise ConnectionResetError(f"stream reset with code {self.reset_code.result()}")
                return b"".join(parts)
            parts.append(chunk)

    async def write_all(self, data: bytes, chunk: int = 256 * 1024, end: bool = True) -> None:
        """Sends data in chunks, yielding so the receive side keeps up."""
        for i in range(0, len(data), chunk):
            self.send(data[i : i + chunk], end=end and i + chunk >= len(data))
            await asyncio.sleep(0)
        if not data and end:
            self.send(b"", end=True)


@dataclass
class ClientSession:
    """A WebTransport session from the client's side."""

    client: WebTransportClient
    session_id: int
    response: asyncio.Future[list[tuple[bytes, bytes]]]
    incoming_bidi: asyncio.Queue[ClientStream] = field(default_factory=asyncio.Queue)
    incoming_uni: asyncio.Queue[ClientStream] = field(default_factory=asyncio.Queue)
    datagrams: asyncio.Queue[bytes] = field(default_factory=asyncio.Queue)
    closed: asyncio.Future[tuple[int, str] | None] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )
    capsule_types: list[int] = field(default_factory=list)
    _capsules: bytes = b""

    async def status(self, timeout: float = 10.0) -> int:
        """The response status."""
        headers = await asyncio.wait_for(asyncio.shield(self.response), timeout)
        return int(dict(headers)[b":status"])

    async def response_headers(self) -> dict[bytes, bytes]:
        """The response headers."""
        return dict(await asyncio.wait_for(asyncio.shield(self.response), 10))

    def open_bidi(self) -> ClientStream:
        """Opens a bidirectional stream."""
        http = self.client._http
        sid = http.create_webtransport_stream(self.session_id, is_unidirectional=False)
        # aioquic marks only peer-opened streams as WebTransport streams; without this it
        # would parse the server's replies on our own bidi stream as HTTP/3 frames.
        state = H3Stream(sid)
        state.frame_type = FrameType.WEBTRANSPORT_STREAM
        state.session_id = self.session_id
        http._stream[sid] = state
        return self.client._stream(sid, self)

    def open_uni(self) -> ClientStream:
        """Opens a unidirectional stream."""
        sid = self.client._http.create_webtransport_stream(self.session_id, is_unidirectional=True)
        return self.client._stream(sid, self)

    def send_datagram(self, data: bytes) -> None:
        """Sends one datagram."""
        self.client._http.send_datagram(self.session_id, data)
        self.client.transmit()

    def drain(self) -> None:
        """Sends DRAIN_WEBTRANSPORT_SESSION."""
        capsule = encode_uint_var(DRAIN_CAPSULE) + encode_uint_var(0)
        self.client._http.send_data(self.session_id, capsule, end_stream=False)
        self.client.transmit()

    def close(self, code: int = 0, reason: str = "") -> None:
        """Sends CLOSE_WEBTRANSPORT_SESSION and finishes the CONNECT stream."""
        payload = struct.pack("!I", code) + reason.encode()
        capsule = encode_uint_var(CLOSE_CAPSULE) + encode_uint_var(len(payload)) + payload
        self.client._http.send_data(self.session_id, capsule, end_stream=True)
        self.client.transmit()

    def _on_connect_data(self, data: bytes, ended: bool) -> None:
        self._capsules += data
        while True:
            buf = Buffer(data=self._capsules)
            try:
                ctype = buf.pull_uint_var()
                length = buf.pull_uint_var()
            except BufferReadError:
                break
            start = buf.tell()
            if len(self._capsules) < start + length:
                break
            body = self._capsules[start : start + length]
            self._capsules = self._capsules[start + length :]
            self.capsule_types.append(ctype)
            if ctype == CLOSE_CAPSULE and not self.closed.done():
                (code,) = struct.unpack("!I", body[:4])
                self.closed.set_result((code, body[4:].decode()))
        if ended and not self.closed.done():
            self.closed.set_result(None)


class WebTransportClient(QuicConnectionProtocol):
    """aioquic protocol that routes HTTP/3 and QUIC events to sessions and streams."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self._http = H3Connection(self._quic, enable_webtransport=True)
        self.sessions: dict[int, ClientSession] = {}
        self.streams: dict[int, ClientStream] = {}
        self.authority = "localhost"

    def _stream(self, sid: int, session: ClientSession) -> ClientStream:
        s = ClientStream(self, sid)
        self.streams[sid] = s
        return s

    async def session(
        self,
        path: str,
        *,
        origin: str | None = None,
        protocols: list[str] | None = None,
        headers: list[tuple[bytes, bytes]] | None = None,
    ) -> ClientSession:
        """Sends the extended CONNECT; await ``status()`` for the answer."""
        sid = self._quic.get_next_available_stream_id()
        fields = [
            (b":method", b"CONNECT"),
            (b":protocol", b"webtransport"),
            (b":scheme", b"https"),
            (b":authority", self.authority.encode()),
            (b":path", path.encode()),
            (b"sec-webtransport-http3-draft02", b"1"),
        ]
        if origin is not None:
            fields.append((b"origin", origin.encode()))
        if protocols:
            offered = ", ".join('"' + p + '"' for p in protocols)
            fields.append((b"wt-available-protocols", offered.encode()))
        fields.extend(headers or [])
        session = ClientSession(self, sid, asyncio.get_running_loop().create_future())
        self.sessions[sid] = session
        self._http.send_headers(sid, fields, end_stream=False)
        self.transmit()
        return session

    def quic_event_received(self, event: QuicEvent) -> None:
        if isinstance(event, StreamReset) and event.stream_id in self.streams:
            s = self.streams[event.stream_id]
            if not s.reset_code.done():
                s.reset_code.set_result(code_from_http3(event.error_code))
            s.data.put_nowait(None)
        elif isinstance(event, StopSendingReceived) and event.stream_id in self.streams:
            s = self.streams[event.stream_id]
            if not s.stop_code.done():
                s.stop_code.set_result(code_from_http3(event.error_code))
        elif isinstance(event, StreamReset) and event.stream_id in self.sessions:
            session = self.sessions[event.stream_id]
            if not session.closed.done():
                session.closed.set_result(None)
        for h3 in self._http.handle_event(event):
            self._h3_event(h3)

    def _h3_event(self, event: H3Event) -> None:
        if isinstance(event, HeadersReceived) and event.stream_id in self.sessions:
            session = self.sessions[event.stream_id]
            if not session.response.done():
                session.response.set_result(list(event.headers))
            if event.stream_ended:
                session._on_connect_data(b"", True)
        elif isinstance(event, DataReceived) and event.stream_id in self.sessions:
            self.sessions[event.stream_id]._on_connect_data(event.data, event.stream_ended)
        elif isinstance(event, WebTransportStreamDataReceived):
            s = self.streams.get(event.stream_id)
            if s is None:
                session = self.sessions[event.session_id]
                s = self._stream(event.stream_id, session)
                uni = bool(event.stream_id & 2)
                (session.incoming_uni if uni else session.incoming_bidi).put_nowait(s)
            if event.data:
                s.received += len(event.data)
                s.data.put_nowait(event.data)
            if event.stream_ended and not s.ended:
                s.ended = True
                s.data.put_nowait(None)
        elif isinstance(event, DatagramReceived):
            session = self.sessions.get(event.stream_id)
            if session is not None:
                session.datagrams.put_nowait(event.data)


@contextlib.asynccontextmanager
async def connect_client(
    port: int,
    host: str = "127.0.0.1",
    authority: str = "localhost",
    max_stream_data: int = 8 << 20,
) -> AsyncIterator[WebTransportClient]:
    """A connected client to ``host:port`` (certificate checks off: tests use self-signed)."""
    config = QuicConfiguration(
        alpn_protocols=H3_ALPN,
        is_client=True,
        max_datagram_frame_size=65536,
        verify_mode=ssl.CERT_NONE,
        server_name="localhost",
        max_data=32 << 20,
        max_stream_data=max_stream_data,
        idle_timeout=30.0,
    )
    async with connect(host, port, configuration=config, create_protocol=WebTransportClient) as client:
        assert isinstance(client, WebTransportClient)
        client.authority = authority
        yield client
