"""The local cluster's image registry: Debian's `docker-registry` (CNCF distribution) on the node.

docs/packaging.md, "The local cluster's registry". The build Job pushes function images
to it and the kubelet (through containerd) pulls them from it, the way any cluster uses a
registry; the platform images are pushed to it too, so the builder can pull its base.

Address: the pod network's gateway on the node, ``10.244.0.1:5000`` (the first address of
the node's pod CIDR, which the CNI bridge ``cni0`` holds). Pods reach it as their default
gateway; containerd, on the node, reaches it as a local address; nothing off the machine
does (it is not on a public interface). The bridge is created with that address before
the registry starts (the CNI bridge plugin keeps an existing bridge and its address).

containerd 1.6 pulls from it over plain HTTP through ``config_path`` and a ``hosts.toml``
for that host (``<cluster>/node/certs.d/10.244.0.1:5000/hosts.toml``).

Files: ``<cluster>/node/registry.yml`` (its config), its storage under
``/var/lib/kubefaas/registry``.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import shutil
import subprocess
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from kubefaas import oci
from kubefaas_cluster import network
from kubefaas_cluster.binaries import BuildError
from kubefaas_cluster.node import CNI_BRIDGE, VAR_DIR
from kubefaas_cluster.processes import ProcessSpec

NAME = "docker-registry"
PORT = 5000
_POD_NETWORK = ipaddress.ip_network(network.POD_CIDR)
ADDRESS = str(_POD_NETWORK[1])
HOST = f"{ADDRESS}:{PORT}"
"""What images are named by: ``10.244.0.1:5000/kubefaas-runtime:0.1.0``."""


class RegistryError(RuntimeError):
    """The registry could not be set up; the message says what to do."""


@dataclass(frozen=True)
class RegistryPaths:
    config_dir: Path
    var_dir: Path = VAR_DIR

    @property
    def config(self) -> Path:
        return self.config_dir / "registry.yml"

    @property
    def storage(self) -> Path:
        return self.var_dir / "registry"

    @property
    def certs_dir(self) -> Path:
        """containerd's ``config_path``: one folder a registry host, with its hosts.toml."""
        return self.config_dir / "certs.d"

    def hosts_file(self, host: str = HOST) -> Path:
        return self.certs_dir / host / "hosts.toml"


def registry_config(paths: RegistryPaths, *, address: str = ADDRESS, port: int = PORT) -> str:
    """docker-registry's configuration: filesystem storage, HTTP on `address` only."""
    document = {
        "version": 0.1,
        "log": {"level": "warn"},
        "storage": {
            "filesystem": {"rootdirectory": str(paths.storage)},
            "delete": {"enabled": True},
        },
        "http": {"addr": f"{address}:{port}"},
    }
    # JSON is YAML: no YAML writer needed, and every value is quoted as it should be.
    return json.dumps(document, indent=2) + "\n"


def hosts_toml(host: str = HOST) -> str:
    """containerd's hosts.toml for `host`: pull and resolve over plain HTTP."""
    return "\n".join(
        [
            f'server = "http://{host}"',
            "",
            f'[host."http://{host}"]',
            '  capabilities = ["pull", "resolve"]',
            "",
        ]
    )


def containerd_section(paths: RegistryPaths) -> str:
    """The CRI plugin's registry section of containerd's config (version 2)."""
    return "\n".join(
        [
            '[plugins."io.containerd.grpc.v1.cri".registry]',
            f"  config_path = {json.dumps(str(paths.certs_dir))}",
            "",
        ]
    )


def write_files(paths: RegistryPaths) -> None:
    paths.config.parent.mkdir(parents=True, exist_ok=True)
    paths.config.write_text(registry_config(paths), encoding="utf-8")
    paths.hosts_file().parent.mkdir(parents=True, exist_ok=True)
    paths.hosts_file().write_text(hosts_toml(), encoding="utf-8")
    paths.storage.mkdir(parents=True, exist_ok=True)


def _ip(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=False)


def ensure_bridge_address(bridge: str = CNI_BRIDGE, address: str = ADDRESS) -> None:
    """The CNI bridge exists, is up and holds the pod network's gateway address, so the
    registry can bind it before the first pod (which is when the CNI plugin makes it)."""
    prefix = f"{address}/{_POD_NETWORK.prefixlen}"
    if _ip("link", "show", bridge).returncode != 0:
        made = _ip("link", "add", bridge, "type", "bridge")
        if made.returncode != 0:
            raise RegistryError(f"cannot create the bridge {bridge}: {made.stderr.strip()}")
    shown = _ip("-o", "addr", "show", "dev", bridge)
    if f" {prefix} " not in f"{shown.stdout} ":
        added = _ip("addr", "add", prefix, "dev", bridge)
        if added.returncode != 0 and "File exists" not in added.stderr:
            raise RegistryError(f"cannot give {bridge} {prefix}: {added.stderr.strip()}")
    up = _ip("link", "set", bridge, "up")
    if up.returncode != 0:
        raise RegistryError(f"cannot bring {bridge} up: {up.stderr.strip()}")


def binary() -> Path:
    found = shutil.which(NAME)
    if found is None:
        raise RegistryError(f"{NAME} is not installed: run `make system-deps` (Debian package)")
    return Path(found)


def process(paths: RegistryPaths, *, command: Path) -> ProcessSpec:
    text = paths.config.read_text(encoding="utf-8") if paths.config.is_file() else ""
    return ProcessSpec(
        name=NAME,
        argv=[str(command), "serve", str(paths.config)],
        config_digest=hashlib.sha256(text.encode()).hexdigest(),
    )


def answers(host: str = HOST) -> bool:
    try:
        with urllib.request.urlopen(f"http://{host}/v2/", timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def push_archives(archives: Iterable[tuple[Path, str]], *, host: str = HOST) -> list[str]:
    """Push OCI archives (path, ``name:tag``) as ``host/name:tag``; the references pushed.
    Blobs the registry has are not sent again, so a warm `up` pushes nothing big."""
    pushed = []
    for archive, reference in archives:
        target = f"{host}/{reference.split('/')[-1]}"
        try:
            digest = oci.push(oci.read_archive(archive), target, scheme="http")
        except (oci.PushError, ValueError) as exc:
            raise BuildError(f"cannot push {archive.name} to the node registry: {exc}") from exc
        pushed.append(f"{target}@{digest}")
    return pushed
