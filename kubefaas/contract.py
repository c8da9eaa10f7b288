"""The runtime launch contract: the environment every function instance gets.

See docs/architecture.md, "Launch environment".

The operator (a Deployment's container env) and the gateway's local backend (a process's
env) both build it here, so the contract is written once. The runtime reads these names in
`kubefaas_runtime.config`; it ships alone in every function image and cannot import this
module, so a unit test checks that it parses exactly what this module produces.
"""

from __future__ import annotations

from kubefaas.api import Function
from kubefaas.quantity import mebibytes


def runtime_environment(
    fn: Function, *, port: int, code_dir: str, tmp_dir: str, version: int
) -> dict[str, str]:
    """Name -> value for one instance of `fn`, in a stable order (the operator compares
    live Deployments against it, so reordering would read as drift)."""
    spec = fn.spec
    return {
        "PORT": str(port),
        "KUBEFAAS_CODE_DIR": code_dir,
        "KUBEFAAS_HANDLER": spec.handler,
        "KUBEFAAS_FUNCTION_NAME": fn.name,
        "KUBEFAAS_FUNCTION_NAMESPACE": fn.namespace,
        "KUBEFAAS_FUNCTION_VERSION": str(version),
        "KUBEFAAS_EVENT_FORMAT": spec.event_format,
        "KUBEFAAS_TIMEOUT_SECONDS": str(spec.timeout_seconds),
        "KUBEFAAS_MEMORY_MB": str(mebibytes(spec.memory)),
        "TMPDIR": tmp_dir,
        # Where each `spec.secrets` mount is: the volume in a pod, a folder the gateway
        # writes in local mode (docs/security.md, "Mounted Secrets in local mode").
        **{secret_dir_variable(mount.name): mount.path for mount in spec.secrets},
    }


def secret_dir_variable(name: str) -> str:
    """`KUBEFAAS_SECRET_DIR_<NAME>` for the Secret mount `name`: upper case, `-` and `.`
    as `_` (`db-creds` -> `KUBEFAAS_SECRET_DIR_DB_CREDS`)."""
    return "KUBEFAAS_SECRET_DIR_" + name.upper().replace("-", "_").replace(".", "_")


def reserved_names(fn: Function) -> frozenset[str]:
    """Variables the contract owns: a user's `spec.env` entry of the same name is ignored."""
    return frozenset(runtime_environment(fn, port=0, code_dir="", tmp_dir="", version=0))
