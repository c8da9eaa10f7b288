"""Every default and bound of the Function API, in one place.

See docs/architecture.md, "Defaults and bounds" (its table is generated from this file).

The Python model, the generated CRD, the gateway and the operator all import these names;
no number is retyped elsewhere. Each constant notes the platform it is anchored to.
"""

from typing import Final

API_GROUP: Final = "kubefaas.io"
API_VERSION: Final = "v1alpha1"
KIND: Final = "Function"
PLURAL: Final = "functions"
SINGULAR: Final = "function"
SHORT_NAMES: Final = ("fn",)

# The port the gateway listens on by default (`kubefaas local`, `kubefaas gateway`, the
# gateway image, the chart's container port, where the operator's autoscaler reads each
# gateway's /internal/stats when a pod does not name its port); the runtime's own port is
# `kubefaas.wire.RUNTIME_PORT`.
GATEWAY_PORT: Final = 8080

# Runtime name -> default image; the operator's configuration may override the images.
# Adding python3.12 means an entry here plus an image that speaks the runtime contract.
RUNTIME_IMAGES: Final = {"python3.11": "kubefaas-runtime:0.1.0"}
RUNTIMES: Final = tuple(RUNTIME_IMAGES)

DEFAULT_HANDLER: Final = "main.handler"
EVENT_FORMATS: Final = ("json", "http")
DEFAULT_EVENT_FORMAT: Final = "json"

# Service names are DNS-1035 labels; the Function's children reuse its name.
NAME_MAX_LENGTH: Final = 63
NAME_PATTERN: Final = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"

# Lambda: 3 s default, 900 s max; OpenFaaS 60 s; Knative 300 s.
TIMEOUT_DEFAULT: Final = 30
TIMEOUT_MIN: Final = 1
TIMEOUT_MAX: Final = 900

# Lambda: 128 MB - 10 GB.
MEMORY_DEFAULT: Final = "256Mi"
MEMORY_MIN: Final = "64Mi"
MEMORY_MAX: Final = "10Gi"

# Lambda: 512 MB - 10 GB of /tmp.
TMP_SIZE_DEFAULT: Final = "512Mi"
TMP_SIZE_MIN: Final = "64Mi"
TMP_SIZE_MAX: Final = "10Gi"

# OpenFaaS: 20 replicas by default.
MIN_SCALE_DEFAULT: Final = 0
MAX_SCALE_DEFAULT: Final = 20
SCALE_MAX: Final = 1000
# Knative: 100 at 70 %; Lambda: 1.
TARGET_CONCURRENCY_DEFAULT: Final = 10
TARGET_CONCURRENCY_MAX: Final = 1000
CONTAINER_CONCURRENCY_DEFAULT: Final = 0  # 0 = no hard per-instance limit
CONTAINER_CONCURRENCY_MAX: Final = 1000
RESERVED_CONCURRENCY_MAX: Final = 100_000
# Knative ~60-90 s, Fission 120 s, OpenFaaS 15 min. 0 = never scale to zero.
SCALE_TO_ZERO_AFTER_DEFAULT: Final = 120
SCALE_TO_ZERO_AFTER_MIN: Final = 10
SCALE_TO_ZERO_AFTER_MAX: Final = 86_400

# Autoscaler windows (Knative KPA).
STABLE_WINDOW_SECONDS: Final = 60.0
PANIC_WINDOW_SECONDS: Final = 6.0
PANIC_THRESHOLD: Final = 2.0  # 200 % of current capacity
AUTOSCALER_TICK_SECONDS: Final = 2.0
MAX_SCALE_DOWN_RATE: Final = 2.0  # at most halve the replicas per tick

# Lambda: 2 retries, 1 min then 2 min apart; events kept up to 6 h.
ASYNC_MAX_RETRIES_DEFAULT: Final = 2
ASYNC_MAX_RETRIES_MAX: Final = 10
ASYNC_MAX_EVENT_AGE_DEFAULT: Final = 21_600
ASYNC_MAX_EVENT_AGE_MIN: Final = 60
ASYNC_MAX_EVENT_AGE_MAX: Final = 21_600
ASYNC_RETRY_BASE_SECONDS: Final = 60.0  # function error: 1 min, then 2 min
THROTTLE_BACKOFF_INITIAL_SECONDS: Final = 1.0  # throttled / 5xx: 1 s doubling ...
THROTTLE_BACKOFF_MAX_SECONDS: Final = 300.0  # ... to 5 min

# Lambda: 6 MB synchronous payload, 256 KB (we allow 1 MiB) asynchronous.
SYNC_BODY_LIMIT_BYTES: Final = 6 * 1024 * 1024
ASYNC_BODY_LIMIT_BYTES: Final = 1 * 1024 * 1024

# Inline code lands in a ConfigMap (1 MiB hard limit in etcd, less the object's overhead).
INLINE_CODE_MAX_BYTES: Final = 900 * 1024
INLINE_CODE_MAX_FILES: Final = 64
# Paths in inline code (docs/architecture.md, "Packaging"): a ConfigMap key is at most 253
# characters and a nested path is stored under an encoded key a few characters longer.
INLINE_PATH_MAX_LENGTH: Final = 200
INLINE_PATH_MAX_DEPTH: Final = 8
ENV_MAX_ITEMS: Final = 100

# Triggers (docs/triggers.md): per Function, and per queue trigger.
TRIGGERS_MAX: Final = 16
TRIGGER_BATCH_SIZE_DEFAULT: Final = 10
TRIGGER_BATCH_SIZE_MAX: Final = 1000
TRIGGER_MAX_IN_FLIGHT_DEFAULT: Final = 100
TRIGGER_MAX_IN_FLIGHT_MAX: Final = 10_000
# Invoke auth (docs/security.md): JWT exp/nbf leeway, and the Secret a `token` Function
# without `spec.auth.token.secretName` takes its keys from (one per namespace).
JWT_LEEWAY_DEFAULT_SECONDS: Final = 30
JWT_LEEWAY_MAX_SECONDS: Final = 300
INVOKE_TOKEN_SECRET_DEFAULT: Final = "kubefaas-invoke-tokens"
SECRET_MOUNTS_MAX: Final = 16
# Lambda: 6 MB synchronous response.
RESPONSE_LIMIT_BYTES: Final = 6 * 1024 * 1024
