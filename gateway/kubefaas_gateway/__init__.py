"""The kubefaas gateway: routes invocations to function instances, activates functions
at zero, tracks per-function concurrency, and serves metrics.

`app.create_app` is the one composition point; `local_mode.serve_local` runs it with the local
backend (runtime processes instead of pods).
"""
