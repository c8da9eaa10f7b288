"""Names, labels and annotations that the operator writes and the gateway reads.

Both sides import these; a label key typed twice is a routing bug waiting to happen.
"""

from typing import Final

from kubefaas import limits

FUNCTION_LABEL: Final = f"{limits.API_GROUP}/function"
"""On every child of a Function and on its pods: the Function's name."""

MANAGED_BY_LABEL: Final = "app.kubernetes.io/managed-by"
MANAGED_BY: Final = "kubefaas-operator"
COMPONENT_LABEL: Final = "app.kubernetes.io/component"
FUNCTION_COMPONENT: Final = "function"
GATEWAY_COMPONENT: Final = "gateway"

FINALIZER: Final = f"{limits.API_GROUP}/finalizer"
PROGRESS_PREFIX: Final = limits.API_GROUP
"""kopf keeps its progress and diff-base annotations under this prefix."""

CODE_CHECKSUM_ANNOTATION: Final = f"{limits.API_GROUP}/code-checksum"
"""On the pod template: changes when the code changes, so the Deployment rolls."""

CODE_MOUNT_PATH: Final = "/var/task"
TMP_MOUNT_PATH: Final = "/tmp"
RUNTIME_PORT_NAME: Final = "http"


def code_config_map_name(function: str) -> str:
    """The ConfigMap holding a Function's inline code (the Function's name is <= 63)."""
    return f"{function}-code"


def function_url(gateway: str, namespace: str, name: str) -> str:
    """Where a Function is invoked through the gateway.

    See docs/architecture.md, "Gateway HTTP API".
    """
    return f"{gateway.rstrip('/')}/function/{namespace}/{name}"
