"""The sdist's build backend: maturin, behind a check that cargo is there.

pip only builds from the sdist when no wheel matches the platform. Without cargo, maturin
would fetch a Rust toolchain from outside the package index in the middle of the install;
instead the build stops at once with a message that says what is missing and how to get it.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Mapping
from typing import Any

# Everything not overridden below (build_sdist, prepare_metadata_*, ...) is maturin's.
from maturin import *  # noqa: F403
from maturin import (
    build_editable as _build_editable,
    build_wheel as _build_wheel,
    get_requires_for_build_editable as _requires_editable,
    get_requires_for_build_sdist as _requires_sdist,
    get_requires_for_build_wheel as _requires_wheel,
)

# maturin reads this to decide whether to download Rust itself; it never should here.
os.environ["MATURIN_NO_INSTALL_RUST"] = "1"


def _require_cargo() -> None:
    cargo = os.environ.get("CARGO") or "cargo"
    if shutil.which(cargo):
        return
    sys.stderr.write(
        "\nferrovia: no prebuilt wheel matches this platform, so pip is building it from\n"
        "source, which needs Rust's `cargo` (1.88 or newer) on PATH, and none was found.\n"
        "Prebuilt wheels cover CPython 3.10+ on Linux x86_64 and aarch64 (glibc 2.17+) and\n"
        "x86_64 musl (musl 1.2+); pip older than 21.2 does not recognise all of them, so\n"
        "upgrading pip may be enough. Otherwise install Rust (https://rustup.rs), open a new\n"
        "shell so `cargo` is on PATH, and run the install again.\n\n"
    )
    raise SystemExit(1)


def get_requires_for_build_wheel(config_settings: Mapping[str, Any] | None = None) -> list[str]:
    _require_cargo()
    return list(_requires_wheel(config_settings))


def get_requires_for_build_editable(config_settings: Mapping[str, Any] | None = None) -> list[str]:
    _require_cargo()
    return list(_requires_editable(config_settings))


def get_requires_for_build_sdist(config_settings: Mapping[str, Any] | None = None) -> list[str]:
    return list(_requires_sdist(config_settings))


def build_wheel(
    wheel_directory: str,
    config_settings: Mapping[str, Any] | None = None,
    metadata_directory: str | None = None,
) -> str:
    _require_cargo()
    return str(_build_wheel(wheel_directory, config_settings, metadata_directory))


def build_editable(
    wheel_directory: str,
    config_settings: Mapping[str, Any] | None = None,
    metadata_directory: str | None = None,
) -> str:
    _require_cargo()
    return str(_build_editable(wheel_directory, config_settings, metadata_directory))
