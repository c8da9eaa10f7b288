"""Pure builders of a Function's build: its plan, its Job, what a finished Job says, and the
`Built` condition (docs/packaging.md, "On a cluster: the build Job").

No I/O here (like `children` and `status`): `builds` reads and writes through the Kube
door and decides when. A Function with `spec.runtime` and a `requirements.txt` in its code
is built into an image when the operator has a build registry (`build_config`):

- the build key hashes the runtime, the base image, the target repository and the code
  files (requirements included): an unchanged key is never rebuilt;
- the Job ``<name>-build-<key[:10]>`` runs ``python -m kubefaas.build_job`` in the runtime
  image as the restricted pod of the Security defaults, with the code ConfigMap mounted
  and an `emptyDir` for pip; it is owned by the Function, `backoffLimit: 0`;
- the builder writes one JSON line to its termination message, read from the pod status.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from kubefaas import build_job, limits, naming
from kubefaas.api import Function
from kubefaas.deps import REQUIREMENTS_FILE
from kubefaas_operator import children
from kubefaas_operator.build_config import BuildConfig

CONDITION_BUILT: Final = "Built"
REASON_BUILDING: Final = "Building"
REASON_BUILT: Final = "Built"
REASON_BUILD_FAILED: Final = "BuildFailed"

BUILD_COMPONENT: Final = "build"
BUILD_KEY_ANNOTATION: Final = f"{limits.API_GROUP}/build-key"
JOB_NAME_LABEL: Final = "job-name"
"""Set by the Job controller on the Job's pods."""
BUILDER_CONTAINER: Final = "build"
WORK_VOLUME: Final = "work"
CREDENTIALS_VOLUME: Final = "registry-credentials"
CREDENTIALS_PATH: Final = "/var/run/kubefaas/registry"
WORK_PATH: Final = "/tmp"
WORK_SIZE: Final = "2Gi"
BUILDER_RESOURCES: Final = {
    "requests": {"cpu": "250m", "memory": "256Mi", "ephemeral-storage": WORK_SIZE},
    "limits": {"memory": "1Gi", "ephemeral-storage": WORK_SIZE},
}
# Job names become a label value on the pods (at most 63 characters).
_JOB_SUFFIX = "-build-"
_KEY_CHARS = 10
TAG_CHARS = 16


def needs_build(fn: Function, files: Mapping[str, bytes] | None) -> bool:
    """A Function with runtime code that lists requirements."""
    return fn.spec.runtime is not None and files is not None and REQUIREMENTS_FILE in files


def code_files(
    *, inline: Mapping[str, str] | None = None, config_map: Mapping[str, Any] | None = None
) -> dict[str, bytes]:
    """The files the build pod sees: inline code, or a ConfigMap's data and binaryData."""
    if inline is not None:
        return {path: text.encode() for path, text in inline.items()}
    source = config_map or {}
    files = {k: str(v).encode() for k, v in (source.get("data") or {}).items()}
    for key, value in (source.get("binaryData") or {}).items():
        files[key] = base64.b64decode(str(value))
    return files


@dataclass(frozen=True)
class BuildPlan:
    key: str
    job_name: str
    target: str
    """``REGISTRY/<namespace>-<name>:<key[:16]>``: where the builder pushes."""
    base: str
    code_digest: str


def job_name(function: str, key: str) -> str:
    room = 63 - len(_JOB_SUFFIX) - _KEY_CHARS
    return f"{function[:room].rstrip('-')}{_JOB_SUFFIX}{key[:_KEY_CHARS]}"


def plan(fn: Function, files: Mapping[str, bytes], *, config: BuildConfig, base: str) -> BuildPlan:
    repository = f"{config.registry}/{fn.namespace}-{fn.name}"
    runtime = str(fn.spec.runtime)
    key = build_job.build_key(runtime=runtime, base=base, target=repository, files=files)
    return BuildPlan(
        key=key,
        job_name=job_name(fn.name, key),
        target=f"{repository}:{key[:TAG_CHARS]}",
        base=base,
        code_digest=build_job.code_digest(files),
    )


def build_labels(fn: Function) -> dict[str, str]:
    """The Job's and its pods' labels: the Function's, but never its pods' component (the
    gateway and the Deployment's selector must not count a build pod as an instance)."""
    labels = children.function_labels(fn)
    labels[naming.COMPONENT_LABEL] = BUILD_COMPONENT
    return labels


def _env(fn: Function, build: BuildPlan, config: BuildConfig) -> list[dict[str, str]]:
    env = {
        build_job.ENV_CODE_DIR: naming.CODE_MOUNT_PATH,
        build_job.ENV_CODE_DIGEST: build.code_digest,
        build_job.ENV_WORK_DIR: f"{WORK_PATH}/build",
        build_job.ENV_BASE: build.base,
        build_job.ENV_TARGET: build.target,
        build_job.ENV_RUNTIME: str(fn.spec.runtime),
        "HOME": WORK_PATH,
        "TMPDIR": WORK_PATH,
        "PIP_NO_CACHE_DIR": "1",
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
    }
    if config.pip_index_url:
        env["PIP_INDEX_URL"] = config.pip_index_url
    if config.pip_extra_args:
        env[build_job.ENV_PIP_ARGS] = " ".join(config.pip_extra_args)
    if config.plain_http:
        env[build_job.ENV_PLAIN_HTTP] = "true"
    if config.credentials_secret:
        env[build_job.ENV_DOCKER_CONFIG] = f"{CREDENTIALS_PATH}/config.json"
    return [{"name": k, "value": v} for k, v in env.items()]


def build_job_object(
    fn: Function, build: BuildPlan, *, config: BuildConfig, builder_image: str
) -> dict[str, Any]:
    """The Job that builds `build` (docs/packaging.md, "On a cluster: the build Job")."""
    labels = build_labels(fn)
    volumes: list[dict[str, Any]] = [
        children.code_volume(fn),
        {"name": WORK_VOLUME, "emptyDir": {"sizeLimit": WORK_SIZE}},
    ]
    mounts: list[dict[str, Any]] = [
        {"name": children.CODE_VOLUME, "mountPath": naming.CODE_MOUNT_PATH, "readOnly": True},
        {"name": WORK_VOLUME, "mountPath": WORK_PATH},
    ]
    if config.credentials_secret:
        volumes.append(
            {
                "name": CREDENTIALS_VOLUME,
                "secret": {
                    "secretName": config.credentials_secret,
                    "items": [{"key": ".dockerconfigjson", "path": "config.json"}],
                    "defaultMode": 0o440,
                },
            }
        )
        mounts.append({"name": CREDENTIALS_VOLUME, "mountPath": CREDENTIALS_PATH, "readOnly": True})
    container = {
        "name": BUILDER_CONTAINER,
        "image": builder_image,
        "imagePullPolicy": "IfNotPresent",
        "command": ["python", "-m", "kubefaas.build_job"],
        "env": _env(fn, build, config),
        "resources": BUILDER_RESOURCES,
        "volumeMounts": mounts,
        # The builder writes its result there; a crash leaves the end of its log instead.
        "terminationMessagePath": build_job.TERMINATION_LOG,
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": children.RUNTIME_UID,
            "runAsGroup": children.RUNTIME_GID,
            "allowPrivilegeEscalation": False,
            "privileged": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
    }
    metadata = {
        "name": build.job_name,
        "namespace": fn.namespace,
        "labels": labels,
        "annotations": {BUILD_KEY_ANNOTATION: build.key},
        "ownerReferences": [children.owner_reference(fn)],
    }
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": metadata,
        "spec": {
            "backoffLimit": 0,
            "activeDeadlineSeconds": config.deadline_seconds,
            "ttlSecondsAfterFinished": config.ttl_seconds,
            "template": {
                "metadata": {"labels": labels, "annotations": {BUILD_KEY_ANNOTATION: build.key}},
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [container],
                    "volumes": volumes,
                    "automountServiceAccountToken": False,
                    "enableServiceLinks": False,
                    "securityContext": {
                        "runAsNonRoot": True,
                        "runAsUser": children.RUNTIME_UID,
                        "runAsGroup": children.RUNTIME_GID,
                        "fsGroup": children.RUNTIME_GID,
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                },
            },
        },
    }


# --- what a Job says ------------------------------------------------------------------------


@dataclass(frozen=True)
class JobResult:
    state: str
    """running | succeeded | failed"""
    image: str | None = None
    message: str = ""


def _condition(job: Mapping[str, Any], kind: str) -> Mapping[str, Any] | None:
    for condition in (job.get("status") or {}).get("conditions") or []:
        if condition.get("type") == kind and condition.get("status") == "True":
            found: Mapping[str, Any] = condition
            return found
    return None


def _termination(pods: Sequence[Mapping[str, Any]]) -> tuple[str, int | None] | None:
    for pod in pods:
        for status in (pod.get("status") or {}).get("containerStatuses") or []:
            if status.get("name") != BUILDER_CONTAINER:
                continue
            terminated = (status.get("state") or {}).get("terminated")
            if terminated:
                code = terminated.get("exitCode")
                return str(terminated.get("message") or ""), int(code) if code is not None else None
    return None


def job_result(job: Mapping[str, Any], pods: Sequence[Mapping[str, Any]]) -> JobResult:
    """The state of a build Job and, once finished, the image or the reason it failed."""
    complete = _condition(job, "Complete")
    failed = _condition(job, "Failed")
    if complete is None and failed is None:
        return JobResult("running")
    found = _termination(pods)
    text, _code = found if found is not None else ("", None)
    document: Any = None
    try:
        document = json.loads(text.strip().splitlines()[-1]) if text.strip() else None
    except ValueError:
        document = None
    if complete is not None and isinstance(document, dict) and document.get("image"):
        return JobResult("succeeded", image=str(document["image"]))
    if isinstance(document, dict) and document.get("error"):
        return JobResult("failed", message=str(document["error"]))
    if text.strip():
        return JobResult("failed", message=text.strip()[-2000:])
    reason = (failed or complete or {}).get("message") or (failed or complete or {}).get("reason")
    return JobResult("failed", message=f"the build Job ended without a result: {reason}")


def built_condition(
    *,
    reason: str,
    message: str,
    generation: int | None,
    previous: Mapping[str, Any] | None,
    now: str,
) -> dict[str, Any]:
    status = "True" if reason == REASON_BUILT else "False"
    since = now
    if previous is not None and previous.get("status") == status:
        since = str(previous.get("lastTransitionTime") or now)
    condition: dict[str, Any] = {
        "type": CONDITION_BUILT,
        "status": status,
        "reason": reason,
        "message": message,
        "lastTransitionTime": since,
    }
    if generation is not None:
        condition["observedGeneration"] = generation
    return condition


def running_image(fn: Function, status: Mapping[str, Any] | None) -> str | None:
    """The built image a Function's pods run (`status.image` of its object's `status`,
    which the parsed model leaves out), if any."""
    if fn.spec.runtime is None or not status or not status.get("image"):
        return None
    return str(status["image"])


def finished(job: Mapping[str, Any]) -> bool:
    return _condition(job, "Complete") is not None or _condition(job, "Failed") is not None
