"""The figures of `brain bench --scale` side by side: a table on stdout,
the JSON, and a PNG of each figure with brain/etcd ratios."""
from __future__ import annotations

import json
from typing import Any

# (label, path into one server's figures, unit, whether higher is better)
ROWS: list[tuple[str, tuple[str, ...], str, bool]] = [
    ("bulk load (Txns of 100 puts)", ("load_keys_per_s",), "keys/s", True),
    ("quiet after the load (CPU < 10% for 3 s)", ("quiet_after_load_s",), "s", False),
    ("paged list at a pinned revision", ("paged_list", "pages_per_s"), "pages/s", True),
    ("first page of that list", ("paged_list", "first_page_ms"), "ms", False),
    ("count-only range", ("count", "median_ms"), "ms", False),
    ("unpaged range of everything", ("unpaged", "seconds"), "s", False),
    ("probe get p50, nothing else running", ("probe", "idle", "p50_ms"), "ms", False),
    ("probe get p99, nothing else running", ("probe", "idle", "p99_ms"), "ms", False),
    ("put p50, one client at 100 puts/s", ("steady_puts", "p50_ms"), "ms", False),
    ("put p99, one client at 100 puts/s", ("steady_puts", "p99_ms"), "ms", False),
    ("probe get p50, during big reads", ("probe", "during_big_reads", "p50_ms"), "ms", False),
    ("probe get p99, during big reads", ("probe", "during_big_reads", "p99_ms"), "ms", False),
    ("probe get max, during big reads", ("probe", "during_big_reads", "max_ms"), "ms", False),
    ("probe timeouts (1 s), during big reads", ("probe", "during_big_reads", "timeouts"), "", False),
    ("probe get p99 during the paged list", ("probe", "paged_list", "p99_ms"), "ms", False),
    ("probe get p99, brain's list paced at etcd's page rate", ("probe", "paged_list_paced", "p99_ms"), "ms", False),
    ("probe get p99 during counts", ("probe", "count", "p99_ms"), "ms", False),
    ("probe get p99 during the unpaged range", ("probe", "unpaged", "p99_ms"), "ms", False),
    ("RSS after load", ("rss_after_load",), "MB", False),
    ("RSS right after the big reads", ("rss_after_unpaged",), "MB", False),
    ("RSS 10 s after the big reads", ("rss_settled_after_unpaged",), "MB", False),
    ("RSS after restart", ("rss_after_restart",), "MB", False),
    ("anonymous RSS (no mapped files) after load", ("anon_after_load",), "MB", False),
    ("anonymous RSS right after the big reads", ("anon_after_unpaged",), "MB", False),
    ("anonymous RSS 10 s after the big reads", ("anon_settled_after_unpaged",), "MB", False),
    ("disk", ("disk_bytes",), "MB", False),
    ("restart to serving, after SIGTERM", ("restart_clean_s",), "s", False),
    ("restart to serving, after SIGKILL", ("restart_kill_s",), "s", False),
    ("snapshot streamed to a file", ("snapshot_save", "seconds"), "s", False),
    ("snapshot size", ("snapshot_save", "bytes"), "MB", False),
    ("probe get p99 during the snapshot", ("probe", "snapshot", "p99_ms"), "ms", False),
    ("one DeleteRange of every key", ("delete_everything", "seconds"), "s", False),
    ("probe get p99 during that DeleteRange", ("delete_everything", "probe", "p99_ms"), "ms", False),
    ("probe get max during that DeleteRange", ("delete_everything", "probe", "max_ms"), "ms", False),
    ("probe timeouts (1 s) during that DeleteRange", ("delete_everything", "probe", "timeouts"), "", False),
    ("snapshot restored into a new data dir", ("snapshot_restore", "seconds"), "s", False),
]


def value(fig: dict[str, Any], path: tuple[str, ...], unit: str) -> float | None:
    v: Any = fig
    for p in path:
        if not isinstance(v, dict) or p not in v:
            return None
        v = v[p]
    if v is None:
        return None
    return v / 1e6 if unit == "MB" else float(v)


def _fmt(v: float | None) -> str:
    if v is None:
        return "-"
    if v >= 100:
        return f"{v:,.0f}"
    if v >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}"


def ratio(brain: float | None, etcd: float | None) -> float | None:
    if brain is None or etcd is None or etcd == 0:
        return None
    return brain / etcd


def _values(doc: dict[str, Any], names: list[str], path: tuple[str, ...], unit: str) -> list[float | None]:
    """One figure per server; the paced row holds etcd's unpaced list (the
    list that ran at that rate on etcd) beside brain's paced one."""
    if path[:2] == ("probe", "paged_list_paced"):
        return [value(doc["results"][n], ("probe", "paged_list", "p99_ms") if n == "etcd" else path, unit) for n in names]
    return [value(doc["results"][n], path, unit) for n in names]


def table(doc: dict[str, Any]) -> str:
    names = doc["order"]
    head = ["figure", *names] + (["brain/etcd"] if len(names) == 2 else [])
    lines = [" | ".join(head), " | ".join("---" for _ in head)]
    for label, path, unit, _ in ROWS:
        vals = _values(doc, names, path, unit)
        cells = [f"{label}" + (f" ({unit})" if unit else "")] + [_fmt(v) for v in vals]
        if len(names) == 2:
            r = ratio(vals[1], vals[0])
            cells.append("-" if r is None else f"{r:.2f}x")
        lines.append(" | ".join(cells))
    migrated = doc.get("migrate")
    if migrated:
        lines.append(f"\nbrain migrate --once from the loaded etcd: {migrated['seconds']:.1f} s ({migrated['keys_per_s']:,.0f} keys/s)")
    return "\n".join(lines)


def write_json(doc: dict[str, Any], path: str) -> None:
    with open(path, "w") as f:
        json.dump(doc, f, indent=2)


def write_png(doc: dict[str, Any], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = doc["order"]
    colors = {"etcd": "#4C72B0", "brain": "#DD8452"}
    rows = [r for r in ROWS if any(v is not None for v in _values(doc, names, r[1], r[2]))]
    cols = 4
    nrows = (len(rows) + cols - 1) // cols
    fig, axes = plt.subplots(nrows, cols, figsize=(4 * cols, 2.6 * nrows), dpi=100, squeeze=False)
    for ax, (label, p, unit, higher) in zip(axes.flat, rows):
        found = _values(doc, names, p, unit)
        vals = [v or 0.0 for v in found]
        ax.bar(names, vals, color=[colors.get(n, "#888") for n in names])
        title = label + (f" ({unit})" if unit else "")
        if len(names) == 2:
            r = ratio(found[1], found[0])
            if r is not None:
                better = (r >= 1) == higher
                title += f"\nbrain/etcd {r:.2f}x ({'better' if better else 'worse'})"
        ax.set_title(title, fontsize=8)
        ax.tick_params(labelsize=7)
        for i, v in enumerate(found):
            ax.text(i, v or 0.0, _fmt(v), ha="center", va="bottom", fontsize=7)
    for ax in list(axes.flat)[len(rows):]:
        ax.axis("off")
    fig.suptitle(f"brain bench --scale {doc['settings']['keys']:,} ({doc['settings']['value_size']} B values)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
