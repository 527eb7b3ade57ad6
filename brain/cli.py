"""The brain command: serve, engine-check, engine-bench."""
from __future__ import annotations

import asyncio
import importlib
import sys

import click

from brain.logs import fatal, setup_logging

from brain.server.config import (
    DEFAULT_MAX_REQUEST_BYTES,
    DEFAULT_MAX_TXN_OPS,
    DEFAULT_VERSION,
    ListenURL,
    ServerConfig,
    TLSConfig,
)


def _urls(value: str) -> list[ListenURL]:
    try:
        return [ListenURL.parse(u) for u in value.split(",") if u.strip()]
    except ValueError as e:
        raise click.BadParameter(str(e)) from None


def _tikv_options(engine: str, pd_endpoints: str, key_prefix: str | None) -> dict:
    """The engine options of the --tikv-* flags."""
    if engine != "tikv":
        if pd_endpoints or key_prefix is not None:
            raise click.BadParameter("only applies to --engine tikv", param_hint="--tikv-pd-endpoints/--tikv-key-prefix")
        return {}
    endpoints = [e.strip() for e in pd_endpoints.split(",") if e.strip()]
    if not endpoints:
        raise click.BadParameter("--engine tikv needs the PD endpoints of the TiKV cluster, e.g. pd1:2379,pd2:2379",
                                 param_hint="--tikv-pd-endpoints")
    options: dict = {"pd_endpoints": endpoints}
    if key_prefix is not None:
        options["key_prefix"] = key_prefix
    return options


class _Commands(click.Group):
    """The client tools (bench, engine-check, engine-bench) are imported
    only when called, so `brain serve` starts without loading them."""

    LAZY = {
        "bench": ("brain.bench.command", "bench"),
        "check": ("brain.check", "check"),
        "engine-check": ("brain.engine_commands", "engine_check"),
        "engine-bench": ("brain.engine_commands", "engine_bench"),
        "snapshot": ("brain.snapshot.command", "snapshot"),
        "migrate": ("brain.migrate.command", "migrate"),
    }

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted([*super().list_commands(ctx), *self.LAZY])

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.LAZY:
            module, attr = self.LAZY[cmd_name]
            return getattr(importlib.import_module(module), attr)
        return super().get_command(ctx, cmd_name)


@click.group(cls=_Commands)
def cli() -> None:
    """brain: an etcd v3 API server for Kubernetes over pluggable engines."""


@cli.command()
@click.option("--name", default="default", show_default=True, help="Human-readable name for this member.")
@click.option("--data-dir", default=None, help="Path to the data directory (default: ${name}.brain).")
@click.option("--engine", type=click.Choice(["leveldb", "memory", "tikv"]), default="leveldb", show_default=True)
@click.option("--listen-client-urls", default="http://127.0.0.1:2379", show_default=True, help="Comma-separated URLs to serve clients on.")
@click.option("--advertise-client-urls", default="", help="Client URLs reported in MemberList (default: the listen URLs).")
@click.option("--listen-metrics-urls", default="", help="Comma-separated http:// URLs serving /metrics and /health.")
@click.option("--max-request-bytes", type=int, default=DEFAULT_MAX_REQUEST_BYTES, show_default=True)
@click.option("--max-txn-ops", type=int, default=DEFAULT_MAX_TXN_OPS, show_default=True)
@click.option("--log-level", type=click.Choice(["debug", "info", "warn", "error"]), default="info", show_default=True)
@click.option("--server-version", default=DEFAULT_VERSION, show_default=True, help="etcd version reported by Maintenance.Status.")
@click.option("--unsafe-no-fsync", is_flag=True, help="Do not fsync writes (like etcd's flag: data loss on power failure).")
@click.option("--cert-file", default="", help="Server TLS certificate (for https:// client URLs).")
@click.option("--key-file", default="", help="Server TLS key.")
@click.option("--trusted-ca-file", default="", help="CA to verify client certificates.")
@click.option("--client-cert-auth", is_flag=True, help="Require client certificates signed by --trusted-ca-file.")
@click.option("--transport", type=click.Choice(["h2", "grpcio"]), default="h2", show_default=True,
              help="gRPC server: brain's own HTTP/2 transport (h2), or grpcio's asyncio server.")
@click.option("--tikv-pd-endpoints", default="", help="Comma-separated PD endpoints of the TiKV cluster (--engine tikv), e.g. pd1:2379,pd2:2379.")
@click.option("--tikv-key-prefix", default=None,
              help="Prefix of every key this brain cluster keeps in TiKV; brain clusters sharing one TiKV need distinct ones (default brain/).")
@click.option("--quota-backend-bytes", type=int, default=0, show_default=True,
              help="Raise the NOSPACE alarm and refuse writes when the database reaches this size (0: etcd's default of 2 GiB; negative: no quota).")
@click.option("--auto-compaction-mode", default="periodic", show_default=True, help="periodic (keep a time span) or revision (keep a count of revisions).")
@click.option("--auto-compaction-retention", default="0", show_default=True,
              help="Periodic: a duration (1h, 30m) or a bare number of hours; revision: a number of revisions. 0 disables.")
@click.option("--experimental-auto-compaction-revision-interval", "auto_compaction_revision_interval", type=float, default=300.0,
              hidden=True, help="Seconds between the checks of revision mode (etcd's fixed 5 minutes); for tests.")
def serve(name, data_dir, engine, listen_client_urls, advertise_client_urls, listen_metrics_urls, max_request_bytes, max_txn_ops,
          log_level, server_version, unsafe_no_fsync, cert_file, key_file, trusted_ca_file, client_cert_auth, transport,
          tikv_pd_endpoints, tikv_key_prefix, quota_backend_bytes, auto_compaction_mode, auto_compaction_retention,
          auto_compaction_revision_interval) -> None:
    """Serve the etcd v3 API."""
    setup_logging(log_level)
    engine_options = _tikv_options(engine, tikv_pd_endpoints, tikv_key_prefix)
    urls = _urls(listen_client_urls)
    if any(u.scheme == "https" for u in urls) and not (cert_file and key_file):
        raise click.BadParameter("https:// listen URLs need --cert-file and --key-file")
    from brain.server.autocompact import parse_retention

    try:
        parse_retention(auto_compaction_mode, auto_compaction_retention)
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--auto-compaction-mode/--auto-compaction-retention") from None
    config = ServerConfig(
        name=name,
        data_dir=data_dir or f"{name}.brain",
        engine=engine,
        listen_client_urls=urls,
        advertise_client_urls=[u for u in advertise_client_urls.split(",") if u],
        max_request_bytes=max_request_bytes,
        max_txn_ops=max_txn_ops,
        version=server_version,
        sync_writes=not unsafe_no_fsync,
        tls=TLSConfig(cert_file, key_file, trusted_ca_file, client_cert_auth),
        listen_metrics_urls=_urls(listen_metrics_urls) if listen_metrics_urls else [],
        transport=transport,
        engine_options=engine_options,
        quota_backend_bytes=quota_backend_bytes,
        auto_compaction_mode=auto_compaction_mode,
        auto_compaction_retention=auto_compaction_retention,
        auto_compaction_revision_interval=auto_compaction_revision_interval,
    )
    from brain.server.server import serve as run
    from brain.server.server import ListenError
    from engines.base import EngineLockedError, EngineUnavailableError

    try:
        try:
            import uvloop
        except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
            asyncio.run(run(config))
        else:
            uvloop.run(run(config))
    # start errors an operator fixes (a port in use, a data dir in use, PD
    # not answering): one line saying so, as etcd does, not a traceback
    except (ListenError, EngineLockedError, EngineUnavailableError) as e:
        fatal(str(e))
    except PermissionError as e:
        fatal(f"cannot open the data directory: {e}")


def main() -> None:
    try:
        code = cli.main(standalone_mode=False)
    except click.UsageError as e:
        # a bad flag: one line (and, from serve, one log line), as etcd's start errors
        if e.ctx is not None and e.ctx.command.name == "serve":
            setup_logging("info")
            fatal(f"bad flag: {e.format_message()}", 2)
        click.echo(f"Error: {e.format_message()}", err=True)
        sys.exit(2)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except click.Abort:
        sys.exit(1)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
