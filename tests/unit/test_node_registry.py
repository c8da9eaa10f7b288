"""The local cluster's registry (kubefaas_cluster.node_registry), without the cluster: the
files `up` writes parse as what reads them (containerd's TOML, docker-registry's YAML), and
the real docker-registry, started with that configuration on loopback, takes the platform
images `up` pushes and serves them back by digest."""

from __future__ import annotations

import json
import subprocess
import time
import tomllib
import urllib.request
from pathlib import Path

import yaml

from kubefaas import oci
from kubefaas_cluster import network, node, node_registry
from tests.unit.test_oci import base_image
from tests.unit.test_oci_push import free_port


def paths(tmp_path: Path) -> node_registry.RegistryPaths:
    return node_registry.RegistryPaths(config_dir=tmp_path / "node", var_dir=tmp_path / "var")


def test_the_registry_listens_on_the_pod_networks_gateway_only() -> None:
    assert node_registry.ADDRESS == "10.244.0.1"
    assert node_registry.HOST == "10.244.0.1:5000"
    # The gateway of the node's pod CIDR: pods reach it, host-local never hands it out.
    assert network.POD_CIDR == "10.244.0.0/24"


def test_the_files_parse_as_their_readers_expect(tmp_path: Path) -> None:
    where = paths(tmp_path)
    node_registry.write_files(where)
    config = yaml.safe_load(where.config.read_text())
    assert config["http"]["addr"] == "10.244.0.1:5000"
    assert config["storage"]["filesystem"]["rootdirectory"] == str(where.storage)
    hosts = tomllib.loads(where.hosts_file().read_text())
    assert where.hosts_file() == where.certs_dir / "10.244.0.1:5000" / "hosts.toml"
    assert hosts["server"] == "http://10.244.0.1:5000"
    assert hosts["host"]["http://10.244.0.1:5000"]["capabilities"] == ["pull", "resolve"]
    # The section appended to the node's containerd config keeps it one valid document.
    whole = node.containerd_config(node.NodePaths(config_dir=tmp_path / "node"))
    whole += node_registry.containerd_section(where)
    cri = tomllib.loads(whole)["plugins"]["io.containerd.grpc.v1.cri"]
    assert cri["registry"] == {"config_path": str(where.certs_dir)}
    # containerd refuses config_path together with the older mirrors tables.
    assert "mirrors" not in cri["registry"]
    assert cri["sandbox_image"]


def test_docker_registry_runs_with_that_config_and_takes_the_pushed_images(
    tmp_path: Path,
) -> None:
    where = paths(tmp_path)
    port = free_port()
    where.config.parent.mkdir(parents=True)
    where.config.write_text(node_registry.registry_config(where, address="127.0.0.1", port=port))
    spec = node_registry.process(where, command=node_registry.binary())
    with (tmp_path / "registry.log").open("wb") as log:
        process = subprocess.Popen(list(spec.argv), stdout=log, stderr=log)
    host = f"127.0.0.1:{port}"
    try:
        give_up = time.monotonic() + 20
        while not node_registry.answers(host):
            assert process.poll() is None, (tmp_path / "registry.log").read_text()
            assert time.monotonic() < give_up, (tmp_path / "registry.log").read_text()
            time.sleep(0.1)
        archive = tmp_path / "runtime.oci.tar"
        digest = oci.write_archive(base_image(), archive, tag="0.1.0")
        (pushed,) = node_registry.push_archives(
            [(archive, "docker.io/library/kubefaas-runtime:0.1.0")], host=host
        )
        assert pushed == f"{host}/kubefaas-runtime:0.1.0@{digest}"
        request = urllib.request.Request(
            f"http://{host}/v2/kubefaas-runtime/manifests/0.1.0",
            headers={"Accept": oci.MEDIA_MANIFEST},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.headers["Docker-Content-Digest"] == digest
            assert json.loads(response.read())["layers"]
        assert (where.storage / "docker").is_dir()
    finally:
        process.terminate()
        process.wait(10)
