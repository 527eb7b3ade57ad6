"""The run's outputs besides the chart: the JSON document and the text table."""
from __future__ import annotations

import json
import os
from typing import Any


def write_json(doc: dict[str, Any], path: str) -> None:
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(doc, f, indent=2, sort_keys=False, default=_plain)
        f.write("\n")
    os.replace(tmp, path)


def _plain(value: Any) -> Any:
    # arrays and other sequences that json does not know
    try:
        return list(value)
    except TypeError:
        return str(value)


def _num(value: float | None, digits: int = 0) -> str:
    if value is None:
        return "-"
    return f"{value:,.{digits}f}"


def _ms(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:,.2f}" if value < 10 else f"{value:,.1f}" if value < 1000 else f"{value:,.0f}"


def table(doc: dict[str, Any]) -> str:
    servers: list[str] = doc["order"]
    rounds = doc["rounds"]
    head = f"{'workload':<15} {'server':<8} {'client':<9} {'rate':>22} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} {'srv CPU%':>9} {'srv RSS MB':>10} {'client CPU%':>12} {'busiest':>8}"
    lines = [f"median of {rounds} round{'s' if rounds != 1 else ''} per server", head, "-" * len(head)]
    busy_notes: list[str] = []
    for w in doc["workloads"]:
        if w.get("skipped"):
            lines.append(f"{w['title']:<15} skipped: {w['skipped']}")
            continue
        for name in servers:
            med = w["median"].get(name, {})
            if not med.get("rounds_ok"):
                failure = next((r.get("failed") for r in w["runs"].get(name, []) if r.get("failed")), "no run")
                lines.append(f"{w['title']:<15} {name:<8} failed: {failure}")
                continue
            rate = f"{_num(med.get('ops_per_s'), 1 if (med.get('ops_per_s') or 0) < 100 else 0)} {w['unit']}"
            p50, p99, mx = med.get("p50_ms"), med.get("p99_ms"), med.get("max_ms")
            lines.append(
                f"{w['title']:<15} {name:<8} {w['client']:<9} {rate:>22} {_ms(p50):>8} {_ms(p99):>8} {_ms(mx):>8} "
                f"{_num(med.get('server_cpu_pct')):>9} {_num(med.get('server_rss_mb')):>10} "
                f"{_num(med.get('client_cpu_pct')):>12} {_num(med.get('client_busiest_pct')):>8}"
            )
            if med.get("drain_ms") is not None:
                lines.append(f"{'':<15} {'':<8} {'':<9} {'':>22} drain after the last put: {_ms(med['drain_ms'])} ms"
                             + ("" if med.get("complete", True) else "  (NOT every event arrived)"))
            if med.get("errors"):
                first = next((r.get("first_error") for r in w["runs"].get(name, []) if r.get("first_error")), "")
                lines.append(f"{'':<15} {'':<8} {med['errors']} errors, e.g. {first}")
            busiest = med.get("client_busiest_pct")
            if w["client"] == "python" and busiest is not None and busiest >= 90:
                busy_notes.append(f"{w['title']} on {name}: a client process was {busiest:.0f}% busy; the rate may be the client's limit")
            elif med.get("client_machine_pct") is not None and med.get("server_cpu_pct") is not None:
                # client and server share the machine: together they can use it all up
                used = med["client_machine_pct"] + med["server_cpu_pct"] / doc["host"]["cpus"]
                if used >= 90:
                    busy_notes.append(f"{w['title']} on {name}: client and server together kept {used:.0f}% of the machine busy")
    lines.append("")
    lines.append("srv CPU%, client CPU%: percent of one core over the timed window (client summed over its processes);")
    lines.append(f"busiest: the busiest client process. This machine has {doc['host']['cpus']} cores.")
    for note in busy_notes:
        lines.append("note: " + note)
    if doc["mode"] == "compare":
        lines.append("")
        lines.append("brain / etcd (rates: above 1 = brain faster; latency, CPU, RSS: below 1 = brain better)")
        for w in doc["workloads"]:
            r = w.get("ratio")
            if not r:
                continue
            lat = w.get("latency_metric")
            parts = [f"rate {r['ops_per_s']:.2f}x" if "ops_per_s" in r else "rate -"]
            if lat and lat in r:
                parts.append(f"{'p99' if lat == 'p99_ms' else 'drain'} {r[lat]:.2f}x")
            for key, label in (("server_cpu_pct", "server CPU"), ("server_rss_mb", "server RSS")):
                if key in r:
                    parts.append(f"{label} {r[key]:.2f}x")
            lines.append(f"  {w['title']:<15} " + "   ".join(parts))
    return "\n".join(lines)
