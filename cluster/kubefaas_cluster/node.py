"""The node half of the full cluster: containerd, CNI, kubelet and kube-proxy configuration.

Built without side effects, like `kubefaas_cluster.components`. A node owns machine-wide
things (iptables rules, the ``cni0`` bridge, cgroups), so only one full cluster runs per
machine; its paths outside the cluster directory are::

    /run/kubefaas/containerd/          containerd state and its socket ``containerd.sock``
    /run/kubefaas/cni-ipam/            host-local IP allocations (gone after a reboot)
    /var/lib/kubefaas/containerd/      containerd's content and snapshots: imported images
                                       survive ``down``/``up`` and reboots
    /var/lib/kubefaas/kubelet/         kubelet root (pod volumes are mounted below it)

and inside the cluster directory ``node/containerd.toml``, ``node/cni/10-kubefaas.conflist``,
``node/kubelet.yaml`` and ``node/kube-proxy.yaml``.

Why the settings (CLUSTER.md): ``SystemdCgroup = false`` and ``cgroupDriver: cgroupfs``
because there is no systemd; ``failCgroupV1: false`` because the hosts run cgroup v1;
``imageGCHighThresholdPercent: 100`` because containerd 1.6 does not pin images and nothing
can be pulled again; eviction at 5 % so a busy CI disk does not taint the node;
``conntrack.maxPerCore: 0`` and zero timeouts so kube-proxy skips sysctl writes a sandbox
may refuse.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import yaml

from kubefaas_cluster import network
from kubefaas_cluster.components import ControlPlanePlan
from kubefaas_cluster.images import PAUSE_IMAGE
from kubefaas_cluster.processes import ProcessSpec

RUN_DIR = Path("/run/kubefaas")
VAR_DIR = Path("/var/lib/kubefaas")
CNI_BIN_DIR = Path("/usr/lib/cni")
CNI_PACKAGE = "containernetworking-plugins"
# Debian puts runc in /usr/sbin, which a non-login PATH may lack.
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
CNI_BRIDGE = "cni0"
EVICTION_THRESHOLD = "5%"
# Binaries the node needs from Debian, and the package providing each.
NODE_COMMANDS: dict[str, str] = {
    "containerd": "containerd",
    "containerd-shim-runc-v2": "containerd",
    "ctr": "containerd",
    "runc": "runc",
    "iptables": "iptables",
    "conntrack": "conntrack",
}


@dataclass(frozen=True)
class NodePaths:
    """Where the node's files live (see the module docstring)."""

    config_dir: Path
    run_dir: Path = RUN_DIR
    var_dir: Path = VAR_DIR

    @property
    def containerd_state(self) -> Path:
        return self.run_dir / "containerd"

    @property
    def containerd_socket(self) -> Path:
        return self.containerd_state / "containerd.sock"

    @property
    def containerd_root(self) -> Path:
        return self.var_dir / "containerd"

    @property
    def containerd_config(self) -> Path:
        return self.config_dir / "containerd.toml"

    @property
    def cni_conf_dir(self) -> Path:
        return self.config_dir / "cni"

    @property
    def cni_ipam_dir(self) -> Path:
        return self.run_dir / "cni-ipam"

    @property
    def kubelet_root(self) -> Path:
        return self.var_dir / "kubelet"

    @property
    def kubelet_config(self) -> Path:
        return self.config_dir / "kubelet.yaml"

    @property
    def kube_proxy_config(self) -> Path:
        return self.config_dir / "kube-proxy.yaml"


def _toml_string(value: str | Path) -> str:
    return json.dumps(str(value))


def containerd_config(paths: NodePaths) -> str:
    """containerd 1.6 config (version 2): its own socket, pause image, CNI from Debian."""
    cri = '[plugins."io.containerd.grpc.v1.cri"]'
    runc = '[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]'
    return "\n".join(
        [
            "version = 2",
            f"root = {_toml_string(paths.containerd_root)}",
            f"state = {_toml_string(paths.containerd_state)}",
            "",
            "[grpc]",
            f"  address = {_toml_string(paths.containerd_socket)}",
            "",
            cri,
            f"  sandbox_image = {_toml_string(PAUSE_IMAGE)}",
            "  enable_unprivileged_ports = false",
            # Sandboxes and Guaranteed pods ask for a negative oom_score_adj, which needs
            # CAP_SYS_RESOURCE; sandboxed VMs may drop it from the bounding set, and runc
            # then fails with "can't get final child's PID from pipe". Never go below ours.
            "  restrict_oom_score_adj = true",
            "",
            '[plugins."io.containerd.grpc.v1.cri".containerd]',
            '  snapshotter = "overlayfs"',
            '  default_runtime_name = "runc"',
            "",
            runc,
            '  runtime_type = "io.containerd.runc.v2"',
            "",
            '[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]',
            "  SystemdCgroup = false",
            "",
            '[plugins."io.containerd.grpc.v1.cri".cni]',
            f"  bin_dir = {_toml_string(CNI_BIN_DIR)}",
            f"  conf_dir = {_toml_string(paths.cni_conf_dir)}",
            "  max_conf_num = 1",
            "",
        ]
    )


def cni_conflist(paths: NodePaths) -> str:
    """bridge (gateway, masquerade, hairpin for a pod reaching itself via a Service) + portmap."""
    document = {
        "cniVersion": "1.0.0",
        "name": "kubefaas",
        "plugins": [
            {
                "type": "bridge",
                "bridge": CNI_BRIDGE,
                "isGateway": True,
                "ipMasq": True,
                "hairpinMode": True,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": network.POD_CIDR}]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                    "dataDir": str(paths.cni_ipam_dir),
                },
            },
            {"type": "portmap", "capabilities": {"portMappings": True}},
        ],
    }
    return json.dumps(document, indent=2) + "\n"


def kubelet_config(plan: ControlPlanePlan, paths: NodePaths) -> str:
    """KubeletConfiguration for a cgroup-v1, systemd-less single node."""
    pki = plan.pki
    serving = pki.pair("kubelet-serving")
    threshold = EVICTION_THRESHOLD
    document = {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "address": plan.state.node_ip,
        "port": plan.state.ports["kubelet"],
        "readOnlyPort": 0,
        "healthzBindAddress": network.LOOPBACK,
        "healthzPort": plan.state.ports["kubelet_healthz"],
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": True},
            "x509": {"clientCAFile": str(pki.ca.cert)},
        },
        "authorization": {"mode": "Webhook"},
        "tlsCertFile": str(serving.cert),
        "tlsPrivateKeyFile": str(serving.key),
        "cgroupDriver": "cgroupfs",
        "containerRuntimeEndpoint": f"unix://{paths.containerd_socket}",
        "failSwapOn": False,
        "failCgroupV1": False,
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "evictionHard": {
            "memory.available": threshold,
            "nodefs.available": threshold,
            "nodefs.inodesFree": threshold,
            "imagefs.available": threshold,
        },
        "clusterDomain": network.CLUSTER_DOMAIN,
        "resolvConf": "/etc/resolv.conf",
        "rotateCertificates": False,
        # The default -999 needs CAP_SYS_RESOURCE (see containerd_config); 0 always works.
        "oomScoreAdj": 0,
        "serializeImagePulls": False,
        "volumePluginDir": str(paths.kubelet_root / "volume-plugins"),
        "logging": {"format": "text"},
    }
    return yaml.safe_dump(document, sort_keys=False)


def kube_proxy_config(plan: ControlPlanePlan) -> str:
    """KubeProxyConfiguration: iptables mode, no conntrack sysctl writes."""
    document = {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "clientConnection": {
            "kubeconfig": str(plan.layout.component_kubeconfig("kube-proxy")),
        },
        "mode": "iptables",
        "hostnameOverride": plan.state.node_name,
        "bindAddress": plan.state.node_ip,
        "clusterCIDR": network.CLUSTER_CIDR,
        "healthzBindAddress": f"{network.LOOPBACK}:{plan.state.ports['proxy_healthz']}",
        "metricsBindAddress": f"{network.LOOPBACK}:{plan.state.ports['proxy_metrics']}",
        "conntrack": {
            "maxPerCore": 0,
            "min": 0,
            "tcpEstablishedTimeout": "0s",
            "tcpCloseWaitTimeout": "0s",
        },
        "iptables": {"masqueradeAll": False, "syncPeriod": "10s", "minSyncPeriod": "1s"},
        "oomScoreAdj": 0,
    }
    return yaml.safe_dump(document, sort_keys=False)


def config_digest(*texts: str) -> str:
    """A digest of the config texts a component reads, recorded to detect changes."""
    digest = hashlib.sha256()
    for text in texts:
        digest.update(text.encode())
        digest.update(b"\0")
    return digest.hexdigest()


def containerd(paths: NodePaths, *, binary: Path, config: str) -> ProcessSpec:
    """containerd with the generated config; PATH must find runc and the runc shim."""
    return ProcessSpec(
        name="containerd",
        argv=[str(binary), f"--config={paths.containerd_config}"],
        env={"PATH": SYSTEM_PATH},
        config_digest=config_digest(config),
    )


def kubelet(plan: ControlPlanePlan, paths: NodePaths, *, config: str) -> ProcessSpec:
    """The kubelet, registering the node under the host name with the node address."""
    return ProcessSpec(
        name="kubelet",
        argv=[
            plan.binary("kubelet"),
            f"--config={paths.kubelet_config}",
            f"--kubeconfig={plan.layout.component_kubeconfig('kubelet')}",
            f"--root-dir={paths.kubelet_root}",
            f"--hostname-override={plan.state.node_name}",
            f"--node-ip={plan.state.node_ip}",
        ],
        env={"PATH": SYSTEM_PATH},
        config_digest=config_digest(config),
    )


def kube_proxy(plan: ControlPlanePlan, paths: NodePaths, *, config: str) -> ProcessSpec:
    """kube-proxy reading its KubeProxyConfiguration."""
    return ProcessSpec(
        name="kube-proxy",
        argv=[plan.binary("kube-proxy"), f"--config={paths.kube_proxy_config}"],
        env={"PATH": SYSTEM_PATH},
        config_digest=config_digest(config),
    )
