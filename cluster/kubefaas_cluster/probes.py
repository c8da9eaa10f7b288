"""Readiness checks over HTTP(S), answering True/False rather than raising.

The API server is checked with the admin client certificate against the cluster CA; the
controller-manager and scheduler serve self-signed certificates on loopback, so their
health endpoints are read without verifying the server (they hold no secrets).
"""

from __future__ import annotations

import json
import ssl
import urllib.error
import urllib.request

from kubefaas_cluster.certs import KeyPair

PROBE_TIMEOUT_SECONDS = 3.0


def _context(*, ca_cert: KeyPair | None, client: KeyPair | None) -> ssl.SSLContext:
    if ca_cert is None:
        # Health ports on loopback with a self-signed certificate; nothing secret is read.
        context = ssl._create_unverified_context()
    else:
        context = ssl.create_default_context(cafile=str(ca_cert.cert))
    if client is not None:
        context.load_cert_chain(certfile=str(client.cert), keyfile=str(client.key))
    return context


def get(
    url: str, *, ca: KeyPair | None = None, client: KeyPair | None = None
) -> tuple[int, str] | None:
    """(status, body) of a GET, or None if nothing answered."""
    context = _context(ca_cert=ca, client=client) if url.startswith("https") else None
    request = urllib.request.Request(url, method="GET")
    try:
        with urllib.request.urlopen(
            request, timeout=PROBE_TIMEOUT_SECONDS, context=context
        ) as resp:
            status: int = resp.status
            return status, resp.read().decode("utf-8", errors="replace")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode("utf-8", errors="replace")
    except (urllib.error.URLError, OSError, ssl.SSLError):
        return None


def answers_ok(url: str, *, ca: KeyPair | None = None, client: KeyPair | None = None) -> bool:
    """True on HTTP 200."""
    result = get(url, ca=ca, client=client)
    return result is not None and result[0] == 200


def etcd_healthy(url: str) -> bool:
    """etcd's /health says ``{"health":"true"}`` once it has a leader."""
    result = get(f"{url}/health")
    return result is not None and result[0] == 200 and '"true"' in result[1]


def node_ready(url: str, *, ca: KeyPair, client: KeyPair) -> bool:
    """True when the Node object at `url` has condition Ready=True."""
    result = get(url, ca=ca, client=client)
    if result is None or result[0] != 200:
        return False
    conditions = json.loads(result[1]).get("status", {}).get("conditions", [])
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)
