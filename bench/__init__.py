"""`brain bench`: kube-apiserver-shaped load against etcd-compatible endpoints.

The command lives in bench/command.py; brain/cli.py registers it. Each
module holds one part: the workload catalog, the multi-process Python client,
the Go load generator driver, the managed servers, /proc sampling, the rounds
and ratios of a comparison, and the JSON, table and chart outputs.
"""
from __future__ import annotations
