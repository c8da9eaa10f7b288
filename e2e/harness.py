"""The end-to-end harness: the cluster under test, the release, the gateway, waiting.

Which cluster: ``$KUBECONFIG`` if set, else the local cluster's kubeconfig
(``.cluster/kubeconfig``, started by ``make cluster-up``; ``make e2e`` starts it first).
A cluster that does not answer, or has no Ready node, FAILS the session with the reason:
an end-to-end tier that skips would report green while testing nothing.

Tests reach the gateway Service from this process:

- on the local cluster, at its ClusterIP: kube-proxy runs on this machine, and the address
  is used only once its iptables rule exists (before that, a packet to a Service IP would
  leave through the default route);
- on any other cluster, through ``kubectl port-forward`` bound to 127.0.0.1.

No test traffic goes anywhere else. Images must already be on the nodes: the local
cluster imports them at ``up``; for kind or k3d load ``kubefaas-{operator,gateway,runtime}``
at tag 0.1.0 first.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from kubefaas import naming
from kubefaas_cluster.binaries import BinaryCache, MissingBinary
from kubefaas_cluster.cluster import LocalCluster
from kubefaas_cluster.layout import default_cluster_dir
from tests.manifests import deep_merge

REPO = Path(__file__).resolve().parents[1]
CHART = REPO / "charts" / "kubefaas"
EXAMPLES = REPO / "examples"
RESTRICTED = (
    "pod-security.kubernetes.io/enforce=restricted",
    "pod-security.kubernetes.io/enforce-version=latest",
)
KUBECTL_TIMEOUT_SECONDS = 120.0
INSTALL_TIMEOUT_SECONDS = 240
# A cold start on a 2-core node takes a second or two; the gateway holds the request.
INVOKE_TIMEOUT_SECONDS = 90.0
SETTLE_SECONDS = 120.0
GATEWAY_PORT_NAME = "http"


class KubectlError(AssertionError):
    """A kubectl or helm command failed; the message has the command and its stderr."""


@dataclass(frozen=True)
class Cluster:
    """The cluster under test and the kubectl/helm to drive it."""

    kubeconfig: Path
    bin_dir: Path
    # The local cluster of this checkout: its kube-proxy routes ClusterIPs on this machine.
    local: LocalCluster | None

    def run(
        self,
        tool: str,
        *args: str,
        input: str | None = None,
        check: bool = True,
        timeout: float = KUBECTL_TIMEOUT_SECONDS,
    ) -> subprocess.CompletedProcess[str]:
        argv = [str(self.bin_dir / tool), f"--kubeconfig={self.kubeconfig}", *args]
        result = subprocess.run(
            argv, input=input, capture_output=True, text=True, timeout=timeout, check=False
        )
        if check and result.returncode != 0:
            raise KubectlError(
                f"{tool} {' '.join(args)} exited {result.returncode}\n"
                f"stdout: {result.stdout}\nstderr: {result.stderr}"
            )
        return result

    def kubectl(self, *args: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
        return self.run("kubectl", *args, **kwargs)

    def helm(self, *args: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
        return self.run("helm", *args, **kwargs)

    def json(self, *args: str) -> Any:
        return json.loads(self.kubectl(*args, "-o", "json").stdout)

    def items(self, *args: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = self.json("get", *args)["items"]
        return items


def resolve_cluster() -> Cluster:
    """The cluster to test (see the module docstring); fail the session if there is none."""
    try:
        cache = BinaryCache.default()
        bin_dir = cache.binary("kubectl").parent
        cache.binary("helm")
    except MissingBinary as exc:
        pytest.fail(f"{exc}\n(run `make k8s-binaries`)", pytrace=False)
    local = LocalCluster.at(default_cluster_dir())
    configured = os.environ.get("KUBECONFIG", "")
    if configured:
        kubeconfig = Path(configured.split(os.pathsep)[0])
        if not kubeconfig.is_file():
            pytest.fail(f"KUBECONFIG={configured} does not exist", pytrace=False)
        is_local = kubeconfig.resolve() == local.layout.admin_kubeconfig.resolve()
    else:
        kubeconfig = local.layout.admin_kubeconfig
        is_local = True
        if not kubeconfig.is_file() or local.processes.running("kube-proxy") is None:
            pytest.fail(
                "no cluster to test against: KUBECONFIG is not set and the local cluster "
                f"({local.layout.root}) is not running; run `make cluster-up` (or `make e2e`, "
                "which starts it) or point KUBECONFIG at a cluster",
                pytrace=False,
            )
    cluster = Cluster(kubeconfig=kubeconfig, bin_dir=bin_dir, local=local if is_local else None)
    nodes = cluster.kubectl("get", "nodes", "-o", "json", check=False, timeout=30)
    if nodes.returncode != 0:
        pytest.fail(f"the cluster at {kubeconfig} does not answer:\n{nodes.stderr}", pytrace=False)
    ready = [
        node["metadata"]["name"]
        for node in json.loads(nodes.stdout)["items"]
        if any(
            c["type"] == "Ready" and c["status"] == "True"
            for c in node["status"].get("conditions", [])
        )
    ]
    if not ready:
        pytest.fail(f"the cluster at {kubeconfig} has no Ready node", pytrace=False)
    return cluster


# -- the gateway ---------------------------------------------------------------------------


@dataclass
class Gateway:
    """HTTP access to the release's gateway Service."""

    url: str
    namespace: str  # where the test Functions live
    client: httpx.Client = field(init=False)

    def __post_init__(self) -> None:
        # trust_env=False: no proxy from the environment may carry test traffic elsewhere.
        self.client = httpx.Client(
            base_url=self.url, timeout=INVOKE_TIMEOUT_SECONDS, trust_env=False
        )

    def invoke(
        self,
        name: str,
        payload: Any = None,
        *,
        path: str = "",
        method: str = "POST",
        **kwargs: Any,
    ) -> httpx.Response:
        """``/function/<namespace>/<name><path>`` with `payload` as the JSON body."""
        if payload is not None:
            kwargs["json"] = payload
        return self.client.request(method, f"/function/{self.namespace}/{name}{path}", **kwargs)

    def invoke_async(self, name: str, payload: Any = None) -> httpx.Response:
        return self.client.post(f"/async-function/{self.namespace}/{name}", json=payload)


def kube_proxy_routes(cluster_ip: str) -> bool:
    """True once kube-proxy's NAT rules for `cluster_ip` exist on this machine."""
    iptables_save = shutil.which("iptables-save")
    if iptables_save is None:
        return False
    result = subprocess.run(
        [iptables_save, "-t", "nat"], capture_output=True, text=True, check=False, timeout=30
    )
    return f"-d {cluster_ip}/32" in result.stdout


def gateway_url(
    cluster: Cluster, *, namespace: str, service: str
) -> tuple[str, Callable[[], None]]:
    """A base URL for the gateway Service and a function that releases it."""
    svc = cluster.json("get", "service", service, "-n", namespace)
    port = next(p["port"] for p in svc["spec"]["ports"] if p.get("name") == GATEWAY_PORT_NAME)
    if cluster.local is not None:
        ip = svc["spec"]["clusterIP"]
        wait_for(
            f"kube-proxy's iptables rules for {namespace}/{service} ({ip})",
            lambda: kube_proxy_routes(ip),
            timeout=60,
        )
        return f"http://{ip}:{port}", lambda: None
    forward = subprocess.Popen(
        [
            str(cluster.bin_dir / "kubectl"),
            f"--kubeconfig={cluster.kubeconfig}",
            "port-forward",
            "--address=127.0.0.1",
            "-n",
            namespace,
            f"service/{service}",
            f":{port}",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert forward.stdout is not None
    line = forward.stdout.readline()
    found = re.search(r"127\.0\.0\.1:(\d+)", line)
    if found is None:
        forward.kill()
        pytest.fail(f"kubectl port-forward did not start: {line}{forward.communicate()[1]}")

    def stop() -> None:
        forward.terminate()
        try:
            forward.wait(timeout=10)
        except subprocess.TimeoutExpired:
            forward.kill()
            forward.wait()

    return f"http://127.0.0.1:{found.group(1)}", stop


# -- the release ---------------------------------------------------------------------------


@dataclass
class Release:
    """The chart installed for this session."""

    cluster: Cluster
    name: str
    namespace: str  # the chart's pods
    functions_namespace: str
    gateway: Gateway
    installed: bool = True

    @property
    def fullname(self) -> str:
        return self.name  # the release name contains "kubefaas", so it is the prefix

    def pods(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        return self.cluster.items("pods", "-n", namespace, "-l", selector)

    def function_pods(self, function: str) -> list[dict[str, Any]]:
        return self.pods(self.functions_namespace, f"{naming.FUNCTION_LABEL}={function}")

    def function_replicas(self, function: str) -> int:
        found = self.cluster.kubectl(
            "get", "deployment", function, "-n", self.functions_namespace,
            "-o", "jsonpath={.spec.replicas}", check=False,
        )  # fmt: skip
        return int(found.stdout or 0) if found.returncode == 0 else 0

    def function_stats(self, function: str) -> dict[str, Any] | None:
        """The gateway's ``/internal/stats`` entry of `function` (None if it does not know it)."""
        stats = self.gateway.client.get(
            "/internal/stats", headers=self.metrics_auth(), timeout=10
        ).json()
        entry: dict[str, Any] | None = stats["functions"].get(
            f"{self.functions_namespace}/{function}"
        )
        return entry

    def metrics_auth(self) -> dict[str, str]:
        """The bearer token the chart generated for /metrics and /internal/stats
        (docs/security.md), read from the release's gateway Secret."""
        secret = self.cluster.json(
            "get", "secret", f"{self.fullname}-gateway", "-n", self.namespace
        )  # fmt: skip
        token = base64.b64decode((secret.get("data") or {}).get("metrics-token", "")).decode()
        return {"Authorization": f"Bearer {token}"} if token else {}

    def admin_token(self) -> str:
        """The admin token the chart generated (console login, `/system/*`)."""
        secret = self.cluster.json(
            "get", "secret", f"{self.fullname}-gateway", "-n", self.namespace
        )  # fmt: skip
        return base64.b64decode(secret["data"]["admin-token"]).decode()

    def uninstall(self) -> subprocess.CompletedProcess[str]:
        result = self.cluster.helm(
            "uninstall", self.name, "-n", self.namespace, "--wait", "--timeout=180s",
            timeout=240,
        )  # fmt: skip
        self.installed = False
        return result

    def diagnostics(self) -> str:
        """Pods, events and the last log lines of the gateway and operator, for a failure."""
        parts = []
        for namespace in (self.namespace, self.functions_namespace):
            parts.append(self.cluster.kubectl(
                "get", "pods,deployments,functions", "-n", namespace, "-o", "wide", check=False
            ).stdout)  # fmt: skip
            parts.append(self.cluster.kubectl(
                "get", "events", "-n", namespace, "--sort-by=.lastTimestamp", check=False
            ).stdout[-4000:])  # fmt: skip
        for component in ("gateway", "operator"):
            logs = self.cluster.kubectl(
                "logs", "-n", self.namespace, f"deployment/{self.fullname}-{component}",
                "--tail=60", check=False,
            )  # fmt: skip
            parts.append(f"----- {component} log -----\n{logs.stdout}{logs.stderr}")
        return "\n".join(parts)


@contextlib.contextmanager
def installed_release(cluster: Cluster, prefix: str, values: dict[str, Any]) -> Iterator[Release]:
    """The chart installed as `<prefix>-<suffix>` into its own namespace, watching a second
    one for Functions (both restricted); `values` are merged over those two settings.
    Everything is deleted on exit."""
    suffix = uuid.uuid4().hex[:6]
    name = f"{prefix}-{suffix}"
    namespace, functions_namespace = f"{prefix}-{suffix}", f"kubefaas-fn-{suffix}"
    for ns in (namespace, functions_namespace):
        create_namespace(cluster, ns)
    stop_forward: Callable[[], None] = lambda: None  # noqa: E731
    gateway: Gateway | None = None
    try:
        values = deep_merge(
            {
                "watchNamespaces": [functions_namespace],
                "gateway": {"defaultNamespace": functions_namespace},
            },
            values,
        )
        install = cluster.helm(
            "install", name, str(CHART), "-n", namespace, "-f", "-",
            "--wait", f"--timeout={INSTALL_TIMEOUT_SECONDS}s",
            input=yaml.safe_dump(values), check=False, timeout=INSTALL_TIMEOUT_SECONDS + 60,
        )  # fmt: skip
        if install.returncode != 0:
            state = cluster.kubectl("get", "pods,events", "-n", namespace, check=False).stdout
            pytest.fail(f"helm install failed:\n{install.stderr}\n{state}", pytrace=False)
        url, stop_forward = gateway_url(cluster, namespace=namespace, service=f"{name}-gateway")
        gateway = Gateway(url=url, namespace=functions_namespace)
        result = Release(
            cluster=cluster,
            name=name,
            namespace=namespace,
            functions_namespace=functions_namespace,
            gateway=gateway,
        )
        started = gateway
        wait_for(
            "the gateway to answer /readyz through its Service",
            lambda: answers(started, "/readyz"),
            timeout=60,
            explain=result.diagnostics,
        )
        yield result
    finally:
        if gateway is not None:
            gateway.client.close()
        stop_forward()
        cluster.kubectl("delete", "functions", "--all", "-n", functions_namespace, check=False)
        cluster.helm("uninstall", name, "-n", namespace, "--wait", check=False, timeout=240)
        for ns in (functions_namespace, namespace):
            cluster.kubectl("delete", "namespace", ns, "--wait=false", check=False)


def wait_for(
    what: str,
    condition: Callable[[], Any],
    *,
    timeout: float = SETTLE_SECONDS,
    interval: float = 0.5,
    explain: Callable[[], str] = str,
) -> Any:
    """Poll `condition` until it returns something truthy (returned); fail after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}\n{explain()}")
        time.sleep(interval)


def create_namespace(cluster: Cluster, name: str) -> None:
    cluster.kubectl("create", "namespace", name)
    cluster.kubectl("label", "namespace", name, *RESTRICTED)


def answers(gateway: Gateway, path: str) -> bool:
    try:
        return gateway.client.get(path, timeout=5).status_code == 200
    except httpx.HTTPError:
        return False


def function_manifest(example: str, *, name: str, namespace: str, **merge: Any) -> str:
    """`examples/<example>.yaml` renamed to `name` in `namespace`, deep-merged with `merge`."""
    document = yaml.safe_load((EXAMPLES / f"{example}.yaml").read_text(encoding="utf-8"))
    document = deep_merge(document, merge)
    document["metadata"]["name"] = name
    document["metadata"]["namespace"] = namespace
    return yaml.safe_dump(document, sort_keys=False)
