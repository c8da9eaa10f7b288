"""Servers the e2e tests run on this machine for pods to reach: a side-effect recorder
(functions POST what they handled to it), nats-server (queue triggers) and redis-server
(the gateway's Redis queue).

Pods of the local cluster reach this machine at its pod bridge's address (the first
address of the pod CIDR, the `cni0` bridge's gateway IP); the servers bind there, never
to a public interface. On any other cluster pods cannot reach this machine, so the tests
that need these servers are skipped there with that reason (they cover nothing then).
"""

from __future__ import annotations

import ipaddress
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from e2e.harness import Cluster
from kubefaas_cluster import network
from tests.nats_server import NatsServer, start_nats
from tests.redis_server import RedisServer, start_redis


def pod_bridge_address(cluster: Cluster) -> str:
    """The address of this machine that the local cluster's pods reach."""
    if cluster.local is None:
        pytest.skip(
            "needs the local cluster: its pods reach servers on this machine through the "
            "pod bridge; on another cluster they cannot"
        )
    return str(next(ipaddress.ip_network(network.POD_CIDR).hosts()))


class Recorder:
    """Every JSON document POSTed to `url`, in arrival order."""

    def __init__(self, host: str) -> None:
        self.documents: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with recorder._lock:
                    recorder.documents.append(json.loads(body))
                self.send_response(204)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer((host, 0), Handler)
        self.url = f"http://{host}:{self._server.server_address[1]}/"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def seen(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self.documents)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def recorder(cluster: Cluster) -> Iterator[Recorder]:
    server = Recorder(pod_bridge_address(cluster))
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def bridge_nats(cluster: Cluster, tmp_path: Path) -> Iterator[NatsServer]:
    """nats-server with JetStream on the pod bridge address, for this test only."""
    server = start_nats(tmp_path / "nats", host=pod_bridge_address(cluster))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def bridge_redis(cluster: Cluster, tmp_path: Path) -> Iterator[RedisServer]:
    """redis-server on the pod bridge address, for this test only."""
    server = start_redis(tmp_path / "redis", host=pod_bridge_address(cluster))
    try:
        yield server
    finally:
        server.stop()
