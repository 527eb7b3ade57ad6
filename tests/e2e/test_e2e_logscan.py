"""The end-to-end suite's own parts that need no kube-apiserver: the log scan
that fails a run on etcd error lines, and the /metrics parsing. These run
everywhere, so the suite's judge is tested even where the suite is skipped.
The sample lines are as kube-apiserver 1.36 writes them."""
from __future__ import annotations

import re

from e2e_cluster import ETCD_351_LACKS
from kube_e2e import _LABEL, _METRIC, ETCD_ERROR_PATTERNS, lines_matching, metric_sum, scan_log

STARTUP = [
    'I1123 09:05:38.140327   18285 flags.go:64] FLAG: --etcd-compaction-interval="10s"',
    "W1123 09:05:38.251145   18285 authentication.go:841] AnonymousAuth is not allowed with the AlwaysAllow "
    "authorizer. Resetting AnonymousAuth to false. You should use a different authorizer",
    "E1123 09:05:38.405942   18285 options.go:205] The manifest file is empty, ignoring.",
    'W1123 09:05:38.408084   18285 logging.go:55] [core] [Channel #3 SubChannel #8] grpc: addrConn.createTransport '
    'failed to connect to {Addr: "127.0.0.1:23790", ServerName: "127.0.0.1:23790", }. Err: connection error: '
    'desc = "transport: Error while dialing: dial tcp 127.0.0.1:23790: operation was canceled"',
    'I1123 09:08:45.322762   21150 cacher.go:489] "cacher initialized" group="" resource="secrets"',
]
PROGRESS = ('I1123 09:05:38.487479   18285 feature_support_checker.go:133] RequestWatchProgress feature is not '
            'supported by "http://127.0.0.1:23790" endpoint')
PREV_KV = ('E1123 10:00:00.000000   1 watcher.go:301] "Unhandled Error" err="etcd event received with PrevKv=nil '
           '(key=\\"/registry/configmaps/a/b\\", modRevision=42, type=DELETE)"')
TOO_LARGE = ('W1123 10:00:00.000000   1 cacher.go:500] "Failed to list" err="Timeout: Too large resource version: '
             '120, current: 118"')
WATCH_COMPACTED = ("W1123 09:08:04.722121   19804 watcher.go:332] watch chan error: etcdserver: mvcc: required "
                   "revision has been compacted")
CLIENT_WARN = ('{"level":"warn","ts":"2026-11-23T09:08:02.486345Z","logger":"etcd-client","caller":'
               '"v3@v3.6.8/retry_interceptor.go:65","msg":"retrying of unary invoker failed","target":'
               '"etcd-endpoints://0x86218940d20/127.0.0.1:45455","method":"/etcdserverpb.KV/Range","attempt":0,'
               '"error":"rpc error: code = DeadlineExceeded desc = latest balancer error: connection error: desc = '
               '\\"transport: Error while dialing: dial tcp 127.0.0.1:45455: connect: connection refused\\""}')
COMPACTED_READ = CLIENT_WARN.replace("DeadlineExceeded", "OutOfRange").split("desc =")[0] + \
    'desc = etcdserver: mvcc: required revision has been compacted"}'
COMPACT_FAILED = ("E1123 10:00:00.000000   1 compact.go:207] etcd: endpoint ([http://127.0.0.1:2379]) compact "
                  "failed: rpc error: code = Unimplemented desc = unknown method Compact")
CACHER_ERROR = ('E1123 10:00:00.000000   1 cacher.go:450] "Unhandled Error" err="k8s.io/apiserver/pkg/storage/'
                'cacher/cacher.go:450: Failed to watch *core.ConfigMap: unexpected"')


def write(tmp_path, lines):
    p = tmp_path / "kube-apiserver.log"
    p.write_text("\n".join(lines) + "\n")
    return str(p)


def window(path, first, last, allowed):
    """The byte range of lines first..last (inclusive) of the log."""
    data = open(path, "rb").read().split(b"\n")
    start = sum(len(x) + 1 for x in data[:first])
    end = sum(len(x) + 1 for x in data[:last + 1])
    return (start, end, allowed)


def test_a_clean_startup_passes(tmp_path):
    assert scan_log(write(tmp_path, STARTUP)) == []


def test_the_named_etcd_errors_fail(tmp_path):
    for line in (PROGRESS, PREV_KV, TOO_LARGE, WATCH_COMPACTED, CLIENT_WARN, COMPACT_FAILED, CACHER_ERROR):
        bad = scan_log(write(tmp_path, STARTUP + [line]))
        assert len(bad) == 1 and line in bad[0], (line, bad)


def test_etcd_351s_known_lack_is_ignored_and_still_found(tmp_path):
    path = write(tmp_path, STARTUP + [PROGRESS])
    assert scan_log(path, ignore=ETCD_351_LACKS) == []
    assert lines_matching(path, "watch progress unsupported") == [PROGRESS]
    # only what is named is ignored
    assert scan_log(write(tmp_path, STARTUP + [PROGRESS, PREV_KV]), ignore=ETCD_351_LACKS)


def test_an_outage_explains_connection_errors_but_not_protocol_errors(tmp_path):
    lines = STARTUP + [CLIENT_WARN, WATCH_COMPACTED, COMPACT_FAILED.replace("code = Unimplemented desc = unknown "
                       "method Compact", "connection refused"), PREV_KV, TOO_LARGE, CLIENT_WARN]
    path = write(tmp_path, lines)
    outage = window(path, len(STARTUP), len(STARTUP) + 4, "outage")
    bad = scan_log(path, [outage])
    # PrevKv and the too-large resource version are never excused; the last
    # client warning is after the window
    assert [b.split("] ", 1)[0] for b in bad] == ["[event without PrevKv", "[too large resource version",
                                                  "[store unreachable, etcd client warning"], bad
    # an Unimplemented compaction is a protocol error even while the store was down
    path = write(tmp_path, STARTUP + [COMPACT_FAILED])
    assert scan_log(path, [window(path, len(STARTUP), len(STARTUP), "outage")])


def test_a_provoked_window_excuses_only_its_pattern(tmp_path):
    path = write(tmp_path, STARTUP + [COMPACTED_READ, CLIENT_WARN])
    provoked = window(path, len(STARTUP), len(STARTUP) + 1, re.compile("required revision has been compacted"))
    bad = scan_log(path, [provoked])
    assert len(bad) == 1 and "DeadlineExceeded" in bad[0]


def test_every_pattern_has_a_unique_name():
    names = [n for n, _, _ in ETCD_ERROR_PATTERNS]
    assert len(names) == len(set(names))


def test_metrics_parsing():
    text = [
        "# HELP apiserver_watch_cache_consistent_read_total [ALPHA] Counter for consistent reads from cache.",
        'apiserver_watch_cache_consistent_read_total{fallback="false",group="",resource="configmaps",success="true"} 7',
        'apiserver_watch_cache_consistent_read_total{fallback="true",group="",resource="pods",success="true"} 2',
        'etcd_request_errors_total{operation="get",type="/registry/x"} 0',
        "process_start_time_seconds 1.7e+09",
    ]
    metrics: dict = {}
    for line in text:
        m = _METRIC.match(line)
        if m:
            metrics.setdefault(m.group(1), []).append((dict(_LABEL.findall(m.group(2) or "")), float(m.group(3))))
    name = "apiserver_watch_cache_consistent_read_total"
    assert metric_sum(metrics, name) == 9
    assert metric_sum(metrics, name, fallback="false", success="true") == 7
    assert metric_sum(metrics, name, resource="pods") == 2
    assert metric_sum(metrics, "process_start_time_seconds") == 1.7e9
    assert metric_sum(metrics, "missing") == 0
