"""brain migrate: copy a running etcd into a brain data directory or a
running brain, keeping its revisions, then follow it until the operator
cuts over."""
from __future__ import annotations

import asyncio
import signal
import sys

import click

from brain.client import Endpoint
from brain.migrate.importer import MigrationError, RevisionImporter
from brain.migrate.remote import BrainTarget
from brain.migrate.run import MigrationOptions, Progress, Stop, migrate as run_migration
from brain.migrate.source import EtcdSource
from brain.migrate.target import ImportTarget
from engines import open_engine


@click.command()
@click.option("--from", "source", required=True, help="The etcd to copy: host:port, http:// or https:// URL.")
@click.option("--data-dir", default=None, help="The brain data directory to build (new, or one this command built from the same cluster, to resume).")
@click.option("--to", "to", default=None,
              help="A running brain to copy into instead, started with --migration-target (host:port or URL).")
@click.option("--cacert", "--from-cacert", "cacert", default="", help="CA bundle to verify the source (https).")
@click.option("--cert", "--from-cert", "cert", default="", help="Client certificate for the source.")
@click.option("--key", "--from-key", "key", default="", help="Client key for the source.")
@click.option("--to-cacert", default="", help="CA bundle to verify the target brain (https).")
@click.option("--to-cert", default="", help="Client certificate for the target brain.")
@click.option("--to-key", default="", help="Client key for the target brain.")
@click.option("--once", is_flag=True, help="Stop once caught up with the source's revision at the end of the copy, "
              "instead of following it (with --to: then cut over).")
def migrate(source: str, data_dir: str | None, to: str | None, cacert: str, cert: str, key: str,
            to_cacert: str, to_cert: str, to_key: str, once: bool) -> None:
    """Copy a running etcd with every revision kept, then follow its changes,
    showing the lag.

    Into a data directory (--data-dir): until SIGINT/SIGTERM; a later run
    resumes. Into a running brain (--to): until SIGINT/SIGTERM, which is the
    cut-over: the migration catches up with the source's revision at that
    moment, copies the leases, and the brain takes writes from then on (stop
    the source's writers first). A second signal stops at once, with no
    cut-over (a later run resumes)."""
    if (data_dir is None) == (to is None):
        raise click.UsageError("give one of --data-dir (a new brain data directory) and --to (a running brain)")
    try:
        endpoint = Endpoint.parse(source, cacert, cert, key)
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--from") from None
    target_endpoint = None
    if to is not None:
        try:
            target_endpoint = Endpoint.parse(to, to_cacert, to_cert, to_key)
        except ValueError as e:
            raise click.BadParameter(str(e), param_hint="--to") from None
    options = MigrationOptions(once=once, catch_up_on_stop=to is not None)
    try:
        progress, cut_over = asyncio.run(_main(endpoint, data_dir, target_endpoint, options))
    except MigrationError as e:
        raise click.ClickException(str(e)) from None
    except Exception as e:  # gRPC or engine errors: one line, not a traceback
        raise click.ClickException(f"migration failed: {e.__class__.__name__}: {e}") from None
    where = data_dir if data_dir is not None else to
    if progress.aborted:
        click.echo(f"stopped at revision {progress.applied_rev} without a cut-over ({progress.keys_copied} keys copied, "
                   f"{progress.revisions_applied} revisions replayed); run again to carry on")
        sys.exit(1)
    click.echo(f"migrated to revision {progress.applied_rev} ({progress.keys_copied} keys copied, "
               f"{progress.revisions_applied} revisions replayed, {progress.leases} leases) into {where}")
    if cut_over is not None:
        click.echo(f"cut over: {to} takes writes from revision {cut_over + 1}")


async def _main(endpoint: Endpoint, data_dir: str | None, to: Endpoint | None,
                options: MigrationOptions) -> tuple[Progress, int | None]:
    stop = Stop()
    loop = asyncio.get_running_loop()

    def signalled() -> None:
        (stop.abort if stop.stop.is_set() else stop.stop).set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, signalled)
    source = EtcdSource(endpoint)
    remote = BrainTarget(to) if to is not None else None
    target: ImportTarget = remote if remote is not None else RevisionImporter(open_engine("leveldb", data_dir=data_dir))
    try:
        progress = await run_migration(source, target, options, stop, _print)
        cut_over = None
        if remote is not None and not progress.aborted:
            cut_over = await remote.cut_over()
        return progress, cut_over
    finally:
        await source.close()
        await target.close()


def _print(progress: Progress) -> None:
    end = "\r" if sys.stderr.isatty() else "\n"
    sys.stderr.write(progress.line() + end)
    sys.stderr.flush()
