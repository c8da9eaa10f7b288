"""Cluster mode: the gateway serving the Functions of a Kubernetes cluster.

`serve_cluster(host=..., port=...)` runs the same app as local mode (`app.create_app`) with
the `KubernetesBackend`, whose watch fills the registry, on uvicorn (uvloop, httptools, no
access log: the fastest Python HTTP hop we measured, DESIGN §11) until SIGTERM or SIGINT,
on which uvicorn stops accepting, lets in-flight requests finish for
`KUBEFAAS_SHUTDOWN_TIMEOUT_SECONDS`, and the app's shutdown stops the watches.

Every other setting comes from the environment (`settings.Settings`); the API server from
the pod's service account, else `$KUBECONFIG`. `KUBEFAAS_SCALE_DOWN` decides whether the
autoscaler's decider runs in this process (`gateway`, the default) or only in the
operator (`operator`); activation from zero always happens here.

`kubefaas gateway` calls it; `python -m kubefaas_gateway.cluster_mode --port N` does too.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from kubefaas_gateway.app import BACKGROUND_TASKS, BackgroundTask, create_app, local_autoscaler
from kubefaas_gateway.backends.kubernetes import KubernetesBackend
from kubefaas_gateway.registry import FunctionRegistry
from kubefaas_gateway.serve import serve
from kubefaas_gateway.settings import Settings

EXIT_OK = 0
EXIT_FAILED = 1

LOG_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"

log = logging.getLogger("kubefaas.gateway")


def background_tasks(settings: Settings) -> tuple[BackgroundTask, ...]:
    """The app's background tasks, without the in-gateway autoscaler when the operator's
    autoscaler sets replicas (two writers would fight over them)."""
    if settings.scale_down == "gateway":
        return BACKGROUND_TASKS
    return tuple(task for task in BACKGROUND_TASKS if task is not local_autoscaler)


def serve_cluster(*, host: str, port: int) -> int:
    """Serve the cluster's Functions on host:port until stopped; exit status."""
    settings = Settings(host=host, port=port)
    logging.basicConfig(level=settings.log_level.upper(), format=LOG_FORMAT, stream=sys.stderr)
    registry = FunctionRegistry()
    backend = KubernetesBackend(settings=settings, registry=registry)
    app = create_app(settings, backend, registry, background=background_tasks(settings))
    log.info(
        "kubefaas gateway on %s:%d; replicas are set by the %s",
        settings.host,
        settings.port,
        "gateway's autoscaler" if settings.scale_down == "gateway" else "operator's autoscaler",
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
    parser.add_argument("--port", type=int, default=8080, help="port to listen on")
    args = parser.parse_args(argv)
    return serve_cluster(host=args.host, port=args.port)


if __name__ == "__main__":
    sys.exit(main())
