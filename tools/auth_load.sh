#!/usr/bin/env bash
# Order flow with authentication on beside the same server with it off (docs/PERFORMANCE.md
# "Authentication under load"): one durable shard pinned to core 0, the load generator on core
# 1, the exchange-core mix; rounds interleaved (off, on, off, on...) because this machine is
# noisy; the raw glommio+httparse responder as the same-run baseline. With auth on, the
# generator registers and logs in one user (`--auth`) and every request carries its token.
# For each: closed-loop max, then open loop at 50 % of the first auth-off max (p99).
# Usage: tools/auth_load.sh  (knobs: ROUNDS=2 CONNECTIONS=32 PIPELINE=1 DURATION=5 WARMUP=2
#                              LOAD_CORE=1 OUT=target/auth_load/<time>)
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-2}
# shellcheck source=tools/lib.sh
source tools/lib.sh
prepare_run auth_load

start_and_wait raw "$BIN/qaexchange-raw-responder" --http 127.0.0.1:0 --shards 1
load raw-max "$ADDR" 0 --raw
kill "$PID" 2>/dev/null || true

HALF=""
for round in $(seq 1 "$ROUNDS"); do
  for mode in off on; do
    rm -rf "$DATA/$mode"
    flags=(); creds=()
    if [ "$mode" = off ]; then flags=(--no-auth); else creds=(--auth "loadgen:load-pw"); fi
    start_and_wait "server-$mode-$round" "$BIN/qaexchange-server" "${flags[@]}" --http 127.0.0.1:0 \
        --ws 127.0.0.1:0 --shards 1 --storage "$DATA/$mode"
    load "$mode-max-$round" "$ADDR" 0 "${creds[@]}"
    [ -z "$HALF" ] && HALF=$(python3 -c "print(max(1, round($THROUGHPUT / 2)))")
    load "$mode-half-$round" "$ADDR" "$HALF" "${creds[@]}"
    kill -TERM "$PID"; wait "$PID" || true
  done
done

python3 tools/ab_summary.py "$OUT/results.txt" off on
echo "files: $OUT"
