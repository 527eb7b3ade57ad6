"""`brain bench`: run kube-apiserver-shaped workloads against an
etcd-compatible endpoint, or with --compare against a fresh etcd 3.5 and a
fresh brain in alternation, and write the figures as JSON and a PNG chart."""
from __future__ import annotations

import datetime
import os
import platform
import shutil
import sys
import time
from typing import Any

import click

from bench import chart, dataset, etcdload, probe, report, servers
from bench.loopback import parse_endpoint
from bench.runner import ClientChoice, Target, choose_client, run_once
from bench.settings import Settings, default_client_procs
from bench.summary import latency_metric, median_record, ratios
from bench.workloads import NAMES, WORKLOADS, Workload, by_name, describe


def _workloads(text: str) -> list[Workload]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names or names == ["all"]:
        return list(WORKLOADS)
    unknown = [n for n in names if n not in NAMES]
    if unknown:
        raise click.BadParameter(f"unknown workload(s) {', '.join(unknown)}; choose from {', '.join(NAMES)}", param_hint="--workloads")
    return [by_name(n) for n in NAMES if n in names]  # catalog order


def _echo(text: str) -> None:
    click.echo(text, err=True)


@click.command("bench")
@click.option("--endpoint", default=None, help="Benchmark this running server (loopback HOST:PORT) instead of starting one.")
@click.option("--server-pid", type=int, default=None, help="With --endpoint: the server's pid, for its CPU and memory figures.")
@click.option("--server", "server_kind", type=click.Choice(["brain", "etcd"]), default="brain", show_default=True,
              help="Without --endpoint or --compare: which fresh server to start.")
@click.option("--compare", is_flag=True, help="Start a fresh etcd 3.5 and a fresh brain; run every workload on both, alternating.")
@click.option("--rounds", type=click.IntRange(1, 20), default=None, help="Runs per workload per server; the median is reported [default: 3 with --compare, else 1].")
@click.option("--workloads", "workload_text", default="all", show_default=True, help=f"Comma-separated, from: {', '.join(NAMES)}.")
@click.option("--duration", type=click.FloatRange(0.2, 60), default=5.0, show_default=True, help="Seconds per timed run.")
@click.option("--inflight", type=click.IntRange(1, 4096), default=64, show_default=True, help="Requests in flight for create, update, get and lease.")
@click.option("--list-inflight", type=click.IntRange(1, 256), default=4, show_default=True, help="Paged lists in flight.")
@click.option("--list-keys", type=click.IntRange(1, 1_000_000), default=10_000, show_default=True, help="Keys under the listed prefix.")
@click.option("--page-size", type=click.IntRange(1, 100_000), default=500, show_default=True, help="Range limit per page of a list.")
@click.option("--watchers", type=click.IntRange(1, 100_000), default=1000, show_default=True)
@click.option("--watch-streams", type=click.IntRange(1, 10_000), default=100, show_default=True, help="gRPC watch streams the watchers share.")
@click.option("--watch-puts", type=click.IntRange(1, 1_000_000), default=500, show_default=True, help="Puts under the watched prefix per run.")
@click.option("--watch-put-inflight", type=click.IntRange(1, 1024), default=16, show_default=True)
@click.option("--watch-put-rate", type=click.FloatRange(0, 1_000_000), default=0.0, show_default=True,
              help="Puts per second under the watched prefix (0: as fast as they go). A steady rate the watching "
              "client keeps up with makes the lag the server's; the Python client then watches.")
@click.option("--lease-ttl", type=click.IntRange(5, 86_400), default=600, show_default=True, help="TTL of granted leases (long, so none expires mid-run).")
@click.option("--value-size", type=click.IntRange(8, 1_000_000), default=1024, show_default=True, help="Bytes per value written.")
@click.option("--client", type=click.Choice(["auto", "python", "etcdload"]), default="auto", show_default=True,
              help="auto: the Go generator (etcdload) where it has the workload's shape, else the Python client.")
@click.option("--etcdload-bin", default=None, help=f"The Go generator [default: $ETCDLOAD_BIN, else {etcdload.DEFAULT_PATH}].")
@click.option("--client-procs", type=click.IntRange(1, 64), default=None, help="Python client processes [default: half the cores, at least 1].")
@click.option("--channels", type=click.IntRange(1, 64), default=2, show_default=True, help="gRPC connections per client process.")
@click.option("--out", "out_dir", default="bench-results", show_default=True, type=click.Path(file_okay=False), help="Directory for the JSON and PNG.")
@click.option("--work-dir", default=None, type=click.Path(file_okay=False), help="Where started servers keep their data [default: the system temp dir].")
@click.option("--keep", is_flag=True, help="Keep started servers' data directories and logs.")
@click.option("--brain-arg", "brain_args", multiple=True, help="Extra argument for the started brain (repeatable), e.g. --brain-arg=--engine=memory.")
@click.option("--etcd-arg", "etcd_args", multiple=True, help="Extra argument for the started etcd (repeatable).")
@click.option("--no-progress", is_flag=True, help="No progress bar or lines.")
@click.option("--scale", type=click.IntRange(1000, 100_000_000), default=None,
              help="Instead of the workloads: load this many pod-sized keys into each fresh server and measure lists, "
              "counts, a probe client's latency meanwhile, memory, disk and restarts.")
@click.option("--scale-restarts/--no-scale-restarts", default=True, show_default=True, help="With --scale: time restarts too.")
@click.option("--scale-delete/--no-scale-delete", default=True, show_default=True,
              help="With --scale: last, one DeleteRange of every loaded key, the probe running.")
@click.option("--scale-unpaged/--no-scale-unpaged", default=True, show_default=True,
              help="With --scale: one unpaged range of every key too (the client holds the whole response).")
def bench(endpoint, server_pid, server_kind, compare, rounds, workload_text, duration, inflight, list_inflight, list_keys,
          page_size, watchers, watch_streams, watch_puts, watch_put_inflight, watch_put_rate, lease_ttl, value_size, client, etcdload_bin,
          client_procs, channels, out_dir, work_dir, keep, brain_args, etcd_args, no_progress, scale, scale_restarts,
          scale_unpaged, scale_delete) -> None:
    """Benchmark etcd-compatible servers with kube-apiserver-shaped requests.

    Workloads: create and update (compare-and-put Txns), get (Range limit 1),
    list (paged, limit 500, revision pinned), watch (fan-out to many
    watchers while writing), lease (LeaseGrant). Only loopback targets.
    """
    if compare and endpoint:
        raise click.UsageError("--compare starts its own servers: drop --endpoint")
    if scale is not None:
        if endpoint:
            raise click.UsageError("--scale starts its own servers: drop --endpoint")
        from bench.scale_command import run_scale

        run_scale(scale, ["etcd", "brain"] if compare else [server_kind], value_size, page_size, scale_restarts,
                  scale_unpaged, work_dir, keep, brain_args, etcd_args, out_dir, not no_progress, scale_delete)
        return
    if server_pid and not endpoint:
        raise click.UsageError("--server-pid goes with --endpoint")
    if work_dir:
        os.makedirs(work_dir, exist_ok=True)
    selected = _workloads(workload_text)
    settings = Settings(
        duration=duration, inflight=inflight, list_inflight=list_inflight, client_procs=client_procs or default_client_procs(),
        channels=channels, value_size=value_size, list_keys=list_keys, page_size=page_size, watchers=watchers,
        watch_streams=watch_streams, watch_puts=watch_puts, watch_put_inflight=watch_put_inflight,
        watch_put_rate=watch_put_rate, lease_ttl=lease_ttl,
        client=client, etcdload_bin=etcdload_bin,
        # fresh servers are thrown away; a running endpoint gets its keys and leases back
        cleanup=bool(endpoint),
    )
    rounds = rounds or (3 if compare else 1)
    started: list[servers.ManagedServer] = []
    try:
        if endpoint:
            try:
                targets = [Target("endpoint", parse_endpoint(endpoint), server_pid, started_here=False)]
            except ValueError as e:
                raise click.BadParameter(str(e), param_hint="--endpoint") from None
        else:
            kinds = ["etcd", "brain"] if compare else [server_kind]
            targets = []
            for kind in kinds:
                srv = (servers.etcd(work_dir, etcd_args) if kind == "etcd" else servers.brain(work_dir, brain_args))
                started.append(srv)
                _echo(f"starting {kind} on {srv.endpoint} (data and log in {srv.workdir})")
                srv.start()
                targets.append(Target(kind, srv.endpoint, srv.pid, started_here=True))
        doc = _run(selected, targets, settings, rounds, compare, started, not no_progress)
        if endpoint:
            try:
                dataset.cleanup(targets[0].endpoint, any(w.get("client") == "etcdload" for w in doc["workloads"]))
            except Exception as e:  # the figures stand; say what was left behind
                _echo(f"warning: could not delete the benchmark's keys on {endpoint}: {e}")
        _write(doc, out_dir)
    finally:
        for srv in started:
            srv.stop()
            if not keep:
                shutil.rmtree(srv.workdir, ignore_errors=True)


def _run(selected: list[Workload], targets: list[Target], settings: Settings, rounds: int, compare: bool,
         started: list[servers.ManagedServer], show_progress: bool) -> dict[str, Any]:
    t0 = datetime.datetime.now(datetime.timezone.utc)
    missing = {t.name: probe.missing_services(t.endpoint) for t in targets}
    doc: dict[str, Any] = {
        "tool": "brain bench",
        "format": 1,
        "started_at": t0.isoformat(timespec="seconds"),
        "mode": "compare" if compare else "single",
        "rounds": rounds,
        "order": [t.name for t in targets],
        "host": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "settings": settings.as_json(),
        "servers": {
            t.name: {
                "endpoint": t.endpoint, "pid": t.pid, "started_here": t.started_here,
                "argv": next((s.argv for s in started if s.name == t.name), None),
                "missing_services": missing[t.name],
            }
            for t in targets
        },
        "workloads": [],
    }
    _echo(f"workloads: {', '.join(w.name for w in selected)}; {settings.duration:g} s per run, {rounds} round(s) per server"
          f"{' (alternating ' + ' / '.join(doc['order']) + ')' if len(targets) > 1 else ''}")
    for w in selected:
        entry: dict[str, Any] = {
            "name": w.name, "title": w.title, "unit": w.unit, "latency": w.latency, "shape": describe(w.name, settings),
            "runs": {t.name: [] for t in targets}, "median": {},
        }
        doc["workloads"].append(entry)
        lacking = {t.name: missing[t.name][w.needs] for t in targets if w.needs and w.needs in missing[t.name]}
        if lacking:
            entry["skipped"] = "; ".join(f"{name} has no {w.needs} service ({why})" for name, why in lacking.items())
            # what the chart has room for
            entry["skipped_short"] = "; ".join(f"{name} has no {w.needs} service" for name in lacking)
            _echo(f"skipping {w.name}: {entry['skipped']}")
            continue
        choice: ClientChoice = choose_client(w, settings)
        entry["client"], entry["client_choice"] = choice.kind, choice.why
        _echo(f"{w.name}: {entry['shape']}; client: {choice.kind} ({choice.why})")
        for r in range(rounds):
            for t in targets:  # alternating, so drift over time hits both servers alike
                label = f"{w.name} {t.name} {r + 1}/{rounds}"
                try:
                    record = run_once(w, t, settings, choice, label, show_progress)
                except Exception as e:
                    record = {"failed": f"{type(e).__name__}: {e}"}
                    _echo(f"  {label}: FAILED {record['failed']}")
                    dead = [s for s in started if not s.alive()]
                    if dead:
                        raise click.ClickException(f"{dead[0].name} died; its log: {dead[0].log_path}\n{dead[0].log_tail()}") from None
                else:
                    _echo(f"  {label}: {_brief(record, w)}")
                record["round"] = r + 1
                entry["runs"][t.name].append(record)
        entry["median"] = {t.name: median_record(entry["runs"][t.name]) for t in targets}
        entry["latency_metric"] = latency_metric({k: v for k, v in entry["median"].items() if v.get("rounds_ok")})
        if compare and all(entry["median"][n].get("rounds_ok") for n in ("etcd", "brain")):
            entry["ratio"] = ratios(entry["median"]["brain"], entry["median"]["etcd"])
    doc["finished_at"] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    return doc


def _brief(record: dict[str, Any], w: Workload) -> str:
    parts = [f"{record.get('ops_per_s') or 0:,.0f} {w.unit}"]
    if record.get("p99_ms") is not None:
        parts.append(f"p99 {record['p99_ms']:.2f} ms")
    if record.get("drain_ms") is not None:
        parts.append(f"drain {record['drain_ms']:.0f} ms")
    if record.get("server_cpu_pct") is not None:
        parts.append(f"server CPU {record['server_cpu_pct']:.0f}%")
    if record.get("client_cpu_pct") is not None:
        parts.append(f"client CPU {record['client_cpu_pct']:.0f}%")
    if record.get("errors"):
        parts.append(f"{record['errors']} errors")
    return ", ".join(parts)


def _write(doc: dict[str, Any], out_dir: str) -> None:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    base = os.path.join(out_dir, f"brain-bench-{stamp}")
    json_path = base + ".json"
    png_path = base + ".png"
    if chart.available():
        doc["chart"] = os.path.abspath(png_path)
    report.write_json(doc, json_path)
    click.echo(report.table(doc))
    click.echo("")
    click.echo(f"results: {os.path.abspath(json_path)}")
    if chart.available():
        chart.write_png(doc, png_path)
        click.echo(f"chart:   {os.path.abspath(png_path)}")
    else:
        click.echo("chart:   not drawn (matplotlib is not installed: pip install 'brain[bench]')")


if __name__ == "__main__":
    bench(prog_name=f"{os.path.basename(sys.executable)} -m bench.command")
