"""What both Kubernetes API doors share: the error type, content types, request timeout.

The operator (sync `kubernetes` client) and the gateway (`kubernetes_asyncio`) each keep one
module that talks to the API server; this module holds what those two would otherwise each
define, and imports no client library, so the pure core may use it too.
"""

from __future__ import annotations

from typing import Final

JSON: Final = "application/json"
MERGE_PATCH: Final = "application/merge-patch+json"
REQUEST_TIMEOUT_SECONDS: Final = 30.0


class ApiError(Exception):
    """The API server refused a request; `status` is the HTTP code, `reason` its Status reason."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        self.status = status
        self.reason = reason
        self.message = message
        super().__init__(f"{status} {reason}: {message}")

    @property
    def not_found(self) -> bool:
        return self.status == 404

    @property
    def conflict(self) -> bool:
        """409: a stale resourceVersion, or a create of a name that exists."""
        return self.status == 409

    @property
    def namespace_terminating(self) -> bool:
        """403 for creating anything in a namespace that is being deleted."""
        return self.status == 403 and "being terminated" in self.message
