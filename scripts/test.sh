#!/usr/bin/env bash
# The project's test command (README, .ci/run). Works on a fresh Debian machine: installs
# redis-server and promtool when missing, then runs every test of every target with all
# features, then the doctests.
set -euo pipefail
cd "$(dirname "$0")/.."

# redis-server: the Redis tests start their own server on a free port.
# python3 (with venv and pip): the independent OTLP receiver, below.
# promtool (Debian package prometheus): validates the /metrics exposition.
missing=()
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
if [ "${#missing[@]}" -gt 0 ]; then
  echo "scripts/test.sh: installing ${missing[*]} (Debian packages)"
  if [ "$(id -u)" -eq 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  # The packages may start system services; the tests never use them.
fi
redis-server --version
promtool --version 2>&1 | head -1

# An OTLP receiver that is not ours (tests/behaviour/independent_receiver.rs): the
# OpenTelemetry project's Python protobuf types and grpcio from PyPI, in a virtualenv under
# target/ (made once, about 10 s; versions pinned so every machine decodes alike).
venv=target/otlp-py
if ! "$venv/bin/python" -c "import grpc, opentelemetry.proto" >/dev/null 2>&1; then
  echo "scripts/test.sh: making $venv (PyPI: grpcio, opentelemetry-proto)"
  rm -rf "$venv"
  mkdir -p target
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check \
    grpcio==1.85.3 opentelemetry-proto==1.45.2 protobuf==7.36.2
fi
"$venv/bin/python" -c "import grpc, google.protobuf; print('otlp-py: grpcio', grpc.__version__, 'protobuf', google.protobuf.__version__)"

cargo test --all-features --all-targets "$@"
# Doc examples compile and run too (--all-targets skips doctests).
cargo test --all-features --doc "$@"
