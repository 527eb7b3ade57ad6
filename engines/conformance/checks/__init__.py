"""The conformance checks: each one a property of the contract in engines/base.py.

Every check opens a fresh engine in its own slot (data directory), so checks
are independent and can run in any order or alone. Random data comes from
seeded generators: a failure reproduces.
"""
from __future__ import annotations

from engines.conformance.checks.commits import (
    check_batch_order,
    check_commit_if,
    check_contention_free,
    check_contention_tasks,
    check_contention_threads,
)
from engines.conformance.checks.features import (
    check_compact_range,
    check_disk_size,
    check_inline_sync_hint,
    check_latency_histograms,
    check_ordered_writes,
    check_shared,
    check_sync_counters,
)
from engines.conformance.checks.durability import check_kill_atomicity, check_kill_durability, check_locked_data_dir, check_reopen
from engines.conformance.checks.isolation import check_bad_arguments, check_snapshot_isolation, check_use_after_close
from engines.conformance.checks.reads import (
    check_batch_get,
    check_keys_only,
    check_large_values,
    check_open,
    check_ordering,
    check_scan_bounds,
    check_scan_limit,
    check_scan_reverse,
)
from engines.conformance.harness import Check

CHECKS: tuple[Check, ...] = (
    Check("open", check_open, "the engine opens, writes, reads, snapshots and closes"),
    Check("ordering", check_ordering, "arbitrary byte keys (0x00, 0xff, prefixes, random) scan in sorted() order; empty values"),
    Check("scan-bounds", check_scan_bounds, "scan returns exactly [start, end); end None is unbounded"),
    Check("scan-limit", check_scan_limit, "scan limits"),
    Check("scan-reverse", check_scan_reverse, "reverse scans, with and without limits"),
    Check("keys-only", check_keys_only, "keys_only scans return b\"\" values"),
    Check("batch-get", check_batch_get, "batch_get order, duplicates, absent keys"),
    Check("large-values", check_large_values, "1.5 MiB values"),
    Check("batch-order", check_batch_order, "within a batch, the later op on a key wins"),
    Check("commit-if", check_commit_if, "commit_if semantics; a conflict writes nothing"),
    Check("contention-tasks", check_contention_tasks, "commit_if races between 16 asyncio tasks"),
    Check("contention-threads", check_contention_threads, "commit_if races between threads"),
    Check("contention-free", check_contention_free, "free-running commit_if increments lose nothing"),
    Check("snapshot-isolation", check_snapshot_isolation, "snapshots do not see later writes and deletes"),
    Check("use-after-close", check_use_after_close, "EngineClosedError after close()"),
    Check("bad-arguments", check_bad_arguments, "TypeError/ValueError for bad arguments, nothing written"),
    Check("reopen", check_reopen, "contents survive close() and reopen (durable engines)"),
    Check("kill-atomicity", check_kill_atomicity, "SIGKILL mid-stream: every batch all-or-nothing (durable engines)"),
    Check("kill-durability", check_kill_durability, "SIGKILL: acknowledged synced batches survive (durable engines)"),
    Check("locked-data-dir", check_locked_data_dir, "a second process gets EngineLockedError (durable engines with a data dir)"),
    Check("shared", check_shared, "two engines on the same data see each other's writes; commit_if races between them (declared shared)"),
    Check("ordered-writes", check_ordered_writes, "writes and commit_ifs in flight at once take effect in call order (declared ordered_writes)"),
    Check("inline-sync-hint", check_inline_sync_hint, "syncs_inline() True: the synced write does not suspend (declared inline_sync_hint)"),
    Check("disk-size", check_disk_size, "disk_size() and bytes_written grow with writes (declared disk_size)"),
    Check("compact-range", check_compact_range, "compact_range() leaves data and snapshots intact (declared compact_range)"),
    Check("latency-histograms", check_latency_histograms, "commits and syncs are counted in the histograms (declared latency_histograms)"),
    Check("sync-counters", check_sync_counters, "synced writes counted once each, average sync time (declared sync_counters)"),
)
