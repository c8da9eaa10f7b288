"""Pinned versions of everything the local cluster runs, in one place.

Why 1.34: the 1.35 kubelet refuses cgroup v1 unless told otherwise and 1.36 drops
containerd 1.x, which is what Debian bookworm ships. The staging modules of
``k8s.io/kubernetes`` are published as ``v0.<minor>.<patch>``, hence ``STAGING_VERSION``.
"""

from __future__ import annotations

KUBERNETES_VERSION = "v1.34.4"
KUBERNETES_MODULE = "k8s.io/kubernetes"
STAGING_VERSION = "v0.34.4"

# The six commands built from k8s.io/kubernetes in one `go build`.
KUBERNETES_COMMANDS: tuple[str, ...] = (
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kubelet",
    "kube-proxy",
    "kubectl",
)

HELM_VERSION = "v3.22.0"
HELM_PACKAGE = "helm.sh/helm/v3/cmd/helm"

# Debian packages, installed with apt-get when the command they provide is missing.
ETCD_DEBIAN_PACKAGE = "etcd-server"
NODE_DEBIAN_PACKAGES: tuple[str, ...] = (
    "containerd",
    "runc",
    "containernetworking-plugins",
    "iptables",
    "conntrack",
)

# Knative Serving for the side-by-side benchmark (bench/peers.py): the newest release whose
# knative.dev/pkg and knative.dev/networking the Go module proxy serves.
KNATIVE_VERSION = "v0.42.2"
KNATIVE_MODULE = "knative.dev/serving"
KNATIVE_COMMANDS: tuple[str, ...] = ("controller", "webhook", "activator", "autoscaler", "queue")
