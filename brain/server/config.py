"""Server configuration, named after etcd's flags where they mean the same."""
from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import urlsplit

DEFAULT_MAX_REQUEST_BYTES = 1536 * 1024  # etcd's --max-request-bytes default (1.5 MiB)
DEFAULT_MAX_TXN_OPS = 128
# etcd lets a gRPC message exceed max-request-bytes by this much, so that the
# request itself (not the transport) answers "request is too large".
GRPC_OVERHEAD_BYTES = 512 * 1024
DEFAULT_VERSION = "3.5.16"


@dataclass
class ListenURL:
    scheme: str
    host: str
    port: int

    @classmethod
    def parse(cls, url: str) -> ListenURL:
        parts = urlsplit(url.strip())
        if parts.scheme not in ("http", "https"):
            raise ValueError(f"unsupported URL scheme {parts.scheme!r} in {url!r} (want http or https)")
        if parts.port is None or not parts.hostname:
            raise ValueError(f"URL {url!r} needs a host and a port")
        return cls(parts.scheme, parts.hostname, parts.port)

    @property
    def address(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    def __str__(self) -> str:
        return f"{self.scheme}://{self.address}"


@dataclass
class TLSConfig:
    cert_file: str = ""
    key_file: str = ""
    trusted_ca_file: str = ""
    client_cert_auth: bool = False
    # an OpenSSL cipher string (from etcd's --cipher-suites); "" for the defaults
    cipher_suites: str = ""


@dataclass
class ServerConfig:
    name: str = "default"
    data_dir: str = "default.brain"
    engine: str = "leveldb"
    listen_client_urls: list[ListenURL] = field(
        default_factory=lambda: [ListenURL("http", "127.0.0.1", 2379)]
    )
    advertise_client_urls: list[str] = field(default_factory=list)
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES
    max_txn_ops: int = DEFAULT_MAX_TXN_OPS
    version: str = DEFAULT_VERSION
    sync_writes: bool = True
    tls: TLSConfig = field(default_factory=TLSConfig)
    engine_options: dict = field(default_factory=dict)
    progress_notify_interval: float = 600.0  # etcd's --experimental-watch-progress-notify-interval
    listen_metrics_urls: list[ListenURL] = field(default_factory=list)
    metrics_extensive: bool = False  # etcd's --metrics extensive: the gRPC latency histogram too
    # etcd's --grpc-keepalive-min-time, -interval and -timeout, in seconds
    keepalive_min_time: float = 5.0
    keepalive_interval: float = 2 * 60 * 60.0
    keepalive_timeout: float = 20.0
    transport: str = "h2"  # which gRPC server: brain.transport's ("h2", the default) or grpcio's (grpc.aio)
    # etcd's --quota-backend-bytes: 0 is etcd's default quota, negative none (brain/server/quota.py)
    quota_backend_bytes: int = 0
    quota_measure_interval: float = 1.0  # seconds between measures of the database size
    # etcd's --auto-compaction-mode and --auto-compaction-retention (brain/server/autocompact.py)
    auto_compaction_mode: str = "periodic"
    auto_compaction_retention: str = "0"
    auto_compaction_revision_interval: float = 300.0  # etcd's fixed check interval of revision mode
    # take a migration (brain migrate --to) into an empty store, refusing
    # client writes until its cut-over (brain/server/migration.py)
    migration_target: bool = False

    def client_urls(self) -> list[str]:
        return self.advertise_client_urls or [str(u) for u in self.listen_client_urls]
