# Shared by the load scripts in tools/: `source tools/lib.sh` from the repository root, then
# `prepare_run NAME`. Knobs every script takes (environment): CONNECTIONS=32 PIPELINE=1
# DURATION=5 WARMUP=2 LOAD_CORE=1 MIX=exchange-core OUT=target/NAME/<time>.

CONNECTIONS=${CONNECTIONS:-32}
PIPELINE=${PIPELINE:-1}
DURATION=${DURATION:-5}
WARMUP=${WARMUP:-2}
LOAD_CORE=${LOAD_CORE:-1}
MIX=${MIX:-exchange-core}

# prepare_run NAME: $OUT (default target/NAME/<time>), the release binaries in $BIN, a scratch
# $DATA, and every process started by start_and_wait killed (and $DATA removed) on exit.
prepare_run() {
  OUT=${OUT:-target/$1/$(date -u +%Y%m%dT%H%M%S)}
  mkdir -p "$OUT"
  cargo build --release --quiet --bin qaexchange-server --bin qaexchange-loadgen --bin qaexchange-raw-responder
  BIN=target/release
  DATA=$(mktemp -d)
  PIDS=()
  trap cleanup EXIT
}

cleanup() { for p in "${PIDS[@]:-}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$DATA"; }

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
  local line before
  before=$(grep '^cpu[0-9]' /proc/stat)
  line=$("$BIN/qaexchange-loadgen" --target "$addr" --connections "$CONNECTIONS" --pipeline "$PIPELINE" \
      --rate "$rate" --duration "$DURATION" --warmup "$WARMUP" --pin-from "$LOAD_CORE" --mix "$MIX" \
      --out "$OUT" --label "$label" "$@" 2>>"$OUT/loadgen.stderr" | tee -a "$OUT/results.txt" | grep '^RESULT')
  echo "$line"
  THROUGHPUT=$(echo "$line" | grep -o 'throughput=[0-9.]*' | cut -d= -f2)
  cpu_taken "$label" "$before" | tee -a "$OUT/results.txt"
}

# cpu_taken LABEL BEFORE: a CPU line for the load just run: per core, the ms the host took
# from this VM (steal) and the ms the kernel spent in interrupts and softirqs, from /proc/stat
# (10 ms ticks). What noise a run met, next to its figures.
cpu_taken() {
  awk -v label="$1" -v tick_ms="$((1000 / $(getconf CLK_TCK)))" '
    NR == FNR { irq[$1] = $7; soft[$1] = $8; steal[$1] = $9; next }
    /^cpu[0-9]/ { out = out sprintf(" %s steal_ms=%d irq_ms=%d softirq_ms=%d", $1,
        ($9 - steal[$1]) * tick_ms, ($7 - irq[$1]) * tick_ms, ($8 - soft[$1]) * tick_ms) }
    END { print "CPU " label out }' <(echo "$2") /proc/stat
}
