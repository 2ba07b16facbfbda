#!/usr/bin/env bash
# What an embedding host compiles: the default feature set (which is empty, so it is also
# `--no-default-features`). Lints clean and checks every target that needs no optional feature
# (tests, examples and benches declare theirs with `required-features`), runs the library's
# unit tests and the integration tests listed below, and checks that the host's dependency
# tree has no optional part in it: no C code (SQLite), no Parquet, no Redis client, no
# command-line parser.
set -euo pipefail
cd "$(dirname "$0")/.."

# The library alone, as a host's build compiles it: with `--all-targets` the test targets'
# dev-dependencies (this crate with `testing`) unify features into the library, which once hid
# an item of the `testing` feature used by the default build.
cargo clippy --lib -- -D warnings
cargo clippy --all-targets -- -D warnings

# Every target was compiled (checked) just above. Run what the default set changes: the unit
# tests, and the integration tests of what a lean host meets: its refusals of absent parts, the
# behaviour of the embedding API (tests/behaviour/: the quickstart, export, shutdown, payloads,
# redaction, routing...), configuration and docs. The rest of the
# suite exercises no feature-dependent code and runs in scripts/test.sh; running all of it
# twice would put CI past its 15-minute budget.
cargo test --lib \
  --test first_hour \
  --test behaviour \
  --test hostile_config \
  --test docs_match_code \
  "$@"

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
