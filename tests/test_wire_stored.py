"""The records brain/wire/stored.py puts together from bytes are protobuf's
own encoding of the same KeyValue."""
from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from brain.etcdpb import kv_pb2
from brain.wire.stored import tombstone, tombstone_suffix


@given(st.binary(max_size=300), st.integers(0, 2**63 - 1))
def test_tombstone_is_protobufs_own_encoding(key, rev):
    assert tombstone(key, tombstone_suffix(rev)) == kv_pb2.KeyValue(key=key, mod_revision=rev).SerializeToString()
