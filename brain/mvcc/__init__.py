"""Revisioned key-value storage over an engine: etcd's MVCC model."""
