"""gRPC channels to an etcd-compatible endpoint, for brain's client tools
(snapshot save, migrate, check), with etcdctl's notion of endpoints and TLS."""
from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

import grpc

UNLIMITED = [("grpc.max_receive_message_length", -1), ("grpc.max_send_message_length", -1)]


@dataclass
class Endpoint:
    """host:port, http://host:port or https://host:port, with etcdctl's TLS
    options (--cacert, --cert, --key)."""

    address: str
    secure: bool = False
    cacert: str = ""
    cert: str = ""
    key: str = ""

    @classmethod
    def parse(cls, url: str, cacert: str = "", cert: str = "", key: str = "") -> Endpoint:
        url = url.strip()
        if "://" in url:
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.netloc:
                raise ValueError(f"endpoint {url!r}: want host:port, http://host:port or https://host:port")
            # the scheme decides, as in etcd's client: http:// is plaintext
            # even beside TLS options meant for another endpoint (brain
            # check compares an https etcd with an http brain)
            return cls(parts.netloc, parts.scheme == "https", cacert, cert, key)
        return cls(url, bool(cacert), cacert, cert, key)

    def channel(self) -> grpc.Channel:
        if not self.secure:
            return grpc.insecure_channel(self.address, options=UNLIMITED)
        return grpc.secure_channel(self.address, self._credentials(), options=UNLIMITED)

    def aio_channel(self) -> grpc.aio.Channel:
        if not self.secure:
            return grpc.aio.insecure_channel(self.address, options=UNLIMITED)
        return grpc.aio.secure_channel(self.address, self._credentials(), options=UNLIMITED)

    def _credentials(self) -> grpc.ChannelCredentials:
        def read(path: str) -> bytes | None:
            if not path:
                return None
            with open(path, "rb") as f:
                return f.read()

        return grpc.ssl_channel_credentials(read(self.cacert), read(self.key), read(self.cert))
