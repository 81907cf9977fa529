#!/usr/bin/env python3
"""Plots .hgrm files (HdrHistogram percentile distributions, as qaexchange-loadgen and
GET /admin/latency write them) as one latency-by-percentile chart, several runs on one chart.

Usage: tools/plot_hgrm.py OUT.png FILE.hgrm [FILE.hgrm ...] [--title TEXT]

The x axis is 1/(1-percentile) on a log scale (50%, 90%, 99%, 99.9%, ...), the y axis the
latency in microseconds. Needs matplotlib: when it is missing, the script makes a virtualenv
under target/plot-venv and installs it there (once).
"""
import os
import subprocess
import sys


def ensure_matplotlib():
    try:
        import matplotlib  # noqa: F401
        return
    except ImportError:
        pass
    here = os.path.dirname(os.path.abspath(__file__))
    venv = os.path.join(here, "..", "target", "plot-venv")
    python = os.path.join(venv, "bin", "python")
    if os.environ.get("QAEXCHANGE_PLOT_VENV") == "1":
        sys.exit("matplotlib is not installed, even in " + venv)
    if not os.path.exists(python):
        subprocess.check_call([sys.executable, "-m", "venv", venv])
        subprocess.check_call([python, "-m", "pip", "install", "-q", "matplotlib"])
    env = dict(os.environ, QAEXCHANGE_PLOT_VENV="1")
    os.execve(python, [python] + sys.argv, env)


def read_hgrm(path):
    """(percentile, value_us) rows of one .hgrm file, the 100% row left out."""
    rows = []
    with open(path) as f:
        for line in f:
            parts = line.split()
            if len(parts) != 4 or line.startswith("#"):
                continue
            try:
                value, percentile = float(parts[0]), float(parts[1])
            except ValueError:
                continue
            if percentile < 1.0:
                rows.append((percentile, value))
    if not rows:
        sys.exit(f"{path}: no percentile rows")
    return rows


def main(argv):
    title = "latency by percentile"
    if "--title" in argv:
        i = argv.index("--title")
        title = argv[i + 1]
        argv = argv[:i] + argv[i + 2:]
    if len(argv) < 2:
        sys.exit(__doc__)
    out, files = argv[0], argv[1:]
    ensure_matplotlib()
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 6))
    for path in files:
        rows = read_hgrm(path)
        xs = [1.0 / (1.0 - p) for p, _ in rows]
        ys = [v for _, v in rows]
        ax.plot(xs, ys, label=os.path.basename(path).removesuffix(".hgrm"))
    ax.set_xscale("log")
    ticks = [1, 2, 10, 100, 1000, 10000, 100000]
    ax.set_xticks(ticks)
    ax.set_xticklabels(["0%", "50%", "90%", "99%", "99.9%", "99.99%", "99.999%"])
    ax.set_xlabel("percentile")
    ax.set_ylabel("latency (us)")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    print(f"wrote {out}")


if __name__ == "__main__":
    main(sys.argv[1:])
