"""The gRPC face of brain: etcd's v3 services over the MVCC store."""
