#!/usr/bin/env python3
"""Summary of an A/B load run (tools/auth_load.sh, tools/compaction_load.sh).

Usage: tools/ab_summary.py RESULTS A B

RESULTS is the scripts' results.txt: the generator's `RESULT key=value ...` lines, labelled
`raw-max`, `A-max-<round>`, `A-half-<round>`, `B-max-<round>`, `B-half-<round>`, and optional
`STATS <mode>-<round> <json>` lines (GET /admin/storage/stats), shown as flush and compaction
columns, and optional `SYNC <label> # stage wal_write_sync: ...` lines (GET /admin/latency),
whose p99 and p99.9 at 50 % are compared like the client's. Prints a Markdown table of the runs, then the medians over rounds of B's maximum over
A's and B's p99 at 50 % over A's.
"""
import json
import re
import statistics
import sys

path, a, b = sys.argv[1:4]
rows, stats, syncs = {}, {}, {}
for line in open(path):
    if line.startswith("SYNC "):
        # "SYNC busy-half-2 # stage wal_write_sync: p50 240.6 us  p90 442.4  p99 1572.9  p99.9 ..."
        syncs[line.split()[1]] = {k: float(v) for k, v in re.findall(r"(p[0-9.]+) ([0-9.]+)", line)}
    elif line.startswith("RESULT "):
        f = dict(kv.split("=", 1) for kv in line.split()[1:])
        rows[f["label"]] = f
    elif line.startswith("STATS "):
        _, label, text = line.split(" ", 2)
        stats[label] = json.loads(text)["data"][0]

extra = " flushes | compactions |" if stats else ""
print(f"| run | rate | answers/s | p50 us | p99 us | p99.9 us |{extra}")
print("|---|---:|---:|---:|---:|---:|" + ("---:|---:|" if stats else ""))
for label, f in rows.items():
    line = f"| {label} | {f['rate']} | {float(f['throughput']):,.0f} | {f['p50_us']} | {f['p99_us']} | {f['p999_us']} |"
    if stats:
        # "quiet-max-1" -> "quiet-1"
        s = stats.get("-".join(label.split("-")[::2]), {})
        line += f" {s.get('flushes', '')} | {s.get('compactions', '')} |"
    print(line)


def med(prefix, key):
    return statistics.median(float(f[key]) for l, f in rows.items() if l.startswith(prefix))


raw = float(rows["raw-max"]["throughput"])
max_a, max_b = med(f"{a}-max", "throughput"), med(f"{b}-max", "throughput")
p99_a, p99_b = med(f"{a}-half", "p99_us"), med(f"{b}-half", "p99_us")
print(
    f"\nmedian max: {a} {max_a:,.0f}/s ({max_a / raw:.2f} of raw {raw:,.0f}), "
    f"{b} {max_b:,.0f}/s ({max_b / raw:.2f} of raw): {b}/{a} = {max_b / max_a:.3f}"
)
print(f"median p99 at 50 %: {a} {p99_a:.0f} us, {b} {p99_b:.0f} us: {b}/{a} = {p99_b / p99_a:.3f}")
if syncs:
    # The server's own WAL write + fdatasync at 50 % (tools/compaction_load.sh's SYNC lines).
    for q in ("p99", "p99.9"):
        ma = statistics.median(v[q] for l, v in syncs.items() if l.startswith(f"{a}-half") and q in v)
        mb = statistics.median(v[q] for l, v in syncs.items() if l.startswith(f"{b}-half") and q in v)
        print(f"median wal_write_sync {q} at 50 %: {a} {ma:.0f} us, {b} {mb:.0f} us: {b}/{a} = {mb / ma:.3f}")
