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
