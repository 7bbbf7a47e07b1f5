#!/usr/bin/env python3
"""Draws the latency distributions of a dynamokv-bench run as percentile spectra.

Usage: python3 bench/plot.py bench-results/latest.json bench-results/latency.png

One panel per kind of load (one client; closed loop with many in flight; open loop), one line
per case. The x axis is 1/(1-p) on a log scale, so p50, p90, p99, p99.9 ... are evenly spaced
and the tail gets as much room as the median; the last point of each line is the maximum,
placed at p = 1 - 1/count. Points beyond what the sample count resolves are left out. Colours
tell the systems apart: DynamoKV, the gRPC hop floor, the RocksDB floor, Redis, and (with
--baseline-bin) the baseline build, in greys and browns.
"""

import json
import math
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator  # noqa: E402

COLOURS = {
    "dynamokv": ["#1f4e9c", "#6a3d9a", "#1f9bd1", "#0b2a5c", "#9e7bc9", "#5b8fd6", "#3f2a70"],
    "dynamokv-baseline": ["#7f7f7f", "#a0522d", "#4d4d4d", "#bdbdbd", "#c08552", "#5c3a21", "#999999"],
    "grpc-floor": ["#2e8b57"],
    "rocksdb-floor": ["#b8860b", "#d4a83a"],
    "redis": ["#c0392b", "#e06b5c", "#8e1b10", "#f0a093"],
}
STYLES = ["-", "--", "-.", ":"]
GROUPS = [
    ("one-client", "One client, sequential requests"),
    ("in-flight", "Closed loop, {c} requests in flight"),
    ("open-loop", "Open loop at half of DynamoKV's max (latency from intended send time)"),
]


def spectrum(case):
    """(x, y) points: x = 1/(1-p), y = latency in microseconds."""
    count = max(case["count"], 1)
    xs, ys = [], []
    for point in case["percentiles"]:
        p = point["p"] / 100.0
        x = count if p >= 1.0 else 1.0 / (1.0 - p)
        if x > count:
            continue
        xs.append(x)
        ys.append(max(point["us"], 0.01))
    return xs, ys


def percentile_label(x, _pos):
    """p50, p90, p99, p99.9 ... for x = 2, 10, 100, 1000 ..."""
    decimals = max(0, round(math.log10(x)) - 2)
    return f"p{100.0 - 100.0 / x:.{decimals}f}"


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    with open(sys.argv[1]) as f:
        report = json.load(f)
    cases = [c for c in report["cases"] if c["count"] > 0]
    groups = [(g, t) for g, t in GROUPS if any(c["group"] == g for c in cases)]
    if not groups:
        sys.exit("no case with results to plot")
    concurrency = report["meta"]["options"].get("concurrency", "")

    fig, axes = plt.subplots(len(groups), 1, figsize=(13, 4.6 * len(groups)), squeeze=False)
    for ax, (group, title) in zip(axes[:, 0], groups):
        used = {}
        for case in (c for c in cases if c["group"] == group):
            system = case["system"]
            n = used.get(system, 0)
            used[system] = n + 1
            palette = COLOURS.get(system, ["#555555"])
            xs, ys = spectrum(case)
            label = case["id"]
            if case.get("rate_per_sec"):
                label += f" @{case['rate_per_sec']:.0f}/s"
            if case.get("noisy"):
                label += " (noisy)"
            ax.plot(
                xs,
                ys,
                STYLES[n // len(palette) % len(STYLES)],
                color=palette[n % len(palette)],
                marker="o",
                markersize=3,
                linewidth=1.6 if system == "dynamokv" else 1.2,
                label=label,
            )
        ax.set_xscale("log")
        ax.set_yscale("log")
        ticks = [x for x in (2, 10, 100, 1e3, 1e4, 1e5, 1e6) if x <= ax.get_xlim()[1] * 1.01]
        ax.xaxis.set_major_locator(FixedLocator(ticks))
        ax.xaxis.set_major_formatter(FuncFormatter(percentile_label))
        ax.xaxis.set_minor_locator(NullLocator())
        ax.yaxis.set_major_formatter(FuncFormatter(lambda y, _: f"{y:,.0f}" if y >= 1 else f"{y:g}"))
        ax.set_ylabel("latency (µs, log)")
        ax.set_title(title.format(c=concurrency), loc="left", fontsize=11)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    axes[-1, 0].set_xlabel("percentile (log scale of 1/(1-p)); last point of each line = max")

    meta = report["meta"]
    fig.suptitle(
        f"dynamokv-bench {meta.get('git_commit') or ''}  {meta['date_utc']}  "
        f"{meta['cpu_model']}, {meta['cores']} cores, "
        f"values {meta['options'].get('value_size')} B",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(sys.argv[2], dpi=110)


if __name__ == "__main__":
    main()
