"""`brain serve`: etcd's command line (flags, ETCD_* variables, --config-file)
turned into a ServerConfig, and the server run until SIGTERM/SIGINT."""
from __future__ import annotations

import asyncio
import logging
import os
from typing import Any, Callable

import click

from brain.logs import fatal, setup_logging
from brain.server import etcd_flags
from brain.server.autocompact import parse_go_duration, parse_retention
from brain.server.config import (
    DEFAULT_MAX_REQUEST_BYTES,
    DEFAULT_MAX_TXN_OPS,
    DEFAULT_VERSION,
    ListenURL,
    ServerConfig,
    TLSConfig,
)
from brain.server.etcd_config import ConfigFileError, load_config_file
from brain.server.tls_ciphers import openssl_ciphers

log = logging.getLogger("brain.serve")

# brain's own flags, which etcd does not have (no ETCD_ variable)
BRAIN_ONLY = {"engine", "server-version", "transport", "tikv-pd-endpoints", "tikv-key-prefix",
              "experimental-auto-compaction-revision-interval", "migration-target"}


def _urls(value: str, flag: str) -> list[ListenURL]:
    try:
        return [ListenURL.parse(u) for u in value.split(",") if u.strip()]
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint=f"--{flag}") from None


def _bool(flag: str) -> Callable[[click.Context, click.Parameter, Any], bool]:
    def convert(ctx: click.Context, param: click.Parameter, value: Any) -> bool:
        if isinstance(value, bool):
            return value
        try:
            return etcd_flags.parse_bool(flag, str(value))
        except ValueError as e:
            raise click.BadParameter(str(e)) from None
    return convert


def _duration(flag: str) -> Callable[[click.Context, click.Parameter, Any], float]:
    def convert(ctx: click.Context, param: click.Parameter, value: Any) -> float:
        try:
            seconds = parse_go_duration(str(value))
        except ValueError as e:
            raise click.BadParameter(f"invalid value {value!r} for flag --{flag}: {e}") from None
        if seconds < 0:
            raise click.BadParameter(f"invalid value {value!r} for flag --{flag}: negative")
        return seconds
    return convert


def tikv_options(engine: str, pd_endpoints: str, key_prefix: str | None) -> dict:
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


def _option(flag: str, *names: str, **kwargs: Any) -> Callable:
    if flag not in BRAIN_ONLY:
        kwargs.setdefault("envvar", etcd_flags.env_name(flag))
        kwargs.setdefault("show_envvar", False)
    return click.option(f"--{flag}", *names, **kwargs)


def _bool_option(flag: str, help: str) -> Callable:
    """A Go boolean: --flag, --flag=true, --flag=false."""
    return _option(flag, default="false", is_flag=False, flag_value="true", callback=_bool(flag), help=help, metavar="[=BOOL]")


def _ignored_options(fn: Callable) -> Callable:
    for flag, default in reversed(etcd_flags.IGNORED.items()):
        param = "ignored_" + flag.replace("-", "_")
        kw: dict[str, Any] = {"default": None, "hidden": True, "envvar": etcd_flags.env_name(flag)}
        if etcd_flags.is_boolean(default):
            kw.update(is_flag=False, flag_value="true")
        fn = click.option(f"--{flag}", param, **kw)(fn)
    return fn


def print_version(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    if value and not ctx.resilient_parsing:
        click.echo(version_text())
        ctx.exit()


def version_text() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        mine = version("brain-kv")
    except PackageNotFoundError:
        mine = "unknown"
    return f"brain Version: {mine}\netcd API Version: {DEFAULT_VERSION}"


@click.command()
@click.option("--version", is_flag=True, expose_value=False, is_eager=True, callback=print_version, help="Print the version and exit.")
@click.option("--config-file", default=None, envvar="ETCD_CONFIG_FILE", is_eager=True,
              help="etcd's YAML configuration file; as in etcd, flags and ETCD_* variables are then ignored.")
@_option("name", default="default", show_default=True, help="Human-readable name for this member.")
@_option("data-dir", default=None, help="Path to the data directory (default: ${name}.brain).")
@_option("engine", type=click.Choice(["leveldb", "memory", "tikv"]), default="leveldb", show_default=True)
@_option("listen-client-urls", default="http://127.0.0.1:2379", show_default=True, help="Comma-separated URLs to serve clients on.")
@_option("advertise-client-urls", default="", help="Client URLs reported in MemberList (default: the listen URLs).")
@_option("listen-metrics-urls", default="", help="Comma-separated http:// or https:// URLs serving /metrics and /health.")
@_option("metrics", type=click.Choice(["basic", "extensive"]), default="basic", show_default=True,
         help="extensive adds the gRPC latency histogram (grpc_server_handling_seconds), as in etcd.")
@_option("max-request-bytes", type=click.IntRange(min=0), default=DEFAULT_MAX_REQUEST_BYTES, show_default=True)
@_option("max-txn-ops", type=click.IntRange(min=0), default=DEFAULT_MAX_TXN_OPS, show_default=True)
@_option("logger", type=click.Choice(["zap", "capnslog"]), default="zap", show_default=True, help="Accepted for etcd; brain logs JSON lines (zap's format).")
@_option("log-outputs", default="default", show_default=True, help="Comma-separated: default, stderr, stdout or file paths.")
@_option("log-level", type=click.Choice(["debug", "info", "warn", "error", "panic", "fatal"]), default="info", show_default=True)
@_option("server-version", default=DEFAULT_VERSION, show_default=True, help="etcd version reported by Maintenance.Status.")
@_bool_option("unsafe-no-fsync", "Do not fsync writes (like etcd's flag: data loss on power failure).")
@_option("cert-file", default="", help="Server TLS certificate (for https:// client URLs).")
@_option("key-file", default="", help="Server TLS key.")
@_option("trusted-ca-file", default="", help="CA to verify client certificates.")
@_bool_option("client-cert-auth", "Require client certificates signed by --trusted-ca-file.")
@_option("cipher-suites", default="", help="Comma-separated TLS cipher suites, by Go's names (TLS 1.2).")
@_option("grpc-keepalive-min-time", default="5s", show_default=True, callback=_duration("grpc-keepalive-min-time"),
         help="Shortest interval at which a client may ping.")
@_option("grpc-keepalive-interval", default="2h", show_default=True, callback=_duration("grpc-keepalive-interval"),
         help="Interval of the server's pings to check a connection is alive.")
@_option("grpc-keepalive-timeout", default="20s", show_default=True, callback=_duration("grpc-keepalive-timeout"),
         help="How long the server waits for a ping's answer before closing the connection.")
@_option("experimental-watch-progress-notify-interval", default="10m", show_default=True,
         callback=_duration("experimental-watch-progress-notify-interval"),
         help="Interval of progress notifications to watchers that asked for them.")
@_option("transport", type=click.Choice(["h2", "grpcio"]), default="h2", show_default=True,
         help="gRPC server: brain's own HTTP/2 transport (h2), which also answers /health, /version and /metrics "
              "on the client URLs, or grpcio's asyncio server, which owns the sockets and serves gRPC only.")
@_option("tikv-pd-endpoints", default="", help="Comma-separated PD endpoints of the TiKV cluster (--engine tikv), e.g. pd1:2379,pd2:2379.")
@_option("tikv-key-prefix", default=None,
         help="Prefix of every key this brain cluster keeps in TiKV; brain clusters sharing one TiKV need distinct ones (default brain/).")
@_option("quota-backend-bytes", type=int, default=0, show_default=True,
         help="Raise the NOSPACE alarm and refuse writes when the database reaches this size (0: etcd's default of 2 GiB; negative: no quota).")
@_option("auto-compaction-mode", default="periodic", show_default=True, help="periodic (keep a time span) or revision (keep a count of revisions).")
@_option("auto-compaction-retention", default="0", show_default=True,
         help="Periodic: a duration (1h, 30m) or a bare number of hours; revision: a number of revisions. 0 disables.")
@_option("experimental-auto-compaction-revision-interval", "auto_compaction_revision_interval", type=float, default=300.0,
         hidden=True, help="Seconds between the checks of revision mode (etcd's fixed 5 minutes); for tests.")
@_option("migration-target", is_flag=True, default=False,
         help="Take a migration (brain migrate --to) into an empty data directory: client writes, compactions and lease "
              "requests are refused (etcd's learner error) until the migration's cut-over; reads and watches are served.")
@_ignored_options
@click.pass_context
def serve(ctx: click.Context, **flags: Any) -> None:
    """Serve the etcd v3 API. Takes etcd 3.5's flags, ETCD_* variables and
    --config-file; those of raft, peers and cluster bootstrap are accepted
    and named in one warning line."""
    ignored_by_config = _apply_config_file(ctx, flags)
    setup_logging(flags["log_level"], outputs=flags["log_outputs"])
    if ignored_by_config:
        log.warning("--config-file is given: as in etcd, these flags and ETCD_* variables are ignored: %s",
                    ", ".join(ignored_by_config))
    ignored = etcd_flags.ignored_in_effect({f: flags["ignored_" + f.replace("-", "_")] for f in etcd_flags.IGNORED})
    if ignored:
        log.warning("etcd flags with no meaning for brain (one member over a key-value engine) are ignored: %s",
                    ", ".join(f"--{f}" for f in ignored))
    unknown = etcd_flags.unknown_etcd_env(os.environ, known_flags())
    if unknown:
        log.warning("unrecognized environment variables (no such etcd flag): %s", ", ".join(unknown))
    if flags["logger"] == "capnslog":
        log.warning("--logger=capnslog is deprecated in etcd 3.5; brain logs JSON lines")
    config = _config(flags)
    _run(config)


def _apply_config_file(ctx: click.Context, flags: dict[str, Any]) -> list[str]:
    """With --config-file, its values replace every flag, and flags given on
    the command line or in the environment are dropped (etcd's rule).
    Returns the dropped flags."""
    path = flags.pop("config_file")
    if not path:
        return []
    try:
        values = load_config_file(path)
    except ConfigFileError as e:
        raise click.BadParameter(str(e), param_hint="--config-file") from None
    dropped = []
    for param in ctx.command.params:
        name = param.name
        if name is None or name not in flags:
            continue
        source = ctx.get_parameter_source(name)
        flag = param.opts[0].lstrip("-")
        if source in (click.core.ParameterSource.COMMANDLINE, click.core.ParameterSource.ENVIRONMENT) and flag not in BRAIN_ONLY:
            dropped.append(f"--{flag}")
            flags[name] = param.get_default(ctx)
            if param.callback is not None and flags[name] is not None:
                flags[name] = param.callback(ctx, param, flags[name])
        if flag in values:
            raw = values[flag]
            value = param.type_cast_value(ctx, raw) if not name.startswith("ignored_") else raw
            flags[name] = param.callback(ctx, param, value) if param.callback is not None else value
    return sorted(dropped)


def _config(f: dict[str, Any]) -> ServerConfig:
    urls = _urls(f["listen_client_urls"], "listen-client-urls")
    metrics_urls = _urls(f["listen_metrics_urls"], "listen-metrics-urls") if f["listen_metrics_urls"] else []
    has_cert = bool(f["cert_file"] and f["key_file"])
    if any(u.scheme == "https" for u in urls) and not has_cert:
        raise click.BadParameter("https:// listen URLs need --cert-file and --key-file", param_hint="--listen-client-urls")
    if any(u.scheme == "https" for u in metrics_urls) and not has_cert:
        raise click.BadParameter("https:// metrics URLs need --cert-file and --key-file", param_hint="--listen-metrics-urls")
    if f["client_cert_auth"] and not f["trusted_ca_file"]:
        raise click.BadParameter("--client-cert-auth needs --trusted-ca-file", param_hint="--client-cert-auth")
    try:
        ciphers = openssl_ciphers(f["cipher_suites"])
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--cipher-suites") from None
    try:
        parse_retention(f["auto_compaction_mode"], f["auto_compaction_retention"])
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--auto-compaction-mode/--auto-compaction-retention") from None
    return ServerConfig(
        name=f["name"],
        data_dir=f["data_dir"] or f"{f['name']}.brain",
        engine=f["engine"],
        listen_client_urls=urls,
        advertise_client_urls=[u for u in f["advertise_client_urls"].split(",") if u],
        max_request_bytes=f["max_request_bytes"],
        max_txn_ops=f["max_txn_ops"],
        version=f["server_version"],
        sync_writes=not f["unsafe_no_fsync"],
        tls=TLSConfig(f["cert_file"], f["key_file"], f["trusted_ca_file"], f["client_cert_auth"], ciphers),
        listen_metrics_urls=metrics_urls,
        metrics_extensive=f["metrics"] == "extensive",
        transport=f["transport"],
        engine_options=tikv_options(f["engine"], f["tikv_pd_endpoints"], f["tikv_key_prefix"]),
        progress_notify_interval=f["experimental_watch_progress_notify_interval"],
        keepalive_min_time=f["grpc_keepalive_min_time"],
        keepalive_interval=f["grpc_keepalive_interval"],
        keepalive_timeout=f["grpc_keepalive_timeout"],
        quota_backend_bytes=f["quota_backend_bytes"],
        auto_compaction_mode=f["auto_compaction_mode"],
        auto_compaction_retention=f["auto_compaction_retention"],
        auto_compaction_revision_interval=f["auto_compaction_revision_interval"],
        migration_target=f["migration_target"],
    )


def _run(config: ServerConfig) -> None:
    from brain.server.server import ListenError, StartRefused
    from brain.server.server import serve as run
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
    except (ListenError, StartRefused, EngineLockedError, EngineUnavailableError) as e:
        fatal(str(e))
    except PermissionError as e:
        fatal(f"cannot open the data directory: {e}")
    except OSError as e:  # e.g. a log output or certificate file that cannot be opened
        fatal(f"{e.strerror or e}: {getattr(e, 'filename', '') or ''}".rstrip(": "))


def known_flags() -> set[str]:
    """Every long flag `brain serve` takes, for Go-style single-dash forms."""
    out = set()
    for p in serve.params:
        for o in p.opts:
            if o.startswith("--"):
                out.add(o[2:])
    return out

