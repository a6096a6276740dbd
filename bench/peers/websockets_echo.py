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
import datetime
import hashlib
import http
import ipaddress
import json
import os
import ssl
import tempfile

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from websockets.asyncio.server import serve


def self_signed():
    """An ECDSA P-256 certificate for localhost and 127.0.0.1, valid for 10 days."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=10))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    return cert, key


def tls_context(cert, key) -> ssl.SSLContext:
    """A server context with the certificate; ssl only loads them from files."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.set_alpn_protocols(["http/1.1"])
    with tempfile.TemporaryDirectory() as tmp:
        cert_path = os.path.join(tmp, "cert.pem")
        key_path = os.path.join(tmp, "key.pem")
        with open(cert_path, "wb") as f:
            f.write(cert.public_bytes(serialization.Encoding.PEM))
        with open(key_path, "wb") as f:
            f.write(
                key.private_bytes(
                    serialization.Encoding.PEM,
                    serialization.PrivateFormat.PKCS8,
                    serialization.NoEncryption(),
                )
            )
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
        digest = hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()
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
