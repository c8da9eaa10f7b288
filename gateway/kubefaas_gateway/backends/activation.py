"""Activation: raising a function scaled to zero to one replica, the gateway's one write.

`scale_from_zero` reads the Deployment's `/scale`; at 0 replicas it writes 1 with the read
resourceVersion as a precondition (a conflict means someone else, the operator's
autoscaler or another gateway, changed it: read again), and never lowers anything. Every
other replica count is the operator's to set (docs/architecture.md, "Autoscaling").
`Activation` is what the requests waiting for one function share: the scale-up task, why
it was refused, and the event that wakes them.
"""

from __future__ import annotations

import asyncio
import logging
import math
from dataclasses import dataclass, field

import aiohttp

from kubefaas.api import Function
from kubefaas_gateway.kube_async import ApiError, Kube, collection_path

log = logging.getLogger("kubefaas.gateway.kubernetes")

# A function still without a ready pod has its Deployment's scale read again this often
# (someone may have scaled it back to zero meanwhile).
ACTIVATION_RECHECK_SECONDS = 1.0
ACTIVATION_CONFLICT_RETRIES = 5
# Statuses that will not go away by retrying: fail at start, or tell the caller at once.
FORBIDDEN_STATUSES = frozenset({401, 403})


def scale_path(fn: Function) -> str:
    """The `/scale` subresource of the Deployment the operator named after `fn`."""
    return collection_path("apps/v1", "deployments", fn.namespace, fn.name) + "/scale"


@dataclass(eq=False)
class Activation:
    """The requests of one function waiting for a ready pod, and the scale-up they share."""

    changed: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None
    started: float = -math.inf
    # Why the last scale-up was refused (no permission) and when: callers get a 503 with
    # it for one recheck interval, after which the next request tries again.
    refused: str | None = None
    refused_at: float = -math.inf
    # The last scale-up found no Deployment (the operator has not created it yet).
    missing: bool = False

    def notify(self) -> None:
        """Wake every current waiter; later waiters sleep on a fresh event."""
        self.changed.set()
        self.changed = asyncio.Event()


async def scale_from_zero(kube: Kube, fn: Function, activation: Activation) -> None:
    """Raise `fn`'s Deployment from 0 to 1 replica; leave any other count alone."""
    path = scale_path(fn)
    try:
        for _ in range(ACTIVATION_CONFLICT_RETRIES):
            scale = await kube.get(path)
            activation.missing = False
            replicas = int((scale.get("spec") or {}).get("replicas") or 0)
            if replicas > 0:
                return  # pods are on their way (or stuck, which the deadline reports)
            version = (scale.get("metadata") or {}).get("resourceVersion")
            try:
                await kube.patch(
                    path, {"metadata": {"resourceVersion": version}, "spec": {"replicas": 1}}
                )
            except ApiError as exc:
                if exc.status == 409:
                    continue  # changed since we read it: read again
                raise
            log.info("activating %s: scaled its Deployment from 0 to 1", fn.key)
            return
        log.warning("activating %s: the scale kept changing under us", fn.key)
    except asyncio.CancelledError:
        raise
    except ApiError as exc:
        if exc.status == 404:
            activation.missing = True
        elif exc.status in FORBIDDEN_STATUSES:
            activation.refused = (
                f"the gateway may not scale Deployment {fn.namespace}/{fn.name} to "
                f"activate function {fn.key}: {exc}"
            )
            activation.refused_at = asyncio.get_running_loop().time()
            log.error("%s", activation.refused)
        else:
            log.warning("activating %s failed: %s (retrying)", fn.key, exc)
    except (aiohttp.ClientError, TimeoutError, OSError, ValueError) as exc:
        log.warning("activating %s failed: %s (retrying)", fn.key, exc)
    finally:
        activation.notify()
