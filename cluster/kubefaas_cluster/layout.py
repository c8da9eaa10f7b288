"""Where one cluster keeps its state, and the ``state.json`` that pins its addresses.

A cluster directory (``.cluster/`` at the repository root by default, or ``--dir``)::

    state.json                  see `ClusterState`; written once, reused by every `up`
    kubeconfig                  admin kubeconfig (system:masters)
    kubeconfigs/<component>.kubeconfig
    pki/                        see `kubefaas_cluster.certs`
    etcd/                       etcd data directory
    logs/<component>.log        one log per component, appended across restarts
    run/<component>.pid         see `kubefaas_cluster.processes`
    apiserver/                  the API server's --cert-dir (kept out of /var/run)
    node/                       kubelet, containerd and CNI state of the full cluster

``state.json`` is ``{"format": 1, "node_name": str, "node_ip": str, "ports": {name: int}}``;
ports are chosen free on the first ``up`` and kept so the kubeconfig stays valid across
restarts. Two cluster directories never share a port, so a test session's private cluster
and a developer's cluster run side by side.
"""

from __future__ import annotations

import json
import os
import socket
from dataclasses import dataclass
from pathlib import Path

from kubefaas_cluster import network

CLUSTER_DIR_ENV = "KUBEFAAS_CLUSTER_DIR"
STATE_FORMAT = 1
# Every TCP port a cluster serves on, chosen once per cluster directory.
PORT_NAMES: tuple[str, ...] = (
    "etcd_client",
    "etcd_peer",
    "apiserver",
    "controller_manager",
    "scheduler",
    "kubelet",
    "kubelet_healthz",
    "proxy_healthz",
    "proxy_metrics",
)


def repository_root(start: Path | None = None) -> Path:
    """The nearest enclosing directory holding ``.git`` (the current one if none does)."""
    here = (start or Path.cwd()).resolve()
    for candidate in (here, *here.parents):
        if (candidate / ".git").exists():
            return candidate
    return here


def default_cluster_dir() -> Path:
    """``$KUBEFAAS_CLUSTER_DIR`` or ``<repository root>/.cluster``."""
    override = os.environ.get(CLUSTER_DIR_ENV)
    return Path(override) if override else repository_root() / ".cluster"


@dataclass(frozen=True)
class ClusterLayout:
    """Paths inside one cluster directory."""

    root: Path

    @property
    def state_file(self) -> Path:
        return self.root / "state.json"

    @property
    def admin_kubeconfig(self) -> Path:
        return self.root / "kubeconfig"

    def component_kubeconfig(self, component: str) -> Path:
        return self.root / "kubeconfigs" / f"{component}.kubeconfig"

    @property
    def pki_dir(self) -> Path:
        return self.root / "pki"

    @property
    def etcd_dir(self) -> Path:
        return self.root / "etcd"

    @property
    def log_dir(self) -> Path:
        return self.root / "logs"

    @property
    def run_dir(self) -> Path:
        return self.root / "run"

    @property
    def apiserver_dir(self) -> Path:
        return self.root / "apiserver"

    @property
    def node_dir(self) -> Path:
        return self.root / "node"


@dataclass(frozen=True)
class ClusterState:
    """What must stay the same across restarts of one cluster."""

    node_name: str
    node_ip: str
    ports: dict[str, int]

    def to_json(self) -> str:
        data = {
            "format": STATE_FORMAT,
            "node_name": self.node_name,
            "node_ip": self.node_ip,
            "ports": self.ports,
        }
        return json.dumps(data, indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str) -> ClusterState:
        data = json.loads(text)
        if data.get("format") != STATE_FORMAT:
            raise ValueError(f"state.json format {data.get('format')!r}, expected {STATE_FORMAT}")
        ports = {str(k): int(v) for k, v in data["ports"].items()}
        missing = [name for name in PORT_NAMES if name not in ports]
        if missing:
            raise ValueError(f"state.json lacks ports {missing}")
        return cls(node_name=str(data["node_name"]), node_ip=str(data["node_ip"]), ports=ports)


def node_name() -> str:
    """The node is named after the host, lower-cased as Kubernetes requires."""
    return socket.gethostname().split(".")[0].lower()


def load_or_create_state(layout: ClusterLayout) -> ClusterState:
    """Read ``state.json``, or choose a node address and free ports and write it."""
    if layout.state_file.is_file():
        return ClusterState.from_json(layout.state_file.read_text(encoding="utf-8"))
    chosen: dict[str, int] = {}
    while len(chosen) < len(PORT_NAMES):
        port = network.free_port()
        if port not in chosen.values():
            chosen[PORT_NAMES[len(chosen)]] = port
    state = ClusterState(node_name=node_name(), node_ip=network.node_ip(), ports=chosen)
    layout.root.mkdir(parents=True, exist_ok=True)
    layout.state_file.write_text(state.to_json(), encoding="utf-8")
    return state
