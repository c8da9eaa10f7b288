"""`kubefaas logs --cluster`: the pod logs of every instance of a function, merged.

See docs/logs.md. The command line's one door to the Kubernetes API (an import-linter
contract lets this module, besides the operator's `kube_sync`, import `kubernetes`; it is
imported only by `kubefaas logs --cluster`, so the core works without the client).
Pods are found by the function label (`kubefaas.naming.FUNCTION_LABEL`); for each, the
current container's log and, when the container restarted, the previous one's (what the
node still keeps of an instance that is gone). Lines are JSON (`kubefaas_runtime.logs`);
they are merged by their `ts` field, filtered by invocation id, and printed as written.
`--follow` polls every couple of seconds and prints lines not seen before.

A deleted pod's log is gone from the API. With `kept` (the lines a gateway's log keeper
took from pods as they ended: `kubefaas logs --cluster --gateway URL`), those are merged
in too; a line read both ways (a pod still stopping) is printed once.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from typing import Any, TextIO

from kubefaas import naming

FOLLOW_INTERVAL_SECONDS = 2.0
KEPT = "(kept by the gateway)"


def _api(kubeconfig: str | None) -> Any:
    from kubernetes import client, config

    try:
        config.load_kube_config(config_file=kubeconfig)  # type: ignore[no-untyped-call]
    except config.ConfigException:
        config.load_incluster_config()  # type: ignore[no-untyped-call]
    return client.CoreV1Api()


def merged_lines(pod_logs: dict[str, str], *, invocation: str | None) -> list[tuple[str, str, str]]:
    """`(ts, pod, line)` of every pod's log text, oldest first, of one invocation if given."""
    merged: list[tuple[str, str, str]] = []
    for pod, text in pod_logs.items():
        for line in text.splitlines():
            if not line.strip():
                continue
            ts = ""
            request_id = None
            if line.startswith("{"):
                try:
                    document = json.loads(line)
                except ValueError:
                    document = None
                if isinstance(document, dict):
                    ts = str(document.get("ts", ""))
                    request_id = document.get("requestId")
            if invocation is not None and request_id != invocation:
                continue
            merged.append((ts, pod, line))
    merged.sort(key=lambda item: item[0])  # stable: one pod's lines keep their order
    return merged


def read_pod_logs(
    api: Any, namespace: str, name: str, *, since_seconds: float | None
) -> dict[str, str]:
    """Log text per pod (and per previous container, as `pod (previous)`)."""
    pods = api.list_namespaced_pod(
        namespace, label_selector=f"{naming.FUNCTION_LABEL}={name}"
    ).items
    logs: dict[str, str] = {}
    since = None if since_seconds is None else max(1, int(since_seconds))
    for pod in pods:
        pod_name = pod.metadata.name
        restarted = any(
            (status.restart_count or 0) > 0 for status in (pod.status.container_statuses or [])
        )
        for previous in (True, False) if restarted else (False,):
            kwargs: dict[str, Any] = {"previous": previous}
            if since is not None:
                kwargs["since_seconds"] = since
            try:
                text = api.read_namespaced_pod_log(pod_name, namespace, **kwargs)
            except Exception:  # a pod still starting, or gone meanwhile: skip it
                continue
            logs[f"{pod_name} (previous)" if previous else pod_name] = text or ""
    return logs


def print_pod_logs(
    namespace: str,
    name: str,
    *,
    invocation: str | None,
    since_seconds: float | None,
    follow: bool,
    kubeconfig: str | None,
    out: TextIO,
    kept: Callable[[float | None], list[str]] | None = None,
) -> int:
    """Print the merged lines; `kept(since_seconds)` gives the lines of ended pods."""
    api = _api(kubeconfig)
    seen: set[str] = set()
    hinted = False
    while True:
        logs = read_pod_logs(api, namespace, name, since_seconds=since_seconds)
        if not logs and kept is None and not hinted:
            hinted = True
            print(
                f"kubefaas logs: no pod of {namespace}/{name} is running; the lines of pods "
                "that ended are kept by the gateway: add --gateway URL --token T",
                file=sys.stderr,
            )
        if kept is not None:
            logs[KEPT] = "\n".join(kept(since_seconds))
        for _, _, line in merged_lines(logs, invocation=invocation):
            if line not in seen:
                seen.add(line)
                print(line, file=out)
        out.flush()
        if not follow:
            return 0
        since_seconds = FOLLOW_INTERVAL_SECONDS * 5
        time.sleep(FOLLOW_INTERVAL_SECONDS)
