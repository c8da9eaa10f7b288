"""The reconcile against an in-memory API (`tests.fake_kube`): what ends up in the cluster,
and what never does."""

from __future__ import annotations

from typing import Any

import pytest

from kubefaas import naming
from kubefaas.kubeapi import ApiError
from kubefaas_operator import apply, children, reconcile, resync, status
from kubefaas_operator.config import OperatorConfig
from kubefaas_operator.context import OperatorContext
from tests.fake_kube import FakeKube

NS = "team-a"
NOW = "2026-01-02T03:04:05Z"
CONFIG = OperatorConfig(runtime_images={"python3.11": "runtime:1"}, gateway_url="http://gw")


def fn_path(name: str = "hello") -> str:
    return apply.function_path(NS, name)


def dep_path(name: str = "hello") -> str:
    return f"/apis/apps/v1/namespaces/{NS}/deployments/{name}"


def svc_path(name: str = "hello") -> str:
    return f"/api/v1/namespaces/{NS}/services/{name}"


def cm_path(name: str) -> str:
    return f"/api/v1/namespaces/{NS}/configmaps/{name}"


def add_function(kube: FakeKube, name: str = "hello", **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "apiVersion": "kubefaas.io/v1alpha1",
        "kind": "Function",
        "metadata": {"name": name, "namespace": NS, "generation": 1},
        "spec": {"runtime": "python3.11", "code": {"inline": {"main.py": "x = 1\n"}}},
    }
    body["spec"].update(spec)
    return kube.put_object(fn_path(name), body)


def change_function(kube: FakeKube, name: str = "hello", **spec: Any) -> dict[str, Any]:
    body = kube.objects[fn_path(name)]
    body["spec"].update(spec)
    body["metadata"]["generation"] += 1
    return kube.put_object(fn_path(name), body)


def run(kube: FakeKube, name: str = "hello", config: OperatorConfig = CONFIG) -> reconcile.Outcome:
    body = kube.get(fn_path(name))
    assert body is not None
    return reconcile.reconcile(kube, config, body, now=lambda: NOW)


def ready(kube: FakeKube, name: str = "hello") -> dict[str, Any]:
    found = status.ready_condition_of(kube.objects[fn_path(name)].get("status"))
    assert found is not None
    return dict(found)


# --- creation -----------------------------------------------------------------------------


def test_a_new_function_gets_its_three_children_and_a_ready_status() -> None:
    kube = FakeKube()
    fn = add_function(kube)
    outcome = run(kube)
    assert outcome.problem is None
    uid = fn["metadata"]["uid"]
    for path in (dep_path(), svc_path(), cm_path("hello-code")):
        child = kube.objects[path]
        assert child["metadata"]["ownerReferences"][0]["uid"] == uid
    assert kube.objects[dep_path()]["spec"]["replicas"] == 0
    assert kube.objects[cm_path("hello-code")]["data"] == {"main.py": "x = 1\n"}
    assert (ready(kube)["status"], ready(kube)["reason"]) == ("True", "ScaledToZero")
    written = kube.objects[fn_path()]["status"]
    assert written["url"] == "http://gw/function/team-a/hello"
    assert written["observedGeneration"] == 1


def test_a_second_reconcile_writes_nothing() -> None:
    kube = FakeKube()
    add_function(kube)
    run(kube)
    kube.writes.clear()
    outcome = run(kube)
    assert kube.writes == []
    assert not outcome.changed


def test_restart_half_way_converges_without_duplicates() -> None:
    """The operator died after creating the ConfigMap; the next run finishes the job."""
    kube = FakeKube()
    add_function(kube)
    kube.fail_writes[f"/apis/apps/v1/namespaces/{NS}/deployments"] = ApiError(
        503, "ServiceUnavailable", "shutting down"
    )
    outcome = run(kube)
    assert outcome.problem is not None
    assert outcome.problem.reason == "ApplyFailed"
    assert outcome.problem.retry
    assert ready(kube)["status"] == "False"
    kube.fail_writes.clear()
    run(kube)
    run(kube)
    made = [p for p in kube.objects if p != fn_path()]
    assert sorted(made) == sorted([dep_path(), svc_path(), cm_path("hello-code")])
    assert ready(kube)["status"] == "True"


def test_a_function_just_created_gets_its_children_without_reading_them_first() -> None:
    kube = FakeKube()
    add_function(kube)
    body = kube.get(fn_path())
    assert body is not None
    kube.reads.clear()
    outcome = reconcile.reconcile(kube, CONFIG, body, now=lambda: NOW, new=True)
    assert outcome.problem is None
    assert kube.reads == []
    assert [w[0] for w in kube.writes] == ["create", "create", "create", "patch"]


def test_a_new_function_whose_children_exist_falls_back_to_compare() -> None:
    kube = FakeKube()
    add_function(kube)
    run(kube)
    body = kube.get(fn_path())
    assert body is not None
    kube.writes.clear()
    outcome = reconcile.reconcile(kube, CONFIG, body, now=lambda: NOW, new=True)
    assert outcome.problem is None
    assert [w[0] for w in kube.writes] == ["create", "create", "create"]  # three 409s
    assert not outcome.changed


def test_a_namespace_being_deleted_is_not_fought() -> None:
    kube = FakeKube()
    add_function(kube)
    kube.fail_writes[f"/api/v1/namespaces/{NS}/configmaps"] = ApiError(
        403,
        "Forbidden",
        f"unable to create new content in namespace {NS} because it is being terminated",
    )
    outcome = run(kube)
    assert outcome.skipped
    assert outcome.problem is None
    assert "status" not in kube.objects[fn_path()]


def test_two_reconciles_racing_to_create_do_not_fail() -> None:
    kube = FakeKube()
    add_function(kube)
    desired_service_body: dict[str, Any] = {}

    def someone_else_creates_first(verb: str, path: str) -> None:
        if verb == "create" and path.endswith("/services") and not desired_service_body:
            desired_service_body["done"] = True
            fn = reconcile.parse(kube.objects[fn_path()])
            kube.put_object(svc_path(), children.build_service(fn))

    kube.before_write.append(someone_else_creates_first)
    outcome = run(kube)
    assert outcome.problem is None
    assert any(a.startswith("unchanged Service") for a in outcome.actions)


# --- updates and replicas -------------------------------------------------------------------


def test_replicas_set_by_the_autoscaler_survive_a_function_update() -> None:
    kube = FakeKube()
    add_function(kube)
    run(kube)
    kube.objects[dep_path()]["spec"]["replicas"] = 4  # the autoscaler
    change_function(kube, env=[{"name": "A", "value": "1"}])
    kube.writes.clear()
    run(kube)
    assert kube.objects[dep_path()]["spec"]["replicas"] == 4
    env = kube.objects[dep_path()]["spec"]["template"]["spec"]["containers"][0]["env"]
    assert {"name": "A", "value": "1"} in env
    (verb, _, body) = kube.writes_to("/deployments/")[0]
    assert verb == "replace"
    assert body["spec"]["replicas"] == 4


def test_a_scale_during_the_update_is_never_overwritten() -> None:
    """The autoscaler writes between our read and our write: we get 409 and read again."""
    kube = FakeKube()
    add_function(kube)
    run(kube)
    change_function(kube, memory="512Mi")
    scaled: list[bool] = []

    def autoscaler_scales(verb: str, path: str) -> None:
        if verb == "replace" and path == dep_path() and not scaled:
            scaled.append(True)
            live = kube.objects[dep_path()]
            live["spec"]["replicas"] = 6
            kube.put_object(dep_path(), live)

    kube.before_write.append(autoscaler_scales)
    run(kube)
    live = kube.objects[dep_path()]
    assert live["spec"]["replicas"] == 6
    assert live["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["memory"] == (
        "512Mi"
    )


def test_min_scale_raises_replicas_but_a_lower_min_scale_never_lowers_them() -> None:
    kube = FakeKube()
    add_function(kube, scaling={"minScale": 0, "maxScale": 10})
    run(kube)
    change_function(kube, scaling={"minScale": 2, "maxScale": 10})
    run(kube)
    assert kube.objects[dep_path()]["spec"]["replicas"] == 2
    kube.objects[dep_path()]["spec"]["replicas"] = 7
    change_function(kube, scaling={"minScale": 1, "maxScale": 10})
    run(kube)
    assert kube.objects[dep_path()]["spec"]["replicas"] == 7


def test_a_scaling_only_change_does_not_touch_the_deployment() -> None:
    kube = FakeKube()
    add_function(kube)
    run(kube)
    change_function(kube, scaling={"maxScale": 3})
    kube.writes.clear()
    run(kube)
    assert kube.writes_to("/deployments") == []
    assert kube.objects[fn_path()]["status"]["observedGeneration"] == 2


def test_new_code_updates_the_configmap_and_rolls_the_pods() -> None:
    kube = FakeKube()
    add_function(kube)
    run(kube)
    before = kube.objects[dep_path()]["spec"]["template"]["metadata"]["annotations"]
    change_function(kube, code={"inline": {"main.py": "x = 2\n"}})
    run(kube)
    assert kube.objects[cm_path("hello-code")]["data"] == {"main.py": "x = 2\n"}
    after = kube.objects[dep_path()]["spec"]["template"]["metadata"]["annotations"]
    key = naming.CODE_CHECKSUM_ANNOTATION
    assert after[key] != before[key]
    env = kube.objects[dep_path()]["spec"]["template"]["spec"]["containers"][0]["env"]
    assert {"name": "KUBEFAAS_FUNCTION_VERSION", "value": "2"} in env


# --- code in a user's ConfigMap -----------------------------------------------------------


def test_missing_configmap_is_code_not_found_until_it_is_created() -> None:
    kube = FakeKube()
    add_function(kube, code={"configMap": {"name": "src"}})
    outcome = run(kube)
    assert outcome.problem is not None
    assert outcome.problem.retry
    assert (ready(kube)["status"], ready(kube)["reason"]) == ("False", "CodeNotFound")
    assert "'src' not found" in ready(kube)["message"]
    assert dep_path() not in kube.objects
    kube.put_object(cm_path("src"), {"metadata": {"name": "src"}, "data": {"main.py": "y"}})
    run(kube)
    assert (ready(kube)["status"], ready(kube)["reason"]) == ("True", "ScaledToZero")
    volumes = kube.objects[dep_path()]["spec"]["template"]["spec"]["volumes"]
    assert volumes[0]["configMap"]["name"] == "src"


def test_configmap_without_the_handler_module_is_reported() -> None:
    kube = FakeKube()
    kube.put_object(cm_path("src"), {"metadata": {"name": "src"}, "data": {"app.py": "y"}})
    add_function(kube, code={"configMap": {"name": "src"}})
    run(kube)
    assert ready(kube)["reason"] == "HandlerNotFound"
    assert "'main.py'" in ready(kube)["message"]


def test_editing_the_users_configmap_rolls_the_pods_at_the_next_reconcile() -> None:
    kube = FakeKube()
    kube.put_object(cm_path("src"), {"metadata": {"name": "src"}, "data": {"main.py": "1"}})
    add_function(kube, code={"configMap": {"name": "src"}})
    run(kube)
    key = naming.CODE_CHECKSUM_ANNOTATION
    before = kube.objects[dep_path()]["spec"]["template"]["metadata"]["annotations"][key]
    kube.objects[cm_path("src")]["data"]["main.py"] = "2"
    run(kube)
    after = kube.objects[dep_path()]["spec"]["template"]["metadata"]["annotations"][key]
    assert after != before


def test_moving_code_from_inline_to_a_configmap_deletes_the_stale_code_configmap() -> None:
    kube = FakeKube()
    add_function(kube)
    run(kube)
    kube.put_object(cm_path("src"), {"metadata": {"name": "src"}, "data": {"main.py": "1"}})
    change_function(kube, code={"configMap": {"name": "src"}})
    run(kube)
    assert cm_path("hello-code") not in kube.objects
    assert cm_path("src") in kube.objects


# --- other problems -------------------------------------------------------------------------


def test_unknown_runtime_is_reported_and_nothing_is_created() -> None:
    kube = FakeKube()
    add_function(kube)
    outcome = run(kube, config=OperatorConfig(runtime_images={}, gateway_url="http://gw"))
    assert outcome.problem is not None
    assert not outcome.problem.retry
    assert ready(kube)["reason"] == "UnknownRuntime"
    assert [p for p in kube.objects if p != fn_path()] == []


def test_a_deployment_of_the_same_name_owned_by_someone_else_is_left_alone() -> None:
    kube = FakeKube()
    add_function(kube)
    kube.put_object(
        dep_path(),
        {"metadata": {"name": "hello"}, "spec": {"replicas": 2, "selector": {}}},
    )
    outcome = run(kube)
    assert outcome.problem is not None
    assert ready(kube)["reason"] == "NameConflict"
    assert kube.objects[dep_path()]["spec"]["replicas"] == 2
    assert kube.writes_to("/deployments") == []


def test_shadowed_env_names_are_warned_about() -> None:
    kube = FakeKube()
    add_function(kube, env=[{"name": "PORT", "value": "1"}])
    outcome = run(kube)
    assert any("PORT" in w for w in outcome.warnings)


def test_an_invalid_stored_function_is_reported_not_crashed_on() -> None:
    kube = FakeKube()
    add_function(kube, memory="1Ti")
    outcome = run(kube)
    assert outcome.problem is not None
    assert outcome.problem.reason == "InvalidSpec"
    assert "spec.memory" in ready(kube)["message"]


def test_a_function_being_deleted_is_not_reconciled() -> None:
    kube = FakeKube()
    body = add_function(kube)
    body["metadata"]["deletionTimestamp"] = NOW
    outcome = reconcile.reconcile(kube, CONFIG, body, now=lambda: NOW)
    assert outcome.skipped
    assert kube.writes == []


@pytest.mark.parametrize(
    ("reason", "retry", "delay"),
    [("CodeNotFound", 0, 3.0), ("CodeNotFound", 50, 30.0), ("ApplyFailed", 0, 2.0)],
)
def test_retry_delays(reason: str, retry: int, delay: float) -> None:
    problem = status.NotReady(reason, "x", retry=True)
    assert reconcile.retry_delay(problem, retry) == delay


# --- children events ------------------------------------------------------------------------


def child_event(kube: FakeKube, kind: str, path: str, event_type: str = "MODIFIED") -> Any:
    child = kube.get(path) or {}
    return reconcile.on_child_event(
        kube, CONFIG, kind=kind, event_type=event_type, child=child, now=lambda: NOW
    )


def test_a_deleted_deployment_is_recreated() -> None:
    kube = FakeKube()
    add_function(kube)
    run(kube)
    gone = kube.objects.pop(dep_path())
    outcome = reconcile.on_child_event(
        kube, CONFIG, kind="Deployment", event_type="DELETED", child=gone, now=lambda: NOW
    )
    assert any(a.startswith("created Deployment") for a in outcome.actions)
    assert dep_path() in kube.objects


def test_a_hand_edited_deployment_is_repaired_keeping_its_replicas() -> None:
    kube = FakeKube()
    add_function(kube)
    run(kube)
    live = kube.objects[dep_path()]
    live["spec"]["replicas"] = 3
    live["spec"]["template"]["spec"]["containers"][0]["image"] = "evil:1"
    kube.put_object(dep_path(), live)
    outcome = child_event(kube, "Deployment", dep_path())
    assert any(a.startswith("repaired Deployment") for a in outcome.actions)
    live = kube.objects[dep_path()]
    assert live["spec"]["template"]["spec"]["containers"][0]["image"] == "runtime:1"
    assert live["spec"]["replicas"] == 3


def test_a_deployment_status_change_updates_the_function_status_only() -> None:
    kube = FakeKube()
    add_function(kube)
    run(kube)
    live = kube.objects[dep_path()]
    live["spec"]["replicas"] = 2
    live["status"] = {"replicas": 2, "readyReplicas": 1}
    kube.put_object(dep_path(), live)
    kube.writes.clear()
    child_event(kube, "Deployment", dep_path())
    assert [w[0:2] for w in kube.writes] == [("patch", fn_path() + "/status")]
    written = kube.objects[fn_path()]["status"]
    assert (written["replicas"], written["readyReplicas"]) == (2, 1)
    assert ready(kube)["reason"] == "Running"


def test_events_of_children_whose_function_is_gone_are_ignored() -> None:
    kube = FakeKube()
    add_function(kube)
    run(kube)
    del kube.objects[fn_path()]
    kube.writes.clear()
    outcome = child_event(kube, "Deployment", dep_path(), event_type="DELETED")
    assert outcome.skipped
    assert kube.writes == []


def test_a_child_event_during_a_pending_function_update_leaves_it_to_the_update() -> None:
    kube = FakeKube()
    add_function(kube)
    run(kube)
    change_function(kube, memory="512Mi")  # generation 2, status still says 1
    kube.writes.clear()
    child_event(kube, "Deployment", dep_path())
    assert kube.writes_to("/deployments") == []


def test_an_edited_service_and_code_configmap_are_repaired() -> None:
    kube = FakeKube()
    add_function(kube)
    run(kube)
    svc = kube.objects[svc_path()]
    svc["spec"]["ports"][0]["targetPort"] = 1234
    kube.put_object(svc_path(), svc)
    child_event(kube, "Service", svc_path())
    assert kube.objects[svc_path()]["spec"]["ports"][0]["targetPort"] == 8080
    cm = kube.objects[cm_path("hello-code")]
    cm["data"]["main.py"] = "import evil"
    kube.put_object(cm_path("hello-code"), cm)
    child_event(kube, "ConfigMap", cm_path("hello-code"))
    assert kube.objects[cm_path("hello-code")]["data"] == {"main.py": "x = 1\n"}


# --- resync ---------------------------------------------------------------------------------


def test_resync_recreates_what_a_missed_event_left_missing_and_nothing_else() -> None:
    kube = FakeKube()
    for name in ("one", "two", "three"):
        add_function(kube, name=name)
        run(kube, name=name)
    del kube.objects[dep_path("two")]
    del kube.objects[svc_path("three")]
    done = resync.resync_once(OperatorContext(config=CONFIG, kube=kube))
    assert sorted(key for key, _ in done) == [(NS, "three"), (NS, "two")]
    assert dep_path("two") in kube.objects
    assert svc_path("three") in kube.objects
    assert resync.resync_once(OperatorContext(config=CONFIG, kube=kube)) == []


def test_resync_rolls_the_pods_after_the_users_code_configmap_was_edited() -> None:
    kube = FakeKube()
    kube.put_object(cm_path("src"), {"metadata": {"name": "src"}, "data": {"main.py": "1"}})
    add_function(kube, code={"configMap": {"name": "src"}})
    run(kube)
    key = naming.CODE_CHECKSUM_ANNOTATION
    before = kube.objects[dep_path()]["spec"]["template"]["metadata"]["annotations"][key]
    context = OperatorContext(config=CONFIG, kube=kube)
    kube.writes.clear()
    resync.resync_once(context)
    assert kube.writes_to("/deployments") == []  # unchanged code: nothing written
    kube.objects[cm_path("src")]["data"]["main.py"] = "2"
    resync.resync_once(context)
    after = kube.objects[dep_path()]["spec"]["template"]["metadata"]["annotations"][key]
    assert after != before
