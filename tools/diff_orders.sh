#!/usr/bin/env bash
# DIFF order round trip against HTTP (docs/PERFORMANCE.md "DIFF order round trip"): the release
# server with one shard, durable storage in a temp dir and then --no-storage; for each, the same
# order flow (the exchange-core mix with moves sent as cancels, `--mix no-modify`: DIFF has no
# modify) over HTTP keep-alive connections and over DIFF trading sessions (`--diff-orders`:
# req_login, insert_order / cancel_order, a peek_message always outstanding), with the same
# number of connections and one order outstanding per connection:
#
#  1. closed loop (the next order as soon as the last one is seen through): the maximum,
#     HTTP then DIFF;
#  2. open loop at 50 % of each one's maximum (measured from each order's intended send time);
#  3. HTTP open loop at the DIFF row's rate (both paths at the same load).
#
# HTTP orders are timed to their answers; DIFF inserts to the first rtn_data that shows the
# order, DIFF cancels to the one that shows it FINISHED (or the notify refusing the cancel).
# The server's shard is pinned to core 0 (by the server), the generator to core $LOAD_CORE (on
# 2 cores: server on 0, generator on 1). Everything is on 127.0.0.1; each run is WARMUP +
# DURATION seconds (at most 15) plus the logins (DIFF) or account openings.
#
# Usage: tools/diff_orders.sh   (knobs: MODES="durable none" CONNECTIONS=32 DURATION=5 WARMUP=2
#                                PCT=50 LOAD_CORE=1 OUT=target/diff-orders/<time>)
# MODES: `durable` (--storage in a temp dir, sync durable) and/or `none` (--no-storage).
set -euo pipefail
cd "$(dirname "$0")/.."
MODES=${MODES:-durable none}
CONNECTIONS=${CONNECTIONS:-32}
DURATION=${DURATION:-5}
WARMUP=${WARMUP:-2}
PCT=${PCT:-50}
LOAD_CORE=${LOAD_CORE:-1}
OUT=${OUT:-target/diff-orders/$(date -u +%Y%m%dT%H%M%S)}
if python3 -c "import sys; sys.exit(0 if $WARMUP + $DURATION <= 15 else 1)"; then :; else
  echo "WARMUP + DURATION must be at most 15 s" >&2; exit 2
fi
mkdir -p "$OUT"
cargo build --release --quiet --bin qaexchange-server --bin qaexchange-loadgen
BIN=target/release
DATA=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]:-}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$DATA"; }
trap cleanup EXIT

# start_server MODE: starts the server, waits for its ready line; sets $HTTP, $WS, $PID.
start_server() {
  local mode=$1 storage
  if [ "$mode" = none ]; then storage=(--no-storage); else storage=(--storage "$DATA/$mode" --sync durable); fi
  rm -rf "${DATA:?}/$mode"
  "$BIN/qaexchange-server" --no-auth --http 127.0.0.1:0 --ws 127.0.0.1:0 --shards 1 "${storage[@]}" \
      > "$OUT/server-$mode.stdout" 2> "$OUT/server-$mode.stderr" &
  PID=$!; PIDS+=("$PID")
  for _ in $(seq 1 200); do
    HTTP=$(grep -o 'http=[^ ]*' "$OUT/server-$mode.stdout" 2>/dev/null | head -1 | cut -d= -f2 || true)
    WS=$(grep -o 'ws=[^ ]*' "$OUT/server-$mode.stdout" 2>/dev/null | head -1 | cut -d= -f2 || true)
    [ -n "$HTTP" ] && [ -n "$WS" ] && return 0
    sleep 0.05
  done
  echo "server ($mode) did not start: $(cat "$OUT/server-$mode.stderr")" >&2; exit 1
}

# load LABEL RATE TRANSPORT: one run (TRANSPORT http or diff); prints its RESULT line, sets
# $THROUGHPUT.
load() {
  local label=$1 rate=$2 transport=$3 line extra=()
  [ "$transport" = diff ] && extra=(--diff-orders --diff-target "$WS")
  line=$(timeout 120 "$BIN/qaexchange-loadgen" --target "$HTTP" --connections "$CONNECTIONS" --rate "$rate" \
      --duration "$DURATION" --warmup "$WARMUP" --pin-from "$LOAD_CORE" --mix no-modify --out "$OUT" \
      --label "$label" --cpu-pid "$PID" "${extra[@]}" \
      2>>"$OUT/loadgen.stderr" | tee -a "$OUT/results.txt" | grep '^RESULT')
  echo "$line"
  THROUGHPUT=$(echo "$line" | grep -o ' throughput=[0-9.]*' | cut -d= -f2)
}

pct_of() { python3 -c "print(max(1, round($1 * $PCT / 100)))"; }
for mode in $MODES; do
  start_server "$mode"
  load "$mode-http-max" 0 http; HTTP_RATE=$(pct_of "$THROUGHPUT")
  load "$mode-diff-max" 0 diff; DIFF_RATE=$(pct_of "$THROUGHPUT")
  load "$mode-http-$PCT" "$HTTP_RATE" http
  load "$mode-diff-$PCT" "$DIFF_RATE" diff
  # HTTP at the DIFF row's rate: the two paths at the same load.
  load "$mode-http-at-diff-$PCT" "$DIFF_RATE" http
  kill -TERM "$PID"; wait "$PID" || true
done

python3 - "$OUT/results.txt" "$CONNECTIONS" <<'PY'
import sys
rows = []
for line in open(sys.argv[1]):
    if line.startswith("RESULT "):
        rows.append(dict(kv.split("=", 1) for kv in line.split()[1:]))
print(f"\nDIFF vs HTTP order round trip: 1 shard, {sys.argv[2]} connections/sessions, one order outstanding each,"
      " exchange-core mix with moves sent as cancels")
print("\n| run | rate | orders/s | insert p50 us | p99 us | p99.9 us | cancel p50 us | p99 us | p99.9 us | refused | server cores | loadgen cores | other cores | broken |")
print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|")
def other(f):
    return float(f["machine_cores"]) - float(f["server_cores"]) - float(f["loadgen_cores"])
for f in rows:
    ins = "diff_insert" if f["mode"] == "diff-orders" else "submit"
    can = "diff_cancel" if f["mode"] == "diff-orders" else "cancel"
    rate = "closed" if float(f["rate"]) == 0 else f"{float(f['rate']):,.0f}"
    cells = [f.get(f"{p}_{q}_us", "-") for p in (ins, can) for q in ("p50", "p99", "p999")]
    print(f"| {f['label']} | {rate} | {float(f['throughput']):,.0f} | " + " | ".join(cells)
          + f" | {f['refused_codes']} | {float(f['server_cores']):.2f} | {float(f['loadgen_cores']):.2f}"
          + f" | {other(f):.2f} | {f['broken']} |")
if any(other(f) > 0.1 for f in rows):
    print("\nWARNING: other processes used CPU during a run (other cores > 0.1): rerun on a quiet machine")
PY
echo "files: $OUT"
