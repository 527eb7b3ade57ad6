"""Test PKI made at run time with the openssl CLI: a CA, a server certificate
for 127.0.0.1/localhost, a client certificate, and a second, unrelated CA with
its own client certificate."""
from __future__ import annotations

import os
import subprocess


def _run(*args: str, cwd: str) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def _ca(d: str, name: str) -> None:
    _run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", f"/CN={name}",
         "-keyout", f"{name}-key.pem", "-out", f"{name}.pem", cwd=d)


def _leaf(d: str, ca: str, name: str, ext: str) -> None:
    _run("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}", "-keyout", f"{name}-key.pem",
         "-out", f"{name}.csr", cwd=d)
    with open(os.path.join(d, f"{name}.ext"), "w") as f:
        f.write(ext)
    _run("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}-key.pem", "-CAcreateserial",
         "-days", "2", "-extfile", f"{name}.ext", "-out", f"{name}.pem", cwd=d)


def make_pki(d: str) -> dict[str, str]:
    os.makedirs(d, exist_ok=True)
    _ca(d, "ca")
    _leaf(d, "ca", "server", "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\n")
    _leaf(d, "ca", "client", "extendedKeyUsage=clientAuth\n")
    _ca(d, "other-ca")
    _leaf(d, "other-ca", "stranger", "extendedKeyUsage=clientAuth\n")
    p = lambda n: os.path.join(d, n)  # noqa: E731
    return {
        "ca": p("ca.pem"), "server": p("server.pem"), "server_key": p("server-key.pem"),
        "client": p("client.pem"), "client_key": p("client-key.pem"),
        "other_ca": p("other-ca.pem"), "stranger": p("stranger.pem"), "stranger_key": p("stranger-key.pem"),
    }
