"""The kubefaas operator: turns each `Function` into a ConfigMap, a Deployment and a Service.

Layers, lowest first (a module never imports one above it):

- `children`, `status`, `drift`, `config`: pure. Function -> child objects as plain dicts,
  Function -> status, live-vs-desired comparison and ownership, settings parsed from the
  environment. No I/O, unit-tested by asserting on what they return.
- `kube_sync`: the only module that talks to the Kubernetes API (a thin REST client behind
  the `Kube` protocol; an import-linter contract keeps `kubernetes` out of every other one).
- `apply`: idempotent create-or-replace of one child object through `kube_sync`.
- `reconcile`: one Function, end to end (read, build, apply, status), free of kopf.
- `gateway_stats`, `autoscaler`: the gateways' stats (the feed) and the loop that decides
  and writes replicas (`/scale`) and `status.desiredReplicas`, through `kube_sync`.
- `handlers/*`, `resync`, `operator_metrics`: kopf triggers, the periodic safety net and the
  Prometheus metrics; thin.
- `main`: configures kopf, registers the handlers, runs the loops.
"""
