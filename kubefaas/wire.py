"""The gateway <-> runtime wire contract: the port and the header names.

See docs/architecture.md, "Runtime contract".
Both sides of the hop spell these names from here. The runtime ships in every function
image and must stay light, so this module imports nothing (not even the rest of
`kubefaas`); an import-linter contract keeps it a leaf, and it is the one core module the
runtime may import.

Header names are lower case bytes as ASGI servers hand them over, with the canonical
spelling beside each for clients that build `str` headers.
"""

from typing import Final

RUNTIME_PORT: Final = 8080
"""The port every function instance listens on (`$PORT`), and the Service's target."""

# Gateway -> runtime, on every invocation.
INVOCATION_ID: Final = b"x-invocation-id"
DEADLINE_MS: Final = b"x-deadline-ms"
INVOCATION_TYPE: Final = b"x-invocation-type"
ATTEMPT: Final = b"x-attempt"

# Caller -> gateway -> runtime, when the caller traces (W3C Trace Context): passed through,
# or replaced by the gateway's own span when OpenTelemetry export is on (docs/logs.md).
TRACEPARENT: Final = b"traceparent"

# Runtime -> gateway, on every answer.
DURATION_MS: Final = b"x-duration-ms"
FUNCTION_ERROR: Final = b"x-function-error"

# Gateway -> caller.
COLD_START: Final = b"x-cold-start"

# Canonical spellings, for clients that send `str` headers (aiohttp, urllib).
INVOCATION_ID_NAME: Final = "X-Invocation-Id"
DEADLINE_MS_NAME: Final = "X-Deadline-Ms"
INVOCATION_TYPE_NAME: Final = "X-Invocation-Type"
ATTEMPT_NAME: Final = "X-Attempt"
DURATION_MS_NAME: Final = "X-Duration-Ms"
FUNCTION_ERROR_NAME: Final = "X-Function-Error"
COLD_START_NAME: Final = "X-Cold-Start"
TRACEPARENT_NAME: Final = "traceparent"
