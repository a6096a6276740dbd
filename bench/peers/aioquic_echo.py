"""WebTransport echo server on aioquic, a peer for the Ferrovia benchmarks.

    python3 bench/peers/aioquic_echo.py --port 0 --host 127.0.0.1

Same contract as every server in the suite: the first stdout line is
{"event":"listening","port":P,"certificateHash":HEX}; on /echo it echoes bidirectional
streams, unidirectional streams (on a new unidirectional stream) and datagrams.
aioquic's transport settings stay at their defaults, as a user would run it.
"""

import argparse
import asyncio
import json
import sys

from aioquic.asyncio import QuicConnectionProtocol, serve
from aioquic.h3.connection import H3_ALPN, H3Connection
from aioquic.h3.events import (
    DatagramReceived,
    HeadersReceived,
    WebTransportStreamDataReceived,
)
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.events import ProtocolNegotiated, QuicEvent
from self_signed import self_signed, sha256_hex


def is_bidi(stream_id: int) -> bool:
    return stream_id & 2 == 0


class EchoProtocol(QuicConnectionProtocol):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._http = None
        self._sessions = set()
        # Unidirectional streams are echoed whole once they end.
        self._uni = {}

    def quic_event_received(self, event: QuicEvent) -> None:
        if isinstance(event, ProtocolNegotiated):
            self._http = H3Connection(self._quic, enable_webtransport=True)
        if self._http is None:
            return
        for h3_event in self._http.handle_event(event):
            self._h3_event(h3_event)
        self.transmit()

    def _h3_event(self, event) -> None:
        if isinstance(event, HeadersReceived):
            headers = dict(event.headers)
            if (
                headers.get(b":method") == b"CONNECT"
                and headers.get(b":protocol") in (b"webtransport", b"webtransport-h3")
                and headers.get(b":path", b"").split(b"?")[0] == b"/echo"
            ):
                self._sessions.add(event.stream_id)
                self._http.send_headers(
                    event.stream_id,
                    [(b":status", b"200"), (b"sec-webtransport-http3-draft", b"draft02")],
                )
            else:
                self._http.send_headers(event.stream_id, [(b":status", b"404")], end_stream=True)
        elif isinstance(event, WebTransportStreamDataReceived):
            if is_bidi(event.stream_id):
                self._quic.send_stream_data(event.stream_id, event.data, end_stream=event.stream_ended)
            else:
                buf = self._uni.setdefault(event.stream_id, bytearray())
                buf += event.data
                if event.stream_ended:
                    data = bytes(self._uni.pop(event.stream_id))
                    out = self._http.create_webtransport_stream(event.session_id, is_unidirectional=True)
                    self._quic.send_stream_data(out, data, end_stream=True)
        elif isinstance(event, DatagramReceived):
            if event.stream_id in self._sessions:
                self._http.send_datagram(event.stream_id, event.data)


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=4433)
    parser.add_argument("--host", default="127.0.0.1")
    args = parser.parse_args()

    cert, key = self_signed()
    config = QuicConfiguration(is_client=False, alpn_protocols=H3_ALPN, max_datagram_frame_size=65536)
    config.certificate = cert
    config.private_key = key
    server = await serve(args.host, args.port, configuration=config, create_protocol=EchoProtocol)
    port = server._transport.get_extra_info("sockname")[1]
    digest = sha256_hex(cert)
    print(json.dumps({"event": "listening", "port": port, "certificateHash": digest}), flush=True)
    await asyncio.Future()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        sys.exit(0)
