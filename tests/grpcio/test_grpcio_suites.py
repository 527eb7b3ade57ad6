"""The project's differential, bad-input, etcdctl and watch-scale suites,
run again with brain on grpcio's asyncio server (`--transport grpcio`, the
`brain` fixture of this directory); everywhere else brain runs on its
default h2 transport. The watch and lease differential suites run on both
transports by their own fixtures."""
from __future__ import annotations

from test_bad_input import *  # noqa: F401,F403
from test_etcdctl import *  # noqa: F401,F403
from test_kv_differential import *  # noqa: F401,F403
from test_watch_scale import *  # noqa: F401,F403
