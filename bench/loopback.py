"""Benchmark targets are loopback only: load is never sent to another machine."""
from __future__ import annotations

import ipaddress


def parse_endpoint(text: str) -> str:
    """'HOST:PORT' (optionally with http://) on a loopback address, returned
    as 'IP:PORT'. 'localhost' becomes 127.0.0.1 so that every client (and the
    Go load generator, which insists on it) dials the same address."""
    raw = text.strip()
    for scheme in ("http://", "https://"):
        if raw.startswith(scheme):
            if scheme == "https://":
                raise ValueError("TLS endpoints are not supported by brain bench")
            raw = raw[len(scheme):]
    raw = raw.rstrip("/")
    host, sep, port_text = raw.rpartition(":")
    if not sep or not host:
        raise ValueError(f"expected HOST:PORT, got {text!r}")
    try:
        port = int(port_text)
    except ValueError:
        raise ValueError(f"bad port in {text!r}") from None
    if not 0 < port < 65536:
        raise ValueError(f"bad port in {text!r}")
    host = host.strip("[]")
    if host == "localhost":
        host = "127.0.0.1"
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"{text!r}: give a loopback IP address (e.g. 127.0.0.1)") from None
    if not ip.is_loopback:
        raise ValueError(f"{text!r} is not a loopback address: brain bench only loads this machine")
    return f"[{ip}]:{port}" if ip.version == 6 else f"{ip}:{port}"
