#!/usr/bin/env bash
# Instructions per event, the figure of merit for CPU cost (issue 17): repeatable whatever else
# the machine runs, unlike wall-clock time. Runs the load generator (release build, closed
# loop, noop exporter) under `valgrind --tool=callgrind` at two sizes and divides the
# difference by the difference in events, so start-up and shutdown cancel out:
#
#   per event = (Ir at LARGE events - Ir at SMALL events) / (LARGE - SMALL)
#
# The `otel-bsp` baseline (the same spans through the OpenTelemetry SDK's batch processor) is
# measured the same way: (Ir with `--baseline otel-bsp`) - (Ir with `--baseline none`) at each
# size, since the load generator runs the baseline in the same process after the gateway.
#
#   scripts/instructions.sh [SMALL LARGE]        (default 10000 30000)
#
# Prints one line per measurement and, last, a JSON object. Takes a few minutes. Needs
# valgrind (the Debian package; installed when missing, as scripts/test.sh does).
set -euo pipefail
cd "$(dirname "$0")/.."
small="${1:-10000}"
large="${2:-30000}"

if ! command -v valgrind >/dev/null 2>&1; then
  if [ "$(id -u)" -eq 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends valgrind >/dev/null
fi
cargo build --release --example loadgen --features testing,redis >&2
bin=target/release/examples/loadgen
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# Total instructions (Ir, every thread) of one run of the load generator with these arguments.
ir() {
  local out="$work/cg.$RANDOM"
  valgrind --tool=callgrind --callgrind-out-file="$out" "$bin" "$@" >/dev/null 2>"$out.err" || {
    cat "$out.err" >&2
    return 1
  }
  awk '/^(summary|totals):/ { print $2; exit }' "$out"
}

closed="--max-in-flight 5000"
# shellcheck disable=SC2086
metric_a=$(ir --events "$small" --mode metric --dedup memory $closed --baseline none)
# shellcheck disable=SC2086
metric_b=$(ir --events "$large" --mode metric --dedup memory $closed --baseline none)
# shellcheck disable=SC2086
none_a=$(ir --events "$small" --mode trace $closed --baseline none)
# shellcheck disable=SC2086
none_b=$(ir --events "$large" --mode trace $closed --baseline none)
# The baseline: with it minus without it, at each size.
# shellcheck disable=SC2086
with_a=$(ir --events "$small" --mode trace $closed --baseline otel-bsp)
# shellcheck disable=SC2086
with_b=$(ir --events "$large" --mode trace $closed --baseline otel-bsp)
span=$((large - small))
trace=$(( (none_b - none_a) / span ))
metric=$(( (metric_b - metric_a) / span ))
bsp=$(( ((with_b - none_b) - (with_a - none_a)) / span ))

echo "trace path:      $trace instructions per event" >&2
echo "otel-bsp:        $bsp instructions per event" >&2
echo "metric/log path: $metric instructions per event (memory dedup)" >&2
printf '{"small":%s,"large":%s,"trace_ir_per_event":%s,"otel_bsp_ir_per_event":%s,"trace_vs_otel_bsp":%s,"metric_ir_per_event":%s}\n' \
  "$small" "$large" "$trace" "$bsp" "$(awk -v a="$bsp" -v b="$trace" 'BEGIN { printf "%.2f", a / b }')" "$metric"
