"""The kubefaas operator: turns each `Function` into a ConfigMap, a Deployment and a Service.

Layers, lowest first (a module never imports one above it):

- `builders`, `drift`, `config`: pure. Function -> plain dicts, live-vs-desired comparison,
  settings parsed from the environment. No I/O, unit-tested by asserting on what they return.
- `kube`: the only module that talks to the Kubernetes API (a thin REST client).
- `apply`: idempotent create-or-replace of one child object through `kube`.
- `reconcile`: one Function, end to end (read, build, apply, status), free of kopf.
- `handlers/*`, `resync`: kopf triggers and the periodic safety net; thin.
- `main`: configures kopf, registers the handlers, runs the loops.
"""
