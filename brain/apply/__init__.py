"""etcd request semantics (Range, Put, DeleteRange, Txn) over the MVCC store.

This is the layer between the gRPC services and brain/mvcc: it turns etcd's
request messages into MVCC reads and writes and builds etcd's responses,
following etcd's own apply rules (server/etcdserver/txn) field by field.
"""
