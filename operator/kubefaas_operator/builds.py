"""A Function's build, through the Kube door: start the Job, read its result, keep the
`Built` condition and `status.image` (docs/packaging.md, "On a cluster: the build Job").

`reconcile` calls `ensure` for a Function that needs a build and gets back the image its
pods run: the one just built, the previous one while a new build runs or after it failed
(the Deployment is then left as it was), or None with the reason when there is none yet.
The objects are computed in `build_jobs`; this module only reads and writes them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from kubefaas.api import Function
from kubefaas.kubeapi import ApiError
from kubefaas_operator import apply, build_jobs, drift
from kubefaas_operator.config import OperatorConfig
from kubefaas_operator.kube_sync import Kube, namespaced
from kubefaas_operator.status import NotReady


@dataclass(frozen=True)
class BuildStep:
    image: str | None
    """The image the pods run; None: nothing built yet (see `problem`)."""
    problem: NotReady | None = None
    action: str | None = None


def _jobs(namespace: str, name: str | None = None) -> str:
    return namespaced("batch/v1", "jobs", namespace, name)


def _strip(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _strip(v) for k, v in value.items() if k != "lastTransitionTime"}
    if isinstance(value, list):
        return [_strip(v) for v in value]
    return value


def _write(kube: Kube, fn: Function, previous: dict[str, Any], changes: dict[str, Any]) -> None:
    """Merge `changes` into the status now, and into `previous` (so the reconcile's final
    status write, computed from it, keeps them)."""
    if all(_strip(previous.get(k)) == _strip(v) for k, v in changes.items()):
        return
    apply.patch_function_status(kube, fn.namespace, fn.name, changes)
    for key, value in changes.items():
        if value is None:
            previous.pop(key, None)
        else:
            previous[key] = value


def _with_built(
    fn: Function, previous: Mapping[str, Any], reason: str, message: str, now: str
) -> list[Any]:
    conditions = list(previous.get("conditions") or [])
    old = next((c for c in conditions if c.get("type") == build_jobs.CONDITION_BUILT), None)
    built = build_jobs.built_condition(
        reason=reason, message=message, generation=fn.metadata.generation, previous=old, now=now
    )
    others = [c for c in conditions if c.get("type") != build_jobs.CONDITION_BUILT]
    return [*others, built]


def clear(kube: Kube, fn: Function, previous: dict[str, Any]) -> None:
    """Forget a build (no requirements any more, or builds turned off)."""
    conditions = [
        c for c in previous.get("conditions") or [] if c.get("type") != build_jobs.CONDITION_BUILT
    ]
    changes: dict[str, Any] = {"image": None, "build": None}
    if len(conditions) != len(previous.get("conditions") or []):
        changes["conditions"] = conditions
    if (
        previous.get("image") is not None
        or previous.get("build") is not None
        or "conditions" in changes
    ):
        _write(kube, fn, previous, changes)


def ensure(
    kube: Kube,
    config: OperatorConfig,
    fn: Function,
    files: Mapping[str, bytes],
    *,
    previous: dict[str, Any],
    now: Callable[[], str],
) -> BuildStep:
    """Start, follow or finish the build of `files`; the image to run (see BuildStep)."""
    settings = config.build
    assert settings is not None
    assert fn.spec.runtime is not None
    base = settings.base_image(fn.spec.runtime, config.runtime_images)
    plan = build_jobs.plan(fn, files, config=settings, base=base)
    current = previous.get("image")
    if current and (previous.get("build") or {}).get("key") == plan.key:
        conditions = _with_built(fn, previous, build_jobs.REASON_BUILT, f"built {current}", now())
        _write(kube, fn, previous, {"conditions": conditions})
        return BuildStep(image=str(current))

    path = _jobs(fn.namespace, plan.job_name)
    job = kube.get(path)
    action = None
    if job is not None and drift.controller_uid(job) != fn.metadata.uid:
        # The Job of an earlier Function of this name: its deletion event brings us back.
        kube.delete(path)
        job = None
        result = build_jobs.JobResult("running")
    elif job is None:
        desired = build_jobs.build_job_object(
            fn, plan, config=settings, builder_image=config.runtime_images[fn.spec.runtime]
        )
        try:
            kube.create(_jobs(fn.namespace), desired)
            action = f"created Job {plan.job_name}"
        except ApiError as exc:
            if not exc.conflict:
                raise
        result = build_jobs.JobResult("running")
    else:
        pods: list[dict[str, Any]] = []
        if build_jobs.finished(job):
            pods = kube.list_all(
                namespaced("v1", "pods", fn.namespace),
                label_selector=f"{build_jobs.JOB_NAME_LABEL}={plan.job_name}",
            )
        result = build_jobs.job_result(job, pods)

    if result.state == "succeeded" and result.image:
        changes = {
            "image": result.image,
            "build": {"key": plan.key},
            "conditions": _with_built(
                fn, previous, build_jobs.REASON_BUILT, f"built {result.image}", now()
            ),
        }
        _write(kube, fn, previous, changes)
        return BuildStep(image=result.image, action=action)
    if result.state == "failed":
        message = f"Job {plan.job_name}: {result.message}"
        reason = build_jobs.REASON_BUILD_FAILED
        retry = False
    else:
        message = f"building {plan.target} in Job {plan.job_name}"
        reason = build_jobs.REASON_BUILDING
        retry = True
    conditions = _with_built(fn, previous, reason, message, now())
    _write(kube, fn, previous, {"conditions": conditions})
    if current:
        # The previous image keeps serving; the Deployment is left as it is.
        return BuildStep(image=str(current), action=action)
    return BuildStep(image=None, problem=NotReady(reason, message, retry=retry), action=action)
