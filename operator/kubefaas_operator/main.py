"""`kubefaas operator`: configure kopf, register the handlers, run the loops. Nothing else.

One process runs kopf (Functions and their children) and the background loops that share
its lifetime: the resync safety net, and the autoscaler (the one writer of replicas).
SIGTERM/SIGINT stop kopf gracefully; the loops are then cancelled.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
from collections.abc import Coroutine
from typing import Any

import kopf

from kubefaas_operator import operator_metrics, pool_loop, resync
from kubefaas_operator.config import ConfigError, OperatorConfig, load_config
from kubefaas_operator.context import OperatorContext
from kubefaas_operator.handlers import register_all
from kubefaas_operator.kube_sync import RestKube
from kubefaas_operator.settings import build_settings

logger = logging.getLogger(__name__)

# Connections beyond the reconcile workers: the resync pass and the background loops.
EXTRA_CONNECTIONS = 4
# How long background loops get to finish after kopf stopped, before they are cancelled.
LOOP_EXIT_SECONDS = 5.0


def background_loops(
    context: OperatorContext, stop: asyncio.Event
) -> list[Coroutine[Any, Any, None]]:
    """The long-running loops that live and die with the operator (the seam for more).

    Each is a coroutine that runs until `stop` is set or it is cancelled. The autoscaler
    goes through the operator's own API door (`context.kube`) and takes the gateway
    namespace and selector, and the watched namespaces, from `context.config`.
    """
    loops: list[Coroutine[Any, Any, None]] = []
    if context.config.resync_seconds > 0:
        loops.append(resync.run_forever(context, interval=context.config.resync_seconds, stop=stop))
    if context.config.autoscaler:
        from kubefaas_operator.autoscaler import run_default_autoscaler

        loops.append(run_default_autoscaler(context.kube, context.config, stop))
    # The warm pools (docs/warm-pool.md): also when off, to delete pools left from before.
    loops.append(
        pool_loop.run_forever(
            context.kube, context.config, interval=pool_loop.DEFAULT_POOL_SECONDS, stop=stop
        )
    )
    return loops


async def operate(config: OperatorConfig) -> int:
    """Run until SIGTERM/SIGINT; 0 on a clean stop, 1 if a background loop died."""
    kube = RestKube.from_environment(pool_size=config.workers + EXTRA_CONNECTIONS)
    context = OperatorContext(config=config, kube=kube)
    registry = kopf.OperatorRegistry()
    register_all(registry)
    if config.metrics_port:
        operator_metrics.serve(config.metrics_port)
    stop_flag = asyncio.Event()
    liveness = f"http://0.0.0.0:{config.health_port}/healthz" if config.health_port else None
    # The loops start first: kopf treats tasks born after it as its own "hung" tasks and
    # would hold its exit for them.
    loops = [asyncio.create_task(loop) for loop in background_loops(context, stop_flag)]
    await asyncio.sleep(0)
    operator = asyncio.create_task(
        kopf.operator(
            registry=registry,
            settings=build_settings(config),
            memo=kopf.Memo(context=context),
            clusterwide=config.clusterwide,
            namespaces=list(config.namespaces),
            standalone=True,
            # No stop_flag: kopf would count its own waiter for it as a hung task and hold
            # its exit for 5 s. A dying loop cancels the operator task instead.
            liveness_endpoint=liveness,
        ),
        name="kopf",
    )
    try:
        done, _ = await asyncio.wait([operator, *loops], return_when=asyncio.FIRST_COMPLETED)
        failed = [task for task in done if task is not operator]
        for task in failed:
            logger.error("background loop %s ended: %r", task.get_name(), task.exception())
        if failed:
            operator.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await operator
            return 1
        operator.result()
        return 0
    finally:
        # Loops that watch `stop` finish their step; the others are cancelled.
        stop_flag.set()
        if loops:
            _, pending = await asyncio.wait(loops, timeout=LOOP_EXIT_SECONDS)
            for task in pending:
                task.cancel()
            for task in loops:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        kube.close()


def run(args: argparse.Namespace) -> int:
    """Entry point of `kubefaas operator` (flags: --namespace, --gateway-url, --verbose)."""
    try:
        config = load_config(
            namespaces=args.namespace,
            gateway_url=args.gateway_url,
            verbose=args.verbose,
            environ=os.environ,
        )
    except ConfigError as exc:
        print(f"kubefaas operator: {exc}", flush=True)
        return 2
    kopf.configure(verbose=config.verbose, debug=config.verbose)
    return asyncio.run(operate(config))
