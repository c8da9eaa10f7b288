"""kopf handlers, one module per trigger; each is thin and calls `reconcile`.

`register_all` is the one place that knows every module, so `main` stays configuration.
"""

from __future__ import annotations

import kopf

from kubefaas_operator.handlers import builds, child_events, function, lifecycle


def register_all(registry: kopf.OperatorRegistry) -> None:
    lifecycle.register(registry)
    function.register(registry)
    child_events.register(registry)
    builds.register(registry)
