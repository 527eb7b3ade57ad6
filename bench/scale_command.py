"""Runs `brain bench --scale N` on fresh servers, one after the other (each
stopped before the next starts, so they never share the machine)."""
from __future__ import annotations

import datetime
import os
import platform
import shutil
import sys
import time
from typing import Any, Callable

import click

from bench import scale, scale_day2, scale_report, servers


def _echo(text: str) -> None:
    click.echo(text, err=True)


def _progress(enabled: bool) -> Callable[[str, int], Callable[[int], None]]:
    def make(label: str, total: int) -> Callable[[int], None]:
        if not enabled:
            return lambda n: None
        if sys.stderr.isatty():
            try:
                from tqdm import tqdm
            except ImportError:
                pass
            else:
                bar = tqdm(total=total, desc=label, unit="keys", unit_scale=True, leave=False, file=sys.stderr)

                def tick(n: int) -> None:
                    bar.update(n)
                    if bar.n >= total:
                        bar.close()
                return tick
        done = [0, time.monotonic()]

        def line(n: int) -> None:
            done[0] += n
            now = time.monotonic()
            if now - done[1] >= 5 or done[0] >= total:
                done[1] = now
                _echo(f"  {label}: {done[0]:,}/{total:,} keys")
        return line
    return make


def run_scale(keys: int, kinds: list[str], value_size: int, page_size: int, restarts: bool, unpaged: bool, work_dir: str | None,
              keep: bool, brain_args: tuple[str, ...], etcd_args: tuple[str, ...], out_dir: str, show_progress: bool,
              delete: bool = True) -> None:
    settings = scale.ScaleSettings(keys=keys, value_size=value_size, page_size=page_size, restarts=restarts, unpaged=unpaged,
                                   delete=delete)
    if work_dir:
        os.makedirs(work_dir, exist_ok=True)
    doc: dict[str, Any] = {
        "tool": "brain bench --scale",
        "started_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "order": kinds,
        "host": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "settings": {"keys": keys, "value_size": value_size, "page_size": page_size, "txn_puts": settings.txn_puts,
                     "inflight": settings.inflight, "probe_every_s": scale.PROBE_EVERY_S,
                     "probe_deadline_s": scale.PROBE_DEADLINE_S},
        "servers": {},
        "results": {},
    }
    for kind in kinds:
        extra = scale.server_argv_extra(kind) + (etcd_args if kind == "etcd" else brain_args)
        srv = servers.etcd(work_dir, extra) if kind == "etcd" else servers.brain(work_dir, extra)
        _echo(f"starting {kind} on {srv.endpoint} (data and log in {srv.workdir})")
        srv.start()
        doc["servers"][kind] = {"argv": srv.argv}
        try:
            etcd_rate = doc["results"].get("etcd", {}).get("paged_list", {}).get("pages_per_s")
            pace = etcd_rate if kind == "brain" and etcd_rate else None
            doc["results"][kind] = scale.measure(srv, settings, _echo, _progress(show_progress), pace)
            if kind == "etcd" and "brain" in kinds and settings.snapshot:
                target = os.path.join(srv.workdir, "migrated")
                doc["migrate"] = scale_day2.migrate_from(srv, target, keys)
                _echo(f"  brain migrate from etcd: {doc['migrate']['seconds']:.1f} s ({doc['migrate']['keys_per_s']:,.0f} keys/s)")
                scale_day2.cleanup(target)
            if settings.delete:  # last: the loaded keys are gone after it
                done = doc["results"][kind]["delete_everything"] = scale.delete_everything(srv, settings)
                answered = f" (answered {done['error']}; the keys were gone after that long)" if "error" in done else ""
                _echo(f"  {kind}: DeleteRange of {done['deleted']:,} keys in {done['seconds']:.1f} s{answered}, "
                      f"probe p99 {done['probe'].get('p99_ms', float('nan')):.1f} ms, {done['probe']['timeouts']} timeouts")
        finally:
            srv.stop()
            if not keep:
                shutil.rmtree(srv.workdir, ignore_errors=True)
    doc["finished_at"] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    os.makedirs(out_dir, exist_ok=True)
    base = os.path.join(out_dir, f"brain-bench-scale-{keys}-{time.strftime('%Y%m%d-%H%M%S')}")
    scale_report.write_json(doc, base + ".json")
    click.echo(scale_report.table(doc))
    click.echo(f"\nresults: {os.path.abspath(base + '.json')}")
    try:
        scale_report.write_png(doc, base + ".png")
        click.echo(f"chart:   {os.path.abspath(base + '.png')}")
    except ImportError:
        click.echo("chart:   not drawn (matplotlib is not installed: pip install 'brain[bench]')")
