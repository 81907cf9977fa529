#!/usr/bin/env bash
# CPU per answer (docs/PERFORMANCE.md "Cooperative task work"): the server, or the raw
# glommio+httparse responder, at its closed-loop maximum, and the CPU time its process used
# (all threads, from /proc/PID/stat) over the measured window, divided by the answers in it.
# On these shared virtual machines a run's throughput moves by 2x with the neighbours; CPU per
# answer moves less, and says where a change saved work. For the server it also prints the
# commit stages from GET /admin/latency.
#
# One run per MODE argument, in order: raw, durable, none. The server (or responder) is on
# core 0 with one shard, the generator on core $LOAD_CORE; everything on 127.0.0.1.
#
# RATE=N runs open loop at N orders/s instead: every build then meets the same load, in
# batches of the same size, so CPU per answer compares the work itself (the maximum moves
# with the neighbours, and with it the batch sizes and the fixed costs per batch).
#
# PERF=1 also records the process with `perf record -F 2999` over the same window
# ($OUT/MODE.perf.data; PERF_ARGS="--call-graph dwarf" for call chains, default -g) and prints
# its ten largest functions (self time). The CPU per answer then includes perf's own cost.
#
# Usage: tools/cpu_per_answer.sh MODE...   (knobs: CONNECTIONS=32 DURATION=4 WARMUP=1 PERF=0
#        RATE=0 (closed loop) LOAD_CORE=1 BIN_UNDER_TEST=<dir with the server and responder
#        binaries, default target/release> CONFIG=<server config file>
#        OUT=target/cpu_per_answer/<time>)
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-4}
WARMUP=${WARMUP:-1}
RATE=${RATE:-0}
# shellcheck source=tools/lib.sh
source tools/lib.sh
prepare_run cpu_per_answer
UNDER_TEST=${BIN_UNDER_TEST:-$BIN}
[ "$#" -gt 0 ] || { echo "usage: $0 raw|durable|none ..." >&2; exit 2; }

# cpu_ticks PID: user + system clock ticks of the whole process so far.
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }

for mode in "$@"; do
  case $mode in
    raw) start_and_wait raw "$UNDER_TEST/qaexchange-raw-responder" --http 127.0.0.1:0 --shards 1; extra=(--raw) ;;
    durable|none)
      rm -rf "$DATA/$mode"
      config=()
      [ -n "${CONFIG:-}" ] && config=(--config "$CONFIG")
      start_and_wait "server-$mode" "$UNDER_TEST/qaexchange-server" "${config[@]}" --no-auth --http 127.0.0.1:0 \
          --ws 127.0.0.1:0 --shards 1 --storage "$DATA/$mode" --sync "$mode"
      extra=() ;;
    *) echo "unknown mode $mode (raw, durable, none)" >&2; exit 2 ;;
  esac
  "$BIN/qaexchange-loadgen" --target "$ADDR" --connections "$CONNECTIONS" --pipeline "$PIPELINE" --rate "$RATE" \
      --duration "$DURATION" --warmup "$WARMUP" --pin-from "$LOAD_CORE" --mix "$MIX" --out "$OUT" \
      --label "$mode" "${extra[@]}" > "$OUT/$mode.loadgen" 2>>"$OUT/loadgen.stderr" &
  load_pid=$!
  # The generator starts its clock ~0.2 s after its executors are up; the window is the
  # measured part of the run, less a margin at each end.
  sleep "$(python3 -c "print($WARMUP + 0.4)")"
  before=$(cpu_ticks "$PID")
  window=$(python3 -c "print(max(0.5, $DURATION - 0.6))")
  if [ "${PERF:-0}" = 1 ]; then
    # shellcheck disable=SC2086  # PERF_ARGS is a list of arguments
    perf record -F 2999 ${PERF_ARGS:--g} -o "$OUT/$mode.perf.data" -p "$PID" -- sleep "$window" >/dev/null 2>&1
  else
    sleep "$window"
  fi
  after=$(cpu_ticks "$PID")
  wait "$load_pid"
  throughput=$(grep -o 'throughput=[0-9.]*' "$OUT/$mode.loadgen" | cut -d= -f2)
  hz=$(getconf CLK_TCK)
  python3 -c "
t, ticks, hz, w = $throughput, $after - $before, $hz, $window
cpu = ticks / hz
print(f'$mode: {t:,.0f} answers/s, {cpu / w:.2f} cores, {cpu * 1e6 / (t * w):.1f} us CPU per answer')"
  if [ "${PERF:-0}" = 1 ]; then
    perf report -i "$OUT/$mode.perf.data" --no-children --sort symbol --stdio -g none 2>/dev/null |
        grep -E '^ +[0-9]' | head -10 | cut -c1-110 || true  # head closes the pipe early
  fi
  if [ "$mode" != raw ]; then
    curl -s "http://$ADDR/admin/latency" | grep -E '^# stage (commit_wait|wal_write_sync|history_apply|execute_command):' || true
    # History store writes over every answer of the run (warm-up included).
    curl -s "http://$ADDR/admin/storage/stats" |
        python3 -c "import json, sys; d = json.load(sys.stdin); d = d.get('data', d) if isinstance(d, dict) else d; print('history writes:', sum(s.get('writes', 0) for s in d))" || true
  fi
  if [ "$mode" != raw ]; then
    # Commit groups over the whole run (warm-up included): records per group, syncs.
    curl -s "http://$ADDR/metrics" | python3 -c "
import sys
v = {}
for line in sys.stdin:
    for name in ('qaexchange_wal_records_total', 'qaexchange_wal_groups_total', 'qaexchange_wal_syncs_total'):
        if line.startswith(name + '{'):
            v[name] = v.get(name, 0) + float(line.split()[-1])
r, g, s = (v.get(n, 0) for n in ('qaexchange_wal_records_total', 'qaexchange_wal_groups_total', 'qaexchange_wal_syncs_total'))
print(f'wal: {r:.0f} records in {g:.0f} groups ({r / max(g, 1):.1f} per group), {s:.0f} fdatasyncs')" || true
  fi
  kill -TERM "$PID"; wait "$PID" 2>/dev/null || true
done
echo "files: $OUT"
