#!/usr/bin/env bash
# The server measured like a user would, beside the raw glommio+httparse responder, with the
# same load generator in the same run (docs/PERFORMANCE.md "Load: the whole server over HTTP").
#
#  1. raw responder, closed loop: its maximum;
#  2. server with sync = "durable", closed loop: its maximum; then open loop at 25/50/75 % of it;
#  3. the same with sync = "none";
#  4. raw responder, open loop at the durable and at the `none` server's 25/50/75 % rates.
# MAX_ROUNDS (default 3): each server's maximum and the raw responder's are measured that many
# times in all (the extra pairs back to back), and the summary gives each pair's ratio and the
# median.
# Before the load, a stall probe spins STALL_PROBE seconds (default 2) on every core: how long
# the machine takes each core away (src/loadgen/stall.rs), the floor under every p99 below.
# Each open-loop run also reports the generator's own send lag (how late it wrote a request
# once it could) and the slot wait (how long a request waited for the answer before it on its
# connection): both are parts of the latency, the first the generator's, the second the server's.
# Servers run with --shards $SHARDS pinned from core 0; the generator is pinned to core
# $LOAD_CORE (on 2 cores: server on core 0, generator on core 1). Everything is on 127.0.0.1.
# Writes every .hgrm under $OUT and, when python3 can, a PNG per mode (tools/plot_hgrm.py).
#
# PIPELINE=D lets every connection of every run (raw and server alike) keep up to D requests
# outstanding (HTTP/1.1 pipelining; 1 = one at a time).
#
# SYNCS_IN_FLIGHT=N runs the servers with `[storage] syncs_in_flight = N`, SPIN_US=N with
# `[server] spin_before_park_us = N` (default: the server's defaults).
#
# Usage: tools/loadtest.sh   (knobs: SHARDS=1 CONNECTIONS=32 PIPELINE=1 DURATION=5 WARMUP=2
#                             MIX=exchange-core LOAD_CORE=1 SYNCS_IN_FLIGHT= SPIN_US=
#                             OUT=target/loadtest/<time>
#                             SERVER_BIN=<another server binary, an A/B>)
set -euo pipefail
cd "$(dirname "$0")/.."
SHARDS=${SHARDS:-1}
# shellcheck source=tools/lib.sh
source tools/lib.sh
prepare_run loadtest

"$BIN/qaexchange-loadgen" --stall-probe "${STALL_PROBE:-2}" | tee -a "$OUT/results.txt" | grep -v '^STALL'

start_and_wait raw "$BIN/qaexchange-raw-responder" --http 127.0.0.1:0 --shards "$SHARDS"
RAW=$ADDR; RAW_PID=$PID
load raw-max "$RAW" 0 --raw
RAW_MAX=$THROUGHPUT

CONFIG=()
if [ -n "${SYNCS_IN_FLIGHT:-}${SPIN_US:-}" ]; then
  {
    [ -n "${SPIN_US:-}" ] && printf '[server]\nspin_before_park_us = %s\n' "$SPIN_US"
    [ -n "${SYNCS_IN_FLIGHT:-}" ] && printf '[storage]\nsyncs_in_flight = %s\n' "$SYNCS_IN_FLIGHT"
    true
  } > "$DATA/exchange.toml"
  CONFIG=(--config "$DATA/exchange.toml")
fi

for sync in durable none; do
  rm -rf "$DATA/$sync"
  start_and_wait "server-$sync" "${SERVER_BIN:-$BIN/qaexchange-server}" "${CONFIG[@]}" --no-auth --http 127.0.0.1:0 --ws 127.0.0.1:0 --shards "$SHARDS" \
      --storage "$DATA/$sync" --sync "$sync"
  SERVER=$ADDR
  load "$sync-max" "$SERVER" 0
  MAX=$THROUGHPUT
  for pct in 25 50 75; do
    rate=$(python3 -c "print(max(1, round($MAX * $pct / 100)))")
    load "$sync-$pct" "$SERVER" "$rate"
    eval "${sync^^}_RATE_$pct=$rate"
  done
  eval "MAX_$sync=$MAX"
  # More maxima, the server's and the raw responder's back to back: on a shared machine one
  # pair's ratio moves with the neighbours, the median of several less.
  for round in $(seq 2 "${MAX_ROUNDS:-3}"); do
    load "raw-max-$sync-r$round" "$RAW" 0 --raw
    load "$sync-max-r$round" "$SERVER" 0
  done
  kill -TERM "$PID"; wait "$PID" || true
done

for pct in 25 50 75; do
  eval "rate=\$DURABLE_RATE_$pct"
  load "raw-$pct" "$RAW" "$rate" --raw
  eval "rate=\$NONE_RATE_$pct"
  load "raw-none-$pct" "$RAW" "$rate" --raw
done
kill "$RAW_PID" 2>/dev/null || true

python3 - "$OUT/results.txt" "$RAW_MAX" "$MAX_durable" "$MAX_none" "$SHARDS" "$CONNECTIONS" "$PIPELINE" "${SYNCS_IN_FLIGHT:-}" "${MAX_ROUNDS:-3}" <<'PY'
import statistics
import sys
rows, stalls = {}, []
for line in open(sys.argv[1]):
    if line.startswith("STALL "):
        stalls.append(dict(kv.split("=", 1) for kv in line.split()[1:]))
    if line.startswith("RESULT "):
        f = dict(kv.split("=", 1) for kv in line.split()[1:])
        rows[f["label"]] = f
raw_max, durable_max, none_max = map(float, sys.argv[2:5])
shards, connections, pipeline = sys.argv[5:8]
print(f"\nshards={shards} connections={connections} pipeline={pipeline} syncs_in_flight={sys.argv[8] or 'default'}")
for s in stalls:
    print(f"stall probe core {s['core']}: {s['stalled_pct']} % of {s['seconds']} s stalled, "
          f"{s['over_half_ms_per_s']}/s gaps > 0.5 ms, longest {s['longest_us']} us")
print("\n| run | rate | answers/s | p50 us | p90 us | p99 us | p99.9 us | max us | refused | send lag p99 us | slot wait p99 us |")
print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
for label, f in rows.items():
    print(f"| {label} | {f['rate']} | {float(f['throughput']):,.0f} | {f['p50_us']} | {f['p90_us']} | {f['p99_us']} | {f['p999_us']} | {f['max_us']} | {f['refused']} | {f.get('send_lag_p99_us', '-')} | {f.get('slot_wait_p99_us', '-')} |")
print(f"\nserver durable max / raw max: {durable_max / raw_max:.2f}; server none max / raw max: {none_max / raw_max:.2f}")
rounds = int(sys.argv[9])
for mode in ("durable", "none"):
    ratios = []
    for r in range(1, rounds + 1):
        server = rows.get(f"{mode}-max" if r == 1 else f"{mode}-max-r{r}")
        raw = rows.get("raw-max" if r == 1 else f"raw-max-{mode}-r{r}")
        if server and raw:
            ratios.append(float(server["throughput"]) / float(raw["throughput"]))
    if len(ratios) > 1:
        print(f"{mode} max / raw max over {len(ratios)} back-to-back pairs: " + ", ".join(f"{x:.2f}" for x in ratios)
              + f"; median {statistics.median(ratios):.2f}")
for mode, raw_label in (("durable", "raw-{}"), ("none", "raw-none-{}")):
    for pct in (25, 50, 75):
        d, r = rows.get(f"{mode}-{pct}"), rows.get(raw_label.format(pct))
        if d and r:
            print(f"at {pct}% of the {mode} max ({d['rate']}/s): {mode} p99 - raw p99 = "
                  f"{float(d['p99_us']) - float(r['p99_us']):.1f} us (p99 send lag {d.get('send_lag_p99_us', '-')} / {r.get('send_lag_p99_us', '-')} us, "
                  f"slot wait {d.get('slot_wait_p99_us', '-')} / {r.get('slot_wait_p99_us', '-')} us)")
PY
if python3 -c 'import matplotlib' 2>/dev/null || [ -x target/plot-venv/bin/python ] || [ "${PLOT:-1}" = 1 ]; then
  for mode in durable none; do
    python3 tools/plot_hgrm.py "$OUT/$mode.png" "$OUT"/raw-max-all.hgrm "$OUT"/$mode-*-all.hgrm \
        --title "qaexchange-server sync=$mode, $SHARDS shard(s), $CONNECTIONS connections, pipeline $PIPELINE" || true
  done
fi
echo "files: $OUT"
