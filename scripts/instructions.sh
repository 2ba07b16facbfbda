#!/usr/bin/env bash
# Instructions per event, the figure of merit for CPU cost (issue 17): repeatable whatever else
# the machine runs, unlike wall-clock time. Runs the load generator (release build, closed
# loop; no exporter, then OTLP) under `valgrind --tool=callgrind` at two sizes and divides the
# difference by the difference in events, so start-up and shutdown cancel out:
#
#   per event = (Ir at LARGE events - Ir at SMALL events) / (LARGE - SMALL)
#
# The `otel-bsp` baseline (the same spans through the OpenTelemetry SDK's batch processor) is
# measured the same way, once with no exporter and once over OTLP gRPC to the load generator's
# in-process receiver: (Ir with `--baseline otel-bsp`) - (Ir with `--baseline none`) at each
# size, since the load generator runs the baseline in the same process after the gateway.
#
#   scripts/instructions.sh [SMALL LARGE]        (default 10000 30000)
#   REPEAT=3 scripts/instructions.sh             (each run three times, the median kept;
#                                                 for an even count the lower middle one)
#
# Since the trace batcher has a thread of its own, one build's trace figure moves by up to 4%
# between runs (under valgrind, which runs one thread at a time, how many events a flush takes
# follows the interleaving of the threads): REPEAT=3 takes the median of three runs of each
# size, at three times the time.
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

repeat="${REPEAT:-1}"
case "$repeat" in
  '' | *[!0-9]* | 0) echo "REPEAT must be a whole number of at least 1, not '$repeat'" >&2; exit 2 ;;
esac

# Total instructions (Ir, every thread) of the load generator with these arguments: the
# median of REPEAT runs.
ir() {
  local i out totals=()
  for ((i = 0; i < repeat; i++)); do
    out="$work/cg.$RANDOM"
    valgrind --tool=callgrind --callgrind-out-file="$out" "$bin" "$@" >/dev/null 2>"$out.err" || {
      cat "$out.err" >&2
      return 1
    }
    totals+=("$(awk '/^(summary|totals):/ { print $2; exit }' "$out")")
  done
  printf '%s\n' "${totals[@]}" | sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'
}

closed="--max-in-flight 5000"
# shellcheck disable=SC2086
metric_a=$(ir --events "$small" --mode metric --dedup memory $closed --baseline none)
# shellcheck disable=SC2086
metric_b=$(ir --events "$large" --mode metric --dedup memory $closed --baseline none)
span=$((large - small))
metric=$(( (metric_b - metric_a) / span ))

# The trace path and the baseline with one exporter: sets `trace` and `bsp`.
trace_and_bsp() {
  local none_a none_b with_a with_b
  # shellcheck disable=SC2086
  none_a=$(ir --events "$small" --mode trace $closed --baseline none "$@")
  # shellcheck disable=SC2086
  none_b=$(ir --events "$large" --mode trace $closed --baseline none "$@")
  # The baseline: with it minus without it, at each size.
  # shellcheck disable=SC2086
  with_a=$(ir --events "$small" --mode trace $closed --baseline otel-bsp "$@")
  # shellcheck disable=SC2086
  with_b=$(ir --events "$large" --mode trace $closed --baseline otel-bsp "$@")
  trace=$(( (none_b - none_a) / span ))
  bsp=$(( ((with_b - none_b) - (with_a - none_a)) / span ))
}

# No exporter: the gateway throws its requests away (`local_output = "discard"`), the baseline
# exports to an exporter that does nothing. The gateway's figure includes encoding the
# request (it encodes before it knows the bytes are thrown away); the baseline's does not.
trace_and_bsp --exporter noop
trace_noop=$trace bsp_noop=$bsp
# OTLP gRPC to the load generator's in-process receiver, which decodes and discards: both
# sides encode and send. The gateway also sends each span's companion log record, the SDK
# baseline only the span.
trace_and_bsp --exporter otlp
trace_otlp=$trace bsp_otlp=$bsp

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
echo "trace path:      $trace_noop instructions per event (noop exporter)" >&2
echo "otel-bsp:        $bsp_noop instructions per event (noop exporter)" >&2
echo "trace path:      $trace_otlp instructions per event (OTLP to an in-process receiver)" >&2
echo "otel-bsp:        $bsp_otlp instructions per event (OTLP to an in-process receiver)" >&2
echo "metric/log path: $metric instructions per event (memory dedup, noop exporter)" >&2
printf '{"small":%s,"large":%s,"repeat":%s,"trace_ir_per_event":%s,"otel_bsp_ir_per_event":%s,"trace_vs_otel_bsp":%s,"trace_otlp_ir_per_event":%s,"otel_bsp_otlp_ir_per_event":%s,"trace_vs_otel_bsp_otlp":%s,"metric_ir_per_event":%s}\n' \
  "$small" "$large" "$repeat" "$trace_noop" "$bsp_noop" "$(ratio "$bsp_noop" "$trace_noop")" \
  "$trace_otlp" "$bsp_otlp" "$(ratio "$bsp_otlp" "$trace_otlp")" "$metric"
