"""The TiKV engine: brain's state in a TiKV cluster, for clusters that outgrow one machine.

`open_tikv(pd_endpoints=..., key_prefix=...)` connects and opens it (this is
what `open_engine("tikv", ...)` and `brain serve --engine tikv` use);
`TikvEngine.open(client)` opens it on a client already connected.
Needs the optional tikv-client package (`pip install 'brain[tikv]'`).
"""
from __future__ import annotations

from engines.tikv.engine import TikvEngine
from engines.tikv.snapshot import TikvSnapshot
from engines.tikv.open import DEFAULT_KEY_PREFIX, open_tikv, parse_endpoints

__all__ = ["DEFAULT_KEY_PREFIX", "TikvEngine", "TikvSnapshot", "open_tikv", "parse_endpoints"]
