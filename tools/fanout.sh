#!/usr/bin/env bash
# DIFF quote fan-out (docs/PERFORMANCE.md "DIFF quote fan-out"): the release server with one
# shard and no storage (so the disk is not the limit), a steady open-loop HTTP order flow on one
# instrument, and N DIFF sessions following that instrument's quote (subscribe_quote, then
# peek_message -> rtn_data in a loop, as tqsdk does). For each N it prints the quote deliveries
# per second over all sessions, the server's CPU use in the measured window (CPU s / wall s from
# /proc/PID/stat, 1.0 = one core busy), deliveries per second per fully-used server core, and
# the trade-to-client latency (read time minus the quote's datetime, the time of the event that
# changed it). N = 0 is the baseline: the same order flow without sessions, what the server
# spends on the orders alone.
#
# RAW=1 (the default) also runs, right after the server at each N, the same load against the
# raw responder (`qaexchange-raw-responder --ws`): the same order rate gets fixed HTTP answers
# and every peek gets a quote at once, so its deliveries per core are what one core here can
# deliver at all (one receive and one send each); the summary prints the server's per-core
# figure as a ratio of it. RAW=0 runs the server alone.
#
# The server's shard is pinned to core 0 (by the server); the generator (HTTP connections and
# DIFF sessions) to core $LOAD_CORE (on 2 cores: server on 0, generator on 1). Everything is
# on 127.0.0.1; each run is WARMUP + DURATION seconds (at most 15).
#
# Usage: tools/fanout.sh   (knobs: SESSIONS="0 100 1000" RATE=2000 CONNECTIONS=8
#                           INSTRUMENT=cu2501 SYMBOL=SHFE.cu2501 DURATION=8 WARMUP=2
#                           LOAD_CORE=1 DIFF_EXECUTORS=1 PERF=0 SERVER=target/release/qaexchange-server
#                           MAX_DELIVERIES= RAW=1 OUT=target/fanout/<time>)
# MAX_DELIVERIES=N runs the server with `[websocket] max_deliveries_per_sec = N` (0: no bound;
# empty: the server's default).
# PERF=1 records the server with `perf record -g` during the largest N (perf.data under $OUT;
# PERF_ARGS="--call-graph dwarf" for call chains through frames without frame pointers).
# SERVER names another server binary (an experiment); the generator is always built here.
# "softirq" is the machine's softirq time (mostly loopback TCP delivery; tick accounting also
# charges it to the process it interrupted, so it is inside the server and generator figures);
# "other" is busy CPU of anything else on the machine: it should be ~0, a busy machine makes
# the figures pessimistic.
set -euo pipefail
cd "$(dirname "$0")/.."
SESSIONS=${SESSIONS:-0 100 1000}
RATE=${RATE:-2000}
CONNECTIONS=${CONNECTIONS:-8}
INSTRUMENT=${INSTRUMENT:-cu2501}
SYMBOL=${SYMBOL:-SHFE.cu2501}
DURATION=${DURATION:-8}
WARMUP=${WARMUP:-2}
LOAD_CORE=${LOAD_CORE:-1}
DIFF_EXECUTORS=${DIFF_EXECUTORS:-1}
PERF=${PERF:-0}
RAW=${RAW:-1}
OUT=${OUT:-target/fanout/$(date -u +%Y%m%dT%H%M%S)}
if python3 -c "import sys; sys.exit(0 if $WARMUP + $DURATION <= 15 else 1)"; then :; else
  echo "WARMUP + DURATION must be at most 15 s" >&2; exit 2
fi
mkdir -p "$OUT"
CONFIG=()
if [ -n "${MAX_DELIVERIES:-}" ]; then
  printf '[websocket]\nmax_deliveries_per_sec = %s\n' "$MAX_DELIVERIES" > "$OUT/exchange.toml"
  CONFIG=(--config "$OUT/exchange.toml")
fi
cargo build --release --quiet --bin qaexchange-server --bin qaexchange-loadgen --bin qaexchange-raw-responder
BIN=target/release
SERVER=${SERVER:-$BIN/qaexchange-server}

# Two sockets per session (the server's and the generator's) in one process each, plus spare.
MAX_N=0
for n in $SESSIONS; do [ "$n" -gt "$MAX_N" ] && MAX_N=$n; done
NEED=$((MAX_N + 1024))
if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt "$NEED" ]; then
  ulimit -n "$NEED" 2>/dev/null || ulimit -n "$(ulimit -Hn)"
fi

PIDS=()
cleanup() { for p in "${PIDS[@]:-}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

# start NAME COMMAND...: starts a process under test and waits for its ready line (http= and
# ws=); sets $HTTP, $WS, $PID.
start() {
  local name=$1; shift
  "$@" > "$OUT/$name.stdout" 2> "$OUT/$name.stderr" &
  PID=$!; PIDS+=("$PID")
  for _ in $(seq 1 200); do
    HTTP=$(grep -o 'http=[^ ]*' "$OUT/$name.stdout" 2>/dev/null | head -1 | cut -d= -f2 || true)
    WS=$(grep -o 'ws=[^ ]*' "$OUT/$name.stdout" 2>/dev/null | head -1 | cut -d= -f2 || true)
    [ -n "$HTTP" ] && [ -n "$WS" ] && return 0
    sleep 0.05
  done
  echo "$name did not start: $(cat "$OUT/$name.stderr")" >&2; exit 1
}

start_server() {
  start "$1" "$SERVER" --no-auth --http 127.0.0.1:0 --ws 127.0.0.1:0 --shards 1 --no-storage "${CONFIG[@]}"
}

# The raw responder with its WebSocket baseline.
start_raw() {
  start "$1" "$BIN/qaexchange-raw-responder" --http 127.0.0.1:0 --ws 127.0.0.1:0 --shards 1
}

TARGETS=(server)
[ "$RAW" = 1 ] && TARGETS+=(raw)
for n in $SESSIONS; do
 for target in "${TARGETS[@]}"; do
  label="fanout-$n"
  raw_args=()
  if [ "$target" = raw ]; then
    label="raw-$n"; start_raw "raw-$n"; raw_args=(--raw)
  else
    start_server "server-$n"
  fi
  diff_args=()
  if [ "$n" -gt 0 ]; then
    diff_args=(--diff-sessions "$n" --diff-target "$WS" --diff-instrument "$SYMBOL"
               --diff-executors "$DIFF_EXECUTORS" --diff-pin "$LOAD_CORE")
  fi
  PERF_PID=
  if [ "$PERF" = 1 ] && [ "$n" = "$MAX_N" ] && command -v perf >/dev/null; then
    # From the end of the warm-up (roughly: accounts open first) to the end of the run.
    ( sleep "$(python3 -c "print($WARMUP + 1)")"
      exec perf record ${PERF_ARGS:--g} -o "$OUT/perf-$label.data" -p "$PID" -- sleep "$((DURATION - 1))" ) \
      > "$OUT/perf-$label.log" 2>&1 &
    PERF_PID=$!
  fi
  "$BIN/qaexchange-loadgen" --target "$HTTP" --connections "$CONNECTIONS" --rate "$RATE" \
      --duration "$DURATION" --warmup "$WARMUP" --pin-from "$LOAD_CORE" --instruments "$INSTRUMENT" \
      --out "$OUT" --label "$label" --cpu-pid "$PID" "${raw_args[@]}" "${diff_args[@]}" \
      2>>"$OUT/loadgen.stderr" | sed "s/^RESULT /RESULT target=$target /" | tee -a "$OUT/results.txt" | grep '^RESULT'
  [ -n "$PERF_PID" ] && { wait "$PERF_PID" || true; }
  kill -TERM "$PID"; wait "$PID" || true
 done
done

python3 - "$OUT/results.txt" "$RATE" "$SYMBOL" "${MAX_DELIVERIES:-}" <<'PY'
import sys
rows = []
for line in open(sys.argv[1]):
    if line.startswith("RESULT "):
        rows.append(dict(kv.split("=", 1) for kv in line.split()[1:]))
rate, symbol = sys.argv[2:4]
budget = sys.argv[4] or "the server's default"
print(f"\nDIFF quote fan-out: 1 shard, no storage, {rate} orders/s open loop on {symbol}, max_deliveries_per_sec: {budget}")
print("\n| target | sessions | deliveries/s | bytes each | server cores | deliveries/s per core | p50 us | p90 us | p99 us | p99.9 us | max us | orders answered/s | order p99 us | loadgen cores | softirq cores | other cores | broken |")
print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
def other(f):
    # Busy CPU of the machine that is neither the server, the generator nor softirq.
    return float(f["machine_cores"]) - float(f["server_cores"]) - float(f["loadgen_cores"])
for f in rows:
    n = int(f.get("diff_sessions", 0))
    cores = float(f["server_cores"])
    d = float(f.get("diff_deliveries_per_s", 0))
    per_core = d / cores if cores > 0 else float("nan")
    lat = [f.get(k, "-") for k in ("diff_p50_us", "diff_p90_us", "diff_p99_us", "diff_p999_us", "diff_max_us")]
    broken = int(f["broken"]) + int(f.get("diff_broken", 0))
    print(f"| {f['target']} | {n} | {d:,.0f} | {f.get('diff_bytes_per_delivery', '-')} | {cores:.2f} | {per_core:,.0f} | " + " | ".join(lat)
          + f" | {float(f['answered_per_s']):,.0f} | {f['p99_us']} | {float(f['loadgen_cores']):.2f}"
          + f" | {float(f['softirq_cores']):.2f} | {other(f):.2f} | {broken} |")
above = {}
for target in ("server", "raw"):
    base = next((f for f in rows if f["target"] == target and int(f.get("diff_sessions", 0)) == 0), None)
    if not base:
        continue
    for f in rows:
        if f["target"] == target and int(f.get("diff_sessions", 0)) > 0:
            extra = float(f["server_cores"]) - float(base["server_cores"])
            d = float(f["diff_deliveries_per_s"])
            if extra > 0:
                above[(target, f["diff_sessions"])] = d / extra
                print(f"{target} N={f['diff_sessions']}: {d / extra:,.0f} deliveries/s per core of its CPU above its baseline"
                      f" ({extra:.2f} cores more than without sessions; {extra * 1e9 / max(d, 1):,.0f} ns per delivery)")
for (target, n), per_core in above.items():
    raw = above.get(("raw", n))
    if target == "server" and raw:
        print(f"N={n}: the server's deliveries per core are {per_core / raw:.2f}x the raw responder's")
if any(other(f) > 0.1 for f in rows):
    print("\nWARNING: other processes used CPU during a run (other cores > 0.1): rerun on a quiet machine")
print("\ntarget: >= 1,000,000 deliveries/s per core")
PY
echo "files: $OUT"
