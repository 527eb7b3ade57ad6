"""TLS for the HTTP/2 transport: ALPN "h2" (and "http/1.1") and, if asked, client
certificates checked against a CA (like etcd's --client-cert-auth)."""
from __future__ import annotations

import ssl


def server_context(cert_file: str, key_file: str, trusted_ca_file: str = "", client_cert_auth: bool = False) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2  # RFC 7540 9.2
    ctx.load_cert_chain(cert_file, key_file)
    if trusted_ca_file:
        ctx.load_verify_locations(trusted_ca_file)
    if client_cert_auth:
        ctx.verify_mode = ssl.CERT_REQUIRED
    elif trusted_ca_file:
        ctx.verify_mode = ssl.CERT_OPTIONAL
    # http/1.1 for probes and scrapes of /health, /version, /metrics, as etcd offers it
    ctx.set_alpn_protocols(["h2", "http/1.1"])
    # TLS compression and renegotiation are forbidden by RFC 7540 9.2.1
    ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION
    return ctx


class TLSError(Exception):
    """The handshake failed; `alert` holds the TLS alert to send the client
    before closing."""

    def __init__(self, message: str, alert: bytes) -> None:
        super().__init__(message)
        self.alert = alert


class ServerTLS:
    """Server-side TLS of one connection over a plain socket, in memory.

    asyncio's and uvloop's TLS transports close the socket on a failed
    handshake without sending what OpenSSL queued, so a client refused for
    its certificate sees a bare close; Go's servers (etcd's) send the alert
    (certificate required, bad certificate, unknown CA). Here the connection
    runs TLS itself, and sends the alert before it closes."""

    __slots__ = ("_in", "_out", "ssl", "established")

    def __init__(self, context: ssl.SSLContext) -> None:
        self._in = ssl.MemoryBIO()
        self._out = ssl.MemoryBIO()
        self.ssl = context.wrap_bio(self._in, self._out, server_side=True)
        self.established = False

    def receive(self, data: bytes) -> tuple[bytes, bytes]:
        """The client's bytes in: (plaintext received, bytes to send back).
        Raises TLSError if the handshake fails."""
        self._in.write(data)
        if not self.established:
            try:
                self.ssl.do_handshake()
            except ssl.SSLWantReadError:
                return b"", self._out.read()
            except ssl.SSLError as e:
                raise TLSError(str(e), self._out.read()) from None
            self.established = True
        chunks = []
        while True:
            try:
                chunk = self.ssl.read(1 << 17)
            except (ssl.SSLWantReadError, ssl.SSLZeroReturnError):
                break
            except ssl.SSLError as e:
                raise TLSError(str(e), self._out.read()) from None
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks), self._out.read()

    def send(self, data: bytes) -> bytes:
        """Plaintext out: the TLS records that carry it."""
        self.ssl.write(data)
        return self._out.read()

    def close_notify(self) -> bytes:
        """The close_notify alert that ends the TLS session."""
        try:
            self.ssl.unwrap()
        except ssl.SSLError:
            pass
        return self._out.read()
