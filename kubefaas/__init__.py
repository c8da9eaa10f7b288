"""kubefaas: the cloud-function model (handler(event, context), scale to zero, async
invocations with retries) on any Kubernetes cluster, or locally with no cluster at all.

This package is the shared core: the Function API model (single source of the CRD), pure
logic used by both the operator and the gateway, and the `kubefaas` command line.
"""

__version__ = "0.1.0"
