#!/usr/bin/env bash
# Order flow with the history store flushing and compacting all the time, beside the same
# server whose store does neither during the run (docs/PERFORMANCE.md "History store under
# load"). Same load generator, same run, three rounds interleaved (quiet, busy, quiet, busy...)
# because this machine is noisy; a raw glommio+httparse responder run is the baseline.
#
#   quiet: [storage] memtable_kib = 4194304, compaction_trigger_tables = 1000 (no flush, no
#          compaction while it runs; history still goes into the memtable);
#   busy:  memtable_kib = $BUSY_KIB (default 1024), compaction_trigger_tables = 2 (a flush every ~1 MiB of history
#          and a compaction every second flush, all through the run), and memtable_backlog_kib =
#          $BACKLOG_KIB (default 262144): the memory a default server (64 MiB memtable) lets the
#          memtable reach while a flush runs before order flow waits for it. The small memtable
#          makes jobs 64 times as frequent; it must not also make that bound 64 times as tight
#          (unless BACKLOG_KIB asks for it, to see the waits).
# After each load: the server's `history_backlog_wait` stage (groups that waited, and the
# longest wait) from GET /admin/latency, as a WAIT line, its `history_slowdown` stage (the
# committer's pauses before that bound) as a SLOW line, and its `wal_write_sync` stage as a
# SYNC line (then reset, so each line is one load's); every stage in $OUT/latency-<load>.txt.
# For each: closed-loop max, then open loop at 50 % (LOAD_PERCENT) of the first quiet max (p99);
# the "half" loads are at that rate. RATE=N: no closed-loop loads, the open loop at N/s on a
# fresh server (with a long DURATION: whether the busy store keeps up, or defers its work into
# memory until the backlog bound makes the order flow wait).
# Usage: tools/compaction_load.sh  (knobs: ROUNDS=3 CONNECTIONS=32 PIPELINE=1 DURATION=5 WARMUP=2
#                                   LOAD_CORE=1 OUT=target/compaction_load/<time>
#                                   SERVER=<another server binary, an experiment>
#                                   SERVER_CORES=0: the cores the servers run on (taskset -c):
#                                   by default core 0 only, as a server with a shard on every
#                                   core, so that its history jobs share their shard's core and
#                                   not the load generator's (LOAD_CORE); "" leaves them free
#                                   SYNC=durable|none: the servers' --sync
#                                   BUSY_KIB=1024 BACKLOG_KIB=262144 LEVEL1_KIB=<4 x BUSY_KIB>
#                                   TRIGGER=2: the busy store's memtable, bound, level 1 and
#                                   compaction_trigger_tables
#                                   STORE_DIR=<dir>: the servers' storage (history store,
#                                   checkpoints) under it, their WALs still in the run's temp
#                                   dir ([storage] wal_dir): tables on another device)
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-3}
# shellcheck source=tools/lib.sh
source tools/lib.sh
prepare_run compaction_load
printf '[storage]\nmemtable_kib = 4194304\ncompaction_trigger_tables = 1000\n' > "$DATA/quiet.toml"
BUSY_KIB=${BUSY_KIB:-1024}
printf "[storage]\nmemtable_kib = %s\ncompaction_trigger_tables = %s\nmemtable_backlog_kib = %s\nlevel1_kib = %s\n" \
    "$BUSY_KIB" "${TRIGGER:-2}" "${BACKLOG_KIB:-262144}" "${LEVEL1_KIB:-$((4 * BUSY_KIB))}" > "$DATA/busy.toml"
STORES=$DATA
if [ -n "${STORE_DIR:-}" ]; then
  STORES=$(mktemp -d -p "$STORE_DIR")
  for mode in quiet busy; do echo "wal_dir = \"$DATA/$mode-wal\"" >> "$DATA/$mode.toml"; done
fi

start_and_wait raw "$BIN/qaexchange-raw-responder" --http 127.0.0.1:0 --shards 1
load raw-max "$ADDR" 0 --raw
kill "$PID" 2>/dev/null || true

# backlog_waits LABEL: the server's history_backlog_wait summary as a WAIT line; resets the
# server's histograms.
backlog_waits() {
  local line
  local latency
  latency=$(curl -s "http://$ADDR/admin/latency")
  echo "$latency" > "$OUT/latency-$1.txt"
  line=$(grep '^# stage history_backlog_wait:' <<< "$latency" || echo "(none)")
  echo "WAIT $1 $line" | tee -a "$OUT/results.txt"
  # The committer's pauses as the memtable nears that bound (ShardHistory::slowdown).
  line=$(grep '^# stage history_slowdown:' <<< "$latency" || echo "(none)")
  echo "SLOW $1 $line" | tee -a "$OUT/results.txt"
  # The WAL's own write + fdatasync, as the server timed it: what the store's disk work does
  # to the log, without the VM's scheduling noise that the client's latency carries.
  grep '^# stage wal_write_sync:' <<< "$latency" | sed "s/^/SYNC $1 /" | tee -a "$OUT/results.txt" || true
  curl -s -X POST "http://$ADDR/admin/latency/reset" > /dev/null || true
}

PIN=()
SERVER_CORES=${SERVER_CORES-0}
[ -n "$SERVER_CORES" ] && PIN=(taskset -c "$SERVER_CORES")
HALF=""
for round in $(seq 1 "$ROUNDS"); do
  for mode in quiet busy; do
    rm -rf "${STORES:?}/$mode" "$DATA/$mode-wal"
    start_and_wait "server-$mode-$round" "${PIN[@]}" "${SERVER:-$BIN/qaexchange-server}" --no-auth --config "$DATA/$mode.toml" \
        --http 127.0.0.1:0 --ws 127.0.0.1:0 --shards 1 --storage "$STORES/$mode" --sync "${SYNC:-durable}"
    if [ -n "${RATE:-}" ]; then
      HALF=$RATE
    else
      load "$mode-max-$round" "$ADDR" 0
      backlog_waits "$mode-max-$round"
      [ -z "$HALF" ] && HALF=$(python3 -c "print(max(1, round($THROUGHPUT * ${LOAD_PERCENT:-50} / 100)))")
    fi
    load "$mode-half-$round" "$ADDR" "$HALF"
    backlog_waits "$mode-half-$round"
    curl -s "http://$ADDR/admin/storage/stats" > "$OUT/stats-$mode-$round.json" || true
    echo "STATS $mode-$round $(cat "$OUT/stats-$mode-$round.json")" >> "$OUT/results.txt"
    kill -TERM "$PID"; wait "$PID" || true
  done
done

[ "$STORES" = "$DATA" ] || rm -rf "$STORES"
python3 tools/ab_summary.py "$OUT/results.txt" quiet busy
echo "files: $OUT"
