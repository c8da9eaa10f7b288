"""Knative Serving for the side-by-side benchmark: its build cache, images and install YAML.

Nothing here needs a cluster. The rendering tests read Knative's own YAML from the Go
module cache, where `python -m kubefaas_cluster knative build` puts it; the fixture-based
tests below them pin the same rules on a small tree that needs no download.
See docs/peers.md.
"""

from __future__ import annotations

import ipaddress
import json
import tarfile
from pathlib import Path
from typing import Any

import pytest

from kubefaas_cluster import knative, network, versions
from kubefaas_cluster.binaries import BuildError

IMAGES = {cmd: knative.image_reference(cmd) for cmd in versions.KNATIVE_COMMANDS}


def _strings(node: Any) -> list[str]:
    return list(knative._walk_strings(node))


def _by_kind(documents: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in documents if d.get("kind") == kind}


def _cpu_millicores(value: str) -> int:
    return int(value[:-1]) if value.endswith("m") else int(float(value) * 1000)


# -- the real install YAML (Knative v0.42.2 from the module cache) ---------------------------


@pytest.fixture(scope="module")
def installed() -> list[dict[str, Any]]:
    cache = knative.KnativeCache.default()
    serving = knative._module_cache() / f"{versions.KNATIVE_MODULE}@{cache.version}"
    if not (serving / "config" / "core").is_dir():
        pytest.skip(
            f"{serving} is not in the Go module cache: python -m kubefaas_cluster knative build"
        )
    return knative.render_install(knative.sources(cache), IMAGES)


def test_every_image_is_a_local_knative_image_never_pulled(installed: list[dict[str, Any]]) -> None:
    deployments = _by_kind(installed, "Deployment")
    assert sorted(deployments) == ["activator", "autoscaler", "controller", "webhook"]
    for name, deployment in deployments.items():
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        assert container["image"] == f"localhost/kubefaas/knative-{name}:{versions.KNATIVE_VERSION}"
        assert container["imagePullPolicy"] == "Never"
        assert deployment["spec"]["replicas"] == 1
    config = _by_kind(installed, "ConfigMap")["config-deployment"]["data"]
    assert config["queue-sidecar-image"] == IMAGES["queue"]
    assert _by_kind(installed, "Image")["queue-proxy"]["spec"]["image"] == IMAGES["queue"]


def test_no_ko_reference_and_no_registry_is_left(installed: list[dict[str, Any]]) -> None:
    strings = _strings(installed)
    assert not [s for s in strings if "ko://" in s]
    assert not [s for s in strings if "gcr.io" in s or "ghcr.io" in s or "quay.io" in s]
    references = [
        value
        for document in installed
        for value in _image_fields(document)
    ]  # fmt: skip
    assert references
    assert all(r.startswith("localhost/kubefaas/knative-") for r in references)


def _image_fields(node: Any) -> list[str]:
    found: list[str] = []
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("image", "queue-sidecar-image") and isinstance(value, str):
                found.append(value)
            else:
                found.extend(_image_fields(value))
    elif isinstance(node, list):
        for value in node:
            found.extend(_image_fields(value))
    return found


def test_the_activator_stays_in_path_and_scales_at_the_target(
    installed: list[dict[str, Any]],
) -> None:
    autoscaler = _by_kind(installed, "ConfigMap")["config-autoscaler"]["data"]
    assert autoscaler["target-burst-capacity"] == "-1"
    assert autoscaler["container-concurrency-target-percentage"] == "100"
    assert autoscaler["enable-scale-to-zero"] == "true"
    # Knative's own documentation block stays untouched, so its checksum still matches.
    assert "_example" in autoscaler
    network_config = _by_kind(installed, "ConfigMap")["config-network"]["data"]
    assert network_config["ingress-class"] == knative.NETWORK_CONFIG["ingress-class"]
    deployment = _by_kind(installed, "ConfigMap")["config-deployment"]["data"]
    skipped = deployment["registries-skipping-tag-resolving"].split(",")
    # kubefaas-runtime:0.1.0 parses as index.docker.io: never resolved over the network.
    assert {"localhost", "index.docker.io"} <= set(skipped)


def test_the_activator_reaches_the_autoscaler_without_cluster_dns(
    installed: list[dict[str, Any]],
) -> None:
    service = next(
        d for d in installed if d["kind"] == "Service" and d["metadata"]["name"] == "autoscaler"
    )
    ip = service["spec"]["clusterIP"]
    assert ipaddress.ip_address(ip) in ipaddress.ip_network(network.SERVICE_CIDR)
    assert ip not in (network.KUBERNETES_SERVICE_IP, network.CLUSTER_DNS_IP)
    pod = _by_kind(installed, "Deployment")["activator"]["spec"]["template"]["spec"]
    assert pod["hostAliases"] == [
        {"ip": ip, "hostnames": ["autoscaler.knative-serving.svc.cluster.local"]}
    ]


def test_requests_fit_a_two_core_node(installed: list[dict[str, Any]]) -> None:
    total = 0
    for deployment in _by_kind(installed, "Deployment").values():
        for container in deployment["spec"]["template"]["spec"]["containers"]:
            total += _cpu_millicores(container["resources"]["requests"]["cpu"])
            # Knative's limits are kept: nothing on the data path is throttled harder.
            assert "limits" in container["resources"]
    assert total <= 200


def test_crds_come_first_and_cover_what_the_controller_watches(
    installed: list[dict[str, Any]],
) -> None:
    kinds = [d["kind"] for d in installed]
    last_crd = max(i for i, k in enumerate(kinds) if k == "CustomResourceDefinition")
    assert all(k == "CustomResourceDefinition" for k in kinds[: last_crd + 1])
    crds = set(_by_kind(installed, "CustomResourceDefinition"))
    assert {
        "certificates.networking.internal.knative.dev",
        "ingresses.networking.internal.knative.dev",
        "serverlessservices.networking.internal.knative.dev",
        "clusterdomainclaims.networking.internal.knative.dev",
        "images.caching.internal.knative.dev",
        "services.serving.knative.dev",
        "revisions.serving.knative.dev",
        "podautoscalers.autoscaling.internal.knative.dev",
        "metrics.autoscaling.internal.knative.dev",
    } <= crds
    # No metrics server and one node: Knative's HPAs and PDBs are left out.
    assert not {"HorizontalPodAutoscaler", "PodDisruptionBudget"} & set(kinds)
    # Namespaced objects are in knative-serving (the namespace is created first).
    assert kinds.index("Namespace") < kinds.index("ServiceAccount")
    for document in installed:
        namespace = document["metadata"].get("namespace")
        assert namespace in (None, knative.SYSTEM_NAMESPACE)


def test_the_yaml_round_trips(installed: list[dict[str, Any]]) -> None:
    import yaml

    assert list(yaml.safe_load_all(knative.to_yaml(installed))) == installed


# -- the same rules on a small tree --------------------------------------------------------


AUTOSCALER_SERVICE = "---\nkind: Service\nmetadata: {name: autoscaler}\nspec: {}\n"


def _tree(root: Path, *, extra_image: str | None = None) -> knative.KnativeSources:
    core = root / "serving" / "config" / "core"
    for folder in ("300-resources", "200-roles", "configmaps", "deployments", "webhooks"):
        (core / folder).mkdir(parents=True)
    (core / "100-namespace.yaml").write_text(
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: knative-serving}\n"
    )
    (core / "200-serviceaccount.yaml").write_text("")
    (core / "999-cache.yaml").write_text(
        "kind: Image\nmetadata: {name: queue-proxy, namespace: knative-serving}\n"
        "spec: {image: 'ko://knative.dev/serving/cmd/queue'}\n"
    )
    crd = (
        "apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\n"
        "metadata: {name: %s}\n"
    )
    (core / "300-resources" / "service.yaml").write_text(crd % "services.serving.knative.dev")
    for name in ("controller", "webhook", "activator", "autoscaler"):
        image = (
            extra_image
            if (extra_image and name == "webhook")
            else f"ko://knative.dev/serving/cmd/{name}"
        )
        (core / "deployments" / f"{name}.yaml").write_text(
            f"kind: Deployment\nmetadata: {{name: {name}, namespace: knative-serving}}\n"
            "spec:\n  template:\n    spec:\n      containers:\n"
            f"      - name: {name}\n        image: '{image}'\n"
            "        resources: {requests: {cpu: 300m}, limits: {cpu: '1'}}\n"
            + (AUTOSCALER_SERVICE if name == "autoscaler" else "")
        )  # fmt: skip
    (core / "deployments" / "activator-hpa.yaml").write_text(
        "kind: HorizontalPodAutoscaler\nmetadata: {name: activator}\n"
    )
    (core / "configmaps" / "autoscaler.yaml").write_text(
        "kind: ConfigMap\nmetadata: {name: config-autoscaler}\n"
        "data: {_example: '# docs', target-burst-capacity: '211'}\n"
    )
    (core / "configmaps" / "deployment.yaml").write_text(
        "kind: ConfigMap\nmetadata: {name: config-deployment}\n"
        "data: {queue-sidecar-image: 'ko://knative.dev/serving/cmd/queue'}\n"
    )
    networking = root / "networking" / "config"
    networking.mkdir(parents=True)
    for name in ("certificate", "ingress", "serverlessservice", "domain-claim"):
        (networking / f"{name}.yaml").write_text(crd % f"{name}.networking.internal.knative.dev")
    (networking / "config-network.yaml").write_text(
        "kind: ConfigMap\nmetadata: {name: config-network}\n"
    )
    caching = root / "caching" / "config"
    caching.mkdir(parents=True)
    (caching / "image.yaml").write_text(crd % "images.caching.internal.knative.dev")
    return knative.KnativeSources(root / "serving", root / "networking", root / "caching")


def test_a_small_tree_is_rendered_by_the_same_rules(tmp_path: Path) -> None:
    documents = knative.render_install(_tree(tmp_path), IMAGES, autoscaler_ip=None)
    assert not [s for s in _strings(documents) if s.startswith("ko://")]
    deployments = _by_kind(documents, "Deployment")
    assert (
        deployments["webhook"]["spec"]["template"]["spec"]["containers"][0]["image"]
        == (IMAGES["webhook"])
    )
    assert "hostAliases" not in deployments["activator"]["spec"]["template"]["spec"]
    assert "clusterIP" not in _by_kind(documents, "Service")["autoscaler"]["spec"]
    assert _by_kind(documents, "ConfigMap")["config-autoscaler"]["data"] == {
        "_example": "# docs",
        **knative.AUTOSCALER_CONFIG,
    }
    assert "HorizontalPodAutoscaler" not in [d["kind"] for d in documents]


def test_a_ko_reference_without_an_image_fails_naming_it(tmp_path: Path) -> None:
    sources = _tree(tmp_path, extra_image="ko://knative.dev/serving/cmd/schema")
    with pytest.raises(BuildError, match="cmd/schema"):
        knative.render_install(sources, IMAGES)
    missing = {k: v for k, v in IMAGES.items() if k != "queue"}
    with pytest.raises(BuildError, match="cmd/queue"):
        knative.render_install(_tree(tmp_path / "again"), missing)


# -- the build cache and the images ------------------------------------------------------

SERVING_GO_MOD = """module knative.dev/serving

go 1.22

require (
\tknative.dev/caching v0.0.0-20240716132144-989f54c83776
\tknative.dev/networking v0.0.0-20240716111826-bab7f2a3e556 // indirect
)

replace github.com/gorilla/websocket => github.com/gorilla/websocket v1.5.0
"""


def test_the_wrapper_module_keeps_serving_replaces_and_go_defaults() -> None:
    upstream = knative.parse_serving_go_mod(SERVING_GO_MOD)
    assert upstream.requires["knative.dev/networking"] == "v0.0.0-20240716111826-bab7f2a3e556"
    text = knative.render_wrapper_go_mod(upstream=upstream, version="v0.42.2")
    assert "godebug default=go1.22\n" in text
    assert "require knative.dev/serving v0.42.2\n" in text
    assert "replace github.com/gorilla/websocket => github.com/gorilla/websocket v1.5.0\n" in text
    for command in versions.KNATIVE_COMMANDS:
        assert f"\tknative.dev/serving/cmd/{command}\n" in text


def _fake_build(tmp_path: Path, *, go: str) -> knative.KnativeCache:
    cache = knative.KnativeCache(root=tmp_path / "knative-v0.42.2", version="v0.42.2")
    cache.bin_dir.mkdir(parents=True)
    for command in versions.KNATIVE_COMMANDS:
        (cache.bin_dir / command).write_bytes(f"#!binary {command}\n".encode())
    cache.stamp.write_text(json.dumps({"version": "v0.42.2", "go": go}))
    return cache


def test_the_build_is_reused_only_for_the_same_knative_and_go(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = _fake_build(tmp_path, go="go version go1.26.8 linux/amd64")
    monkeypatch.setattr(knative, "_go_version_or_none", lambda: "go version go1.26.8 linux/amd64")
    assert knative.build_is_cached(cache)
    monkeypatch.setattr(knative, "_go_version_or_none", lambda: "go version go1.27.0 linux/amd64")
    assert not knative.build_is_cached(cache)
    monkeypatch.setattr(knative, "_go_version_or_none", lambda: None)
    assert knative.build_is_cached(cache)
    other = knative.KnativeCache(root=cache.root, version="v0.43.0")
    assert not knative.build_is_cached(other)
    (cache.bin_dir / "queue").unlink()
    assert not knative.build_is_cached(cache)


def test_images_are_ko_layout_nonroot_with_ca_certs_and_cached(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = _fake_build(tmp_path, go="go1")
    monkeypatch.setattr(knative, "_go_version_or_none", lambda: "go1")
    bundle = tmp_path / "ca.crt"
    bundle.write_bytes(b"-----BEGIN CERTIFICATE-----\n")
    built = knative.build_images(cache, ca_bundle=bundle)
    assert [image.built for image in built] == [True] * 5
    assert knative.images_by_command(built) == IMAGES
    activator = next(i for i in built if i.component == "knative-activator")
    with tarfile.open(activator.archive) as archive:
        index = json.load(archive.extractfile("index.json"))  # type: ignore[arg-type]
        name = index["manifests"][0]["annotations"]["io.containerd.image.name"]
        assert name == IMAGES["activator"]
        blobs = {m.name: archive.extractfile(m).read() for m in archive if m.isfile()}  # type: ignore[union-attr]
    configs = [json.loads(b) for b in blobs.values() if b.startswith(b'{"architecture"')]
    (config,) = configs
    assert config["config"]["Entrypoint"] == ["/ko-app/activator"]
    assert config["config"]["User"] == "65532:65532"
    layer = max(blobs.values(), key=len)
    layer_path = tmp_path / "layer.tar"
    layer_path.write_bytes(layer)
    with tarfile.open(layer_path) as tar:
        files = {m.name: m for m in tar}
        assert files["ko-app/activator"].mode == 0o755
        assert tar.extractfile("etc/ssl/certs/ca-certificates.crt").read() == bundle.read_bytes()  # type: ignore[union-attr]
        assert b"nonroot:x:65532:65532" in tar.extractfile("etc/passwd").read()  # type: ignore[union-attr]
        # The activator's hosts entry for the autoscaler is read before DNS.
        assert tar.extractfile("etc/nsswitch.conf").read() == b"hosts: files dns\n"  # type: ignore[union-attr]
    again = knative.build_images(cache, ca_bundle=bundle)
    assert [image.built for image in again] == [False] * 5
    assert [i.digest for i in again] == [i.digest for i in built]
    (cache.bin_dir / "queue").write_bytes(b"#!binary queue, rebuilt\n")
    third = knative.build_images(cache, ca_bundle=bundle)
    assert [i.component for i in third if i.built] == ["knative-queue"]


def test_images_are_refused_without_a_complete_build(tmp_path: Path) -> None:
    cache = knative.KnativeCache(root=tmp_path / "knative-v0.42.2", version="v0.42.2")
    with pytest.raises(BuildError, match="knative build"):
        knative.build_images(cache)


# -- the same function on both platforms (bench/peers.py) ----------------------------------


@pytest.fixture(scope="module")
def peers() -> Any:
    import importlib
    import sys

    bench = str(Path(__file__).resolve().parents[2] / "bench")
    sys.path.insert(0, bench)
    try:
        return importlib.import_module("peers")
    finally:
        sys.path.remove(bench)


def test_the_knative_service_runs_the_operators_container(peers: Any) -> None:
    from e2e.harness import function_manifest
    from kubefaas_operator import children

    manifest = function_manifest(
        "hello", name="cold", namespace="fns", spec={"scaling": {"maxScale": 4}}
    )
    fn = peers.function_of(manifest)
    image = peers.runtime_image()
    config_map, service = peers.knative_objects(fn, namespace="peer", image=image, window="6s")
    operator = children.build_deployment(
        fn, image_for_runtime={"python3.11": image}, replicas_hint=0
    )["spec"]["template"]["spec"]
    (ours,) = operator["containers"]
    template = service["spec"]["template"]
    (theirs,) = template["spec"]["containers"]

    assert theirs["image"] == ours["image"] == "kubefaas-runtime:0.1.0"
    assert config_map["data"] == children.build_config_map(fn)["data"]
    assert config_map["metadata"] == {"name": "cold-code", "namespace": "peer"}
    assert template["spec"]["volumes"] == operator["volumes"]
    assert theirs["volumeMounts"] == ours["volumeMounts"]
    assert theirs["resources"] == ours["resources"]
    # Knative sets PORT itself from the one container port and refuses it in env.
    assert theirs["env"] == [e for e in ours["env"] if e["name"] != "PORT"]
    assert {"name": "GREETING", "value": "hello"} in theirs["env"]
    assert theirs["ports"] == [{"name": "http1", "containerPort": 8080}]
    # Knative's webhook refuses securityContext.privileged; the rest is the operator's.
    assert "privileged" not in theirs["securityContext"]
    assert theirs["securityContext"]["runAsUser"] == 65532
    assert theirs["securityContext"]["readOnlyRootFilesystem"] is True
    assert template["metadata"]["annotations"] == {
        "autoscaling.knative.dev/target": "10",
        "autoscaling.knative.dev/max-scale": "4",
        "autoscaling.knative.dev/min-scale": "0",
        "autoscaling.knative.dev/window": "6s",
    }
    assert template["spec"]["timeoutSeconds"] == fn.spec.timeout_seconds
    assert template["spec"]["automountServiceAccountToken"] is False
    assert service["metadata"]["labels"] == {"networking.knative.dev/visibility": "cluster-local"}


def test_the_results_table_has_both_platforms(peers: Any) -> None:
    results = {
        "cold_ms": {"kubefaas": [600.0, 700.0, 900.0], "knative": [2500.0, 3000.0, 4000.0]},
        "warm": {
            p: {"rps": rps, "p50_ms": 1.2, "p99_ms": 4.0, "requests": 100}
            for p, rps in (("kubefaas", 2000.0), ("knative", 1500.0))
        },
        "scale_out": {
            p: {
                "pods_needed": 5, "seconds_to_needed": seconds, "most_ready": 5,
                "calls": 400, "errors": 0, "p50_ms": 510.0, "p99_ms": 900.0,
            }
            for p, seconds in (("kubefaas", 8.5), ("knative", None))
        },
    }  # fmt: skip
    rows = {row[0]: row[1:] for row in peers.summary(results)}
    assert rows["cold start p50"] == ("700 ms", "3,000 ms")
    assert rows["warm req/s"] == ("2,000", "1,500")
    assert rows["scale-out to 5 ready pods"] == ("8.5 s", "never")
    assert peers.table(peers.summary(results)).startswith("| figure | kubefaas | Knative Serving |")
