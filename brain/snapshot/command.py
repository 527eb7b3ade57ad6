"""brain snapshot save | restore | status."""
from __future__ import annotations

import json
import os
import sys
import time

import click

from brain.snapshot.format import SnapshotError
from brain.snapshot.restore import SnapshotStatus, restore as restore_snapshot, status as snapshot_status


@click.group()
def snapshot() -> None:
    """Back up a store to a file and build a data directory from one."""


def _print_status(st: SnapshotStatus, out_format: str) -> None:
    m = st.meta
    fields = {
        "revision": m.revision,
        "compact_revision": m.compact_revision,
        "keys": m.keys,
        "leases": m.leases,
        "records": m.records,
        "size": st.size,
        "sha256": st.sha256,
        "created": m.created,
        "server_version": m.server_version,
        "format_version": m.format_version,
    }
    if out_format == "json":
        click.echo(json.dumps(fields))
        return
    width = max(len(k) for k in fields)
    for k, v in fields.items():
        click.echo(f"{k:<{width}}  {v}")


@snapshot.command()
@click.argument("file")
@click.option("--endpoints", default="127.0.0.1:2379", show_default=True, help="The one endpoint to take the snapshot from.")
@click.option("--cacert", default="", help="CA bundle to verify the server (https).")
@click.option("--cert", default="", help="Client certificate.")
@click.option("--key", default="", help="Client key.")
def save(file: str, endpoints: str, cacert: str, cert: str, key: str) -> None:
    """Save a running brain's snapshot to FILE (as `etcdctl snapshot save` does)."""
    from brain.snapshot.client import save_snapshot

    if "," in endpoints:
        raise click.BadParameter("a snapshot is taken from one endpoint", param_hint="--endpoints")
    t0 = time.monotonic()
    try:
        size = save_snapshot(endpoints, file, cacert, cert, key)
    except Exception as e:  # grpc.RpcError and OSError: one line, not a traceback
        raise click.ClickException(f"snapshot save failed: {e}") from None
    click.echo(f"Snapshot saved at {file} ({size} bytes in {time.monotonic() - t0:.1f} s)")


@snapshot.command()
@click.argument("file")
@click.option("--data-dir", required=True, help="The data directory to create (must not exist).")
def restore(file: str, data_dir: str) -> None:
    """Build a new data directory from a snapshot FILE."""
    last = [0.0]

    def progress(done: int) -> None:
        now = time.monotonic()
        if now - last[0] >= 1.0 and sys.stderr.isatty():
            last[0] = now
            click.echo(f"\r{done:,} records restored", err=True, nl=False)

    try:
        st = restore_snapshot(file, data_dir, progress=progress)
    except (SnapshotError, OSError) as e:
        raise click.ClickException(str(e)) from None
    if sys.stderr.isatty():
        click.echo("", err=True)
    click.echo(f"restored {st.meta.keys} keys at revision {st.meta.revision} into {os.path.abspath(data_dir)}")


@snapshot.command()
@click.argument("file")
@click.option("-w", "--write-out", "out_format", type=click.Choice(["table", "json"]), default="table", show_default=True)
def status(file: str, out_format: str) -> None:
    """Check a snapshot FILE's checksum and print what it holds."""
    try:
        st = snapshot_status(file)
    except (SnapshotError, OSError) as e:
        raise click.ClickException(str(e)) from None
    _print_status(st, out_format)
