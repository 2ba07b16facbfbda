#!/usr/bin/env bash
# The project's test command (README, .ci/run). Works on a fresh Debian machine: installs
# redis-server when it is missing (the Redis tests start their own server on a free port),
# then runs every test of every target with all features.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v redis-server >/dev/null 2>&1; then
  echo "scripts/test.sh: redis-server not found; installing it (Debian package redis-server)"
  if [ "$(id -u)" -eq 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq redis-server >/dev/null
  # The package may start a system service on 6379; the tests never use it.
fi
redis-server --version

cargo test --all-features --all-targets "$@"
# Doc examples compile and run too (--all-targets skips doctests).
cargo test --all-features --doc "$@"
