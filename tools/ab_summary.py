#!/usr/bin/env python3
"""Summary of an A/B load run (tools/auth_load.sh, tools/compaction_load.sh).

Usage: tools/ab_summary.py RESULTS A B

RESULTS is the scripts' results.txt: the generator's `RESULT key=value ...` lines, labelled
`raw-max`, `A-max-<round>`, `A-half-<round>`, `B-max-<round>`, `B-half-<round>`, and optional
`STATS <mode>-<round> <json>` lines (GET /admin/storage/stats), shown as flush and compaction
columns. Prints a Markdown table of the runs, then the medians over rounds of B's maximum over
A's and B's p99 at 50 % over A's.
"""
import json
import statistics
import sys

path, a, b = sys.argv[1:4]
rows, stats = {}, {}
for line in open(path):
    if line.startswith("RESULT "):
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
