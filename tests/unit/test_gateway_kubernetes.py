"""Cluster mode without a cluster: pod -> instance rules, balancing, the Function mirror,
and the Kubernetes backend over a fake API server (scripted lists and watch streams) and
a fake health probe.

What a user would notice: a pod is routed to as soon as it answers its probe, never while
terminating; a burst at a scaled-to-zero function raises its Deployment once, to 1, and
never lowers it; every waiting request gets the new pod, marked as a cold start; a
Function the model rejects is not served; a watch that expires lists again.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import time
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from kubefaas import naming
from kubefaas.api import Function
from kubefaas_gateway.backends.activation import scale_path
from kubefaas_gateway.backends.base import Instance, least_inflight
from kubefaas_gateway.backends.kubernetes import KubernetesBackend
from kubefaas_gateway.cluster_mode import build_app
from kubefaas_gateway.discovery import Discovery, FunctionMirror, PodInstance, pod_view
from kubefaas_gateway.errors import InvocationTimeout, NoCapacity
from kubefaas_gateway.kube_async import ApiError
from kubefaas_gateway.registry import FunctionRegistry
from kubefaas_gateway.settings import Settings
from kubefaas_gateway.tracker import Tracker

NS = "team"
FUNCTIONS_PATH = "/apis/kubefaas.io/v1alpha1/functions"
PODS_PATH = "/api/v1/pods"
WAIT = 5.0


# -- objects as the API server sends them ---------------------------------------------------


def function_obj(
    name: str = "hello", *, generation: int = 1, timeout: int = 30, **spec: Any
) -> dict[str, Any]:
    return {
        "apiVersion": "kubefaas.io/v1alpha1",
        "kind": "Function",
        "metadata": {
            "name": name,
            "namespace": NS,
            "uid": f"uid-{name}",
            "generation": generation,
            "resourceVersion": "7",
            "managedFields": [{"manager": "kubectl"}],
        },
        "spec": {
            "runtime": "python3.11",
            "code": {"inline": {"main.py": "def handler(event, context):\n    return 1\n"}},
            "timeoutSeconds": timeout,
            **spec,
        },
        "status": {"conditions": [{"type": "Ready", "status": "True"}], "replicas": 0},
    }


def pod_obj(
    name: str = "hello-abc",
    *,
    function: str = "hello",
    namespace: str = NS,
    uid: str | None = None,
    ip: str | None = "10.0.0.5",
    phase: str = "Running",
    ready: bool | None = None,
    terminating: bool = False,
    restarts: int = 0,
    port: int | None = None,
) -> dict[str, Any]:
    metadata: dict[str, Any] = {
        "name": name,
        "namespace": namespace,
        "uid": uid or f"uid-{name}",
        "labels": {
            naming.FUNCTION_LABEL: function,
            naming.COMPONENT_LABEL: naming.FUNCTION_COMPONENT,
        },
    }
    if terminating:
        metadata["deletionTimestamp"] = "2030-01-01T00:00:00Z"
    status: dict[str, Any] = {
        "phase": phase,
        "containerStatuses": [{"name": "function", "restartCount": restarts}],
    }
    if ip is not None:
        status["podIP"] = ip
    if ready is not None:
        status["conditions"] = [{"type": "Ready", "status": "True" if ready else "False"}]
    container: dict[str, Any] = {"name": "function", "image": "runtime"}
    if port is not None:
        container["ports"] = [{"name": naming.RUNTIME_PORT_NAME, "containerPort": port}]
    return {"metadata": metadata, "spec": {"containers": [container]}, "status": status}


def view(**kwargs: Any) -> Any:
    result = pod_view(pod_obj(**kwargs))
    assert result is not None
    return result


# -- pod -> instance --------------------------------------------------------------------------


def test_pods_without_the_function_label_are_not_instances() -> None:
    obj = pod_obj()
    del obj["metadata"]["labels"][naming.FUNCTION_LABEL]
    assert pod_view(obj) is None


def test_a_running_pod_with_an_ip_is_an_instance_of_its_function() -> None:
    pod = view(port=9001)
    assert pod.key == f"{NS}/hello"
    assert pod.candidate
    assert (pod.ip, pod.port) == ("10.0.0.5", 9001)


def test_the_runtime_port_defaults_to_the_contract_port() -> None:
    assert view().port == 8080


@pytest.mark.parametrize(
    ("changes", "candidate"),
    [
        ({"ip": None, "phase": "Pending"}, False),
        ({"terminating": True}, False),
        ({"phase": "Succeeded"}, False),
        ({"phase": "Failed"}, False),
        # The IP is assigned before the kubelet reports Running; a 200 proves it is up.
        ({"phase": "Pending"}, True),
    ],
)
def test_which_pods_could_serve(changes: dict[str, Any], candidate: bool) -> None:
    assert view(**changes).candidate is candidate


def test_a_new_pod_is_probed_then_routed_once_it_answers() -> None:
    discovery = Discovery()
    pod = view()
    assert discovery.apply(pod, now=1.0) == set()
    assert discovery.ready(pod.key) == []
    assert [i.id for i in discovery.instances(pod.key)] == [f"{NS}/hello-abc"]
    assert set(discovery.to_probe()) == {pod.uid}

    assert discovery.probed(pod.uid, now=2.0) == {pod.key}
    [ready] = discovery.ready(pod.key)
    assert (ready.host, ready.port, ready.ready, ready.ready_at) == ("10.0.0.5", 8080, True, 2.0)
    assert discovery.to_probe() == {}


def test_a_pod_the_kubelet_reports_ready_is_routed_without_a_probe() -> None:
    discovery = Discovery()
    pod = view(ready=True)
    assert discovery.apply(pod, now=1.0) == {pod.key}
    assert len(discovery.ready(pod.key)) == 1
    assert discovery.to_probe() == {}


def test_a_terminating_pod_stops_being_routed_at_once() -> None:
    discovery = Discovery()
    discovery.apply(view(ready=True), now=1.0)
    assert discovery.apply(view(ready=True, terminating=True), now=2.0) == {f"{NS}/hello"}
    assert discovery.ready(f"{NS}/hello") == []
    assert discovery.instances(f"{NS}/hello") == []
    assert discovery.to_probe() == {}


def test_a_deleted_pod_is_forgotten() -> None:
    discovery = Discovery()
    pod = view(ready=True)
    discovery.apply(pod, now=1.0)
    assert discovery.delete(pod.uid) == {pod.key}
    assert discovery.instances(pod.key) == []
    assert discovery.delete(pod.uid) == set()


def test_the_kubelet_taking_a_probed_pod_out_is_obeyed() -> None:
    discovery = Discovery()
    pod = view()
    discovery.apply(pod, now=1.0)
    discovery.probed(pod.uid, now=1.5)
    # The kubelet's first report, Ready=False, predates our probe: it must not unroute.
    assert discovery.apply(view(ready=False), now=1.6) == set()
    assert len(discovery.ready(pod.key)) == 1
    discovery.apply(view(ready=True), now=2.0)
    # Ready, then not: the kubelet says the pod is not ready any more.
    assert discovery.apply(view(ready=False), now=3.0) == {pod.key}
    assert discovery.ready(pod.key) == []
    assert discovery.to_probe() == {}, "the kubelet is in charge of this pod now"
    assert discovery.apply(view(ready=True), now=4.0) == {pod.key}


def test_an_evicted_pod_needs_a_fresh_probe_even_if_the_kubelet_says_ready() -> None:
    discovery = Discovery()
    pod = view(ready=True)
    discovery.apply(pod, now=1.0)
    [instance] = discovery.ready(pod.key)
    assert discovery.evict(instance, now=2.0) == {pod.key}
    assert discovery.ready(pod.key) == []
    discovery.apply(view(ready=True), now=2.5)
    assert discovery.ready(pod.key) == []
    assert set(discovery.to_probe()) == {pod.uid}
    discovery.probed(pod.uid, now=3.0)
    assert discovery.ready(pod.key) == [instance]


def test_evicting_an_instance_of_a_replaced_pod_changes_nothing() -> None:
    discovery = Discovery()
    stale = PodInstance(id="x", function_key=f"{NS}/hello", host="10.0.0.9", port=8080, uid="gone")
    assert discovery.evict(stale, now=1.0) == set()
    local = Instance(id="y", function_key=f"{NS}/hello", host="127.0.0.1", port=1)
    assert discovery.evict(local, now=1.0) == set()


def test_a_restarted_container_is_probed_again() -> None:
    discovery = Discovery()
    pod = view()
    discovery.apply(pod, now=1.0)
    discovery.probed(pod.uid, now=1.1)
    assert discovery.apply(view(restarts=1), now=2.0) == {pod.key}
    assert discovery.ready(pod.key) == []
    assert set(discovery.to_probe()) == {pod.uid}


def test_a_pod_is_probed_once_it_has_an_ip() -> None:
    discovery = Discovery()
    discovery.apply(view(ip=None, phase="Pending"), now=1.0)
    assert discovery.to_probe() == {}
    assert discovery.instances(f"{NS}/hello") == []
    discovery.apply(view(phase="Pending"), now=1.2)
    [instance] = discovery.to_probe().values()
    assert instance.host == "10.0.0.5"


def test_a_resync_forgets_pods_missing_from_the_fresh_list_of_its_namespace_only() -> None:
    discovery = Discovery()
    discovery.apply(view(name="a", ready=True), now=1.0)
    discovery.apply(view(name="b", ready=True), now=1.0)
    discovery.apply(view(name="c", namespace="other", ready=True), now=1.0)
    changed = discovery.resync([view(name="b", ready=True)], now=2.0, namespace=NS)
    assert changed == {f"{NS}/hello"}
    assert [i.id for i in discovery.ready(f"{NS}/hello")] == [f"{NS}/b"]
    assert len(discovery.ready("other/hello")) == 1


# -- balancing ----------------------------------------------------------------------------------


def _instances(count: int) -> list[Instance]:
    return [
        Instance(id=f"i{n}", function_key="ns/f", host="10.0.0.1", port=n) for n in range(count)
    ]


@given(
    loads=st.lists(st.integers(min_value=0, max_value=20), min_size=1, max_size=8),
    turn=st.integers(min_value=0, max_value=1000),
)
def test_the_least_busy_instance_is_chosen(loads: list[int], turn: int) -> None:
    ready = _instances(len(loads))
    counts = {i.id: load for i, load in zip(ready, loads, strict=True)}
    chosen = least_inflight(ready, counts.__getitem__, turn)
    assert counts[chosen.id] == min(loads)


def test_a_burst_at_idle_instances_is_spread_over_them() -> None:
    ready = _instances(3)
    picked = {least_inflight(ready, lambda _: 0, turn).id for turn in range(3)}
    assert picked == {"i0", "i1", "i2"}


# -- Functions -> registry ------------------------------------------------------------------------


def test_functions_are_added_changed_and_removed() -> None:
    registry = FunctionRegistry()
    mirror = FunctionMirror(registry)
    mirror.event("ADDED", function_obj())
    fn = registry.get(f"{NS}/hello")
    assert fn is not None
    assert fn.spec.timeout_seconds == 30
    assert "managedFields" not in (fn.metadata.model_extra or {})

    mirror.event("MODIFIED", function_obj(generation=2, timeout=5))
    changed = registry.get(f"{NS}/hello")
    assert changed is not None
    assert changed.spec.timeout_seconds == 5

    mirror.event("DELETED", function_obj(generation=2, timeout=5))
    assert f"{NS}/hello" not in registry


def test_a_status_only_update_keeps_the_served_object() -> None:
    registry = FunctionRegistry()
    mirror = FunctionMirror(registry)
    mirror.event("ADDED", function_obj())
    before = registry.get(f"{NS}/hello")
    updated = function_obj()
    updated["status"] = {"replicas": 3, "conditions": [{"type": "Odd", "status": "Maybe"}]}
    mirror.event("MODIFIED", updated)
    assert registry.get(f"{NS}/hello") is before


def test_a_function_the_model_rejects_is_logged_and_not_served(
    caplog: pytest.LogCaptureFixture,
) -> None:
    registry = FunctionRegistry()
    mirror = FunctionMirror(registry)
    mirror.event("ADDED", function_obj())
    bad = function_obj(generation=2, image="example/fn:1")  # runtime and image both set
    with caplog.at_level(logging.ERROR, logger="kubefaas.gateway.discovery"):
        mirror.event("MODIFIED", bad)
        mirror.event("MODIFIED", bad)  # a status update of the same generation
    assert f"{NS}/hello" not in registry
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1
    assert "spec.runtime and spec.image" in errors[0].getMessage()
    assert f"{NS}/hello" in errors[0].getMessage()


def test_a_resync_forgets_functions_deleted_while_not_watching() -> None:
    registry = FunctionRegistry()
    mirror = FunctionMirror(registry)
    mirror.event("ADDED", function_obj("a"))
    mirror.event("ADDED", function_obj("b"))
    mirror.resync([function_obj("b"), function_obj("c")], namespace=None)
    assert sorted(fn.name for fn in registry) == ["b", "c"]


# -- the backend over a fake API server ----------------------------------------------------------


class FakeKube:
    """Lists, scripted watch streams (`push`; None ends a stream), one Deployment scale."""

    def __init__(self) -> None:
        self.items: dict[str, list[dict[str, Any]]] = {FUNCTIONS_PATH: [], PODS_PATH: []}
        self.streams: dict[str, asyncio.Queue[dict[str, Any] | None]] = {}
        self.list_calls: list[str] = []
        self.watch_versions: list[tuple[str, str]] = []
        self.scales: dict[str, dict[str, Any]] = {}
        self.patches: list[tuple[str, dict[str, Any]]] = []
        self.conflicts = 0
        self.refuse: ApiError | None = None
        self.version = 100

    def stream(self, path: str) -> asyncio.Queue[dict[str, Any] | None]:
        return self.streams.setdefault(path, asyncio.Queue())

    def push(self, path: str, kind: str, obj: dict[str, Any]) -> None:
        self.stream(path).put_nowait({"type": kind, "object": obj})

    def set_scale(self, fn: str, replicas: int) -> None:
        self.scales[f"/apis/apps/v1/namespaces/{NS}/deployments/{fn}/scale"] = {
            "metadata": {"resourceVersion": str(self.version)},
            "spec": {"replicas": replicas},
        }

    async def get(self, path: str) -> dict[str, Any]:
        await asyncio.sleep(0.01)  # a round trip, during which more requests arrive
        if self.refuse is not None:
            raise self.refuse
        if path not in self.scales:
            raise ApiError(404, "NotFound", f"{path} not found")
        return copy.deepcopy(self.scales[path])

    async def list(
        self, path: str, *, label_selector: str | None = None
    ) -> tuple[list[dict[str, Any]], str]:
        self.list_calls.append(path)
        return copy.deepcopy(self.items[path]), str(self.version)

    async def watch(
        self,
        path: str,
        *,
        resource_version: str,
        timeout_seconds: int,
        label_selector: str | None = None,
    ) -> AsyncIterator[dict[str, Any]]:
        self.watch_versions.append((path, resource_version))
        stream = self.stream(path)
        while True:
            event = await stream.get()
            if event is None:
                return
            yield event

    async def patch(self, path: str, body: Mapping[str, Any]) -> dict[str, Any]:
        self.patches.append((path, dict(body)))
        if self.conflicts:
            self.conflicts -= 1
            self.version += 1
            self.scales[path]["metadata"]["resourceVersion"] = str(self.version)
            raise ApiError(409, "Conflict", "the object has been modified")
        wanted = (body.get("metadata") or {}).get("resourceVersion")
        current = self.scales[path]
        if wanted is not None and wanted != current["metadata"]["resourceVersion"]:
            raise ApiError(409, "Conflict", "stale resourceVersion")
        self.version += 1
        current["spec"]["replicas"] = body["spec"]["replicas"]
        current["metadata"]["resourceVersion"] = str(self.version)
        return copy.deepcopy(current)

    async def close(self) -> None:
        pass


class FakeProbe:
    """Health probes answered from `healthy`; records how often each pod was probed."""

    def __init__(self) -> None:
        self.healthy: set[str] = set()
        self.calls: dict[str, int] = {}

    async def __call__(self, instance: PodInstance) -> bool:
        self.calls[instance.uid] = self.calls.get(instance.uid, 0) + 1
        return instance.uid in self.healthy


@pytest.fixture
def kube() -> FakeKube:
    return FakeKube()


@pytest.fixture
def probe() -> FakeProbe:
    return FakeProbe()


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(state_dir=tmp_path, instance_probe_interval_seconds=0.005)


@pytest.fixture
async def backend(
    kube: FakeKube, probe: FakeProbe, settings: Settings
) -> AsyncIterator[KubernetesBackend]:
    kube.items[FUNCTIONS_PATH] = [function_obj()]
    backend = KubernetesBackend(
        settings=settings, registry=FunctionRegistry(), kube=kube, probe=probe
    )
    await backend.start(tracker=Tracker())
    yield backend
    await backend.stop()


def the_function(backend: KubernetesBackend) -> Function:
    fn = backend._registry.get(f"{NS}/hello")
    assert fn is not None
    return fn


async def eventually(condition: Any, what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.005)


async def test_start_lists_functions_before_serving(
    backend: KubernetesBackend, kube: FakeKube
) -> None:
    assert f"{NS}/hello" in backend._registry
    assert sorted(kube.list_calls) == sorted([FUNCTIONS_PATH, PODS_PATH])
    await eventually(lambda: len(kube.watch_versions) == 2, "both watches")
    assert {version for _, version in kube.watch_versions} == {"100"}


async def test_watch_events_update_the_registry(backend: KubernetesBackend, kube: FakeKube) -> None:
    kube.push(FUNCTIONS_PATH, "ADDED", function_obj("second"))
    await eventually(lambda: f"{NS}/second" in backend._registry, "the new function")
    kube.push(FUNCTIONS_PATH, "MODIFIED", function_obj("second", generation=2, timeout=3))
    await eventually(
        lambda: backend._registry.get(f"{NS}/second").spec.timeout_seconds == 3,  # type: ignore[union-attr]
        "the change",
    )
    kube.push(FUNCTIONS_PATH, "DELETED", function_obj("second", generation=2, timeout=3))
    await eventually(lambda: f"{NS}/second" not in backend._registry, "the deletion")


async def test_an_expired_watch_lists_again_and_reconciles(
    backend: KubernetesBackend, kube: FakeKube
) -> None:
    # While the watch was behind, "hello" was deleted and "later" created.
    kube.items[FUNCTIONS_PATH] = [function_obj("later")]
    kube.version = 200
    kube.push(FUNCTIONS_PATH, "ERROR", {"kind": "Status", "code": 410, "reason": "Expired"})
    await eventually(lambda: f"{NS}/later" in backend._registry, "the relist")
    assert f"{NS}/hello" not in backend._registry
    await eventually(lambda: (FUNCTIONS_PATH, "200") in kube.watch_versions, "a new watch")


async def test_a_watch_that_ends_resumes_from_the_last_version_seen(
    backend: KubernetesBackend, kube: FakeKube
) -> None:
    newer = function_obj("second")
    newer["metadata"]["resourceVersion"] = "150"
    kube.push(FUNCTIONS_PATH, "ADDED", newer)
    kube.push(FUNCTIONS_PATH, "BOOKMARK", {"metadata": {"resourceVersion": "160"}})
    kube.stream(FUNCTIONS_PATH).put_nowait(None)  # the server's timeout ends the watch
    await eventually(lambda: (FUNCTIONS_PATH, "160") in kube.watch_versions, "the resumed watch")
    assert kube.list_calls.count(FUNCTIONS_PATH) == 1


async def test_a_pod_is_routed_once_it_answers_its_probe(
    backend: KubernetesBackend, kube: FakeKube, probe: FakeProbe
) -> None:
    fn = the_function(backend)
    kube.push(PODS_PATH, "ADDED", pod_obj())
    await eventually(lambda: probe.calls.get("uid-hello-abc", 0) >= 2, "probing")
    assert backend.ready_count(fn) == 0
    assert [i.ready for i in backend.instances(fn)] == [False]
    probe.healthy.add("uid-hello-abc")
    await eventually(lambda: backend.ready_count(fn) == 1, "routing")
    acquired = await backend.acquire(fn, time.time() + 1)
    assert (acquired.instance.host, acquired.cold_start) == ("10.0.0.5", False)

    kube.push(PODS_PATH, "MODIFIED", pod_obj(terminating=True))
    await eventually(lambda: backend.ready_count(fn) == 0, "unrouting")
    assert backend.instances(fn) == []


async def test_an_evicted_pod_is_probed_again(
    backend: KubernetesBackend, kube: FakeKube, probe: FakeProbe
) -> None:
    fn = the_function(backend)
    kube.push(PODS_PATH, "ADDED", pod_obj(ready=True))
    await eventually(lambda: backend.ready_count(fn) == 1, "routing")
    assert probe.calls == {}
    instance = backend.instances(fn)[0]
    backend.evict(instance)
    assert backend.ready_count(fn) == 0
    await eventually(lambda: probe.calls.get("uid-hello-abc", 0) >= 1, "a probe")
    probe.healthy.add("uid-hello-abc")
    await eventually(lambda: backend.ready_count(fn) == 1, "routing again")


async def test_concurrent_cold_requests_share_one_activation(
    backend: KubernetesBackend, kube: FakeKube, probe: FakeProbe
) -> None:
    fn = the_function(backend)
    kube.set_scale("hello", 0)
    waiting = [asyncio.create_task(backend.acquire(fn, time.time() + WAIT)) for _ in range(20)]
    await eventually(lambda: kube.scales[scale_path(fn)]["spec"]["replicas"] == 1, "scale-up")
    assert len(kube.patches) == 1
    path, body = kube.patches[0]
    assert path == scale_path(fn)
    assert body["spec"] == {"replicas": 1}
    assert body["metadata"]["resourceVersion"] == "100"  # written against what was read

    # The Deployment's pod appears and answers: every waiter gets it, as a cold start.
    probe.healthy.add("uid-hello-abc")
    kube.push(PODS_PATH, "ADDED", pod_obj())
    results = await asyncio.wait_for(asyncio.gather(*waiting), WAIT)
    assert {r.instance.id for r in results} == {f"{NS}/hello-abc"}
    assert all(r.cold_start for r in results)
    assert len(kube.patches) == 1


async def test_activation_never_lowers_a_deployment(
    backend: KubernetesBackend, kube: FakeKube
) -> None:
    fn = the_function(backend)
    kube.set_scale("hello", 3)  # pods on their way, none ready yet
    with pytest.raises(InvocationTimeout, match="within its timeout"):
        await backend.acquire(fn, time.time() + 0.3)
    assert kube.patches == []
    assert kube.scales[scale_path(fn)]["spec"]["replicas"] == 3


async def test_activation_reads_again_after_a_conflict(
    backend: KubernetesBackend, kube: FakeKube
) -> None:
    fn = the_function(backend)
    kube.set_scale("hello", 0)
    kube.conflicts = 2
    with pytest.raises(InvocationTimeout):
        await backend.acquire(fn, time.time() + 0.3)
    assert len(kube.patches) == 3
    assert kube.scales[scale_path(fn)]["spec"]["replicas"] == 1


async def test_a_function_without_a_deployment_answers_no_capacity(
    backend: KubernetesBackend,
) -> None:
    with pytest.raises(NoCapacity, match="no Deployment"):
        await backend.acquire(the_function(backend), time.time() + 0.3)


async def test_a_refused_scale_up_fails_fast(backend: KubernetesBackend, kube: FakeKube) -> None:
    kube.refuse = ApiError(403, "Forbidden", "cannot get deployments/scale")
    started = time.monotonic()
    with pytest.raises(NoCapacity, match="may not scale"):
        await backend.acquire(the_function(backend), time.time() + WAIT)
    assert time.monotonic() - started < 1.0


async def test_a_scale_up_refused_earlier_is_tried_again_once_allowed(
    backend: KubernetesBackend, kube: FakeKube
) -> None:
    fn = the_function(backend)
    kube.set_scale("hello", 0)
    kube.refuse = ApiError(403, "Forbidden", "cannot get deployments/scale")
    with pytest.raises(NoCapacity):
        await backend.acquire(fn, time.time() + WAIT)
    kube.refuse = None  # the missing RBAC rule was added
    await asyncio.sleep(1.1)
    with pytest.raises(InvocationTimeout):
        await backend.acquire(fn, time.time() + 0.3)
    assert kube.scales[scale_path(fn)]["spec"]["replicas"] == 1


async def test_stopping_releases_waiting_requests(
    backend: KubernetesBackend, kube: FakeKube
) -> None:
    fn = the_function(backend)
    kube.set_scale("hello", 1)
    waiter = asyncio.create_task(backend.acquire(fn, time.time() + WAIT))
    await asyncio.sleep(0.05)
    await backend.stop()
    with pytest.raises(NoCapacity, match="shutting down"):
        await asyncio.wait_for(waiter, 1.0)


async def test_start_fails_clearly_without_permission(
    kube: FakeKube, probe: FakeProbe, settings: Settings
) -> None:
    async def forbidden(path: str, **_: Any) -> tuple[list[dict[str, Any]], str]:
        raise ApiError(403, "Forbidden", 'cannot list resource "functions"')

    kube.list = forbidden  # type: ignore[method-assign]
    backend = KubernetesBackend(settings=settings, registry=FunctionRegistry(), kube=kube)
    with pytest.raises(RuntimeError, match="RBAC"):
        await backend.start(tracker=Tracker())


async def test_namespaces_setting_scopes_the_watches(
    kube: FakeKube, probe: FakeProbe, tmp_path: Path
) -> None:
    paths = {f"/apis/kubefaas.io/v1alpha1/namespaces/{ns}/functions" for ns in ("a", "b")} | {
        f"/api/v1/namespaces/{ns}/pods" for ns in ("a", "b")
    }
    for path in paths:
        kube.items[path] = []
    settings = Settings(state_dir=tmp_path, namespaces=("a", "b"))
    backend = KubernetesBackend(settings=settings, registry=FunctionRegistry(), kube=kube)
    await backend.start(tracker=Tracker())
    try:
        assert set(kube.list_calls) == paths
    finally:
        await backend.stop()


async def test_a_cluster_gateway_never_sets_replicas_beyond_activation(
    kube: FakeKube, probe: FakeProbe, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two ready pods of a function capped at maxScale 1 (a rollout, or the operator about
    to scale in): a gateway that ran the decider would patch the Deployment down at its
    first tick. The operator is the one writer of replicas, however the gateway is started
    (the setting that used to make the gateway scale is ignored), and the stats it feeds the
    operator still report the load."""
    monkeypatch.setenv("KUBEFAAS_SCALE_DOWN", "gateway")
    kube.items[FUNCTIONS_PATH] = [function_obj(scaling={"maxScale": 1})]
    kube.items[PODS_PATH] = [pod_obj("hello-a", ready=True), pod_obj("hello-b", ready=True)]
    kube.set_scale("hello", 2)
    app = build_app(Settings(state_dir=tmp_path), kube=kube, probe=probe)
    async with app.router.lifespan_context(app):
        await asyncio.sleep(0.5)  # longer than the wait before an autoscaler's first tick
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
            stats = (await client.get("/internal/stats")).json()["functions"][f"{NS}/hello"]
    assert kube.patches == []
    assert kube.scales[f"/apis/apps/v1/namespaces/{NS}/deployments/hello/scale"]["spec"] == {
        "replicas": 2
    }
    assert stats["readyInstances"] == 2
    assert "desiredReplicas" not in stats  # no decider runs in this gateway


def test_namespaces_are_read_comma_separated(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBEFAAS_NAMESPACES", "team-a, team-b")
    assert Settings().namespaces == ("team-a", "team-b")
