"""What one client process of the Python client is to do: its role, its
target and its share of the load (shared by the harness that starts the
processes and the roles they run)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from bench.settings import Settings

# how long a request may take before the client gives up on it; also bounds
# how far past the window a closed loop can run
RPC_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class ChildJob:
    role: str  # "closed_loop", "watcher" or "writer" (see bench/roles.py)
    workload: str
    target: str
    index: int
    slots: int  # requests in flight (closed loop, writer) or watchers (watcher)
    streams: int  # watch streams (watcher only)
    tag: str  # unique per run: keeps the keys of rounds apart
    settings: Settings
    params: dict[str, Any] = field(default_factory=dict)
