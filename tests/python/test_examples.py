"""``python -m ferrovia cert`` and smoke runs of the Python examples and demo server, each
driven by the independent aioquic client as a real peer."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime
import hashlib
import json
import os
import re
import signal
import struct
import subprocess
import ssl
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

import ferrovia
from h3client import connect_h3
from wtclient import ClientSession, ClientStream, connect_client

T = TypeVar("T")

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples" / "python"


def cert_cmd(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ferrovia", "cert", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )


# ---------------------------------------------------------------------------------------
# The cert command


def test_the_readme_python_example_is_examples_python_hello_py() -> None:
    # hello.py is type-checked with mypy --strict (scripts/test-python.sh); this keeps the
    # README's copy the same program.
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"## Python\n.*?```python\n(.*?)```", readme, re.S)
    assert block is not None
    assert block.group(1) == (ROOT / "examples" / "python" / "hello.py").read_text()


def test_cert_writes_a_p256_certificate_under_14_days_and_prints_its_hashes(tmp_path: Path) -> None:
    r = cert_cmd(cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    cert = x509.load_pem_x509_certificate((tmp_path / "cert.pem").read_bytes())
    key = serialization.load_pem_private_key((tmp_path / "key.pem").read_bytes(), password=None)
    public = cert.public_key()
    assert isinstance(public, ec.EllipticCurvePublicKey) and public.curve.name == "secp256r1"
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    assert key.public_key().public_numbers() == public.public_numbers()
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(n.value) for n in san] == ["localhost", "127.0.0.1", "::1"]
    validity = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert datetime.timedelta(days=12) < validity <= datetime.timedelta(days=14)
    assert (tmp_path / "key.pem").stat().st_mode & 0o777 == 0o600

    der = cert.public_bytes(serialization.Encoding.DER)
    digest = hashlib.sha256(der).digest()
    spki = public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    spki_b64 = base64.b64encode(hashlib.sha256(spki).digest()).decode()
    out = r.stdout
    assert re.search(rf"hex\s+{digest.hex()}\n", out), out
    assert f"base64  {base64.b64encode(digest).decode()}\n" in out
    assert "new WebTransport('https://localhost:4433/', {" in out
    assert f"value: Uint8Array.from(atob('{base64.b64encode(digest).decode()}')" in out
    assert f"SHA-256 of the public key (SPKI, base64):\n  {spki_b64}\n" in out
    assert "--origin-to-force-quic-on=localhost:4433" in out
    assert f"--ignore-certificate-errors-spki-list={spki_b64}" in out


async def test_cert_options_json_and_a_server_using_the_files(tmp_path: Path) -> None:
    cert_file, key_file = tmp_path / "a" / "server.crt", tmp_path / "b" / "server.key"
    r = cert_cmd(
        "--name", "example.test", "--name=10.1.2.3", "--name", "[::2]", "--port", "9443",
        "--cert", str(cert_file), "--key", str(key_file), "--json",
    )
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert info["names"] == ["example.test", "10.1.2.3", "::2"]
    assert info["url"] == "https://example.test:9443/"
    assert info["chromeFlags"][0] == "--origin-to-force-quic-on=example.test:9443"
    assert info["validDays"] == 13
    cert = x509.load_pem_x509_certificate(cert_file.read_bytes())
    assert info["sha256Hex"] == hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()
    async with ferrovia.serve("127.0.0.1", 0, certificate=(cert_file, key_file)) as server:
        assert server.certificate.sha256_hex() == info["sha256Hex"]
        requests = server.requests("/ok")
        # The certificate names example.test, so that is the host the client asks for.
        async with connect_client(server.port, authority="example.test") as client:
            remote = await client.session("/ok")
            request = await asyncio.wait_for(requests.accept(), 10)
            assert request is not None
            await request.accept()
            assert await remote.status() == 200


def test_cert_refuses_to_overwrite_without_force(tmp_path: Path) -> None:
    assert cert_cmd("--out", str(tmp_path)).returncode == 0
    before = (tmp_path / "cert.pem").read_text()
    again = cert_cmd("--out", str(tmp_path))
    assert again.returncode == 1
    assert "cert.pem already exists; pass --force to overwrite it" in again.stderr
    assert (tmp_path / "cert.pem").read_text() == before
    forced = cert_cmd("--out", str(tmp_path), "--force")
    assert forced.returncode == 0, forced.stderr
    assert (tmp_path / "cert.pem").read_text() != before


def test_cert_unwritable_destination_fails_with_status_1(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    r = cert_cmd("--out", str(blocker / "sub"))
    assert r.returncode == 1
    assert re.match(r"ferrovia cert: cannot create the directory .*a-file/sub: Not a directory", r.stderr), r.stderr
    assert r.stdout == ""


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--bogus"], "unknown option --bogus"),
        (["--name"], "--name needs a value"),
        (["--out", "--force"], "--out needs a value"),
        (["--name", "not a host!"], '--name "not a host!" is neither a DNS name nor an IP address'),
        (["--name", "a..b"], '--name "a..b" is neither a DNS name nor an IP address'),
        (["--port", "0"], '--port must be a number from 1 to 65535, got "0"'),
        (["--port", "70000"], '--port must be a number from 1 to 65535, got "70000"'),
        (["--port", "http"], '--port must be a number from 1 to 65535, got "http"'),
        (["--force=yes"], "--force takes no value"),
        (["extra"], 'unexpected argument "extra"'),
        (["--cert", "same.pem", "--key", "same.pem"], "--cert and --key must be different files"),
    ],
)
def test_cert_usage_errors_exit_2_and_write_nothing(tmp_path: Path, args: list[str], message: str) -> None:
    r = cert_cmd(*args, cwd=tmp_path)
    assert r.returncode == 2
    assert message in r.stderr
    assert "Run `python -m ferrovia cert --help` for usage." in r.stderr
    assert list(tmp_path.iterdir()) == []


def test_cert_help_and_unknown_commands() -> None:
    helped = cert_cmd("--help")
    assert helped.returncode == 0
    assert helped.stdout.startswith("Usage: python -m ferrovia cert [options]")
    none = subprocess.run([sys.executable, "-m", "ferrovia"], capture_output=True, text=True, timeout=60)
    assert none.returncode == 2
    assert none.stderr.startswith("Usage: python -m ferrovia <command>")
    unknown = subprocess.run([sys.executable, "-m", "ferrovia", "certs"], capture_output=True, text=True, timeout=60)
    assert unknown.returncode == 2
    assert unknown.stderr.startswith('ferrovia: unknown command "certs"')


# ---------------------------------------------------------------------------------------
# Example programs


class Program:
    """A running example: its JSON-lines (or text) stdout, read as it arrives."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.lines: list[str] = []
        self.changed = asyncio.Event()
        self.reader = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        while line := await self.proc.stdout.readline():
            self.lines.append(line.decode().rstrip("\n"))
            self.changed.set()
        self.changed.set()

    def events(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.lines if line.startswith("{")]

    async def _first(self, pick: Callable[[], T | None], what: str, timeout: float) -> T:
        async def find() -> T:
            while True:
                found = pick()
                if found is not None:
                    return found
                if self.reader.done():
                    raise AssertionError(f"exited before {what}: {self.lines}")
                self.changed.clear()
                await self.changed.wait()

        try:
            return await asyncio.wait_for(find(), timeout)
        except asyncio.TimeoutError:
            raise AssertionError(f"no {what} in {timeout} s: {self.lines}") from None

    async def line(self, pattern: str, timeout: float = 15.0) -> re.Match[str]:
        """The first output line matching ``pattern``."""
        return await self._first(
            lambda: next((m for line in self.lines if (m := re.search(pattern, line))), None),
            f"a line matching {pattern!r}",
            timeout,
        )

    async def event(self, timeout: float = 15.0, **fields: object) -> dict[str, Any]:
        """The first JSON event with these field values."""
        return await self._first(
            lambda: next((e for e in self.events() if all(e.get(k) == v for k, v in fields.items())), None),
            f"an event {fields}",
            timeout,
        )


@contextlib.asynccontextmanager
async def program(script: Path, *args: str, command: list[str] | None = None) -> AsyncIterator[Program]:
    argv = [*(command or [sys.executable, str(script)]), *args]
    proc = await asyncio.create_subprocess_exec(*argv, stdout=asyncio.subprocess.PIPE, cwd=ROOT)
    p = Program(proc)
    try:
        yield p
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), 10)
            except asyncio.TimeoutError:
                proc.kill()
                await proc.wait()
        await p.reader


def example(name: str, *args: str) -> contextlib.AbstractAsyncContextManager[Program]:
    return program(EXAMPLES / f"{name}.py", "--port", "0", *args)


async def read_uni(session: ClientSession, timeout: float = 10.0) -> bytes:
    stream: ClientStream = await asyncio.wait_for(session.incoming_uni.get(), timeout)
    return await stream.read_all(timeout)


async def test_chat_example_broadcasts_between_two_clients() -> None:
    async with example("chat") as chat:
        port = (await chat.event(event="listening"))["port"]
        async with connect_client(port) as a, connect_client(port) as b:
            ann = await a.session("/chat?name=ann")
            assert await ann.status() == 200
            assert await read_uni(ann) == b"* ann joined"
            bob = await b.session("/chat?name=bob")
            assert await bob.status() == 200
            assert await read_uni(ann) == b"* bob joined"
            assert await read_uni(bob) == b"* bob joined"
            ann.open_uni().send("hi bob ✓".encode(), end=True)
            assert (await read_uni(bob)).decode() == "ann: hi bob ✓"
            assert (await read_uni(ann)).decode() == "ann: hi bob ✓"
            await chat.event(event="message", name="ann", text="hi bob ✓")
            bob.close(9, "bye")
            left = await chat.event(event="leave", name="bob")
            assert (left["code"], left["reason"]) == (9, "bye")
            assert await read_uni(ann) == b"* bob left"


CHAT_PROGRAMS = {
    "python": [sys.executable, str(EXAMPLES / "chat.py")],
    "node": ["node", str(ROOT / "examples" / "node" / "chat.mjs")],
    "rust": [str(ROOT / "target" / "debug" / "examples" / "chat")],
}


class _FrozenLimit:
    """A QUIC stream limit that stays where it is: the peer gets no more stream credit."""

    def __init__(self, limit: Any) -> None:
        self.frame_type, self.name, self.used = limit.frame_type, limit.name, limit.used
        self.sent = self._value = limit.value

    @property
    def value(self) -> int:
        return self._value

    @value.setter
    def value(self, _: int) -> None:
        pass


@pytest.mark.parametrize("lang", sorted(CHAT_PROGRAMS))
async def test_chat_example_closes_a_member_that_takes_no_more_lines(lang: str) -> None:
    # Bob never lets the server open another stream once his first budget is spent; without
    # a bound, each line said afterwards would leave one more delivery waiting for him.
    if lang == "rust" and not Path(CHAT_PROGRAMS["rust"][0]).exists():
        pytest.fail("build the Rust examples first: cargo build -p ferrovia --examples")
    async with program(Path(), "--port", "0", command=CHAT_PROGRAMS[lang]) as chat:
        port = (await chat.event(event="listening"))["port"]
        async with connect_client(port) as a, connect_client(port) as b:
            ann = await a.session("/chat?name=ann")
            assert await ann.status() == 200
            assert await read_uni(ann) == b"* ann joined"
            b._quic._local_max_streams_uni = _FrozenLimit(b._quic._local_max_streams_uni)  # type: ignore[assignment]
            bob = await b.session("/chat?name=bob")
            assert await bob.status() == 200
            assert await read_uni(ann) == b"* bob joined"
            # 128 streams of credit (3 go to HTTP/3's own streams), then 64 waiting lines.
            sent = 260
            for i in range(sent):
                ann.open_uni().send(f"line {i}".encode(), end=True)
                if i % 16 == 15:
                    await asyncio.sleep(0.05)
            left = await chat.event(event="leave", name="bob", timeout=30)
            assert left["code"] == 1, left
            assert "too slow" in left["reason"], left
            # Ann, who reads, got every line and bob's leave (streams: in any order).
            got = {(await read_uni(ann)).decode() for _ in range(sent + 1)}
            assert got == {f"ann: line {i}" for i in range(sent)} | {"* bob left"}


async def test_gamestate_example_moves_the_player_from_datagram_input() -> None:
    async with example("gamestate", "--tick-hz", "30") as game:
        port = (await game.event(event="listening"))["port"]
        async with connect_client(port) as client:
            session = await client.session("/game")
            assert await session.status() == 200
            player = json.loads(await read_uni(session))["id"]
            await game.event(event="join", id=player)
            states: list[tuple[int, dict[int, tuple[int, int, int]]]] = []
            for seq in range(1, 41):
                session.send_datagram(struct.pack("!Ibb", seq, -1, 1))  # left and down
                await asyncio.sleep(0.03)
                while not session.datagrams.empty():
                    data = session.datagrams.get_nowait()
                    tick, count = struct.unpack_from("!IH", data)
                    players = {}
                    for i in range(count):
                        pid, x, y, last = struct.unpack_from("!IhhI", data, 6 + 14 * i)
                        players[pid] = (x, y, last)
                    states.append((tick, players))
            assert len(states) >= 20, len(states)
            ticks = [t for t, _ in states]
            assert ticks == sorted(set(ticks)), "one datagram per tick, in order on loopback"
            first = next(p[player] for _, p in states if player in p)
            last = states[-1][1][player]
            assert first[0] - last[0] >= 100 and last[1] - first[1] >= 100, (first, last)
            assert 20 <= last[2] <= 40
            session.close(3, "game over")
            left = await game.event(event="leave", id=player)
            assert left["code"] == 3


async def upload(session: ClientSession, data: bytes, claimed: str, name: str) -> list[str]:
    stream = session.open_bidi()
    header = f"{len(data)} {claimed} {name}\n".encode()
    await stream.write_all(header + data)
    return (await stream.read_all(30)).decode().splitlines()


async def test_upload_example_reports_progress_and_checks_integrity(tmp_path: Path) -> None:
    async with example("upload", "--dir", str(tmp_path)) as server:
        listening = await server.event(event="listening")
        assert Path(listening["dir"]) == tmp_path.resolve()
        async with connect_client(listening["port"]) as client:
            session = await client.session("/upload")
            assert await session.status() == 200
            data = os.urandom(3 * 1024 * 1024 + 17)
            sha = hashlib.sha256(data).hexdigest()
            lines = await upload(session, data, sha, "../../etc/report 1.bin")
            progress = [int(line.split()[1]) for line in lines if line.startswith("progress ")]
            assert len(progress) >= 3 and progress[-1] == len(data)
            assert all(a < b for a, b in zip(progress, progress[1:])), progress
            assert lines[-1] == f"ok {len(data)} {sha}"
            stored = await server.event(event="upload", ok=True)
            assert stored["name"] == "report_1.bin"
            assert hashlib.sha256((tmp_path / "report_1.bin").read_bytes()).hexdigest() == sha

            small = os.urandom(100_000)
            wrong = hashlib.sha256(b"something else").hexdigest()
            lines = await upload(session, small, wrong, "bad.bin")
            actual = hashlib.sha256(small).hexdigest()
            assert lines[-1] == f"error checksum mismatch: received data has SHA-256 {actual}"
            await server.event(event="upload", ok=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report_1.bin"]


# ---------------------------------------------------------------------------------------
# The demo server


async def test_python_demo_serves_the_page_and_the_session_protocol() -> None:
    async with program(ROOT / "examples" / "demo" / "server.py", "--port", "0") as demo:
        page = (await demo.line(r"Open\s+(https://localhost:\d+/)"))[1]
        port = int((await demo.line(r"WebTransport\s+https://localhost:(\d+)/demo"))[1])
        digest = (await demo.line(r"SHA-256\s+([0-9a-f]{64})"))[1]
        assert page == f"https://localhost:{port}/"

        # The page comes from the same port over TCP (HTTP/2, as a browser asks) and over
        # HTTP/3, with the certificate whose hash the page hands to WebTransport.
        async with httpx.AsyncClient(http2=True, verify=False) as web:
            html, config = await asyncio.gather(web.get(page), web.get(page + "config.json"))
            assert html.http_version == "HTTP/2"
            missing = await web.get(page + "no-such-file")
            assert missing.status_code == 404
            client_js = await web.get(page + "client.js")
            assert client_js.content == ferrovia.client_js_path().read_bytes()
            post = await web.post(page, content=b"x")
            assert post.status_code == 405
        assert b'<script type="module" src="demo.js">' in html.content
        assert html.headers["alt-svc"] == f'h3=":{port}"; ma=86400'
        assert config.json() == {"port": port, "path": "/demo", "certificateHash": digest, "server": config.json()["server"]}
        async with connect_h3(port) as h3:
            _, response = h3.request("GET", "/", f"localhost:{port}")
            assert await response.status() == 200
            assert await response.body() == html.content
        der = await asyncio.to_thread(lambda: ssl.get_server_certificate(("127.0.0.1", port)))
        assert hashlib.sha256(ssl.PEM_cert_to_DER_cert(der)).hexdigest() == digest

        async with connect_client(port) as client:
            session = await client.session("/demo")
            assert await session.status() == 200
            feed = await asyncio.wait_for(session.incoming_uni.get(), 10)
            pending = b""

            async def message(kind: str) -> dict[str, Any]:
                nonlocal pending
                while True:
                    while b"\n" in pending:
                        line, pending = pending.split(b"\n", 1)
                        m = json.loads(line)
                        if m["type"] == kind:
                            return dict(m)
                    chunk = await asyncio.wait_for(feed.data.get(), 10)
                    assert chunk is not None, "the feed ended"
                    pending += chunk

            hello = await message("hello")
            await demo.line(rf"open\s+{hello['name']} from a non-browser client")

            echo = session.open_bidi()
            await echo.write_all(b"echo me")
            assert await echo.read_all(10) == b"echo me"

            session.open_uni().send(b"hello room", end=True)
            chat = await message("chat")
            assert (chat["id"], chat["text"]) == (hello["id"], "hello room")

            stats = await message("stats")
            assert stats["rtt"] > 0 and stats["bytesSent"] > 0

            session.send_datagram(struct.pack("!IHH", 1, 100, 200))
            relayed = await asyncio.wait_for(session.datagrams.get(), 10)
            assert relayed == struct.pack("!IIHH", hello["id"], 1, 100, 200)

            session.close(4000, "close button")
            await demo.line(rf'closed\s+{hello["name"]} by the browser: code 4000, reason "close button"')

        demo.proc.send_signal(signal.SIGINT)
        assert await asyncio.wait_for(demo.proc.wait(), 10) == 0
        await demo.line("stopped")
