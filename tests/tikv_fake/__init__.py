"""A fake PD + TiKV cluster, wire-compatible with tikv-client, for tests only.

No TiKV or PD binary can be installed where brain's tests run, so the TiKV
engine is tested against this: one Python process serving PD's gRPC API on
one port and TiKV's transactional API on another, with TiKV's Percolator
rules (mvcc.py), real wall-clock timestamps (tso.py), and its data in a
sqlite file so that it survives its own restart. It is a test fixture,
never an engine, and is not shipped.

    python -m tests.tikv_fake --pd-port 0 --tikv-port 0 --data /tmp/fake.db

tests/tikv_fake/process.py starts it as a subprocess for pytest. The wire
protocol subset is proto/tikv/*.proto, generated into pb/ by
proto/tikv/generate.py.
"""
