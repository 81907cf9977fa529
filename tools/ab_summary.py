#!/usr/bin/env python3
"""Summary of an A/B load run (tools/auth_load.sh, tools/compaction_load.sh).

Usage: tools/ab_summary.py RESULTS A B

RESULTS is the scripts' results.txt: the generator's `RESULT key=value ...` lines, labelled
`raw-max`, `A-max-<round>`, `A-half-<round>`, `B-max-<round>`, `B-half-<round>`, and optional
`STATS <mode>-<round> <json>` lines (GET /admin/storage/stats), shown as flush and compaction
columns, and optional `SYNC <label> # stage wal_write_sync: ...` lines (GET /admin/latency),
whose p99 and p99.9 at 50 % are compared like the client's, and optional `CPU <label> cpu0
steal_ms=.. irq_ms=.. softirq_ms=.. cpu1 ...` lines (tools/lib.sh's `load`): the time the host
took from this VM during each load. Prints a Markdown table of the runs, then the medians over
rounds of B's maximum over A's and B's p99 at 50 % over A's: over all rounds, and again over the
rounds where neither side's load lost more than STEAL_MAX_MS (default 50) ms to the host, as
such a round measures the host, not the server (our own disk writes cause none: see
docs/PERFORMANCE.md "What the host takes").
"""
import os
import json
import re
import statistics
import sys

path, a, b = sys.argv[1:4]
rows, stats, syncs, steal = {}, {}, {}, {}
for line in open(path):
    if line.startswith("CPU "):
        steal[line.split()[1]] = sum(int(v) for v in re.findall(r"steal_ms=([0-9]+)", line))
    elif line.startswith("SYNC "):
        # "SYNC busy-half-2 # stage wal_write_sync: p50 240.6 us  p90 442.4  p99 1572.9  p99.9 ..."
        syncs[line.split()[1]] = {k: float(v) for k, v in re.findall(r"(p[0-9.]+) ([0-9.]+)", line)}
    elif line.startswith("RESULT "):
        f = dict(kv.split("=", 1) for kv in line.split()[1:])
        rows[f["label"]] = f
    elif line.startswith("STATS "):
        _, label, text = line.split(" ", 2)
        stats[label] = json.loads(text)["data"][0]

extra = " flushes | compactions | jobs' CPU ms | MB in memory at the end |" if stats else ""
print(f"| run | rate | answers/s | p50 us | p99 us | p99.9 us | host steal ms |{extra}")
print("|---|---:|---:|---:|---:|---:|---:|" + ("---:|---:|---:|---:|" if stats else ""))
for label, f in rows.items():
    line = f"| {label} | {f['rate']} | {float(f['throughput']):,.0f} | {f['p50_us']} | {f['p99_us']} | {f['p999_us']} |"
    line += f" {steal.get(label, '')} |"
    if stats:
        # "quiet-max-1" -> "quiet-1"; the jobs' CPU over the server's life (both its loads).
        s = stats.get("-".join(label.split("-")[::2]), {})
        cpu = sum(s.get(k, 0) for k in ("flush_cpu_us", "compaction_cpu_us", "release_cpu_us"))
        held = (s.get("memtable_bytes", 0) + s.get("flushing_bytes", 0)) / 1e6
        line += f" {s.get('flushes', '')} | {s.get('compactions', '')} | {cpu / 1000:.0f} | {held:.0f} |"
    print(line)


def med(prefix, key):
    return statistics.median(float(f[key]) for l, f in rows.items() if l.startswith(prefix))


raw = float(rows["raw-max"]["throughput"])
p99_a, p99_b = med(f"{a}-half", "p99_us"), med(f"{b}-half", "p99_us")
if any(l.startswith(f"{a}-max") for l in rows):  # none with a fixed RATE
    max_a, max_b = med(f"{a}-max", "throughput"), med(f"{b}-max", "throughput")
    print(
        f"\nmedian max: {a} {max_a:,.0f}/s ({max_a / raw:.2f} of raw {raw:,.0f}), "
        f"{b} {max_b:,.0f}/s ({max_b / raw:.2f} of raw): {b}/{a} = {max_b / max_a:.3f}"
    )
print(f"median p99 at 50 %: {a} {p99_a:.0f} us, {b} {p99_b:.0f} us: {b}/{a} = {p99_b / p99_a:.3f}")
if steal:
    limit = int(os.environ.get("STEAL_MAX_MS", "50"))
    rounds = sorted({l.rsplit("-", 1)[1] for l in rows if l.startswith(f"{a}-half-")})
    calm = [r for r in rounds if max(steal.get(f"{m}-half-{r}", 0) for m in (a, b)) <= limit]
    if calm:
        pa = statistics.median(float(rows[f"{a}-half-{r}"]["p99_us"]) for r in calm)
        pb = statistics.median(float(rows[f"{b}-half-{r}"]["p99_us"]) for r in calm)
        print(f"median p99 at 50 % in the {len(calm)} of {len(rounds)} rounds without host steal over {limit} ms: "
              f"{a} {pa:.0f} us, {b} {pb:.0f} us: {b}/{a} = {pb / pa:.3f}")
    else:
        print(f"no round without host steal over {limit} ms: rerun when the host is calmer")
if syncs:
    # The server's own WAL write + fdatasync at 50 % (tools/compaction_load.sh's SYNC lines).
    for q in ("p99", "p99.9"):
        ma = statistics.median(v[q] for l, v in syncs.items() if l.startswith(f"{a}-half") and q in v)
        mb = statistics.median(v[q] for l, v in syncs.items() if l.startswith(f"{b}-half") and q in v)
        print(f"median wal_write_sync {q} at 50 %: {a} {ma:.0f} us, {b} {mb:.0f} us: {b}/{a} = {mb / ma:.3f}")
