"""The kubefaas operator: turns each `Function` into a ConfigMap, a Deployment and a Service.

Layers, lowest first (a module never imports one above it):

- `children`, `status`, `drift`, `config`: pure. Function -> child objects as plain dicts,
  Function -> status, live-vs-desired comparison and ownership, settings parsed from the
  environment. No I/O, unit-tested by asserting on what they return.
- `kube_sync`: the operator's door to the Kubernetes API (a thin REST client behind the
  `Kube` protocol).
- `apply`: idempotent create-or-replace of one child object through `kube_sync`.
- `reconcile`: one Function, end to end (read, build, apply, status), free of kopf.
- `handlers/*`, `resync`, `operator_metrics`: kopf triggers, the periodic safety net and the
  Prometheus metrics; thin.
- `main`: configures kopf, registers the handlers, runs the loops.
"""
