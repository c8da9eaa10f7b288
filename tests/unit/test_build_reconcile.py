"""The reconcile of Functions with a requirements.txt against an in-memory API
(`tests.fake_kube`): when a build Job is made, what the Deployment runs, and what goes back
when the requirements go (docs/packaging.md, "On a cluster: the build Job")."""

from __future__ import annotations

import base64
import json
from typing import Any

from kubefaas import build_job
from kubefaas_operator import build_jobs, children, reconcile
from kubefaas_operator.build_config import BuildConfig
from kubefaas_operator.config import OperatorConfig
from tests.fake_kube import FakeKube
from tests.unit.test_operator_reconcile import (
    CONFIG,
    NS,
    add_function,
    change_function,
    cm_path,
    dep_path,
    fn_path,
    run,
)

BUILDING = OperatorConfig(
    runtime_images={"python3.11": "runtime:1"},
    gateway_url="http://gw",
    build=BuildConfig(registry="127.0.0.1:5000", plain_http=True),
)
CODE = {"main.py": "import tinytext\n", "requirements.txt": "tinytext==1.0\n"}


def jobs(kube: FakeKube) -> list[dict[str, Any]]:
    return kube.list_all(f"/apis/batch/v1/namespaces/{NS}/jobs")


def status(kube: FakeKube) -> dict[str, Any]:
    found: dict[str, Any] = kube.objects[fn_path()].get("status") or {}
    return found


def built(kube: FakeKube) -> dict[str, Any] | None:
    for condition in status(kube).get("conditions") or []:
        if condition["type"] == "Built":
            found: dict[str, Any] = condition
            return found
    return None


def finish(kube: FakeKube, job: dict[str, Any], document: dict[str, Any], kind: str) -> None:
    """What the Job controller and kubelet leave behind for a finished build."""
    name = job["metadata"]["name"]
    job["status"] = {"conditions": [{"type": kind, "status": "True"}]}
    kube.put_object(f"/apis/batch/v1/namespaces/{NS}/jobs/{name}", job)
    terminated = {"exitCode": 0 if kind == "Complete" else 1, "message": json.dumps(document)}
    kube.put_object(
        f"/api/v1/namespaces/{NS}/pods/{name}-abcde",
        {
            "metadata": {"name": f"{name}-abcde", "labels": {"job-name": name}},
            "status": {
                "containerStatuses": [{"name": "build", "state": {"terminated": terminated}}]
            },
        },
    )


def test_without_a_build_registry_requirements_change_nothing() -> None:
    kube = FakeKube()
    add_function(kube, code={"inline": CODE})
    assert run(kube, config=CONFIG).problem is None
    assert jobs(kube) == []
    container = kube.objects[dep_path()]["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "runtime:1"
    assert built(kube) is None


def test_a_users_config_map_with_requirements_is_built_from_that_config_map() -> None:
    kube = FakeKube()
    kube.put_object(
        cm_path("src"),
        {
            "metadata": {"name": "src", "namespace": NS},
            "data": CODE,
            "binaryData": {"model.bin": base64.b64encode(b"\x00\x01").decode()},
        },
    )
    add_function(kube, handler="main.handler", code={"configMap": {"name": "src"}})
    outcome = run(kube, config=BUILDING)
    assert outcome.problem is not None
    assert outcome.problem.reason == "Building"
    (job,) = jobs(kube)
    assert f"created Job {job['metadata']['name']}" in outcome.actions
    pod = job["spec"]["template"]["spec"]
    assert pod["volumes"][0]["configMap"]["name"] == "src"
    env = {e["name"]: e["value"] for e in pod["containers"][0]["env"]}
    files = {**{k: v.encode() for k, v in CODE.items()}, "model.bin": b"\x00\x01"}
    assert env["KUBEFAAS_BUILD_CODE_DIGEST"] == build_job.code_digest(files)
    # No image yet: no Deployment either (a runtime pod could not import its packages).
    assert dep_path() not in kube.objects


def test_once_built_the_deployment_runs_the_image_and_a_settled_child_is_no_drift() -> None:
    kube = FakeKube()
    add_function(kube, code={"inline": CODE})
    run(kube, config=BUILDING)
    (job,) = jobs(kube)
    finish(kube, job, {"image": "127.0.0.1:5000/team-a-hello@sha256:" + "1" * 64}, "Complete")
    assert run(kube, config=BUILDING).problem is None
    image = status(kube)["image"]
    assert image.endswith("@sha256:" + "1" * 64)
    condition = built(kube)
    assert condition is not None
    assert (condition["status"], condition["reason"]) == ("True", "Built")
    deployment = kube.objects[dep_path()]
    pod = deployment["spec"]["template"]["spec"]
    assert pod["containers"][0]["image"] == image
    assert children.CODE_VOLUME not in {v["name"] for v in pod["volumes"]}
    # The children watch compares the live Deployment with what the status says it runs.
    body = kube.objects[fn_path()]
    fn = reconcile.parse(body)
    assert (
        reconcile.child_drift("Deployment", fn, deployment, BUILDING, status=body["status"]) == []
    )
    # ...and without that status, the same Deployment is drift (the test can fail).
    assert reconcile.child_drift("Deployment", fn, deployment, BUILDING)

    # A change of scaling only: no new Job, the Deployment keeps the image.
    kube.writes.clear()
    change_function(kube, scaling={"maxScale": 4})
    assert run(kube, config=BUILDING).problem is None
    assert len(jobs(kube)) == 1
    assert not [w for w in kube.writes if w[0] == "create"]
    assert kube.objects[dep_path()]["spec"]["template"]["spec"]["containers"][0]["image"] == image

    # Requirements removed: the build is forgotten, the code is mounted again.
    change_function(kube, code={"inline": {"main.py": "x = 1\n"}})
    assert run(kube, config=BUILDING).problem is None
    assert status(kube).get("image") is None
    assert built(kube) is None
    pod = kube.objects[dep_path()]["spec"]["template"]["spec"]
    assert pod["containers"][0]["image"] == "runtime:1"
    assert children.CODE_VOLUME in {v["name"] for v in pod["volumes"]}


def test_a_failed_first_build_says_why_and_deploys_nothing() -> None:
    kube = FakeKube()
    add_function(kube, code={"inline": CODE})
    run(kube, config=BUILDING)
    (job,) = jobs(kube)
    error = "pip could not install requirements.txt: ERROR: No matching distribution found"
    finish(kube, job, {"error": error}, "Failed")
    outcome = run(kube, config=BUILDING)
    assert outcome.problem is not None
    assert outcome.problem.reason == build_jobs.REASON_BUILD_FAILED
    assert outcome.problem.retry is False
    condition = built(kube)
    assert condition is not None
    assert condition["reason"] == "BuildFailed"
    assert error in condition["message"]
    assert dep_path() not in kube.objects
    # Reconciling again does not start the same build again.
    run(kube, config=BUILDING)
    assert len(jobs(kube)) == 1
