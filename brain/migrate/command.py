"""brain migrate: copy a running etcd into a brain data directory, keeping
its revisions, then follow it until the operator cuts over."""
from __future__ import annotations

import asyncio
import signal
import sys

import click

from brain.client import Endpoint
from brain.migrate.importer import MigrationError
from brain.migrate.run import MigrationOptions, Progress, migrate as run_migration
from brain.migrate.source import EtcdSource


@click.command()
@click.option("--from", "source", required=True, help="The etcd to copy: host:port, http:// or https:// URL.")
@click.option("--data-dir", required=True, help="The brain data directory to build (new, or one this command built from the same cluster, to resume).")
@click.option("--cacert", default="", help="CA bundle to verify the source (https).")
@click.option("--cert", default="", help="Client certificate for the source.")
@click.option("--key", default="", help="Client key for the source.")
@click.option("--once", is_flag=True, help="Stop once caught up with the source's revision at the end of the copy, instead of following it.")
def migrate(source: str, data_dir: str, cacert: str, cert: str, key: str, once: bool) -> None:
    """Copy a running etcd into a brain data directory with every revision kept,
    then follow its changes, showing the lag, until SIGINT/SIGTERM (the cut-over)."""
    try:
        endpoint = Endpoint.parse(source, cacert, cert, key)
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--from") from None
    try:
        progress = asyncio.run(_main(endpoint, MigrationOptions(data_dir, once=once)))
    except MigrationError as e:
        raise click.ClickException(str(e)) from None
    except Exception as e:  # gRPC or engine errors: one line, not a traceback
        raise click.ClickException(f"migration failed: {e.__class__.__name__}: {e}") from None
    click.echo(f"migrated to revision {progress.applied_rev} ({progress.keys_copied} keys copied, "
               f"{progress.revisions_applied} revisions replayed, {progress.leases} leases) into {data_dir}")


async def _main(endpoint: Endpoint, options: MigrationOptions) -> Progress:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    source = EtcdSource(endpoint)
    try:
        return await run_migration(source, options, stop, _print)
    finally:
        await source.close()


def _print(progress: Progress) -> None:
    end = "\r" if sys.stderr.isatty() else "\n"
    sys.stderr.write(progress.line() + end)
    sys.stderr.flush()
