"""One ASGI application for the HTTP benchmarks, hosted by Ferrovia, uvicorn or Hypercorn.

    python bench/peers/asgi_json.py --with ferrovia|uvicorn|hypercorn|granian --port 0 --host 127.0.0.1

``app`` is a minimal raw ASGI 3 application: ``GET /json`` answers ``{"message":"hello"}``
(``content-type: application/json``, serialized per request), anything else 404, and it
completes the lifespan protocol. The same object runs on each host, so the hosts are all
that differs:

- ``ferrovia``: the Ferrovia Python package, ``ferrovia.serve(host, port, app=app)``:
  HTTP/3 on UDP, HTTP/2 and HTTP/1.1 on TCP at the same port.
- ``uvicorn``: uvicorn with TLS (HTTP/1.1 only; its httptools parser when installed,
  which bench/requirements.txt does), access log off.
- ``hypercorn``: Hypercorn with TLS (ALPN h2 and http/1.1) and, on UDP at the same port
  number, HTTP/3 through aioquic (``quic_bind``, the ``--quic-bind`` option).
- ``granian``: Granian as its command line runs it (``granian --interface asgi --http auto``
  with TLS, one worker process, its default loop, which is asyncio when neither rloop nor
  uvloop is installed), started as a child that dies with this process.

Each runs on the standard asyncio event loop, one process, settings at their defaults
otherwise. Same contract as every server in the suite: the first stdout line is
``{"event":"listening","port":P,"certificateHash":HEX}``; the sockets are bound and
listening before it is printed.
"""

import argparse
import asyncio
import json
import socket
import tempfile

from self_signed import self_signed, sha256_hex, write_pem


async def app(scope, receive, send):
    if scope["type"] == "http":
        if scope["method"] == "GET" and scope["path"] == "/json":
            body = json.dumps({"message": "hello"}, separators=(",", ":")).encode()
            headers = [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ]
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            await send({"type": "http.response.body", "body": body})
        else:
            await send({"type": "http.response.start", "status": 404, "headers": []})
            await send({"type": "http.response.body", "body": b""})
    elif scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return


def announce(port: int, certificate_hash: str) -> None:
    print(
        json.dumps({"event": "listening", "port": port, "certificateHash": certificate_hash}),
        flush=True,
    )


def tcp_socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # The Ferrovia core sets TCP_NODELAY on its TCP side too (asyncio does on every
    # connection it makes from this socket as well).
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind((host, port))
    sock.listen(1024)
    return sock


async def with_ferrovia(host: str, port: int) -> None:
    import ferrovia

    certificate = ferrovia.Certificate.self_signed(["localhost", "127.0.0.1"])
    async with ferrovia.serve(host, port, certificate=certificate, app=app) as server:
        announce(server.port, certificate.sha256_hex())
        await asyncio.Event().wait()


async def with_uvicorn(host: str, port: int) -> None:
    import uvicorn

    cert, key = self_signed()
    with tempfile.TemporaryDirectory() as tmp:
        cert_path, key_path = write_pem(cert, key, tmp)
        sock = tcp_socket(host, port)
        config = uvicorn.Config(
            app,
            ssl_certfile=cert_path,
            ssl_keyfile=key_path,
            lifespan="on",
            access_log=False,
            log_level="warning",
        )
        announce(sock.getsockname()[1], sha256_hex(cert))
        await uvicorn.Server(config).serve(sockets=[sock])


async def with_hypercorn(host: str, port: int) -> None:
    from hypercorn.asyncio import serve
    from hypercorn.config import Config

    cert, key = self_signed()
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # TCP and UDP on the same port number, as the other servers have them: take a free
    # TCP port, then the UDP port of the same number (another if that one is taken).
    for _ in range(20):
        tcp = tcp_socket(host, port)
        udp = socket.socket(family, socket.SOCK_DGRAM)
        try:
            udp.bind((host, tcp.getsockname()[1]))
            break
        except OSError:
            tcp.close()
            udp.close()
            if port != 0:
                raise
    else:
        raise OSError("no port free on both TCP and UDP")
    with tempfile.TemporaryDirectory() as tmp:
        config = Config()
        config.certfile, config.keyfile = write_pem(cert, key, tmp)
        config.bind = [f"fd://{tcp.fileno()}"]
        config.quic_bind = [f"fd://{udp.fileno()}"]
        config.loglevel = "WARNING"
        announce(tcp.getsockname()[1], sha256_hex(cert))
        await serve(app, config)


async def with_granian(host: str, port: int) -> None:
    import ctypes
    import os
    import signal
    import subprocess
    import sys

    cert, key = self_signed()
    if port == 0:
        # Granian cannot report a port it chose: take a free one and hand it over.
        probe = tcp_socket(host, 0)
        port = probe.getsockname()[1]
        probe.close()

    def die_with_parent() -> None:
        # The load generator kills this process with SIGKILL; Granian's supervisor gets
        # SIGTERM then and stops its worker, so nothing is left behind.
        ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG

    with tempfile.TemporaryDirectory() as tmp:
        cert_path, key_path = write_pem(cert, key, tmp)
        child = subprocess.Popen(
            [sys.executable, "-m", "granian", "--interface", "asgi", "--http", "auto",
             "--host", host, "--port", str(port), "--workers", "1",
             "--ssl-certificate", cert_path, "--ssl-keyfile", key_path,
             "--log-level", "warning", "--working-dir", os.path.dirname(os.path.abspath(__file__)),
             "asgi_json:app"],
            preexec_fn=die_with_parent,
        )
        try:
            # Announce once the port takes connections (the worker answers them when ready).
            for _ in range(200):
                if child.poll() is not None:
                    raise SystemExit(f"granian exited with {child.returncode}")
                try:
                    socket.create_connection((host, port), timeout=0.1).close()
                    break
                except OSError:
                    await asyncio.sleep(0.05)
            else:
                raise SystemExit("granian did not listen within 10 s")
            announce(port, sha256_hex(cert))
            while child.poll() is None:
                await asyncio.sleep(0.5)
        finally:
            if child.poll() is None:
                child.terminate()
                child.wait()


HOSTS = {
    "ferrovia": with_ferrovia,
    "uvicorn": with_uvicorn,
    "hypercorn": with_hypercorn,
    "granian": with_granian,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--with", dest="host_with", choices=sorted(HOSTS), required=True)
    parser.add_argument("--port", type=int, default=4433)
    parser.add_argument("--host", default="127.0.0.1")
    args = parser.parse_args()
    try:
        asyncio.run(HOSTS[args.host_with](args.host.strip("[]"), args.port))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
