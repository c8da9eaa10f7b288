"""kopf's settings for this operator, built in one place from `OperatorConfig`.

- Finalizer `naming.FINALIZER`, progress and diff-base as ``kubefaas.io/`` annotations
  (see `persistence`), never a kopf field in status.
- No handler needs a finalizer (children go by ownerReference garbage collection), so
  deleting a Function never waits for the operator to be running.
- Peering: standalone. One operator replica runs (the Deployment uses the Recreate
  strategy); two at once would still converge, because every write is idempotent and
  guarded by resourceVersion, so kopf's peering CRDs are not worth installing.
- Watches of children are filtered by label on the API server.
- Watch requests are re-established every few minutes, so a stream silently dropped by a
  proxy or load balancer never leaves the operator deaf for long.
"""

from __future__ import annotations

import logging
import socket

import kopf

from kubefaas import naming
from kubefaas_operator import persistence
from kubefaas_operator.config import OperatorConfig
from kubefaas_operator.handlers.builds import BUILD_SELECTOR, JOB_RESOURCE
from kubefaas_operator.handlers.child_events import CHILD_RESOURCES, CHILD_SELECTOR

# Whole seconds: kopf passes the server timeout on as `timeoutSeconds`, which the API server
# parses as an integer ("300.0" is a 400 Bad Request).
WATCH_SERVER_TIMEOUT_SECONDS = 300
WATCH_CLIENT_TIMEOUT_SECONDS = 330
CONNECT_TIMEOUT_SECONDS = 10
REQUEST_TIMEOUT_SECONDS = 60


def build_settings(config: OperatorConfig) -> kopf.OperatorSettings:
    settings = kopf.OperatorSettings()
    settings.persistence.finalizer = naming.FINALIZER
    settings.persistence.progress_storage = persistence.progress_storage()
    settings.persistence.diffbase_storage = persistence.diffbase_storage()

    # Events on the Function, where `kubectl describe fn` users look: what a reconcile
    # created or repaired (posted explicitly by the handlers), and every warning or error
    # logged while handling it (a retry because the code ConfigMap is missing...). kopf's
    # own "Handler succeeded" lines stay in the log: two more etcd writes per reconcile
    # would tell the user nothing the status does not.
    settings.posting.enabled = True
    settings.posting.loggers = True
    settings.posting.level = logging.WARNING
    settings.posting.reporting_component = naming.MANAGED_BY
    settings.posting.reporting_instance = socket.gethostname()
    settings.posting.event_name_prefix = "kubefaas-"

    settings.peering.standalone = True
    settings.peering.mandatory = False

    settings.watching.server_timeout = WATCH_SERVER_TIMEOUT_SECONDS
    settings.watching.client_timeout = WATCH_CLIENT_TIMEOUT_SECONDS
    settings.watching.connect_timeout = CONNECT_TIMEOUT_SECONDS
    for group, _version, plural in CHILD_RESOURCES.values():
        settings.watching.label_selectors[group, plural] = CHILD_SELECTOR
    settings.watching.label_selectors[JOB_RESOURCE[0], JOB_RESOURCE[2]] = BUILD_SELECTOR

    settings.networking.request_timeout = REQUEST_TIMEOUT_SECONDS
    settings.networking.connect_timeout = CONNECT_TIMEOUT_SECONDS

    settings.execution.max_workers = config.workers
    return settings
