#!/usr/bin/env bash
# The load generator's scenario matrix behind docs/performance.md: each scenario runs RUNS
# times (default 3) and the median run (by events/s) is printed as a Markdown table row.
# Ours and the baseline are measured in the same process and run, so the ratio is the number
# to compare across machines; absolute numbers depend on the machine and its neighbours.
#
#   scripts/perf-matrix.sh            # the whole matrix (a few minutes)
#   RUNS=5 scripts/perf-matrix.sh     # more runs per scenario
#
# Needs redis-server on PATH for the Redis scenarios (skipped with a notice otherwise).
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS="${RUNS:-3}"
cargo build --release --example loadgen --features testing >&2
L=target/release/examples/loadgen

row() { # name, env assignments (may be empty), loadgen args...
  local name="$1" envs="$2"
  shift 2
  local out=()
  for _ in $(seq "$RUNS"); do
    out+=("$(env $envs "$L" "$@" --json | tail -n 1)")
  done
  printf '%s\n' "${out[@]}" | python3 -c '
import json, sys, statistics
name = sys.argv[1]
runs = [json.loads(l) for l in sys.stdin if l.strip()]
runs.sort(key=lambda d: d["events_per_sec"])
d = runs[len(runs) // 2]
b = d.get("baseline") or {}
ratio = d.get("ratio")
drops = sum(d["dropped"].values())
print("| {} | {:,.0f} | {} | {:,.0f} | {} | {} / {} / {} | {:.0f} / {:.0f} | {} | {} |".format(
    name, d["events_per_sec"], b.get("name", "-"), b.get("events_per_sec") or 0,
    "{:.2f}x".format(ratio) if ratio is not None else "-",
    d["emit_ns"]["p50"], d["emit_ns"]["p99"], d["emit_ns"]["p999"],
    d["e2e_ms"]["p50"], d["e2e_ms"]["p99"], d["peak_rss_bytes"] // (1 << 20), drops))
' "$name"
}

echo "| scenario | ours events/s | baseline | baseline events/s | ratio | emit ns p50 / p99 / p99.9 | e2e ms p50 / p99 | peak RSS MiB | dropped |"
echo "|---|---|---|---|---|---|---|---|---|"
N=300000
CL="--max-in-flight 20000"
row "trace, noop, closed loop" "" --mode trace --events $N $CL --baseline otel-bsp
row "trace, noop, flat out" "" --mode trace --events $N --baseline otel-bsp
row "trace, OTLP gRPC (local receiver), closed loop" "" --mode trace --events $N $CL --exporter otlp --baseline otel-bsp
row "metric, memory dedup, closed loop" "" --mode metric --events $N $CL --baseline mpsc
row "metric, memory dedup, flat out" "" --mode metric --events $N --baseline mpsc
if command -v redis-server >/dev/null; then
  row "metric, Redis dedup, closed loop" "" --mode metric --events $N $CL --dedup redis --baseline redis-pipeline
else
  echo "NOTICE: redis-server not on PATH; the Redis scenario was skipped" >&2
fi
row "mixed, noop, closed loop" "" --mode mixed --events $N $CL --baseline otel-bsp
row "trace, 2 producers, closed loop" "" --mode trace --events $N $CL --producers 2 --baseline otel-bsp
# How cost grows: batch size, pool size, payload size, flight recorder.
for b in 64 4096; do
  row "trace, max_batch_size = $b" "TELEMETRY_GATEWAY__TRACE_BATCHER__MAX_BATCH_SIZE=$b" --mode trace --events $N $CL --baseline none
done
for p in 1 4; do
  row "metric, pool_size = $p" "TELEMETRY_GATEWAY__METRIC_POOL__POOL_SIZE=$p" --mode metric --events $N $CL --baseline none
done
for p in 1024 16384; do
  row "metric, +$p B payload" "" --mode metric --events $N $CL --payload-bytes $p --baseline none
done
row "metric, +2 MiB payload (offloaded)" "" --mode metric --events 2000 --max-in-flight 200 --payload-bytes 2097152 --baseline none
for c in 1 4; do
  row "trace, OTLP gRPC, sink_concurrency = $c" "TELEMETRY_GATEWAY__TRACE_BATCHER__SINK_CONCURRENCY=$c" --mode trace --events $N $CL --exporter otlp --baseline none
done
row "trace, recorder_events = 1" "TELEMETRY_GATEWAY__DIAGNOSTICS__RECORDER_EVENTS=1" --mode trace --events $N $CL --baseline none
row "metric, recorder_events = 1" "TELEMETRY_GATEWAY__DIAGNOSTICS__RECORDER_EVENTS=1" --mode metric --events $N $CL --baseline none
