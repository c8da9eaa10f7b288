"""Knative Serving, built from the Go module proxy and installed on the local cluster.

Only for the side-by-side benchmark (``bench/peers.py``, docs/peers.md): the same function
on kubefaas and on Knative Serving, on the same node, in one run. Nothing here is product.

Build: a small wrapper module requires ``knative.dev/serving`` (its ``replace`` lines are
copied, since Go ignores a dependency's) and builds the five commands in one ``go build``
(``CGO_ENABLED=0 -trimpath -ldflags "-s -w"``). Cache, beside the Kubernetes binaries::

    knative-<version>/
        src/go.mod, go.sum         the wrapper module
        bin/<command>              controller webhook activator autoscaler queue
        knative.stamp              JSON, written LAST; names the version and `go version`
        images/<command>.oci.tar   one image per command (see `build_images`)
        images/<command>.json      {"reference", "digest", "key"} of that archive
        logs/build.log             every go command's output, appended

A build is reused while the stamp names the same Knative version and the same
``go version`` (when Go is not installed, a complete cached build is used as it is).

Images: one layer, laid out as ``ko`` lays out Knative's own images (``/ko-app/<command>``,
``KO_DATA_PATH=/var/run/ko``), plus the host's CA bundle at
``/etc/ssl/certs/ca-certificates.crt`` (ko's default base image carries one: the
controller resolves image tags over TLS unless a registry is skipped, and the webhook and
activator build TLS clients), a passwd entry for the ``nonroot`` user 65532 they run as, and
an ``nsswitch.conf`` that reads ``/etc/hosts`` before DNS.
References are ``localhost/kubefaas/knative-<command>:<version>``: a ``localhost/`` name is
never looked up in a registry, and pods use ``imagePullPolicy: Never``.

Install: `render_install` turns Knative's own YAML (serving's ``config/core``, the CRDs of
``knative.dev/networking`` and ``knative.dev/caching``, which serving's repository links in
by symlink and its module zip therefore lacks) into the objects to apply, see its docstring.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from kubefaas_cluster import appimages, binaries, oci, versions
from kubefaas_cluster.binaries import BuildError, cache_root

WRAPPER_MODULE = "kubefaas.local/knative-build"
# The wrapper's go line: the `tool` directive needs 1.24.
WRAPPER_GO = "1.24"
SYSTEM_NAMESPACE = "knative-serving"
IMAGE_PREFIX = "localhost/kubefaas/knative-"
KO_PREFIX = "ko://knative.dev/serving/cmd/"
CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
NONROOT = "65532"
# Bump when the image layout changes, so cached archives are rewritten.
IMAGE_FORMAT = 2
# Deployments of config/core/deployments that run here; the HPAs and PDBs are left out
# (no metrics server; one replica each on one node).
DEPLOYMENT_FILES = ("controller.yaml", "webhook.yaml", "activator.yaml", "autoscaler.yaml")
# Requests sized for a 2-core node (Knative asks 300m for the activator alone); limits stay
# as Knative ships them, so nothing on the data path is throttled harder than upstream.
REQUESTS: Mapping[str, Mapping[str, str]] = {
    "controller": {"cpu": "25m", "memory": "64Mi"},
    "webhook": {"cpu": "25m", "memory": "64Mi"},
    "activator": {"cpu": "50m", "memory": "60Mi"},
    "autoscaler": {"cpu": "25m", "memory": "64Mi"},
}
# The activator finds the autoscaler by name (ws://autoscaler.knative-serving.svc.<domain>),
# and the local cluster runs no cluster DNS: the autoscaler Service gets this fixed ClusterIP
# (in the band Kubernetes keeps for static addresses) and the activator a hosts entry.
LOCAL_AUTOSCALER_IP = "10.96.0.42"
CLUSTER_DOMAIN = "cluster.local"
# config-autoscaler: the activator stays on the data path at any scale (the setup),
# and a Revision at target 10 means 10 in flight, as kubefaas's targetConcurrency does.
AUTOSCALER_CONFIG: Mapping[str, str] = {
    "target-burst-capacity": "-1",
    "container-concurrency-target-percentage": "100",
    "enable-scale-to-zero": "true",
    # Only how long the activator must be in path before the last pod goes; with TBC -1 it
    # always is, so waiting 30 s (the default) would only slow the cold-start rounds.
    "scale-to-zero-grace-period": "6s",
}
DEPLOYMENT_CONFIG: Mapping[str, str] = {
    # Never resolve tags to digests over the network: the images are local. A name without
    # a registry (kubefaas-runtime:0.1.0) parses as index.docker.io, not docker.io.
    "registries-skipping-tag-resolving": (
        "kind.local,ko.local,dev.local,localhost,docker.io,index.docker.io"
    ),
    "queue-sidecar-cpu-request": "25m",
    "queue-sidecar-memory-request": "32Mi",
}
NETWORK_CONFIG: Mapping[str, str] = {
    # No ingress is installed: Routes stay unready, Revisions and the activator do not care.
    "ingress-class": "none.ingress.networking.knative.dev",
}


@dataclass(frozen=True)
class KnativeCache:
    """Where one Knative version's binaries, images, stamp and build log live."""

    root: Path
    version: str

    @classmethod
    def default(cls, *, version: str = versions.KNATIVE_VERSION) -> KnativeCache:
        return cls(root=cache_root() / f"knative-{version}", version=version)

    @property
    def bin_dir(self) -> Path:
        return self.root / "bin"

    @property
    def src_dir(self) -> Path:
        return self.root / "src"

    @property
    def images_dir(self) -> Path:
        return self.root / "images"

    @property
    def log_file(self) -> Path:
        return self.root / "logs" / "build.log"

    @property
    def stamp(self) -> Path:
        return self.root / "knative.stamp"

    def binaries(self) -> list[Path]:
        return [self.bin_dir / command for command in versions.KNATIVE_COMMANDS]


# -- the Go build --------------------------------------------------------------------------


@dataclass(frozen=True)
class ServingGoMod:
    """What the wrapper copies from knative.dev/serving's go.mod."""

    go_directive: str
    replaces: tuple[str, ...]
    requires: Mapping[str, str]


def parse_serving_go_mod(text: str) -> ServingGoMod:
    """The go line, every ``replace`` (one-line and block form) and the requirements."""
    go_match = re.search(r"^go\s+(\S+)\s*$", text, re.MULTILINE)
    if go_match is None:
        raise ValueError("the knative.dev/serving go.mod has no go line")
    replaces = re.findall(r"^replace\s+(\S+\s+(?:\S+\s+)?=>\s+\S+(?:\s+\S+)?)\s*$", text, re.M)
    for block in re.findall(r"^replace\s*\((.*?)^\)", text, re.MULTILINE | re.DOTALL):
        replaces.extend(line.strip() for line in block.splitlines() if "=>" in line)
    requires = dict(re.findall(r"^\s*(\S+)\s+(v\S+)(?:\s*//.*)?$", text, re.MULTILINE))
    return ServingGoMod(go_match.group(1), tuple(replaces), requires)


def render_wrapper_go_mod(*, upstream: ServingGoMod, version: str) -> str:
    """The wrapper go.mod: require serving, repeat its replaces, keep the five tools.

    The godebug line keeps the runtime defaults of serving's own go line: the main module,
    not the dependency, decides them.
    """
    minor = ".".join(upstream.go_directive.split(".")[:2])
    lines = [
        f"module {WRAPPER_MODULE}",
        "",
        f"go {WRAPPER_GO}",
        "",
        f"godebug default=go{minor}",
        "",
        f"require {versions.KNATIVE_MODULE} {version}",
        "",
        *(f"replace {replace}" for replace in upstream.replaces),
        "",
        "tool (",
        *(f"\t{versions.KNATIVE_MODULE}/cmd/{cmd}" for cmd in versions.KNATIVE_COMMANDS),
        ")",
        "",
    ]
    return "\n".join(lines)


def _go_version_or_none() -> str | None:
    return binaries._go_version() if shutil.which("go") else None


def build_is_cached(cache: KnativeCache) -> bool:
    """True when the stamp names this version and this machine's Go (or Go is absent)."""
    if not (cache.stamp.is_file() and all(path.is_file() for path in cache.binaries())):
        return False
    try:
        data = json.loads(cache.stamp.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    if not isinstance(data, dict) or data.get("version") != cache.version:
        return False
    go = _go_version_or_none()
    return go is None or data.get("go") == go


def _download(module: str, version: str, *, cache: KnativeCache) -> dict[str, Any]:
    output = binaries._run_logged(
        ["go", "mod", "download", "-json", f"{module}@{version}"],
        cwd=cache.root,
        env=binaries._go_env(module_mode=False),
        log=cache.log_file,
    )
    info: dict[str, Any] = json.loads(output)
    return info


def ensure_binaries(cache: KnativeCache) -> bool:
    """Build the five commands unless a complete build is cached; True if built."""
    if build_is_cached(cache):
        return False
    binaries._require_go()
    started = time.monotonic()
    cache.stamp.unlink(missing_ok=True)
    cache.src_dir.mkdir(parents=True, exist_ok=True)
    info = _download(versions.KNATIVE_MODULE, cache.version, cache=cache)
    upstream = parse_serving_go_mod(Path(info["GoMod"]).read_text(encoding="utf-8"))
    (cache.src_dir / "go.mod").write_text(
        render_wrapper_go_mod(upstream=upstream, version=cache.version), encoding="utf-8"
    )
    env = binaries._go_env(module_mode=True)
    binaries._run_logged(["go", "mod", "tidy"], cwd=cache.src_dir, env=env, log=cache.log_file)
    staging = cache.root / "bin.partial"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    packages = [f"{versions.KNATIVE_MODULE}/cmd/{cmd}" for cmd in versions.KNATIVE_COMMANDS]
    binaries._run_logged(
        ["go", "build", "-trimpath", "-ldflags", "-s -w", "-o", f"{staging}/", *packages],
        cwd=cache.src_dir,
        env=env,
        log=cache.log_file,
    )
    cache.bin_dir.mkdir(parents=True, exist_ok=True)
    for command in versions.KNATIVE_COMMANDS:
        (staging / command).replace(cache.bin_dir / command)
    staging.rmdir()
    binaries._write_stamp(
        cache.stamp,
        version=cache.version,
        commands=list(versions.KNATIVE_COMMANDS),
        seconds=time.monotonic() - started,
    )
    return True


# -- the sources of the install YAML ------------------------------------------------------


@dataclass(frozen=True)
class KnativeSources:
    """The module directories the install YAML is read from."""

    serving: Path
    networking: Path
    caching: Path


def _escape_module_path(path: str) -> str:
    """The module cache's case encoding: an upper-case letter becomes ``!`` + lower case."""
    return re.sub(r"[A-Z]", lambda m: "!" + m.group(0).lower(), path)


def _module_cache() -> Path:
    if shutil.which("go"):
        found = subprocess.run(
            ["go", "env", "GOMODCACHE"], capture_output=True, text=True, check=False
        ).stdout.strip()
        if found:
            return Path(found)
    gopath = os.environ.get("GOPATH", str(Path.home() / "go")).split(os.pathsep)[0]
    return Path(gopath) / "pkg" / "mod"


def module_dir(module: str, version: str, *, cache: KnativeCache) -> Path:
    """The extracted module, from the module cache or downloaded from the proxy."""
    found = _module_cache() / f"{_escape_module_path(module)}@{version}"
    if (found / "go.mod").is_file():
        return found
    binaries._require_go()
    return Path(_download(module, version, cache=cache)["Dir"])


def sources(cache: KnativeCache) -> KnativeSources:
    """serving at the pinned version, networking and caching at the versions it requires."""
    serving = module_dir(versions.KNATIVE_MODULE, cache.version, cache=cache)
    requires = parse_serving_go_mod((serving / "go.mod").read_text(encoding="utf-8")).requires
    found = {}
    for module in ("knative.dev/networking", "knative.dev/caching"):
        if module not in requires:
            raise BuildError(f"{serving}/go.mod does not require {module}")
        found[module] = module_dir(module, requires[module], cache=cache)
    return KnativeSources(
        serving=serving,
        networking=found["knative.dev/networking"],
        caching=found["knative.dev/caching"],
    )


# -- images --------------------------------------------------------------------------------


def image_reference(command: str, *, version: str = versions.KNATIVE_VERSION) -> str:
    return f"{IMAGE_PREFIX}{command}:{version}"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _image_config(command: str) -> oci.ImageConfig:
    return oci.ImageConfig(
        entrypoint=(f"/ko-app/{command}",),
        env=(
            "PATH=/ko-app:/usr/local/bin:/usr/bin:/bin",
            "KO_DATA_PATH=/var/run/ko",
            f"SSL_CERT_FILE={CA_BUNDLE}",
        ),
        user=f"{NONROOT}:{NONROOT}",
    )


def build_images(cache: KnativeCache, *, ca_bundle: Path = CA_BUNDLE) -> list[appimages.BuiltImage]:
    """One OCI archive per command, rewritten only when the binary or the bundle changed.

    Returned as `appimages.BuiltImage` so `appimages.import_images` imports them exactly as
    it imports the platform images at ``up``.
    """
    if not build_is_cached(cache):
        raise BuildError(
            f"Knative {cache.version} is not built in {cache.root}; run "
            "`python -m kubefaas_cluster knative build`"
        )
    if not ca_bundle.is_file():
        raise BuildError(f"{ca_bundle} is missing: install the ca-certificates package")
    bundle = ca_bundle.read_bytes()
    built = []
    for command in versions.KNATIVE_COMMANDS:
        started = time.monotonic()
        binary = cache.bin_dir / command
        reference = image_reference(command, version=cache.version)
        config = _image_config(command)
        key = hashlib.sha256(
            json.dumps(
                [IMAGE_FORMAT, reference, _sha256(binary), hashlib.sha256(bundle).hexdigest(),
                 config.__dict__],
                sort_keys=True, default=str,
            ).encode()
        ).hexdigest()[:16]  # fmt: skip
        archive = cache.images_dir / f"{command}.oci.tar"
        meta = cache.images_dir / f"{command}.json"
        recorded = json.loads(meta.read_text(encoding="utf-8")) if meta.is_file() else {}
        fresh = not (archive.is_file() and recorded.get("key") == key)
        if fresh:
            cache.images_dir.mkdir(parents=True, exist_ok=True)
            layer = oci.layer_from_entries(
                cache.images_dir / f"{command}.layer.tar",
                {
                    f"ko-app/{command}": oci.FileEntry(binary.read_bytes(), mode=0o755),
                    "var/run/ko/.keep": oci.FileEntry(b""),
                    str(CA_BUNDLE).lstrip("/"): oci.FileEntry(bundle),
                    "etc/passwd": oci.FileEntry(
                        f"root:x:0:0:root:/root:/sbin/nologin\n"
                        f"nonroot:x:{NONROOT}:{NONROOT}:nonroot:/home/nonroot:/sbin/nologin\n".encode()
                    ),
                    "etc/group": oci.FileEntry(f"root:x:0:\nnonroot:x:{NONROOT}:\n".encode()),
                    # /etc/hosts first: the activator finds the autoscaler there (no DNS).
                    "etc/nsswitch.conf": oci.FileEntry(b"hosts: files dns\n"),
                },
            )
            digest = oci.write_oci_archive(
                archive, reference=reference, layers=[layer], config=config
            )
            layer.unlink()
            recorded = {"reference": reference, "digest": digest, "key": key}
            meta.write_text(json.dumps(recorded) + "\n", encoding="utf-8")
        built.append(
            appimages.BuiltImage(
                component=f"knative-{command}",
                reference=reference,
                archive=archive,
                digest=str(recorded["digest"]),
                size=archive.stat().st_size,
                layer_sizes=(archive.stat().st_size,),
                built=fresh,
                seconds=time.monotonic() - started,
            )
        )
    return built


# -- the install YAML ----------------------------------------------------------------------


def _load(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d]


def _crds(path: Path) -> list[dict[str, Any]]:
    return [d for d in _load(path) if d.get("kind") == "CustomResourceDefinition"]


def _walk_strings(node: Any) -> Iterator[str]:
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for value in node.values():
            yield from _walk_strings(value)
    elif isinstance(node, list):
        for value in node:
            yield from _walk_strings(value)


def _replace_ko(node: Any, images: Mapping[str, str]) -> Any:
    """Every ``ko://knative.dev/serving/cmd/<command>`` string replaced by its image."""
    if isinstance(node, str) and node.startswith("ko://"):
        command = node.removeprefix(KO_PREFIX)
        if not node.startswith(KO_PREFIX) or command not in images:
            raise BuildError(f"no image for {node!r} (have {sorted(images)})")
        return images[command]
    if isinstance(node, dict):
        return {key: _replace_ko(value, images) for key, value in node.items()}
    if isinstance(node, list):
        return [_replace_ko(value, images) for value in node]
    return node


def _merge_data(document: dict[str, Any], values: Mapping[str, str]) -> None:
    document.setdefault("data", {}).update(values)


def _tune_deployment(document: dict[str, Any], *, autoscaler_ip: str | None) -> None:
    name = document["metadata"]["name"]
    spec = document["spec"]
    spec["replicas"] = 1
    pod = spec["template"]["spec"]
    for container in pod["containers"]:
        container["imagePullPolicy"] = "Never"
        if name in REQUESTS:
            container.setdefault("resources", {})["requests"] = dict(REQUESTS[name])
    if name == "activator" and autoscaler_ip is not None:
        pod["hostAliases"] = [
            {
                "ip": autoscaler_ip,
                "hostnames": [f"autoscaler.{SYSTEM_NAMESPACE}.svc.{CLUSTER_DOMAIN}"],
            }
        ]


def render_install(
    src: KnativeSources,
    images: Mapping[str, str],
    *,
    autoscaler_ip: str | None = LOCAL_AUTOSCALER_IP,
) -> list[dict[str, Any]]:
    """The objects to apply, CRDs first; `images` maps each command to its reference.

    - CRDs: networking's certificates, ingresses, serverlessservices and cluster domain
      claims (the controller watches all four), caching's images, serving's own;
    - serving's ``config/core``: namespace, service accounts, RBAC, config maps (with
      networking's config-network), the four Deployments and their Services, the webhook
      configurations, the queue-proxy Image cache entry. Left out: the HPAs and PDBs, and
      the cert-manager Certificate for internal TLS (off by default, no cert-manager);
    - every ``ko://`` reference replaced (`BuildError` for one without an image), every
      Deployment at one replica, small requests, ``imagePullPolicy: Never``;
    - config-autoscaler `AUTOSCALER_CONFIG`, config-deployment `DEPLOYMENT_CONFIG`,
      config-network `NETWORK_CONFIG`;
    - with `autoscaler_ip`: the autoscaler Service at that ClusterIP and a hosts entry for
      it in the activator (a cluster without DNS; None for one with cluster DNS).
    """
    core = src.serving / "config" / "core"
    documents: list[dict[str, Any]] = []
    for name in ("certificate", "ingress", "serverlessservice", "domain-claim"):
        documents += _crds(src.networking / "config" / f"{name}.yaml")
    documents += _crds(src.caching / "config" / "image.yaml")
    for path in sorted((core / "300-resources").glob("*.yaml")):
        documents += _crds(path)
    documents += _load(core / "100-namespace.yaml")
    documents += _load(core / "200-serviceaccount.yaml")
    for path in sorted((core / "200-roles").glob("*.yaml")):
        documents += _load(path)
    for path in sorted((core / "configmaps").glob("*.yaml")):
        documents += _load(path)
    documents += _load(src.networking / "config" / "config-network.yaml")
    for name in DEPLOYMENT_FILES:
        documents += _load(core / "deployments" / name)
    for path in sorted((core / "webhooks").glob("*.yaml")):
        documents += _load(path)
    documents += _load(core / "999-cache.yaml")
    rendered = []
    for document in documents:
        document = _replace_ko(copy.deepcopy(document), images)
        kind, name = document.get("kind"), document.get("metadata", {}).get("name")
        if kind == "ConfigMap" and name == "config-autoscaler":
            _merge_data(document, AUTOSCALER_CONFIG)
        elif kind == "ConfigMap" and name == "config-deployment":
            _merge_data(document, DEPLOYMENT_CONFIG)
        elif kind == "ConfigMap" and name == "config-network":
            _merge_data(document, NETWORK_CONFIG)
        elif kind == "Deployment":
            _tune_deployment(document, autoscaler_ip=autoscaler_ip)
        elif kind == "Service" and name == "autoscaler" and autoscaler_ip is not None:
            document["spec"]["clusterIP"] = autoscaler_ip
        rendered.append(document)
    leftover = [s for d in rendered for s in _walk_strings(d) if s.startswith("ko://")]
    if leftover:
        raise BuildError(f"ko:// references left in the install: {leftover}")
    return rendered


def images_by_command(built: Iterable[appimages.BuiltImage]) -> dict[str, str]:
    return {image.component.removeprefix("knative-"): image.reference for image in built}


def to_yaml(documents: Sequence[Mapping[str, Any]]) -> str:
    return yaml.safe_dump_all(list(documents), sort_keys=False)


# -- install and uninstall -----------------------------------------------------------------

CRD_TIMEOUT_SECONDS = 60
ROLLOUT_TIMEOUT_SECONDS = 240
WEBHOOK_CONFIGURATIONS = (
    ("mutatingwebhookconfiguration", "webhook.serving.knative.dev"),
    ("validatingwebhookconfiguration", "validation.webhook.serving.knative.dev"),
    ("validatingwebhookconfiguration", "config.webhook.serving.knative.dev"),
)


class NotReady(RuntimeError):
    """A Knative component did not get ready; the message names it and shows why."""


@dataclass(frozen=True)
class Kubectl:
    """kubectl against one kubeconfig."""

    binary: Path
    kubeconfig: Path

    def __call__(
        self, *args: str, input: str | None = None, check: bool = True, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        argv = [str(self.binary), f"--kubeconfig={self.kubeconfig}", *args]
        result = subprocess.run(
            argv, input=input, capture_output=True, text=True, timeout=timeout, check=False
        )
        if check and result.returncode != 0:
            raise BuildError(f"kubectl {' '.join(args)} failed: {result.stderr or result.stdout}")
        return result


def _component_state(kubectl: Kubectl, name: str) -> str:
    pods = kubectl(
        "get", "pods", "-n", SYSTEM_NAMESPACE, "-l", f"app={name}", "-o", "wide", check=False
    ).stdout
    events = kubectl(
        "get", "events", "-n", SYSTEM_NAMESPACE, "--sort-by=.lastTimestamp", check=False
    ).stdout.splitlines()[-8:]
    logs = kubectl("logs", "-n", SYSTEM_NAMESPACE, f"deployment/{name}", "--tail=15", check=False)
    return f"{pods}\nrecent events:\n" + "\n".join(events) + f"\nlog:\n{logs.stdout}{logs.stderr}"


def apply(kubectl: Kubectl, documents: Sequence[Mapping[str, Any]]) -> None:
    """Apply the CRDs (server-side: they are large), wait until they are served, then the rest."""
    crds = [d for d in documents if d.get("kind") == "CustomResourceDefinition"]
    rest = [d for d in documents if d.get("kind") != "CustomResourceDefinition"]
    kubectl("apply", "--server-side", "--force-conflicts", "-f", "-", input=to_yaml(crds))
    names = [f"crd/{d['metadata']['name']}" for d in crds]
    kubectl(
        "wait", "--for=condition=Established", f"--timeout={CRD_TIMEOUT_SECONDS}s", *names,
        timeout=CRD_TIMEOUT_SECONDS + 30,
    )  # fmt: skip
    kubectl("apply", "--server-side", "--force-conflicts", "-f", "-", input=to_yaml(rest))


def wait_available(
    kubectl: Kubectl, documents: Sequence[Mapping[str, Any]], *,
    timeout: float = ROLLOUT_TIMEOUT_SECONDS,
) -> None:  # fmt: skip
    """Wait for every Deployment; raise `NotReady` naming the first one not available in
    `timeout`, with its pods, the namespace's last events and its log."""
    deadline = time.monotonic() + timeout
    for document in documents:
        if document.get("kind") != "Deployment":
            continue
        name = document["metadata"]["name"]
        left = max(5, int(deadline - time.monotonic()))
        status = kubectl(
            "rollout", "status", f"deployment/{name}", "-n", SYSTEM_NAMESPACE,
            f"--timeout={left}s", check=False, timeout=left + 30,
        )  # fmt: skip
        if status.returncode != 0:
            raise NotReady(
                f"Knative's {name} is not available after {timeout:.0f}s "
                f"({status.stderr.strip()}):\n{_component_state(kubectl, name)}"
            )


def install(
    kubectl: Kubectl, documents: Sequence[Mapping[str, Any]], *,
    timeout: float = ROLLOUT_TIMEOUT_SECONDS,
) -> None:  # fmt: skip
    """`apply`, then `wait_available`."""
    apply(kubectl, documents)
    wait_available(kubectl, documents, timeout=timeout)


def uninstall(kubectl: Kubectl, documents: Sequence[Mapping[str, Any]]) -> None:
    """Remove what `install` applied: Knative Services first, while the controller still
    runs to clear their finalizers, then the webhooks (so nothing waits on them), the rest,
    and the CRDs last."""
    if kubectl("get", "crd", "services.serving.knative.dev", check=False).returncode == 0:
        kubectl(
            "delete", "services.serving.knative.dev", "--all", "--all-namespaces",
            "--wait=true", "--timeout=120s", check=False, timeout=150,
        )  # fmt: skip
    for kind, name in WEBHOOK_CONFIGURATIONS:
        kubectl("delete", kind, name, "--ignore-not-found", check=False)
    crds = [d for d in documents if d.get("kind") == "CustomResourceDefinition"]
    rest = [d for d in documents if d.get("kind") != "CustomResourceDefinition"]
    kubectl(
        "delete", "--ignore-not-found", "--wait=false", "-f", "-", input=to_yaml(rest[::-1]),
        check=False, timeout=180,
    )  # fmt: skip
    kubectl(
        "delete", "--ignore-not-found", "--wait=false", "-f", "-", input=to_yaml(crds),
        check=False, timeout=180,
    )  # fmt: skip


def prepare(cache: KnativeCache | None = None) -> tuple[KnativeCache, list[appimages.BuiltImage]]:
    """Binaries (built or cached) and their image archives."""
    cache = cache or KnativeCache.default()
    ensure_binaries(cache)
    return cache, build_images(cache)


def import_into_node(
    built: Iterable[appimages.BuiltImage], *, containerd_socket: Path
) -> list[str]:
    """Import the archives into the node's containerd as ``up`` imports the platform images."""
    from kubefaas_cluster import images

    ctr = shutil.which("ctr")
    if ctr is None or not containerd_socket.exists():
        raise NotReady(
            f"the local node's containerd ({containerd_socket}) is not running: `make cluster-up`"
        )
    if not images.containerd_answers(ctr=Path(ctr), address=containerd_socket):
        raise NotReady(f"containerd does not answer on {containerd_socket}")
    return appimages.import_images(built, ctr=Path(ctr), address=containerd_socket)
