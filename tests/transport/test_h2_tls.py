"""A client refused at the TLS handshake (--client-cert-auth: no
certificate, or one no trusted CA signed) gets a TLS alert before the
close, as etcd's clients do, not a bare close."""
from __future__ import annotations

import socket
import ssl

import pytest

from brain.transport.h2 import frames
from certs import make_pki
from servers import brain_server, etcd_server


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_pki(str(tmp_path_factory.mktemp("pki")))


@pytest.fixture(scope="module", params=["etcd", "brain"])
def server(request, tmp_path_factory, pki):
    tmp = str(tmp_path_factory.mktemp(request.param))
    if request.param == "brain":
        srv = brain_server(tmp, tls=(pki["ca"], pki["server"], pki["server_key"]))
    else:
        srv = etcd_server(tmp, "--cert-file", pki["server"], "--key-file", pki["server_key"],
                          "--trusted-ca-file", pki["ca"], "--client-cert-auth")
        srv.argv = [a.replace(f"http://127.0.0.1:{srv.port}", f"https://127.0.0.1:{srv.port}") for a in srv.argv]
        srv.tls = (pki["ca"], pki["client"], pki["client_key"])
    srv.start()
    yield srv
    srv.stop()


def _handshake(port: int, ca: str, cert: tuple[str, str] | None, version: ssl.TLSVersion) -> str:
    """Connect, say the HTTP/2 preface and read: the name of the TLS error
    the client got, or "answered" if the server answered."""
    ctx = ssl.create_default_context(cafile=ca)
    ctx.minimum_version = ctx.maximum_version = version
    ctx.set_alpn_protocols(["h2"])
    if cert is not None:
        ctx.load_cert_chain(*cert)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        try:
            with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as s:
                # under TLS 1.3 the server judges the client's certificate
                # after the client has finished: the refusal comes on reading
                s.sendall(frames.PREFACE + frames.settings([]))
                return "answered" if s.recv(100) else "closed"
        except ssl.SSLError as e:
            return e.reason or type(e).__name__


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3])
def test_refused_client_certificate_gets_an_alert(server, pki, version):
    none = _handshake(server.port, pki["ca"], None, version)
    stranger = _handshake(server.port, pki["ca"], (pki["stranger"], pki["stranger_key"]), version)
    trusted = _handshake(server.port, pki["ca"], (pki["client"], pki["client_key"]), version)
    print(f"\n{server.kind} {version.name}: no certificate: {none}; untrusted: {stranger}; trusted: {trusted}")
    # alerts, whose names are OpenSSL's choice in brain and Go's in etcd
    # (bad_certificate for both under TLS 1.2)
    assert "ALERT" in none and "ALERT" in stranger
    if server.kind == "etcd" and version == ssl.TLSVersion.TLSv1_3:
        # etcd 3.5.1 speaks TLS 1.2 at most: every TLS 1.3 client is refused so
        assert none == stranger == trusted == "TLSV1_ALERT_PROTOCOL_VERSION"
        return
    if version == ssl.TLSVersion.TLSv1_3:
        assert none == "TLSV13_ALERT_CERTIFICATE_REQUIRED"
    assert trusted == "answered"
