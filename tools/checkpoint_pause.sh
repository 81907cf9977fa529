#!/usr/bin/env bash
# What a checkpoint costs the order flow (docs/PERFORMANCE.md "Checkpoints taken off the shard").
#
#  1. fill: a closed loop on FILL_CONNECTIONS accounts (one each) for FILL seconds, so the
#     shard's journal holds up to 10,000 orders and trades per account (the state a checkpoint
#     encodes);
#  2. open loop at RATE orders/s for DURATION s, with POST /admin/checkpoint every
#     CHECKPOINT_EVERY s: each answer's pause_us (the shard's pause; a server before
#     checkpoint snapshots reports only encode_us, which was the pause), encode_us and bytes;
#  3. the same open loop with no checkpoint (baseline: same server, same state, same run).
# The latency columns of 2 against 3 are the cost. SERVER=<binary> measures another build.
#
# Usage: tools/checkpoint_pause.sh   (knobs: FILL=20 FILL_CONNECTIONS=100 RATE=5000 DURATION=10
#                                     CHECKPOINT_EVERY=3 SYNC=none, and lib.sh's)
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=tools/lib.sh
source tools/lib.sh
prepare_run checkpoint_pause
SERVER_BIN=${SERVER:-$BIN/qaexchange-server}
RATE=${RATE:-5000}
EVERY=${CHECKPOINT_EVERY:-3}
MEASURED=$DURATION

start_and_wait server "$SERVER_BIN" --no-auth --http 127.0.0.1:0 --ws 127.0.0.1:0 --shards 1 \
    --storage "$DATA/store" --sync "${SYNC:-none}"
SRV=$ADDR

CONNECTIONS=${FILL_CONNECTIONS:-100} DURATION=${FILL:-20} WARMUP=0 load fill "$SRV" 0 >/dev/null
echo "FILL $(grep '^RESULT label=fill ' "$OUT/results.txt" | grep -o 'throughput=[0-9]*')"

# Checkpoints during the measured window (it starts after the warm-up).
(
  sleep "$WARMUP"
  for at in $(seq "$EVERY" "$EVERY" $((MEASURED - 1))); do
    sleep "$EVERY"
    answer=$(curl -s -X POST "http://$SRV/admin/checkpoint")
    echo "CHECKPOINT at=${at}s $(echo "$answer" | grep -o '"\(pause_us\|encode_us\|bytes\)":[0-9]*' | tr '\n' ' ')" \
      | tee -a "$OUT/results.txt"
  done
) &
CHECKPOINTS=$!
load with-checkpoints "$SRV" "$RATE"
wait "$CHECKPOINTS"
load without "$SRV" "$RATE"
