"""Pure builders of a Function's children: a `Function` in, the plain dict of one object out.

No I/O and no kopf here (an import-linter contract and a unit test keep it so): every
decision about what a Function's children look like is made in this module and unit-tested
by asserting on what it returns. `apply` sends the dicts; `reconcile` decides when; the
Function's status is computed in `status`.

Children of Function ``<ns>/<name>``, all in ``<ns>``, all controlled by the Function
(ownerReference controller=true, blockOwnerDeletion=true) so deleting it cascades:

- ConfigMap ``<name>-code`` (only for inline code): one key a file.
- Deployment ``<name>``: the runtime image, code mounted read-only, a private ``/tmp``.
- Service ``<name>``: ClusterIP, port 80 -> the runtime's 8080, named ``http``.

Deterministic names make a reconcile restarted half way converge to the same objects.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any, Final

from kubefaas import contract, limits, naming, wire
from kubefaas.api import API_VERSION, EnvVar, Function
from kubefaas.quantity import mebibytes

# Lambda gives a function one vCPU at 1,769 MB of memory and CPU in proportion below and
# above it; the CPU *request* follows the same ratio so a busy node shares CPU the way a
# user of those platforms expects. There is deliberately no CPU *limit*: CFS quotas
# throttle in 100 ms periods, which turns a short burst (the init phase of a cold start, a
# handler parsing a large body) into tail latency even on an idle node; the request already
# guarantees each instance its share under contention.
MEBIBYTES_PER_VCPU: Final = 1769
MIN_CPU_MILLICORES: Final = 1

# A fixed non-root identity (the "nonroot" user of distroless images): the runtime image
# needs no user database entry, and files in the code ConfigMap are world-readable anyway.
RUNTIME_UID: Final = 65532
RUNTIME_GID: Final = 65532
CODE_FILE_MODE: Final = 0o444

# After SIGTERM the runtime fails readiness, keeps accepting for its drain grace (2 s),
# then finishes in-flight calls, which may take up to the function's timeout. The kubelet
# must not SIGKILL before that, so the grace period is the timeout plus this margin.
DRAIN_GRACE_SECONDS: Final = 10
# Readiness decides when a cold-started instance may receive traffic: probe often.
READINESS_PERIOD_SECONDS: Final = 1
READINESS_TIMEOUT_SECONDS: Final = 1
READINESS_FAILURE_THRESHOLD: Final = 2

SERVICE_PORT: Final = 80
CONTAINER_NAME: Final = "function"
CODE_VOLUME: Final = "code"
TMP_VOLUME: Final = "tmp"
# spec.secrets volumes: secret-0, secret-1, ...; files readable, never writable.
SECRET_VOLUME_PREFIX: Final = "secret-"
SECRET_FILE_MODE: Final = 0o444
# Old ReplicaSets are only kept for `kubectl rollout undo`; thousands of functions each
# with ten of them would crowd the API server.
REVISION_HISTORY_LIMIT: Final = 3
PART_OF_LABEL: Final = "app.kubernetes.io/part-of"
NAME_LABEL: Final = "app.kubernetes.io/name"
PART_OF: Final = "kubefaas"


class UnknownRuntimeError(ValueError):
    """`spec.runtime` has no image in the operator's runtime map."""

    def __init__(self, runtime: str, known: list[str]) -> None:
        self.runtime = runtime
        self.known = known
        shown = ", ".join(known) or "none"
        super().__init__(
            f"spec.runtime {runtime!r} has no image in this operator's runtime map "
            f"(configured runtimes: {shown})"
        )


# --- identity -----------------------------------------------------------------------------


def function_labels(fn: Function) -> dict[str, str]:
    """Labels on every child and on the pods: how the gateway and `kubectl -l` find them."""
    return {
        naming.FUNCTION_LABEL: fn.name,
        NAME_LABEL: fn.name,
        naming.COMPONENT_LABEL: naming.FUNCTION_COMPONENT,
        naming.MANAGED_BY_LABEL: naming.MANAGED_BY,
        PART_OF_LABEL: PART_OF,
    }


def selector_labels(fn: Function) -> dict[str, str]:
    """The Deployment's (immutable) selector and the Service's selector.

    Only the identity labels: a Deployment selector can never change, so it holds nothing
    that a later version might want to rename.
    """
    return {
        naming.FUNCTION_LABEL: fn.name,
        naming.COMPONENT_LABEL: naming.FUNCTION_COMPONENT,
    }


def owner_reference(fn: Function) -> dict[str, Any]:
    """Makes the child garbage-collected with the Function and marks who reconciles it."""
    if not fn.metadata.uid:
        raise ValueError(f"Function {fn.key} has no metadata.uid: it was not read from the API")
    return {
        "apiVersion": API_VERSION,
        "kind": limits.KIND,
        "name": fn.name,
        "uid": fn.metadata.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def _metadata(fn: Function, name: str) -> dict[str, Any]:
    return {
        "name": name,
        "namespace": fn.namespace,
        "labels": function_labels(fn),
        "ownerReferences": [owner_reference(fn)],
    }


# --- code and checksum --------------------------------------------------------------------


def code_config_map(fn: Function) -> str:
    """The name of the ConfigMap the pods mount: ours for inline code, else the user's."""
    code = fn.spec.code
    if code is not None and code.config_map is not None:
        return code.config_map.name
    return naming.code_config_map_name(fn.name)


def pod_checksum(fn: Function, code: Mapping[str, str] | None) -> str:
    """Hash of everything whose change must replace the running instances.

    `code` is the files the pods will see (inline files, or the data of the referenced
    ConfigMap). Code lives outside the pod template, so without this hash on the template
    a code change would never roll the Deployment. Scaling and async settings are left
    out: changing maxScale must not restart instances.
    """
    spec = fn.spec.model_dump(
        mode="json", by_alias=True, exclude={"scaling", "async_", "code", "auth"}
    )
    # Fields added later hash as before while unset, so an upgrade restarts nothing.
    if not spec["secrets"]:
        del spec["secrets"]
    for env in spec["env"]:
        if env["valueFrom"] is None:
            del env["valueFrom"]
    source = {"configMap": code_config_map(fn)} if fn.spec.runtime is not None else {}
    payload = {"spec": spec, "codeSource": source, "code": dict(sorted((code or {}).items()))}
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()


def live_checksum(deployment: Mapping[str, Any] | None) -> str | None:
    """The checksum a live Deployment's pod template carries, if any."""
    if deployment is None:
        return None
    template_meta = deployment.get("spec", {}).get("template", {}).get("metadata", {})
    value = (template_meta.get("annotations") or {}).get(naming.CODE_CHECKSUM_ANNOTATION)
    return str(value) if value is not None else None


def live_version(deployment: Mapping[str, Any] | None) -> int | None:
    """``KUBEFAAS_FUNCTION_VERSION`` of a live Deployment's function container, if any."""
    if deployment is None:
        return None
    containers = deployment.get("spec", {}).get("template", {}).get("spec", {}).get("containers")
    for container in containers or []:
        if container.get("name") != CONTAINER_NAME:
            continue
        for env in container.get("env") or []:
            if env.get("name") == "KUBEFAAS_FUNCTION_VERSION":
                text = str(env.get("value", ""))
                return int(text) if text.isdigit() else None
    return None


def function_version(*, checksum: str, live: Mapping[str, Any] | None, generation: int) -> int:
    """What ``context.function_version`` reports: the generation that last changed the pods.

    A spec change that leaves the pods alone (maxScale, async retries) bumps the
    Function's generation too; reporting it would put a new value in the pod template and
    restart every instance for nothing. So the version only moves with the checksum.
    """
    version = live_version(live)
    if version is not None and live_checksum(live) == checksum:
        return version
    return generation


# --- objects ------------------------------------------------------------------------------


def cpu_request(memory: str) -> str:
    """CPU request in millicores for a memory size, at Lambda's MB-per-vCPU ratio."""
    millicores = -(-mebibytes(memory) * 1000 // MEBIBYTES_PER_VCPU)
    return f"{max(millicores, MIN_CPU_MILLICORES)}m"


def resolve_image(fn: Function, image_for_runtime: Mapping[str, str]) -> str:
    """`spec.image` as given, or the operator's image for `spec.runtime`."""
    if fn.spec.image is not None:
        return fn.spec.image
    runtime = fn.spec.runtime
    if runtime is None or runtime not in image_for_runtime:
        raise UnknownRuntimeError(str(runtime), sorted(image_for_runtime))
    return image_for_runtime[runtime]


def runtime_env(fn: Function, *, version: int) -> list[dict[str, str]]:
    """The launch contract (`kubefaas.contract`) as a container's env list."""
    environment = contract.runtime_environment(
        fn,
        port=wire.RUNTIME_PORT,
        code_dir=naming.CODE_MOUNT_PATH,
        tmp_dir=naming.TMP_MOUNT_PATH,
        version=version,
    )
    return [{"name": name, "value": value} for name, value in environment.items()]


def shadowed_env(fn: Function) -> list[str]:
    """Names in `spec.env` that the launch contract owns; they are left out of the pod.

    Letting a user's ``PORT`` or ``KUBEFAAS_CODE_DIR`` win would break the runtime in ways
    that look like platform bugs; the reconcile warns about them instead.
    """
    reserved = contract.reserved_names(fn)
    return [env.name for env in fn.spec.env if env.name in reserved]


def config_map_key(path: str) -> str:
    """The ConfigMap key of an inline file (docs/architecture.md, "Packaging").

    A key cannot hold '/', so a nested path is stored as its names joined by '_' behind a
    hash of the path (unique, and never a valid top-level file's name by accident: a
    top-level name equal to it is refused by `code_keys`); the volume's `items` map each
    key back to its path. A top-level file keeps its own name.
    """
    if "/" not in path:
        return path
    digest = hashlib.sha256(path.encode()).hexdigest()[:10]
    return f"t{digest}-{path.replace('/', '_')}"


def code_keys(fn: Function) -> dict[str, str]:
    """ConfigMap key -> file path for the Function's inline code."""
    code = fn.spec.code
    if code is None or code.inline is None:
        raise ValueError(f"Function {fn.key} has no inline code")
    keys: dict[str, str] = {}
    for path in sorted(code.inline):
        key = config_map_key(path)
        if key in keys:
            raise ValueError(f"Function {fn.key}: inline files {keys[key]!r} and {path!r} clash")
        keys[key] = path
    return keys


def _is_tree(fn: Function) -> bool:
    code = fn.spec.code
    return code is not None and code.inline is not None and any("/" in p for p in code.inline)


def build_config_map(fn: Function) -> dict[str, Any]:
    """The ConfigMap holding inline code, one key a file (mounted at CODE_MOUNT_PATH)."""
    keys = code_keys(fn)
    assert fn.spec.code is not None
    assert fn.spec.code.inline is not None
    inline = fn.spec.code.inline
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _metadata(fn, naming.code_config_map_name(fn.name)),
        "data": {key: inline[path] for key, path in keys.items()},
    }


def _resources(fn: Function) -> dict[str, Any]:
    memory = fn.spec.memory
    tmp = fn.spec.tmp_size
    return {
        # Memory request = limit: the scheduler reserves what the instance may use, so a
        # busy neighbour can never get it OOM-killed below its configured size.
        "requests": {"cpu": cpu_request(memory), "memory": memory, "ephemeral-storage": tmp},
        "limits": {"memory": memory, "ephemeral-storage": tmp},
    }


def code_volume(fn: Function) -> dict[str, Any]:
    """The volume of the Function's code ConfigMap (its pods', or the build Job's)."""
    source: dict[str, Any] = {"name": code_config_map(fn), "defaultMode": CODE_FILE_MODE}
    if _is_tree(fn):
        # A source tree: every key is projected onto its path (docs/architecture.md,
        # "Packaging"); with `items`, keys left out would not be mounted at all.
        source["items"] = [{"key": k, "path": p} for k, p in code_keys(fn).items()]
    return {"name": CODE_VOLUME, "configMap": source}


def _volumes(fn: Function, *, built: bool = False) -> list[dict[str, Any]]:
    volumes: list[dict[str, Any]] = []
    # A built image carries the code (docs/packaging.md, "On a cluster"): nothing to mount.
    if fn.spec.runtime is not None and not built:
        volumes.append(code_volume(fn))
    volumes.append({"name": TMP_VOLUME, "emptyDir": {"sizeLimit": fn.spec.tmp_size}})
    # The kubelet reads these Secrets, not the operator (docs/security.md).
    for index, secret in enumerate(fn.spec.secrets):
        volumes.append(
            {
                "name": f"{SECRET_VOLUME_PREFIX}{index}",
                "secret": {"secretName": secret.name, "defaultMode": SECRET_FILE_MODE},
            }
        )
    return volumes


def _mounts(fn: Function, *, built: bool = False) -> list[dict[str, Any]]:
    mounts: list[dict[str, Any]] = []
    if fn.spec.runtime is not None and not built:
        mounts.append({"name": CODE_VOLUME, "mountPath": naming.CODE_MOUNT_PATH, "readOnly": True})
    mounts.append({"name": TMP_VOLUME, "mountPath": naming.TMP_MOUNT_PATH})
    for index, secret in enumerate(fn.spec.secrets):
        mounts.append(
            {"name": f"{SECRET_VOLUME_PREFIX}{index}", "mountPath": secret.path, "readOnly": True}
        )
    return mounts


def _user_env(env: EnvVar) -> dict[str, Any]:
    if env.value_from is None:
        return {"name": env.name, "value": env.value}
    ref = env.value_from.secret_key_ref
    selector: dict[str, Any] = {"name": ref.name, "key": ref.key}
    if ref.optional:
        selector["optional"] = True
    return {"name": env.name, "valueFrom": {"secretKeyRef": selector}}


def _container(fn: Function, *, image: str, version: int, built: bool = False) -> dict[str, Any]:
    reserved = set(shadowed_env(fn))
    user_env = [_user_env(env) for env in fn.spec.env if env.name not in reserved]
    return {
        "name": CONTAINER_NAME,
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "ports": [
            {
                "name": naming.RUNTIME_PORT_NAME,
                "containerPort": wire.RUNTIME_PORT,
                "protocol": "TCP",
            }
        ],
        "env": runtime_env(fn, version=version) + user_env,
        "resources": _resources(fn),
        "volumeMounts": _mounts(fn, built=built),
        "readinessProbe": {
            "httpGet": {"path": "/healthz", "port": wire.RUNTIME_PORT, "scheme": "HTTP"},
            "periodSeconds": READINESS_PERIOD_SECONDS,
            "timeoutSeconds": READINESS_TIMEOUT_SECONDS,
            "failureThreshold": READINESS_FAILURE_THRESHOLD,
            "successThreshold": 1,
        },
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": RUNTIME_UID,
            "runAsGroup": RUNTIME_GID,
            "allowPrivilegeEscalation": False,
            "privileged": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
    }


def build_deployment(
    fn: Function,
    *,
    image_for_runtime: Mapping[str, str],
    replicas_hint: int | None,
    checksum: str | None = None,
    version: int | None = None,
    built_image: str | None = None,
) -> dict[str, Any]:
    """The Deployment running the Function's instances.

    `replicas_hint` is the live Deployment's replica count (None when it does not exist):
    replicas are the autoscaler's to set, so the result keeps it and only raises it to
    `minScale`; a new Deployment starts at `minScale` (0 unless minScale > 0).
    `checksum` defaults to the hash of the inline code; pass `pod_checksum(fn, files)` for
    code in a user's ConfigMap. `version` defaults to the Function's generation.
    `built_image`: the image the build Job made of the code and requirements (`status.image`),
    run instead of the runtime image with the code mounted.
    Raises `UnknownRuntimeError` when the runtime has no image.
    """
    image = built_image or resolve_image(fn, image_for_runtime)
    inline = fn.spec.code.inline if fn.spec.code is not None else None
    checksum = checksum if checksum is not None else pod_checksum(fn, inline)
    version = version if version is not None else (fn.metadata.generation or 1)
    labels = function_labels(fn)
    replicas = max(replicas_hint or 0, fn.spec.scaling.min_scale)
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _metadata(fn, fn.name),
        "spec": {
            "replicas": replicas,
            "revisionHistoryLimit": REVISION_HISTORY_LIMIT,
            "selector": {"matchLabels": selector_labels(fn)},
            # Never below the current capacity during a code rollout: a new instance must
            # be ready before an old one goes.
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": 0},
            },
            "template": {
                "metadata": {
                    "labels": labels,
                    "annotations": {naming.CODE_CHECKSUM_ANNOTATION: checksum},
                },
                "spec": {
                    "containers": [
                        _container(fn, image=image, version=version, built=bool(built_image))
                    ],
                    "volumes": _volumes(fn, built=bool(built_image)),
                    "automountServiceAccountToken": False,
                    "enableServiceLinks": False,
                    "terminationGracePeriodSeconds": fn.spec.timeout_seconds + DRAIN_GRACE_SECONDS,
                    "securityContext": {
                        "runAsNonRoot": True,
                        "runAsUser": RUNTIME_UID,
                        "runAsGroup": RUNTIME_GID,
                        "fsGroup": RUNTIME_GID,
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                },
            },
        },
    }


def build_service(fn: Function) -> dict[str, Any]:
    """ClusterIP Service, port 80 -> the runtime port, for in-cluster callers and probes."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(fn, fn.name),
        "spec": {
            "type": "ClusterIP",
            "selector": selector_labels(fn),
            "ports": [
                {
                    "name": naming.RUNTIME_PORT_NAME,
                    "port": SERVICE_PORT,
                    "targetPort": wire.RUNTIME_PORT,
                    "protocol": "TCP",
                }
            ],
        },
    }
