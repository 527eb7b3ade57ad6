"""The key prefix that lets several brain clusters share one TiKV cluster.

Every key the engine stores is prefix + key, and every range is confined to
the keys under the prefix, so a brain cluster never sees, scans over or
overwrites another's keys. Prefixes of clusters sharing a TiKV must not be
prefixes of one another ("brain/a/" and "brain/a/b/" would overlap).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from engines.base import prefix_end


@dataclass(frozen=True, slots=True)
class KeySpace:
    prefix: bytes = b""
    end: bytes | None = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "end", prefix_end(self.prefix))

    def key(self, key: bytes) -> bytes:
        return self.prefix + key

    def keys(self, keys: list[bytes]) -> list[bytes]:
        p = self.prefix
        return [p + k for k in keys] if p else keys

    def strip(self, stored: bytes) -> bytes:
        return stored[len(self.prefix) :]

    def range(self, start: bytes, end: bytes | None) -> tuple[bytes, bytes | None]:
        """The stored range holding the engine range [start, end)."""
        return self.prefix + start, (self.end if end is None else self.prefix + end)
