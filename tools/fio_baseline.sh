#!/usr/bin/env bash
# Same-run disk baseline for the WAL bench: fio on the directory the WAL writes to.
#  1. sequential O_DIRECT write bandwidth, 1 MiB blocks (what group commit can at best reach);
#  2. 4 KiB O_DIRECT write + fdatasync latency (what one small durable commit costs).
# Usage: tools/fio_baseline.sh DIR
set -euo pipefail
dir=${1:?usage: fio_baseline.sh DIR}
mkdir -p "$dir"
file="$dir/fio-baseline.dat"
trap 'rm -f "$file"' EXIT
echo "fio: sequential O_DIRECT write, 1 MiB blocks, 512 MiB"
fio --name=seqwrite --filename="$file" --rw=write --bs=1M --size=512M --direct=1 --ioengine=libaio \
    --iodepth=4 --output-format=terse --terse-version=3 \
  | awk -F';' '{ printf "  write bandwidth: %.1f MB/s\n", $48 / 1000 }'
echo "fio: 4 KiB O_DIRECT write + fdatasync per write, 20 s or 64 MiB"
fio --name=syncwrite --filename="$file" --rw=write --bs=4k --size=64M --direct=1 --ioengine=sync \
    --fdatasync=1 --runtime=20 --time_based=0 --output-format=json \
  | python3 -c '
import json, sys
job = json.load(sys.stdin)["jobs"][0]
sync = job["sync"]["lat_ns"]
pct = sync.get("percentile", {})
def p(k): return pct.get(k, 0) / 1000
print("  fdatasync: %d syncs, %.0f write+sync/s (%.1f us each on average), sync latency p50 %.1f us, p99 %.1f us, p99.9 %.1f us" % (
    sync["N"], job["write"]["iops"], 1e6 / max(job["write"]["iops"], 1), p("50.000000"), p("99.000000"), p("99.900000")))
w = job["write"]["clat_ns"].get("percentile", {})
print("  the 4 KiB write before each sync: p50 %.1f us, p99 %.1f us, p99.9 %.1f us" % (
    w.get("50.000000", 0) / 1000, w.get("99.000000", 0) / 1000, w.get("99.900000", 0) / 1000))
'
