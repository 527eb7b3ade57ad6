"""etcd's --config-file: a YAML file whose keys are the flag names, with the
client TLS flags under `client-transport-security` (and the peer ones, which
brain ignores, under `peer-transport-security`)."""
from __future__ import annotations

from typing import Any

import yaml

# keys under client-transport-security, as flags
_CLIENT_TLS = {
    "cert-file": "cert-file",
    "key-file": "key-file",
    "client-cert-auth": "client-cert-auth",
    "trusted-ca-file": "trusted-ca-file",
    "auto-tls": "auto-tls",
    "crl-file": "client-crl-file",
    "allowed-hostname": "client-cert-allowed-hostname",
}
_PEER_TLS = {
    "cert-file": "peer-cert-file",
    "key-file": "peer-key-file",
    "client-cert-auth": "peer-client-cert-auth",
    "trusted-ca-file": "peer-trusted-ca-file",
    "auto-tls": "peer-auto-tls",
    "crl-file": "peer-crl-file",
    "allowed-cn": "peer-cert-allowed-cn",
    "allowed-hostname": "peer-cert-allowed-hostname",
}
# durations, which the YAML may give as integers of nanoseconds (Go's
# time.Duration unmarshalled from a number)
_DURATIONS = {"grpc-keepalive-min-time", "grpc-keepalive-interval", "grpc-keepalive-timeout",
              "experimental-watch-progress-notify-interval", "experimental-warning-apply-duration",
              "experimental-corrupt-check-time", "backend-batch-interval"}


class ConfigFileError(Exception):
    pass


def _text(flag: str, value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int) and flag in _DURATIONS:
        return f"{value}ns"
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    return str(value)


def load_config_file(path: str) -> dict[str, str]:
    """flag name -> its value as the command line would give it; keys with
    no value (`data-dir:`) are left out, so the flag keeps its default."""
    try:
        with open(path) as f:
            doc = yaml.safe_load(f)
    except OSError as e:
        raise ConfigFileError(f"cannot read {path}: {e.strerror}") from None
    except yaml.YAMLError as e:
        raise ConfigFileError(f"{path} is not valid YAML: {e}") from None
    if doc is None:
        return {}
    if not isinstance(doc, dict):
        raise ConfigFileError(f"{path}: expected a mapping of flag names to values")
    out: dict[str, str] = {}
    for key, value in doc.items():
        if key in ("client-transport-security", "peer-transport-security") and isinstance(value, dict):
            names = _CLIENT_TLS if key == "client-transport-security" else _PEER_TLS
            for sub, v in value.items():
                if sub in names and v is not None:
                    out[names[sub]] = _text(names[sub], v)
            continue
        if value is None:
            continue
        out[str(key)] = _text(str(key), value)
    return out
