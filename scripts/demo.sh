#!/usr/bin/env bash
# Builds and starts the echo server with a fresh self-signed certificate. It prints the
# port and the certificate hash to hand to `serverCertificateHashes`.
set -euo pipefail
cd "$(dirname "$0")/.."
exec cargo run --release -p ferrovia --example echo -- --port "${PORT:-4433}"
