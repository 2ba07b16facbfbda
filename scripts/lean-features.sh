#!/usr/bin/env bash
# What an embedding host compiles: the default feature set (which is empty, so it is also
# `--no-default-features`). Lints clean, builds every target that needs no optional feature
# (tests, examples and benches declare theirs with `required-features`), and passes those
# tests. Then checks that the host's dependency tree has no optional part in it: no C code
# (SQLite), no Parquet, no Redis client, no command-line parser.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo clippy --all-targets -- -D warnings
cargo test --all-targets "$@"

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
