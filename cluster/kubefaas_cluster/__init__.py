"""A real Kubernetes cluster on one machine, without Docker or a container registry.

The package builds the Kubernetes binaries from the Go module (``binaries``), writes the
certificates and kubeconfigs (``certs``, ``kubeconfigs``), runs each component as a
supervised process with its own log (``processes``) and composes them into an API-server
tier or a full single-node cluster (``cluster``). ``pytest_plugin`` exposes the same code
as a test fixture so tests and developers start clusters the same way.
"""
