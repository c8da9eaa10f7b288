"""Cluster mode: the gateway serving the Functions of a Kubernetes cluster.

`serve_cluster(host=..., port=...)` runs the same app as local mode (`app.create_app`) with
the `KubernetesBackend`, whose watch fills the registry, on uvicorn (uvloop, httptools, no
access log: the fastest Python HTTP hop we measured, docs/architecture.md, "Measured facts") until
SIGTERM or SIGINT,
on which uvicorn stops accepting, lets in-flight requests finish for
`KUBEFAAS_SHUTDOWN_TIMEOUT_SECONDS`, and the app's shutdown stops the watches.

Every other setting comes from the environment (`settings.Settings`); the API server from
the pod's service account, else `$KUBECONFIG`. This gateway never sets replicas beyond
activating a function from zero (0 -> 1, with the read resourceVersion as precondition):
the operator's autoscaler is the one writer of replicas, reading every gateway's
`/internal/stats`. So no autoscaler runs here, however the gateway is started.

`kubefaas gateway` calls it; `python -m kubefaas_gateway.cluster_mode --port N` does too.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from fastapi import FastAPI

from kubefaas.limits import GATEWAY_PORT
from kubefaas_gateway.app import create_app
from kubefaas_gateway.backends.kubernetes import KubernetesBackend, ProbeFn
from kubefaas_gateway.kube_async import Kube
from kubefaas_gateway.registry import FunctionRegistry
from kubefaas_gateway.secrets import KubeSecrets
from kubefaas_gateway.serve import serve
from kubefaas_gateway.settings import Settings
from kubefaas_gateway.triggers.runner import run_triggers

EXIT_OK = 0
EXIT_FAILED = 1

LOG_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"

log = logging.getLogger("kubefaas.gateway")


def build_app(
    settings: Settings, *, kube: Kube | None = None, probe: ProbeFn | None = None
) -> FastAPI:
    """The cluster gateway: the Kubernetes backend, and the trigger runner as its one
    background task (the operator scales; docs/triggers.md). `kube` and `probe` replace
    the API client and the pod health check (tests)."""
    registry = FunctionRegistry()
    backend = KubernetesBackend(settings=settings, registry=registry, kube=kube, probe=probe)
    return create_app(
        settings,
        backend,
        registry,
        background=(run_triggers(),),
        secrets=KubeSecrets(lambda: backend.kube),
    )


def serve_cluster(*, host: str, port: int) -> int:
    """Serve the cluster's Functions on host:port until stopped; exit status."""
    settings = Settings(host=host, port=port)
    logging.basicConfig(level=settings.log_level.upper(), format=LOG_FORMAT, stream=sys.stderr)
    app = build_app(settings)
    log.info(
        "kubefaas gateway on %s:%d; replicas are set by the operator's autoscaler",
        settings.host,
        settings.port,
    )
    started = serve(app, settings)
    return EXIT_OK if started else EXIT_FAILED


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m kubefaas_gateway.cluster_mode",
        description="Serve the Functions of the Kubernetes cluster in $KUBECONFIG "
        "(or the pod's service account).",
    )
    parser.add_argument("--host", default="0.0.0.0", help="address to listen on")
    parser.add_argument("--port", type=int, default=GATEWAY_PORT, help="port to listen on")
    args = parser.parse_args(argv)
    return serve_cluster(host=args.host, port=args.port)


if __name__ == "__main__":
    sys.exit(main())
