"""Snapshots of a store: the file format, streaming it from a server, restoring it."""
