"""TLS certificates: self-signed ones browsers accept by hash, or PEM files."""

from __future__ import annotations

import os
from collections.abc import Sequence

from . import _ferrovia
from ._check import StrPath


class Certificate:
    """A TLS certificate chain with its private key."""

    __slots__ = ("_inner",)

    def __init__(self, inner: _ferrovia.Certificate) -> None:
        """Wraps a native certificate; use the class methods to make one."""
        self._inner = inner

    @classmethod
    def self_signed(cls, names: Sequence[str] = ("localhost", "127.0.0.1", "::1")) -> Certificate:
        """A fresh ECDSA P-256 certificate valid for 13 days, as browsers require for
        ``serverCertificateHashes``. ``names`` are DNS names or IP addresses."""
        if isinstance(names, str) or not all(isinstance(n, str) for n in names):
            raise TypeError("names must be a sequence of str")
        return cls(_ferrovia.Certificate.self_signed(list(names)))

    @classmethod
    def from_pem(cls, cert: str | bytes, key: str | bytes) -> Certificate:
        """A chain and key from PEM text (``str`` or ``bytes``)."""
        return cls(_ferrovia.Certificate.from_pem(cert, key))

    @classmethod
    def from_pem_files(cls, cert_path: StrPath, key_path: StrPath) -> Certificate:
        """A chain and key from PEM files."""
        return cls(_ferrovia.Certificate.from_pem_files(os.fspath(cert_path), os.fspath(key_path)))

    def sha256(self) -> bytes:
        """SHA-256 of the DER leaf certificate."""
        return self._inner.sha256()

    def sha256_hex(self) -> str:
        """SHA-256 of the DER leaf certificate as lowercase hex."""
        return self._inner.sha256_hex()

    def spki_sha256_base64(self) -> str:
        """Base64 SHA-256 of the public key, for Chrome's
        ``--ignore-certificate-errors-spki-list``."""
        return self._inner.spki_sha256_base64()

    def der(self) -> bytes:
        """The DER leaf certificate."""
        return self._inner.der()

    def chain_pem(self) -> str:
        """The certificate chain as PEM."""
        return self._inner.chain_pem()

    def key_pem(self) -> str:
        """The private key as PEM."""
        return self._inner.key_pem()

    def __repr__(self) -> str:
        return f"<ferrovia.Certificate sha256={self.sha256_hex()}>"
