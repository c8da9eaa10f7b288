"""The build Job against a real API server (docs/packaging.md, "On a cluster: the build Job").

There is no kubelet in this tier, so the test plays it: it writes the build pod's status
(the builder's termination message, exit code, phase) through the status subresource, as
the kubelet would, and the real Job controller then marks the Job complete or failed. What
the operator does with that is what a user sees: `Built`, `status.image`, the Deployment.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kubefaas_cluster.pytest_plugin import KubeApi
from tests.api.test_operator import Cluster, container_of, crd, function, template_of
from tests.operator_process import OperatorProcess

__all__ = ["crd"]

REGISTRY = "127.0.0.1:5000"
BUILD_ENV = {
    "KUBEFAAS_BUILD_REGISTRY": REGISTRY,
    "KUBEFAAS_BUILD_PLAIN_HTTP": "true",
    "KUBEFAAS_BUILD_PIP_INDEX_URL": "http://127.0.0.1:8099/simple/",
    "KUBEFAAS_BUILD_PIP_EXTRA_ARGS": "--no-compile",
    "KUBEFAAS_BUILD_CREDENTIALS_SECRET": "registry-push",
    "KUBEFAAS_BUILD_DEADLINE_SECONDS": "600",
    "KUBEFAAS_BUILD_TTL_SECONDS": "1800",
}
HANDLER = "import tinytext\ndef handler(event, context):\n    return tinytext.shout('hi')\n"
BUILD_SELECTOR = "app.kubernetes.io/component=build"


@pytest.fixture
def cluster(kube_api: KubeApi, crd: None, namespace: str, tmp_path: Path) -> Iterator[Cluster]:
    # The API server's Pod Security admission refuses a build pod that is not restricted:
    # the Job controller could then not create the pod the tests complete.
    kube_api.kubectl(
        "label", "namespace", namespace, "pod-security.kubernetes.io/enforce=restricted"
    )
    operator = OperatorProcess(
        kubeconfig=kube_api.kubeconfig,
        log_path=tmp_path / "operator.log",
        namespaces=[namespace],
        env=BUILD_ENV,
    ).start()
    try:
        yield Cluster(api=kube_api, namespace=namespace, operator=operator)
    finally:
        operator.stop()


def packaged(main: str = HANDLER, requirements: str = "tinytext==1.0\n") -> dict[str, Any]:
    return function(
        "page",
        code={"inline": {"main.py": main, "requirements.txt": requirements, "pkg/__init__.py": ""}},
    )


def condition(cluster: Cluster, kind: str) -> dict[str, Any] | None:
    fn = cluster.get("fn", "page")
    for found in ((fn or {}).get("status") or {}).get("conditions") or []:
        if found["type"] == kind:
            result: dict[str, Any] = found
            return result
    return None


def wait_built(cluster: Cluster, reason: str) -> dict[str, Any]:
    return cluster.wait(
        f"Built reason {reason}",
        lambda: (c := condition(cluster, "Built")) and c["reason"] == reason and c,
    )


def jobs(cluster: Cluster) -> list[dict[str, Any]]:
    return cluster.items("jobs", BUILD_SELECTOR)


def finish(cluster: Cluster, job: dict[str, Any], *, exit_code: int, message: str) -> None:
    """Write the build pod's status as the kubelet does when its container ends."""
    name = job["metadata"]["name"]
    pod = cluster.wait(
        f"the pod of Job {name}",
        lambda: next(iter(cluster.items("pods", f"job-name={name}")), None),
    )
    container = pod["spec"]["containers"][0]
    now = "2026-12-04T03:30:00Z"
    status = {
        "status": {
            "phase": "Succeeded" if exit_code == 0 else "Failed",
            "containerStatuses": [
                {
                    "name": container["name"],
                    "image": container["image"],
                    "imageID": "",
                    "ready": False,
                    "restartCount": 0,
                    "started": False,
                    "state": {
                        "terminated": {
                            "exitCode": exit_code,
                            "reason": "Completed" if exit_code == 0 else "Error",
                            "message": message,
                            "startedAt": now,
                            "finishedAt": now,
                        }
                    },
                }
            ],
        }
    }
    cluster.kubectl(
        "patch",
        "pod",
        pod["metadata"]["name"],
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps(status),
    )


def digest_image(tag: str) -> str:
    repository = tag.rsplit(":", 1)[0]
    return f"{repository}@sha256:{tag.rsplit(':', 1)[1].ljust(64, '0')}"


def env_of(job: dict[str, Any]) -> dict[str, str]:
    container = job["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e["value"] for e in container["env"]}


def test_a_function_with_requirements_is_built_by_a_restricted_job_then_runs_the_image(
    cluster: Cluster,
) -> None:
    cluster.apply(packaged())
    job = cluster.wait("the build Job", lambda: next(iter(jobs(cluster)), None))
    fn = cluster.get("fn", "page")
    assert fn is not None
    (owner,) = job["metadata"]["ownerReferences"]
    assert (owner["kind"], owner["uid"], owner["controller"]) == (
        "Function",
        fn["metadata"]["uid"],
        True,
    )
    spec = job["spec"]
    assert (
        spec["backoffLimit"],
        spec["activeDeadlineSeconds"],
        spec["ttlSecondsAfterFinished"],
    ) == (0, 600, 1800)
    pod = spec["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    (container,) = pod["containers"]
    security = container["securityContext"]
    assert security["runAsNonRoot"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["readOnlyRootFilesystem"] is True
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert security["seccompProfile"] == {"type": "RuntimeDefault"}
    assert container["command"] == ["python", "-m", "kubefaas.build_job"]
    assert container["terminationMessagePolicy"] == "FallbackToLogsOnError"
    env = env_of(job)
    assert env["KUBEFAAS_BUILD_TARGET"].startswith(f"{REGISTRY}/{cluster.namespace}-page:")
    assert env["PIP_INDEX_URL"] == BUILD_ENV["KUBEFAAS_BUILD_PIP_INDEX_URL"]
    assert env["KUBEFAAS_BUILD_PIP_ARGS"] == "--no-compile"
    assert env["KUBEFAAS_BUILD_PLAIN_HTTP"] == "true"
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["work"]["emptyDir"]
    assert volumes["code"]["configMap"]["name"] == "page-code"
    # The tree's nested file is projected onto its path, as for the function's pods.
    assert {i["path"] for i in volumes["code"]["configMap"]["items"]} >= {"pkg/__init__.py"}
    assert volumes["registry-credentials"]["secret"]["secretName"] == "registry-push"
    # Building, nothing to run yet: no Deployment, Ready says why.
    built = wait_built(cluster, "Building")
    assert built["status"] == "False"
    assert cluster.wait_ready("page", "False")["reason"] == "Building"
    assert cluster.get("deployment", "page") is None

    image = digest_image(env["KUBEFAAS_BUILD_TARGET"])
    finish(
        cluster,
        job,
        exit_code=0,
        message=json.dumps({"image": image, "digest": image.split("@")[1]}),
    )
    built = wait_built(cluster, "Built")
    assert built["status"] == "True"
    assert image in built["message"]
    deployment = cluster.wait("the Deployment", lambda: cluster.get("deployment", "page"))
    assert container_of(deployment)["image"] == image
    # The code is in the image: nothing mounted from the ConfigMap.
    assert "code" not in {v["name"] for v in template_of(deployment)["spec"]["volumes"]}
    fn = cluster.get("fn", "page")
    assert fn is not None
    assert fn["status"]["image"] == image
    assert cluster.wait_ready("page")["reason"] == "ScaledToZero"

    # A change that leaves code and requirements alone (the scaling bounds) builds nothing.
    cluster.apply({**packaged(), "spec": {**packaged()["spec"], "scaling": {"maxScale": 3}}})
    cluster.wait(
        "the change observed",
        lambda: (
            (f := cluster.get("fn", "page"))
            and f["status"].get("observedGeneration") == f["metadata"]["generation"]
        ),
    )
    assert len(jobs(cluster)) == 1
    after = cluster.get("deployment", "page")
    assert after is not None
    assert container_of(after)["image"] == image

    # New code, built: the Deployment switches to the new digest.
    cluster.apply(packaged(main=HANDLER + "# v2\n"))
    second = cluster.wait(
        "a second Job",
        lambda: next(
            (j for j in jobs(cluster) if j["metadata"]["name"] != job["metadata"]["name"]), None
        ),
    )
    newer = digest_image(env_of(second)["KUBEFAAS_BUILD_TARGET"])
    assert newer != image
    finish(cluster, second, exit_code=0, message=json.dumps({"image": newer}))
    cluster.wait(
        "the Deployment on the new image",
        lambda: (d := cluster.get("deployment", "page")) and container_of(d)["image"] == newer,
    )
    assert wait_built(cluster, "Built")["message"] == f"built {newer}"


def test_a_failed_build_says_why_and_leaves_the_previous_image_serving(
    cluster: Cluster,
) -> None:
    cluster.apply(packaged())
    first = cluster.wait("the build Job", lambda: next(iter(jobs(cluster)), None))
    image = digest_image(env_of(first)["KUBEFAAS_BUILD_TARGET"])
    finish(cluster, first, exit_code=0, message=json.dumps({"image": image}))
    wait_built(cluster, "Built")
    deployment = cluster.wait("the Deployment", lambda: cluster.get("deployment", "page"))
    assert container_of(deployment)["image"] == image

    # New code (same requirements): a new Job; the built image serves meanwhile.
    cluster.apply(packaged(main=HANDLER + "# v2\n"))
    second = cluster.wait(
        "a second Job",
        lambda: next(
            (j for j in jobs(cluster) if j["metadata"]["name"] != first["metadata"]["name"]), None
        ),
    )
    assert wait_built(cluster, "Building")["status"] == "False"
    error = (
        "pip could not install requirements.txt: ERROR: Could not find a version that "
        "satisfies the requirement tinytext==9 | "
        "ERROR: No matching distribution found for tinytext==9"
    )
    finish(cluster, second, exit_code=1, message=json.dumps({"error": error}))
    failed = wait_built(cluster, "BuildFailed")
    assert failed["status"] == "False"
    assert "No matching distribution found for tinytext==9" in failed["message"]
    assert second["metadata"]["name"] in failed["message"]
    live = cluster.get("deployment", "page")
    assert live is not None
    assert container_of(live)["image"] == image
    assert live["metadata"]["generation"] == deployment["metadata"]["generation"]
    fn = cluster.get("fn", "page")
    assert fn is not None
    assert fn["status"]["image"] == image
    ready = cluster.wait_ready("page")
    assert ready["status"] == "True"
    # `kubectl describe fn` shows why, as an event on the Function.
    cluster.wait(
        "a BuildFailed event on the Function",
        lambda: [
            e
            for e in cluster.items("events")
            if e.get("reason") == "BuildFailed"
            and e["involvedObject"].get("name") == "page"
            and "tinytext==9" in e.get("message", "")
        ],
    )
    # The failed key is not retried by itself: still two Jobs.
    assert len(jobs(cluster)) == 2
    # Deleting the failed Job (or its TTL) is how the same code is built again.
    old_uid = second["metadata"]["uid"]
    cluster.kubectl("delete", "job", second["metadata"]["name"], "--wait=true")
    again = cluster.wait(
        "the failed build started again",
        lambda: next(
            (
                j
                for j in jobs(cluster)
                if j["metadata"]["name"] == second["metadata"]["name"]
                and j["metadata"]["uid"] != old_uid
            ),
            None,
        ),
    )
    assert env_of(again)["KUBEFAAS_BUILD_TARGET"] == env_of(second)["KUBEFAAS_BUILD_TARGET"]
    assert wait_built(cluster, "Building")["status"] == "False"
    live = cluster.get("deployment", "page")
    assert live is not None
    assert container_of(live)["image"] == image
