"""Operator start: authenticate kopf the same way as our own client (kubeconfig or the
in-cluster service account), and say what this process is configured to do."""

from __future__ import annotations

from typing import Any

import kopf

from kubefaas_operator.context import OperatorContext


def announce(*, memo: kopf.Memo, logger: kopf.Logger, **_: Any) -> None:
    context: OperatorContext = memo.context
    config = context.config
    scope = ", ".join(config.namespaces) if config.namespaces else "all namespaces"
    images = ", ".join(f"{k}={v}" for k, v in sorted(config.runtime_images.items())) or "none"
    logger.info(
        f"kubefaas operator watching {scope}; runtimes: {images}; gateway {config.gateway_url}"
    )


def register(registry: kopf.OperatorRegistry) -> None:
    kopf.on.login(id="login", registry=registry)(kopf.login_via_client)
    kopf.on.startup(id="announce", registry=registry)(announce)
