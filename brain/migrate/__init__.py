"""Migration from a running etcd into a brain data directory, revisions kept."""
