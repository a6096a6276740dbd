"""The ``python -m ferrovia`` command line.

``python -m ferrovia cert`` writes a self-signed certificate a browser accepts through
``serverCertificateHashes`` and prints what is needed to use it. Options, messages and exit
codes match ``npx ferrovia cert``, so the docs describe one command for both packages.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import ipaddress
import json
import os
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

DEFAULT_NAMES = ("localhost", "127.0.0.1", "::1")
USAGE_EXIT = 2
FAILURE_EXIT = 1

HELP = """Usage: python -m ferrovia cert [options]

Writes a self-signed ECDSA P-256 certificate (valid 13 days: browsers accept at most 14
for serverCertificateHashes) and its private key, then prints the certificate's SHA-256
(hex, base64 and as a serverCertificateHashes snippet), the SHA-256 of its public key
and the matching Chrome flags.

Options:
  --name NAME    DNS name or IP address to certify; repeat for several
                 (default: localhost, 127.0.0.1, ::1)
  --out DIR      directory for cert.pem and key.pem (default: the current directory;
                 created if missing)
  --cert FILE    certificate path (default: DIR/cert.pem)
  --key FILE     private key path (default: DIR/key.pem)
  --port PORT    UDP port shown in the snippet and the Chrome flags (default: 4433)
  --force        overwrite existing files
  --json         print one JSON object instead of text
  -h, --help     show this help
"""

TOP_HELP = """Usage: python -m ferrovia <command> [options]

Commands:
  cert    write a self-signed certificate and key, print its hashes

Run `python -m ferrovia cert --help` for the options.
"""


class UsageError(Exception):
    """A wrong command line: reported with a pointer to --help and exit status 2."""


_DNS_LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$", re.IGNORECASE)


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def _check_name(raw: str) -> str:
    name = raw[1:-1] if raw.startswith("[") and raw.endswith("]") else raw
    if _is_ip(name):
        return name
    labels = (name[2:] if name.startswith("*.") else name).split(".")
    if 0 < len(name) <= 253 and all(_DNS_LABEL.match(label) for label in labels):
        return name.lower()
    raise UsageError(f"--name {json.dumps(raw)} is neither a DNS name nor an IP address")


@dataclass
class Options:
    names: list[str] = field(default_factory=list)
    out: str = "."
    cert: str | None = None
    key: str | None = None
    port: int = 4433
    force: bool = False
    json: bool = False
    help: bool = False


def _parse(argv: Sequence[str]) -> Options:
    opts = Options()
    i = 0
    while i < len(argv):
        arg = argv[i]
        flag, inline = arg, None
        if arg.startswith("--") and "=" in arg:
            flag, inline = arg.split("=", 1)

        def value() -> str:
            nonlocal i
            if inline is not None:
                return inline
            if i + 1 >= len(argv) or argv[i + 1].startswith("--"):
                raise UsageError(f"{flag} needs a value")
            i += 1
            return argv[i]

        def no_value() -> None:
            if inline is not None:
                raise UsageError(f"{flag} takes no value")

        if flag == "--name":
            opts.names.append(_check_name(value()))
        elif flag == "--out":
            opts.out = value()
        elif flag == "--cert":
            opts.cert = value()
        elif flag == "--key":
            opts.key = value()
        elif flag == "--port":
            v = value()
            if not (v.isascii() and v.isdigit() and 1 <= int(v) <= 65535):
                raise UsageError(f"--port must be a number from 1 to 65535, got {json.dumps(v)}")
            opts.port = int(v)
        elif flag == "--force":
            no_value()
            opts.force = True
        elif flag == "--json":
            no_value()
            opts.json = True
        elif flag in ("-h", "--help"):
            opts.help = True
        elif arg.startswith("-"):
            raise UsageError(f"unknown option {arg}")
        else:
            raise UsageError(f"unexpected argument {json.dumps(arg)}")
        i += 1
    if not opts.names:
        opts.names = list(DEFAULT_NAMES)
    opts.cert = opts.cert if opts.cert is not None else os.path.join(opts.out, "cert.pem")
    opts.key = opts.key if opts.key is not None else os.path.join(opts.out, "key.pem")
    if os.path.abspath(opts.cert) == os.path.abspath(opts.key):
        raise UsageError("--cert and --key must be different files")
    return opts


def _der_item(data: bytes, pos: int) -> tuple[int, int, int]:
    """(tag, start of contents, end of contents) of the DER element at ``pos``."""
    tag = data[pos]
    length = data[pos + 1]
    start = pos + 2
    if length & 0x80:
        count = length & 0x7F
        length = int.from_bytes(data[start : start + count], "big")
        start += count
    return tag, start, start + length


def _der_children(data: bytes, start: int, end: int) -> list[tuple[int, int, int, int]]:
    """(tag, element start, contents start, end) of each element in ``data[start:end]``."""
    out = []
    while start < end:
        tag, body, stop = _der_item(data, start)
        out.append((tag, start, body, stop))
        start = stop
    return out


def _der_time(tag: int, raw: bytes) -> datetime.datetime:
    text = raw.decode("ascii").rstrip("Z")
    fmt = "%y%m%d%H%M%S" if tag == 0x17 else "%Y%m%d%H%M%S"
    return datetime.datetime.strptime(text, fmt).replace(tzinfo=datetime.timezone.utc)


def _inspect(der: bytes) -> tuple[datetime.datetime, datetime.datetime, bytes]:
    """notBefore, notAfter and the DER SubjectPublicKeyInfo of an X.509 certificate."""
    _, body, end = _der_item(der, 0)
    _, tbs_body, tbs_end = _der_item(der, body)
    fields = _der_children(der, tbs_body, tbs_end)
    if fields[0][0] == 0xA0:  # the explicit version tag is optional (v1)
        fields = fields[1:]
    validity, spki = fields[3], fields[5]
    (t1, _, b1, e1), (t2, _, b2, e2) = _der_children(der, validity[2], validity[3])
    return _der_time(t1, der[b1:e1]), _der_time(t2, der[b2:e2]), der[spki[1] : spki[3]]


def _iso(moment: datetime.datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _url_host(names: Sequence[str]) -> str:
    host = next((n for n in names if not _is_ip(n)), names[0])
    if host.startswith("*."):
        host = "www." + host[2:]
    return f"[{host}]" if ":" in host else host


def _describe(opts: Options, der: bytes) -> dict[str, Any]:
    not_before, not_after, spki = _inspect(der)
    authority = f"{_url_host(opts.names)}:{opts.port}"
    digest = hashlib.sha256(der).digest()
    b64 = base64.b64encode(digest).decode()
    spki_b64 = base64.b64encode(hashlib.sha256(spki).digest()).decode()
    snippet = "\n".join(
        [
            f"const transport = new WebTransport('https://{authority}/', {{",
            "  serverCertificateHashes: [{",
            "    algorithm: 'sha-256',",
            f"    value: Uint8Array.from(atob('{b64}'), (c) => c.charCodeAt(0)),",
            "  }],",
            "});",
        ]
    )
    return {
        "certFile": opts.cert,
        "keyFile": opts.key,
        "names": opts.names,
        "notBefore": _iso(not_before),
        "notAfter": _iso(not_after),
        "validDays": round((not_after - not_before).total_seconds() / 86400),
        "sha256Hex": digest.hex(),
        "sha256Base64": b64,
        "spkiSha256Base64": spki_b64,
        "url": f"https://{authority}/",
        "snippet": snippet,
        "chromeFlags": [
            f"--origin-to-force-quic-on={authority}",
            f"--ignore-certificate-errors-spki-list={spki_b64}",
        ],
    }


def _report(info: dict[str, Any]) -> str:
    snippet = "\n".join("  " + line for line in info["snippet"].splitlines())
    flags = " \\\n    ".join(info["chromeFlags"])
    return f"""Wrote a self-signed ECDSA P-256 certificate for {', '.join(info['names'])}
  certificate  {info['certFile']}
  private key  {info['keyFile']}  (keep it private)
  valid        {info['notBefore']} to {info['notAfter']} ({info['validDays']} days; browsers accept at most 14)

SHA-256 of the certificate:
  hex     {info['sha256Hex']}
  base64  {info['sha256Base64']}

In the page (serverCertificateHashes):
{snippet}

SHA-256 of the public key (SPKI, base64):
  {info['spkiSha256Base64']}

Chrome flags to trust it without serverCertificateHashes (e.g. from an https page):
  {flags}

Browsers accept a certificate through serverCertificateHashes for at most 14 days:
run this command again before {info['notAfter'][:10]}.
"""


def _write(opts: Options, cert_pem: str, key_pem: str) -> None:
    assert opts.cert is not None and opts.key is not None
    for path in (opts.cert, opts.key):
        if not opts.force and os.path.exists(path):
            raise OSError(f"{path} already exists; pass --force to overwrite it")
    for path in (opts.cert, opts.key):
        directory = os.path.dirname(path) or "."
        try:
            os.makedirs(directory, exist_ok=True)
        except OSError as e:
            raise OSError(f"cannot create the directory {directory}: {e.strerror or e}") from e
    try:
        with open(opts.cert, "w", encoding="ascii") as f:
            f.write(cert_pem)
        # The key is a secret: readable by its owner only, even when overwriting a looser file.
        fd = os.open(opts.key, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="ascii") as f:
            f.write(key_pem)
        os.chmod(opts.key, 0o600)
    except OSError as e:
        raise OSError(f"cannot write {e.filename or 'the files'}: {e.strerror or e}") from e


def _cert(argv: Sequence[str]) -> int:
    opts = _parse(argv)
    if opts.help:
        sys.stdout.write(HELP)
        return 0
    # Imported here so that --help and argument errors work even without the native module.
    from . import Certificate

    certificate = Certificate.self_signed(opts.names)
    _write(opts, certificate.chain_pem(), certificate.key_pem())
    info = _describe(opts, certificate.der())
    sys.stdout.write(json.dumps(info, indent=2) + "\n" if opts.json else _report(info))
    return 0


def main(argv: Sequence[str]) -> int:
    """Runs the command line ``argv`` (without the program name); returns the exit status."""
    command, rest = (argv[0], argv[1:]) if argv else (None, [])
    try:
        if command is None:
            sys.stderr.write(TOP_HELP)
            return USAGE_EXIT
        if command in ("-h", "--help", "help"):
            sys.stdout.write(TOP_HELP)
            return 0
        if command == "cert":
            return _cert(rest)
        raise UsageError(f"unknown command {json.dumps(command)}")
    except UsageError as e:
        where = "python -m ferrovia cert" if command == "cert" else "python -m ferrovia"
        sys.stderr.write(f"{where.replace('python -m ', '')}: {e}\nRun `{where} --help` for usage.\n")
        return USAGE_EXIT
    except OSError as e:
        sys.stderr.write(f"ferrovia {command}: {e}\n")
        return FAILURE_EXIT
