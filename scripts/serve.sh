#!/usr/bin/env bash
# Sets up a virtualenv (.venv) with brain and starts it on the embedded
# LevelDB engine at http://127.0.0.1:2379 (data in ./default.brain).
# Extra arguments go to `brain serve` (see `brain serve --help`).
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$python" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
.venv/bin/python -m pip install -q -e .
exec .venv/bin/brain serve "$@"
