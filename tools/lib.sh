# Shared by the load scripts in tools/ (source it after setting OUT, BIN, CONNECTIONS, PIPELINE,
# DURATION, WARMUP, LOAD_CORE, and optionally MIX; and PIDS=()).

# start_and_wait NAME CMD...: runs CMD, waits for its "ready http=ADDR" line, sets $ADDR, $PID.
start_and_wait() {
  local name=$1; shift
  "$@" > "$OUT/$name.stdout" 2> "$OUT/$name.stderr" &
  PID=$!; PIDS+=("$PID")
  for _ in $(seq 1 200); do
    ADDR=$(grep -o 'http=[^ ]*' "$OUT/$name.stdout" 2>/dev/null | head -1 | cut -d= -f2 || true)
    [ -n "$ADDR" ] && return 0
    sleep 0.05
  done
  echo "$name did not start: $(cat "$OUT/$name.stderr")" >&2; exit 1
}

# load LABEL ADDR RATE [extra]: one load run; prints its RESULT line, sets $THROUGHPUT.
load() {
  local label=$1 addr=$2 rate=$3; shift 3
  local line
  line=$("$BIN/qaexchange-loadgen" --target "$addr" --connections "$CONNECTIONS" --pipeline "$PIPELINE" \
      --rate "$rate" --duration "$DURATION" --warmup "$WARMUP" --pin-from "$LOAD_CORE" --mix "${MIX:-exchange-core}" \
      --out "$OUT" --label "$label" "$@" 2>>"$OUT/loadgen.stderr" | tee -a "$OUT/results.txt" | grep '^RESULT')
  echo "$line"
  THROUGHPUT=$(echo "$line" | grep -o 'throughput=[0-9.]*' | cut -d= -f2)
}
