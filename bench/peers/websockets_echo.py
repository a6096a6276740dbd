"""WebSocket echo server on the websockets library, a peer for the Ferrovia benchmarks.

    python3 bench/peers/websockets_echo.py --port 0 --host 127.0.0.1

Same contract as every server in the suite: the first stdout line is
{"event":"listening","port":P,"certificateHash":HEX}. It serves TLS on TCP (the standard
library's ssl module, ALPN http/1.1, a fresh self-signed ECDSA P-256 certificate) and takes
a WebSocket (RFC 6455) on /ws, echoing every text and binary message with the echo handler
of websockets' documentation (``async for message in websocket: await
websocket.send(message)``) on its asyncio implementation. It has no WebTransport and no
QMux; websockets' settings stay at their defaults, as a user would run it.
"""

import argparse
import asyncio
import http
import json
import ssl
import tempfile

from self_signed import self_signed, sha256_hex, write_pem
from websockets.asyncio.server import serve


def tls_context(cert, key) -> ssl.SSLContext:
    """A server context with the certificate; ssl only loads them from files."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.set_alpn_protocols(["http/1.1"])
    with tempfile.TemporaryDirectory() as tmp:
        cert_path, key_path = write_pem(cert, key, tmp)
        context.load_cert_chain(cert_path, key_path)
    return context


async def echo(websocket):
    async for message in websocket:
        await websocket.send(message)


def only_ws(connection, request):
    if request.path != "/ws":
        return connection.respond(http.HTTPStatus.NOT_FOUND, "Not Found\n")
    return None


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=4433)
    parser.add_argument("--host", default="127.0.0.1")
    args = parser.parse_args()

    cert, key = self_signed()
    context = tls_context(cert, key)
    # asyncio sets TCP_NODELAY on every TCP transport, as the Ferrovia core does.
    async with serve(
        echo, args.host, args.port, ssl=context, process_request=only_ws
    ) as server:
        port = server.sockets[0].getsockname()[1]
        digest = sha256_hex(cert)
        print(
            json.dumps({"event": "listening", "port": port, "certificateHash": digest}),
            flush=True,
        )
        await server.serve_forever()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass
