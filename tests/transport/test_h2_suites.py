"""The project's differential, bad-input and etcdctl suites, run again with
brain on the h2 transport (the `brain` fixture of this directory)."""
from __future__ import annotations

from test_bad_input import *  # noqa: F401,F403
from test_etcdctl import *  # noqa: F401,F403
from test_kv_differential import *  # noqa: F401,F403
