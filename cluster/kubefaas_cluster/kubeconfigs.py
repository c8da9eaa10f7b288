"""Kubeconfig files for the admin and for each component.

A kubeconfig here is the standard ``kind: Config`` YAML with ONE cluster, user and context,
all named ``kubefaas``, and the CA, client certificate and key embedded as base64 ``*-data``
fields so that the file stays valid when copied elsewhere (a CI artifact, another shell).
"""

from __future__ import annotations

import base64
from pathlib import Path

import yaml

from kubefaas_cluster.certs import KeyPair

CONTEXT_NAME = "kubefaas"


def _b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode("ascii")


def render_kubeconfig(*, server: str, ca_cert: Path, client: KeyPair) -> str:
    """The YAML text of a kubeconfig that authenticates with a client certificate."""
    document = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": CONTEXT_NAME,
                "cluster": {"server": server, "certificate-authority-data": _b64(ca_cert)},
            }
        ],
        "users": [
            {
                "name": CONTEXT_NAME,
                "user": {
                    "client-certificate-data": _b64(client.cert),
                    "client-key-data": _b64(client.key),
                },
            }
        ],
        "contexts": [
            {"name": CONTEXT_NAME, "context": {"cluster": CONTEXT_NAME, "user": CONTEXT_NAME}}
        ],
        "current-context": CONTEXT_NAME,
        "preferences": {},
    }
    return yaml.safe_dump(document, sort_keys=False)


def write_kubeconfig(path: Path, *, server: str, ca_cert: Path, client: KeyPair) -> Path:
    """Write a kubeconfig readable by the owner only (it holds a private key)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(
        render_kubeconfig(server=server, ca_cert=ca_cert, client=client), encoding="utf-8"
    )
    tmp.chmod(0o600)
    tmp.replace(path)
    return path
