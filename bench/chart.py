"""The PNG: for each workload, the rate and the tail latency of each server
side by side (every workload on its own axis: a list per second and a get per
second differ by orders of magnitude), and in a comparison a last row of
brain/etcd ratios coloured by which server did better."""
from __future__ import annotations

from typing import Any

COLORS = {"etcd": "#4C72B0", "brain": "#DD8452", "endpoint": "#55A868"}
BETTER, WORSE = "#2E8B57", "#C0392B"


def available() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def _fmt(value: float) -> str:
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def write_png(doc: dict[str, Any], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")  # no display: render to a file only
    import matplotlib.pyplot as plt

    workloads = doc["workloads"]
    servers: list[str] = doc["order"]
    compare = doc["mode"] == "compare"
    cols = max(1, len(workloads))
    rows = 3 if compare else 2
    fig = plt.figure(figsize=(max(10.0, 3.1 * cols), 10.5 if compare else 7.0), dpi=110)
    grid = fig.add_gridspec(rows, cols, height_ratios=[1, 1, 1.1][:rows], hspace=0.75, wspace=0.45)
    rounds = doc["rounds"]
    fig.suptitle(
        f"brain bench: {' vs '.join(servers)} ({'median of ' + str(rounds) + ' rounds' if rounds > 1 else '1 round'}, "
        f"{doc['settings']['duration']:g} s per run, {doc['host']['cpus']} cores)",
        fontsize=14, fontweight="bold",
    )
    for col, w in enumerate(workloads):
        rate_ax = fig.add_subplot(grid[0, col])
        lat_ax = fig.add_subplot(grid[1, col])
        if w.get("skipped"):
            for ax in (rate_ax, lat_ax):
                ax.axis("off")
            rate_ax.set_title(w["title"], fontsize=11, fontweight="bold")
            rate_ax.text(0.5, 0.5, "skipped:\n" + _wrap(w.get("skipped_short") or w["skipped"], 22), ha="center", va="center", fontsize=9, color="#555555", transform=rate_ax.transAxes)
            continue
        lat_key = w.get("latency_metric") or "p99_ms"
        lat_label = "p99 lag ms" if w["name"] == "watch" and lat_key == "p99_ms" else "drain ms" if lat_key == "drain_ms" else "p99 ms"
        _bars(rate_ax, servers, [w["median"].get(s, {}).get("ops_per_s") for s in servers])
        rate_ax.set_title(f"{w['title']}\n{w['unit']} (higher is better)", fontsize=10)
        _bars(lat_ax, servers, [w["median"].get(s, {}).get(lat_key) for s in servers])
        lat_ax.set_title(f"{w['title']}\n{lat_label} (lower is better)", fontsize=10)
        rate_ax.text(0.5, -0.28, f"client: {w['client']}", ha="center", va="top", fontsize=8, color="#555555", transform=rate_ax.transAxes)
    if compare:
        _ratio_row(fig.add_subplot(grid[2, :]), workloads)
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)


def _wrap(text: str, width: int) -> str:
    import textwrap

    return "\n".join(textwrap.wrap(text, width)[:4])


def _bars(ax, servers: list[str], values: list[float | None]) -> None:
    heights = [v or 0.0 for v in values]
    bars = ax.bar(servers, heights, color=[COLORS.get(s, "#888888") for s in servers], width=0.6)
    top = max(heights) if any(heights) else 1.0
    ax.set_ylim(0, top * 1.25)
    for bar, v in zip(bars, values):
        ax.text(bar.get_x() + bar.get_width() / 2, bar.get_height() + top * 0.02, "n/a" if v is None else _fmt(v),
                ha="center", va="bottom", fontsize=9, fontweight="bold")
    ax.tick_params(axis="x", labelsize=10)
    ax.tick_params(axis="y", labelsize=8)
    ax.spines[["top", "right"]].set_visible(False)
    ax.yaxis.set_major_formatter(_axis_formatter())


def _axis_formatter():
    from matplotlib.ticker import FuncFormatter

    return FuncFormatter(lambda v, _: f"{v / 1000:g}k" if v >= 1000 else f"{v:g}")


_RATIO_FLOOR = 0.01


def _ratio_row(ax, workloads: list[dict[str, Any]]) -> None:
    """Horizontal bars on a log axis, 1 in the middle: each workload's rate
    ratio and latency ratio, green where brain did better, red where worse."""
    import numpy as np

    shown = [w for w in workloads if w.get("ratio")]
    labels: list[str] = []
    values: list[float] = []
    colors: list[str] = []
    for w in shown:
        r = w["ratio"]
        lat_key = w.get("latency_metric")
        if "ops_per_s" in r:
            labels.append(f"{w['title']}: rate ({w['unit']})")
            values.append(r["ops_per_s"])
            colors.append(BETTER if r["ops_per_s"] >= 1 else WORSE)
        if lat_key and lat_key in r:
            labels.append(f"{w['title']}: {'p99 latency' if lat_key == 'p99_ms' else 'drain time'}")
            values.append(r[lat_key])
            colors.append(BETTER if r[lat_key] <= 1 else WORSE)
    ax.set_title("brain / etcd ratio: green = brain better, red = etcd better\n"
                 "(a rate right of 1x means brain is faster; a latency left of 1x means brain is faster)", fontsize=10)
    if not values:
        ax.axis("off")
        ax.text(0.5, 0.5, "no workload ran on both servers", ha="center", va="center", transform=ax.transAxes)
        return
    y = np.arange(len(values))[::-1]
    # a log axis has no 0: a ratio of 0 (brain drained in under a
    # millisecond) is drawn at the floor, its label still the true one
    labelled, values = values, [max(v, _RATIO_FLOOR) for v in values]
    ax.barh(y, [v - 1 for v in values], left=1, color=colors, height=0.6)
    ax.set_xscale("log")
    lo, hi = min(values + [1.0]), max(values + [1.0])
    span = max(hi / lo, 4.0) ** 0.5
    ax.set_xlim(min(lo / 1.6, 1 / span), max(hi * 1.6, span))
    ax.axvline(1.0, color="black", linewidth=1)
    ax.set_yticks(y)
    ax.set_yticklabels(labels, fontsize=9)
    for yi, v, shown_v in zip(y, values, labelled):
        ax.text(v * (1.06 if v >= 1 else 1 / 1.06), yi, f"{shown_v:.2f}x", va="center", ha="left" if v >= 1 else "right", fontsize=9, fontweight="bold")
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter, NullLocator

    # plain 0.5x / 2x ticks: the default log ticks read as 5x10^-1
    left, right = ax.get_xlim()
    ticks = [t for t in (0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 50, 100) if left <= t <= right]
    ax.xaxis.set_major_locator(FixedLocator(ticks))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}x"))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.spines[["top", "right"]].set_visible(False)
