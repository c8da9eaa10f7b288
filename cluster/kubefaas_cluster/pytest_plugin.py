"""pytest fixture ``kube_api``: a real API server (etcd + kube-apiserver + controllers).

Enable it in a conftest with ``from kubefaas_cluster.pytest_plugin import kube_api``
(or ``-p kubefaas_cluster.pytest_plugin``). The session starts a private API-only cluster
in a temporary directory with `LocalCluster`, the same code ``make cluster-up API_ONLY=1``
runs, and stops it at the end. Set ``KUBEFAAS_TEST_KUBECONFIG`` to test against a cluster
that already runs instead (nothing is started or stopped then).

A cluster that cannot start FAILS the tests with every component log attached: an API
tier that silently skips would report green while testing nothing.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from kubefaas_cluster.binaries import BinaryCache, BuildError, MissingBinary
from kubefaas_cluster.cluster import ClusterError, LocalCluster

KUBECONFIG_ENV = "KUBEFAAS_TEST_KUBECONFIG"
KUBECTL_TIMEOUT_SECONDS = 60.0
START_TIMEOUT_SECONDS = 120.0


class KubectlError(AssertionError):
    """kubectl exited non-zero; the message carries its command line and stderr."""


@dataclass(frozen=True)
class KubeApi:
    """A reachable API server and the means to talk to it from a test."""

    kubeconfig: Path
    server: str
    bin_dir: Path
    cluster: LocalCluster | None = None

    def kubectl(
        self,
        *args: str,
        input: str | None = None,
        check: bool = True,
        timeout: float = KUBECTL_TIMEOUT_SECONDS,
    ) -> subprocess.CompletedProcess[str]:
        """Run the cached kubectl against this cluster; raise `KubectlError` if `check` fails."""
        argv = [str(self.bin_dir / "kubectl"), f"--kubeconfig={self.kubeconfig}", *args]
        result = subprocess.run(
            argv, input=input, capture_output=True, text=True, timeout=timeout, check=False
        )
        if check and result.returncode != 0:
            raise KubectlError(
                f"kubectl {' '.join(args)} exited {result.returncode}\n"
                f"stdout: {result.stdout}\nstderr: {result.stderr}"
            )
        return result

    def kubectl_json(self, *args: str) -> Any:
        """Run kubectl with ``-o json`` and decode the answer."""
        return json.loads(self.kubectl(*args, "-o", "json").stdout)

    def apply(self, manifest: str) -> None:
        """``kubectl apply`` a YAML document given as text."""
        self.kubectl("apply", "-f", "-", input=manifest)

    def check_healthy(self) -> None:
        """Fail if a component of the private cluster has died since it started."""
        if self.cluster is None:
            return
        dead = self.cluster.dead()
        if dead:
            pytest.fail(
                f"cluster components died: {', '.join(dead)}\n{self.cluster.logs()}",
                pytrace=False,
            )


def _server_of(kubeconfig: Path) -> str:
    config = yaml.safe_load(kubeconfig.read_text(encoding="utf-8"))
    contexts = {c["name"]: c["context"] for c in config.get("contexts", [])}
    clusters = {c["name"]: c["cluster"] for c in config.get("clusters", [])}
    context = contexts.get(config.get("current-context", ""), {})
    cluster = clusters.get(context.get("cluster", ""), {})
    return str(cluster.get("server", ""))


@contextmanager
def private_kube_api(*, timeout: float = START_TIMEOUT_SECONDS) -> Iterator[KubeApi]:
    """Start an API-only cluster in a fresh temporary directory; stop it on exit.

    Components die with the starting process, so even a killed test run leaves nothing
    behind. The directory (with logs) is kept only when the start failed.
    """
    directory = Path(tempfile.mkdtemp(prefix="kubefaas-api-"))
    cluster = LocalCluster.at(directory, die_with_parent=True)
    try:
        info = cluster.up(api_only=True, timeout=timeout)
    except (ClusterError, MissingBinary, BuildError) as exc:
        cluster.down()
        if isinstance(exc, ClusterError):
            where, logs = f"logs kept in {cluster.layout.log_dir}", exc.logs
        else:
            # Nothing ran, so there is nothing to look at in the directory.
            shutil.rmtree(directory, ignore_errors=True)
            where, logs = "nothing was started", str(exc)
        raise ClusterError(f"the API-server tier could not start ({where})", logs=logs) from exc
    except BaseException:
        cluster.down()
        raise
    try:
        yield KubeApi(
            kubeconfig=info.kubeconfig, server=info.server, bin_dir=info.bin_dir, cluster=cluster
        )
    finally:
        cluster.down()
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="session")
def kube_api() -> Iterator[KubeApi]:
    """A real API server for the whole session (private, or ``$KUBEFAAS_TEST_KUBECONFIG``)."""
    external = os.environ.get(KUBECONFIG_ENV)
    if external:
        kubeconfig = Path(external)
        if not kubeconfig.is_file():
            pytest.fail(f"{KUBECONFIG_ENV}={external} does not exist", pytrace=False)
        try:
            bin_dir = BinaryCache.default().binary("kubectl").parent
        except MissingBinary as exc:
            pytest.fail(str(exc), pytrace=False)
        yield KubeApi(kubeconfig=kubeconfig, server=_server_of(kubeconfig), bin_dir=bin_dir)
        return
    try:
        with private_kube_api() as api:
            yield api
            api.check_healthy()
    except ClusterError as exc:
        pytest.fail(str(exc), pytrace=False)
