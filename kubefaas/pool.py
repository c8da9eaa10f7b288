"""What a warm-pool instance is sent to become one function (docs/warm-pool.md).

Pure: a Function in, the document of ``POST /_kubefaas/specialize`` out. The environment
is the launch contract (`kubefaas.contract`, the same call the operator's Deployment
builder makes) plus the function's own ``spec.env``, so a specialised pool instance runs
the function exactly as its own pod would; the variables that describe the instance
itself (its port, code folder and scratch folder) are the pool instance's, never sent.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from kubefaas.api import Function
from kubefaas.contract import reserved_names, runtime_environment
from kubefaas.deps import REQUIREMENTS_FILE
from kubefaas.quantity import mebibytes

# Set by the pool instance for itself (the runtime refuses them in a document).
INSTANCE_OWNED: Final = frozenset({"PORT", "KUBEFAAS_CODE_DIR", "TMPDIR"})


def ineligible_reason(fn: Function, *, pool_memory_mib: int) -> str | None:
    """Why `fn` cannot be served by a pool instance of that size, or None if it can."""
    spec = fn.spec
    if spec.runtime is None or spec.code is None:
        return "the function brings its own image"
    if mebibytes(spec.memory) > pool_memory_mib:
        return f"the function asks for more memory than a pool instance has ({pool_memory_mib} Mi)"
    if spec.secrets or any(entry.value_from is not None for entry in spec.env):
        # Pool instances carry no credentials: a Secret reaches only the function's own pods.
        return "the function reads Secrets (spec.secrets or env valueFrom)"
    if REQUIREMENTS_FILE in (spec.code.inline or {}):
        return "the function has dependencies to install (its built image serves it)"
    return None


def specialization_document(
    fn: Function, *, version: int, files: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """The ``/_kubefaas/specialize`` body for `fn`; `files` are the code (the inline code
    if not given; a ConfigMap's data must be passed in)."""
    code = fn.spec.code
    if files is None:
        if code is None or code.inline is None:
            raise ValueError(
                f"function {fn.namespace}/{fn.name} has no inline code: pass its files"
            )
        files = code.inline
    contract = runtime_environment(fn, port=0, code_dir="", tmp_dir="", version=version)
    env = {name: value for name, value in contract.items() if name not in INSTANCE_OWNED}
    reserved = reserved_names(fn)
    for entry in fn.spec.env:
        if entry.name not in reserved:
            env[entry.name] = entry.value
    return {"env": env, "files": dict(files)}


# -- the pool's names and labels, shared by the operator (which keeps the pools) and the
# gateway (which claims their pods); docs/warm-pool.md, "Pool Deployments".

POOL_LABEL: Final = "kubefaas.io/pool"
"""On a pool pod (and its Deployment): the runtime it runs. Removed when a gateway claims it."""
SPECIALISED_LABEL: Final = "kubefaas.io/specialised"
"""``"true"`` on a claimed pool pod serving one function until the function's own pod is
Ready (then it is retired)."""
CLAIMED_AT_LABEL: Final = "kubefaas.io/claimed-at"
"""Epoch seconds of the claim, on a claimed pool pod: a pod still ``specialised=pending``
long after it was claimed was left by a gateway that died mid-claim, and is deleted."""
POOL_COMPONENT: Final = "pool"
"""``app.kubernetes.io/component`` of pool pods (``function`` once claimed)."""
POOL_ENV: Final = "KUBEFAAS_POOL"


def pool_deployment_name(runtime: str) -> str:
    """``kubefaas-pool-<runtime>`` with the runtime's dots as dashes (``python3.11`` ->
    ``kubefaas-pool-python3-11``)."""
    return "kubefaas-pool-" + runtime.replace(".", "-").replace("_", "-").lower()
