"""etcd 3.5's command line, as `brain serve` accepts it.

Every flag etcd 3.5 accepts is accepted, so that an etcd manifest (kubeadm's
static pod, a systemd unit, an ETCD_* environment) starts brain unchanged.
The flags with a meaning for a one-member store over a key-value engine are
brain's own options (brain/cli.py); the rest, raft, peers, cluster
bootstrap, discovery, v2, proxy and the like, are accepted and named in one
warning line at start (IGNORED below, with etcd's defaults, so that only
flags set to something else are named).

Go's flag package also takes `-flag` and `-flag=value`, and a boolean as
`--flag`, `--flag=true` or `--flag=false`; `go_style_argv` turns the first
two into `--flag` form, and the boolean options take an optional value.
"""
from __future__ import annotations

from typing import Iterable, Mapping

# etcd flag -> its default, as `etcd --help` prints it
IGNORED: dict[str, str] = {
    "wal-dir": "",
    "snapshot-count": "100000",
    "heartbeat-interval": "100",
    "election-timeout": "1000",
    "initial-election-tick-advance": "true",
    "listen-peer-urls": "http://localhost:2380",
    "max-snapshots": "5",
    "max-wals": "5",
    "backend-bbolt-freelist-type": "map",
    "backend-batch-interval": "",
    "backend-batch-limit": "0",
    "socket-reuse-port": "false",
    "socket-reuse-address": "false",
    "initial-advertise-peer-urls": "http://localhost:2380",
    "initial-cluster": "default=http://localhost:2380",
    "initial-cluster-state": "new",
    "initial-cluster-token": "etcd-cluster",
    "discovery": "",
    "discovery-fallback": "proxy",
    "discovery-proxy": "",
    "discovery-srv": "",
    "discovery-srv-name": "",
    "strict-reconfig-check": "true",
    "pre-vote": "true",
    "enable-v2": "false",
    "v2-deprecation": "not-yet",
    "client-crl-file": "",
    "client-cert-allowed-hostname": "",
    "auto-tls": "false",
    "peer-cert-file": "",
    "peer-key-file": "",
    "peer-client-cert-auth": "false",
    "peer-trusted-ca-file": "",
    "peer-cert-allowed-cn": "",
    "peer-cert-allowed-hostname": "",
    "peer-auto-tls": "false",
    "self-signed-cert-validity": "1",
    "peer-crl-file": "",
    "cors": "*",
    "host-whitelist": "*",
    "auth-token": "simple",
    "bcrypt-cost": "10",
    "auth-token-ttl": "300",
    "enable-pprof": "false",
    "enable-log-rotation": "false",
    "log-rotation-config-json": '{"maxsize": 100, "maxage": 0, "maxbackups": 0, "localtime": false, "compress": false}',
    "experimental-enable-distributed-tracing": "false",
    "experimental-distributed-tracing-address": "localhost:4317",
    "experimental-distributed-tracing-service-name": "etcd",
    "experimental-distributed-tracing-instance-id": "",
    "proxy": "off",
    "proxy-failure-wait": "5000",
    "proxy-refresh-interval": "30000",
    "proxy-dial-timeout": "1000",
    "proxy-write-timeout": "5000",
    "proxy-read-timeout": "0",
    "experimental-initial-corrupt-check": "false",
    "experimental-corrupt-check-time": "0s",
    "experimental-enable-v2v3": "",
    "experimental-enable-lease-checkpoint": "false",
    "experimental-compaction-batch-limit": "1000",
    "experimental-peer-skip-client-san-verification": "false",
    "experimental-warning-apply-duration": "100ms",
    "experimental-txn-mode-write-with-shared-buffer": "true",
    "experimental-bootstrap-defrag-threshold-megabytes": "0",
    "force-new-cluster": "false",
}

BOOLEAN_VALUES = {"true": True, "1": True, "t": True, "false": False, "0": False, "f": False}


def is_boolean(default: str) -> bool:
    return default in ("true", "false")


def parse_bool(flag: str, value: str) -> bool:
    """A Go boolean flag's value (strconv.ParseBool's spellings)."""
    try:
        return BOOLEAN_VALUES[value.strip().lower()]
    except KeyError:
        raise ValueError(f"invalid boolean value {value!r} for --{flag}") from None


def go_style_argv(argv: Iterable[str], known: set[str]) -> list[str]:
    """`-flag`/`-flag=v` as `--flag`/`--flag=v` for the known flag names;
    everything else unchanged."""
    out = []
    for arg in argv:
        if arg.startswith("-") and not arg.startswith("--") and len(arg) > 2:
            name = arg[1:].split("=", 1)[0]
            if name in known:
                arg = "-" + arg
        out.append(arg)
    return out


def env_name(flag: str) -> str:
    """etcd's environment variable for a flag: ETCD_ and the flag in upper
    case with underscores (--data-dir: ETCD_DATA_DIR)."""
    return "ETCD_" + flag.upper().replace("-", "_")


def ignored_in_effect(values: Mapping[str, str | None]) -> list[str]:
    """The ignored flags set (on the command line, in the environment or in
    a config file) to something other than etcd's default."""
    out = []
    for name, value in values.items():
        if value is None:
            continue
        default = IGNORED[name]
        if is_boolean(default):
            try:
                if parse_bool(name, value) == parse_bool(name, default):
                    continue
            except ValueError:
                pass
        elif value == default:
            continue
        out.append(name)
    return sorted(out)


def unknown_etcd_env(environ: Mapping[str, str], known: set[str]) -> list[str]:
    """ETCD_* variables that name no flag (etcd warns about these too)."""
    names = {env_name(f) for f in known} | {"ETCD_CONFIG_FILE", "ETCD_UNSUPPORTED_ARCH"}
    return sorted(k for k in environ if k.startswith("ETCD_") and k not in names)
