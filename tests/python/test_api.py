"""Argument checking, certificates and the package's typing surface."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest

import ferrovia
from conftest import Pair


@pytest.mark.parametrize(
    ("kwargs", "error", "name"),
    [
        ({"port": "4433"}, TypeError, "port"),
        ({"port": 70000}, ValueError, "port"),
        ({"port": True}, TypeError, "port"),
        ({"host": 1}, TypeError, "host"),
        ({"certificate": 123}, TypeError, "certificate"),
        ({"allowed_origins": "everyone"}, ValueError, "allowed_origins"),
        ({"allowed_origins": [1, 2]}, TypeError, "allowed_origins"),
        ({"idle_timeout": -1}, ValueError, "idle_timeout"),
        ({"idle_timeout": "30"}, TypeError, "idle_timeout"),
        ({"keep_alive": 40.0}, ValueError, "keep_alive"),
        ({"congestion_controller": "vegas"}, ValueError, "congestion_controller"),
        ({"limits": {"max_sessions": 1}}, TypeError, "limits"),
        ({"limits": ferrovia.Limits(max_sessions=-1)}, ValueError, "limits.max_sessions must be in 1.."),
        # 0 and -1 get one message, at the call.
        ({"limits": ferrovia.Limits(max_sessions=0)}, ValueError, "limits.max_sessions must be in 1.."),
        ({"limits": ferrovia.Limits(retry_threshold=-1)}, ValueError, "limits.retry_threshold must be in 0.."),
    ],
)
def test_serve_checks_arguments_at_the_call(kwargs: dict[str, Any], error: type[Exception], name: str) -> None:
    with pytest.raises(error, match=name):
        ferrovia.serve(**kwargs)


async def test_values_checked_by_the_core_name_the_field() -> None:
    with pytest.raises(ValueError, match="max_concurrent_requests"):
        await ferrovia.serve("127.0.0.1", 0, limits=ferrovia.Limits(max_concurrent_requests=2**62))
    with pytest.raises(ValueError, match="host"):
        await ferrovia.serve("not-an-ip", 0)


async def test_limits_are_applied() -> None:
    async with ferrovia.serve("127.0.0.1", 0, limits=ferrovia.Limits(max_bidi_streams=8, request_queue=4)) as s:
        assert s.port > 0


async def test_stream_and_session_arguments(pair: Pair) -> None:
    session = pair.session
    with pytest.raises(ValueError, match="code"):
        session.close(-1)
    with pytest.raises(ValueError, match="code"):
        session.close(2**32)
    with pytest.raises(TypeError, match="reason"):
        session.close(0, b"bytes")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="data"):
        await session.send_datagram("text")  # type: ignore[arg-type]
    writer = await session.open_unidirectional_stream()
    with pytest.raises(TypeError, match="data"):
        writer.write("text")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="code"):
        writer.reset(-5)
    with pytest.raises(ValueError, match="low"):
        writer.set_write_buffer_limits(high=10, low=20)
    writer.write(bytearray(b"bytearray ok"))
    writer.write(memoryview(b"memoryview ok"))
    stream = pair.remote.open_bidi()
    stream.send(b"x")
    reader, _ = await session.accept_bidirectional_stream()
    with pytest.raises(TypeError, match="n"):
        await reader.read("10")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="n"):
        await reader.readexactly(-1)
    with pytest.raises(ValueError, match="separator"):
        await reader.readuntil(b"")
    with pytest.raises(ValueError, match="code"):
        reader.stop(2**40)


async def test_reject_status_is_checked(server: ferrovia.Server) -> None:
    from wtclient import connect_client

    requests = server.requests("/x")
    async with connect_client(server.port) as client:
        s = await client.session("/x")
        request = await requests.accept()
        assert request is not None
        with pytest.raises(ValueError, match="status"):
            request.reject(200)
        with pytest.raises(TypeError, match="status"):
            request.reject("403")  # type: ignore[arg-type]
        request.reject(403)
        assert await s.status() == 403


def test_certificates(tmp_path: Path) -> None:
    cert = ferrovia.Certificate.self_signed(["localhost", "127.0.0.1"])
    assert cert.sha256() == hashlib.sha256(cert.der()).digest()
    assert cert.sha256_hex() == cert.sha256().hex()
    assert len(cert.spki_sha256_base64()) == 44
    assert "BEGIN CERTIFICATE" in cert.chain_pem()
    assert "PRIVATE KEY" in cert.key_pem()

    again = ferrovia.Certificate.from_pem(cert.chain_pem(), cert.key_pem().encode())
    assert again.sha256() == cert.sha256()
    (tmp_path / "cert.pem").write_text(cert.chain_pem())
    (tmp_path / "key.pem").write_text(cert.key_pem())
    from_files = ferrovia.Certificate.from_pem_files(tmp_path / "cert.pem", tmp_path / "key.pem")
    assert from_files.sha256_hex() == cert.sha256_hex()

    other = ferrovia.Certificate.self_signed(["localhost"])
    with pytest.raises(ferrovia.CertificateError, match="do not match"):
        ferrovia.Certificate.from_pem(cert.chain_pem(), other.key_pem())
    with pytest.raises(ferrovia.CertificateError, match="missing.pem"):
        ferrovia.Certificate.from_pem_files(tmp_path / "missing.pem", tmp_path / "key.pem")
    with pytest.raises(ferrovia.CertificateError):
        ferrovia.Certificate.from_pem("not pem", "not pem")
    with pytest.raises(TypeError, match="cert"):
        ferrovia.Certificate.from_pem(1, "x")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="names"):
        ferrovia.Certificate.self_signed([])


async def test_serve_with_pem_files_and_certificate_hashes(tmp_path: Path) -> None:
    cert = ferrovia.Certificate.self_signed(["localhost"])
    (tmp_path / "c.pem").write_text(cert.chain_pem())
    (tmp_path / "k.pem").write_text(cert.key_pem())
    async with ferrovia.serve("127.0.0.1", 0, certificate=(tmp_path / "c.pem", tmp_path / "k.pem")) as server:
        assert server.certificate_hashes == [ferrovia.CertificateHash("sha-256", cert.sha256())]
        assert server.certificate_hashes[0].hex() == cert.sha256_hex()
        fresh = ferrovia.Certificate.self_signed(["localhost"])
        server.set_certificate(fresh)
        assert server.certificate.sha256() == fresh.sha256()


def test_exception_hierarchy() -> None:
    for cls in (
        ferrovia.SessionClosedError,
        ferrovia.StreamResetError,
        ferrovia.StreamStoppedError,
        ferrovia.StreamClosedError,
        ferrovia.DatagramTooLargeError,
        ferrovia.DatagramsUnsupportedError,
        ferrovia.RequestError,
        ferrovia.CertificateError,
        ferrovia.ServerClosedError,
    ):
        assert issubclass(cls, ferrovia.WebTransportError)
    e = ferrovia.StreamResetError("reset", stream_error_code=9)
    assert (e.source, e.stream_error_code) == ("stream", 9)


def test_package_ships_typing_files() -> None:
    root = Path(ferrovia.__file__).parent
    assert (root / "py.typed").is_file()
    assert (root / "_ferrovia.pyi").is_file()
    assert all(hasattr(ferrovia, name) for name in ferrovia.__all__)
