#!/usr/bin/env bash
# What an embedding host compiles: the default feature set (which is empty, so it is also
# `--no-default-features`). Lints clean, builds every target that needs no optional feature
# (tests, examples and benches declare theirs with `required-features`), runs the library's
# unit tests, its doctests and every integration test that needs no optional feature, and
# checks that the host's dependency tree has no optional part in it: no C code (SQLite), no
# Parquet, no Redis client, no command-line parser.
#
# The reliability suite (tests/reliability_*.rs) is left to scripts/test.sh: it exercises no
# feature-dependent code, and running its minutes of load twice would push CI past its budget.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo clippy --all-targets -- -D warnings

# Integration tests that need an optional feature (declared in Cargo.toml) cannot build here.
needs_features="$(awk '
  /^\[\[test\]\]/ { in_test = 1; next }
  /^\[/ { in_test = 0 }
  in_test && /^name *=/ { gsub(/[" ]/, "", $0); sub(/name=/, "", $0); name = $0 }
  in_test && /^required-features/ { print name }
' Cargo.toml)"
targets=()
for f in tests/*.rs; do
  name="$(basename "$f" .rs)"
  case "$name" in reliability_*) continue ;; esac
  if grep -qx "$name" <<<"$needs_features"; then continue; fi
  targets+=(--test "$name")
done
cargo test --lib "${targets[@]}" "$@"
cargo test --doc "$@"

tree="$(cargo tree -p telemetry-gateway -e normal,build --prefix none)"
for crate in cc libsqlite3-sys rusqlite parquet redis clap; do
  if grep -q "^${crate} v" <<<"$tree"; then
    echo "scripts/lean-features.sh: the default build depends on ${crate}:" >&2
    cargo tree -p telemetry-gateway -e normal,build -i "$crate" >&2
    exit 1
  fi
done
count="$(sed 's/ (\*)//;s/ (proc-macro)//' <<<"$tree" | sort -u | wc -l)"
echo "scripts/lean-features.sh: the default build has ${count} distinct crates (normal and build), none of them optional parts"
