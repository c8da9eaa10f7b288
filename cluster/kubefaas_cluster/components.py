"""Command lines of the control-plane components, built without side effects.

Kept apart from starting them so that the flags can be read and tested in one place. The
choices follow Kubernetes' own ``hack/local-up-cluster.sh``: every component talks to the
API server with its own client certificate, nothing leader-elects (one replica), and every
port is the cluster directory's own so that two clusters can run side by side.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from kubefaas_cluster import network
from kubefaas_cluster.certs import Pki
from kubefaas_cluster.layout import ClusterLayout, ClusterState
from kubefaas_cluster.processes import ProcessSpec

SERVICE_ACCOUNT_ISSUER = f"https://kubernetes.default.svc.{network.CLUSTER_DOMAIN}"


@dataclass(frozen=True)
class ControlPlanePlan:
    """Everything the control-plane command lines depend on."""

    layout: ClusterLayout
    state: ClusterState
    bin_dir: Path
    etcd: Path
    api_only: bool

    @property
    def pki(self) -> Pki:
        return Pki(root=self.layout.pki_dir)

    @property
    def apiserver_address(self) -> str:
        """Loopback for the API tier; the node address when pods must reach the API server."""
        return network.LOOPBACK if self.api_only else self.state.node_ip

    @property
    def apiserver_url(self) -> str:
        return f"https://{self.apiserver_address}:{self.state.ports['apiserver']}"

    @property
    def etcd_url(self) -> str:
        return f"http://{network.LOOPBACK}:{self.state.ports['etcd_client']}"

    def binary(self, name: str) -> str:
        return str(self.bin_dir / name)


def etcd(plan: ControlPlanePlan) -> ProcessSpec:
    """A single-member etcd on loopback with the cluster's own data directory."""
    peer = f"http://{network.LOOPBACK}:{plan.state.ports['etcd_peer']}"
    return ProcessSpec(
        name="etcd",
        argv=[
            str(plan.etcd),
            "--name=kubefaas",
            f"--data-dir={plan.layout.etcd_dir}",
            f"--listen-client-urls={plan.etcd_url}",
            f"--advertise-client-urls={plan.etcd_url}",
            f"--listen-peer-urls={peer}",
            f"--initial-advertise-peer-urls={peer}",
            f"--initial-cluster=kubefaas={peer}",
            "--initial-cluster-state=new",
            # A test cluster's history is worthless; keep the database small.
            "--auto-compaction-retention=1",
            "--quota-backend-bytes=2147483648",
            "--log-level=warn",
        ],
    )


def kube_apiserver(plan: ControlPlanePlan) -> ProcessSpec:
    """The API server: client-certificate auth, Node+RBAC authorization, NodeRestriction."""
    pki = plan.pki
    serving = pki.pair("apiserver")
    kubelet_client = pki.pair("apiserver-kubelet-client")
    proxy_client = pki.pair("front-proxy-client")
    return ProcessSpec(
        name="kube-apiserver",
        argv=[
            plan.binary("kube-apiserver"),
            f"--etcd-servers={plan.etcd_url}",
            f"--bind-address={plan.apiserver_address}",
            f"--advertise-address={plan.apiserver_address}",
            f"--secure-port={plan.state.ports['apiserver']}",
            f"--cert-dir={plan.layout.apiserver_dir}",
            f"--tls-cert-file={serving.cert}",
            f"--tls-private-key-file={serving.key}",
            f"--client-ca-file={pki.ca.cert}",
            f"--service-cluster-ip-range={network.SERVICE_CIDR}",
            f"--service-account-issuer={SERVICE_ACCOUNT_ISSUER}",
            f"--service-account-key-file={pki.service_account_pub}",
            f"--service-account-signing-key-file={pki.service_account_key}",
            "--authorization-mode=Node,RBAC",
            "--enable-admission-plugins=NodeRestriction",
            "--allow-privileged=true",
            f"--kubelet-client-certificate={kubelet_client.cert}",
            f"--kubelet-client-key={kubelet_client.key}",
            f"--kubelet-certificate-authority={pki.ca.cert}",
            "--kubelet-preferred-address-types=InternalIP,Hostname",
            # Aggregation layer: lets controllers and aggregated APIs trust request headers.
            f"--requestheader-client-ca-file={pki.front_proxy_ca.cert}",
            "--requestheader-allowed-names=front-proxy-client",
            "--requestheader-username-headers=X-Remote-User",
            "--requestheader-group-headers=X-Remote-Group",
            "--requestheader-extra-headers-prefix=X-Remote-Extra-",
            f"--proxy-client-cert-file={proxy_client.cert}",
            f"--proxy-client-key-file={proxy_client.key}",
            "--profiling=false",
        ],
    )


def _component_auth_flags(plan: ControlPlanePlan, component: str) -> list[str]:
    kubeconfig = plan.layout.component_kubeconfig(component)
    return [
        f"--kubeconfig={kubeconfig}",
        f"--authentication-kubeconfig={kubeconfig}",
        f"--authorization-kubeconfig={kubeconfig}",
        "--leader-elect=false",
        f"--bind-address={network.LOOPBACK}",
        "--profiling=false",
    ]


def kube_controller_manager(plan: ControlPlanePlan) -> ProcessSpec:
    """Controllers with one service account each, signing SA tokens and CSRs with our keys."""
    pki = plan.pki
    return ProcessSpec(
        name="kube-controller-manager",
        argv=[
            plan.binary("kube-controller-manager"),
            *_component_auth_flags(plan, "kube-controller-manager"),
            f"--secure-port={plan.state.ports['controller_manager']}",
            f"--service-account-private-key-file={pki.service_account_key}",
            f"--root-ca-file={pki.ca.cert}",
            f"--cluster-signing-cert-file={pki.ca.cert}",
            f"--cluster-signing-key-file={pki.ca.key}",
            "--use-service-account-credentials=true",
            f"--service-cluster-ip-range={network.SERVICE_CIDR}",
            f"--cluster-cidr={network.CLUSTER_CIDR}",
            "--cluster-name=kubefaas",
        ],
    )


def kube_scheduler(plan: ControlPlanePlan) -> ProcessSpec:
    """The default scheduler (only useful once a node exists)."""
    return ProcessSpec(
        name="kube-scheduler",
        argv=[
            plan.binary("kube-scheduler"),
            *_component_auth_flags(plan, "kube-scheduler"),
            f"--secure-port={plan.state.ports['scheduler']}",
        ],
    )


def healthz_url(plan: ControlPlanePlan, component: str) -> str:
    """Where a component answers its health check (self-signed serving cert)."""
    port_name = {
        "kube-controller-manager": "controller_manager",
        "kube-scheduler": "scheduler",
    }[component]
    return f"https://{network.LOOPBACK}:{plan.state.ports[port_name]}/healthz"
