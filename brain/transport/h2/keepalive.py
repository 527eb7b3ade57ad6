"""gRPC's keepalive enforcement on the server (etcd's --grpc-keepalive-min-time):
a client that pings more often than the minimum interval earns a strike;
past two strikes the connection ends with GOAWAY(ENHANCE_YOUR_CALM,
"too_many_pings"). The server sending headers or data forgives the strikes,
as grpc-go's server does, so a client whose pings ride on real traffic is
never cut off. Sans IO: the caller passes the time."""
from __future__ import annotations

from dataclasses import dataclass

MAX_PING_STRIKES = 2  # grpc-go's maxPingStrikes


@dataclass(slots=True)
class PingPolicy:
    min_interval: float
    strikes: int = 0
    last_ping: float | None = None

    def too_many(self, now: float, forgiven: bool) -> bool:
        """A ping arrived at now; forgiven: the server sent headers or data
        since the previous one. True once the client has pinged too often."""
        last, self.last_ping = self.last_ping, now
        if forgiven:
            self.strikes = 0
            return False
        if last is not None and now - last < self.min_interval:
            self.strikes += 1
        return self.strikes > MAX_PING_STRIKES


@dataclass(frozen=True, slots=True)
class Keepalive:
    """gRPC's server keepalive (etcd's --grpc-keepalive-*), in seconds: after
    `interval` without a byte from the client the server pings, and closes the
    connection if nothing arrives within `timeout`; a client pinging more
    often than `min_time` is cut off (PingPolicy)."""

    interval: float = 2 * 60 * 60.0
    timeout: float = 20.0
    min_time: float = 5.0
