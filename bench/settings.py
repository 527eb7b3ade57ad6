"""The knobs of one `brain bench` run, fixed before the first request."""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from typing import Any


def default_client_procs() -> int:
    # The client shares this machine with the server under test: half the
    # cores for client processes leaves the rest to the server.
    return max(1, min(8, (os.cpu_count() or 2) // 2))


@dataclass(frozen=True)
class Settings:
    duration: float = 5.0
    inflight: int = 64
    list_inflight: int = 4
    client_procs: int = 1
    channels: int = 2  # per client process, each its own TCP connection
    value_size: int = 1024
    list_keys: int = 10_000
    page_size: int = 500
    watchers: int = 1000
    watch_streams: int = 100
    watch_puts: int = 500
    watch_put_inflight: int = 16
    # puts per second under the watched prefix (0: as fast as they go); a
    # steady rate lets the watchers keep up, so the lag measured is the server's
    watch_put_rate: float = 0.0
    lease_ttl: int = 600
    client: str = "auto"  # auto | python | etcdload
    etcdload_bin: str | None = None
    # delete what the run wrote (external endpoints only: fresh servers are discarded)
    cleanup: bool = False
    # hard cap on operations per client process per run, so that no loop is
    # bounded by time alone
    max_ops_per_proc: int = 5_000_000

    def as_json(self) -> dict[str, Any]:
        return asdict(self)
