"""How the operator copes with many Functions at once, on a real API server.

Creates ``--count`` (1,000) Functions in one namespace while the real operator
(``kubefaas operator``, its own process) runs, and measures:

- the time until every Function has its ConfigMap, Deployment and Service, and until
  every one reports ``Ready=True`` for its current generation (from the first create);
- the operator's peak RSS (``VmHWM`` from /proc) and the CPU seconds it used;
- with the operator restarted on the settled Functions: the time until it has resumed
  them all, and how many children it wrote meanwhile (should be none).

By default a private API-only cluster (etcd + kube-apiserver + controller-manager, the
same code as the test suite's ``kube_api`` fixture) is started and stopped; with
``--kubeconfig`` an existing cluster is used and the operator watches only the bench's
namespace. The API server shares this machine's cores with the operator, so the figures
are for the whole control plane on one machine, not the operator alone.

Usage::

    python bench/operator_scale.py [--count 1000] [--kubeconfig PATH] [--json PATH]
        [--workers 16] [--timeout 1200] [--no-restart]

Prints a table and the machine (nproc, CPU model, load average at start).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

# The repo root, for the test helper that runs the operator as a process (tests/ is not
# packaged with the product).
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from host import machine

from kubefaas import limits, naming
from kubefaas.kubeapi import ApiError
from kubefaas_operator.kube_sync import RestKube, cluster, namespaced
from tests.operator_process import OperatorProcess

ROOT = Path(__file__).resolve().parents[1]
CRD = ROOT / "crds" / "function.yaml"
POLL_SECONDS = 2.0
CREATE_THREADS = 8
STARTED_LINE = "Initial authentication has finished"
RESUMED_LINE = "Resuming is processed"
CLK_TCK = os.sysconf("SC_CLK_TCK")
GROUP_VERSION = f"{limits.API_GROUP}/{limits.API_VERSION}"

CODE = "def handler(event, context):\n    return {'n': %d}\n"


@contextlib.contextmanager
def api_server(kubeconfig: Path | None) -> Iterator[Path]:
    """An existing cluster's kubeconfig, or a private API-only cluster for the run."""
    if kubeconfig is not None:
        yield kubeconfig
        return
    from kubefaas_cluster.pytest_plugin import private_kube_api

    with private_kube_api() as api:
        yield api.kubeconfig


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def install_crd(kube: RestKube) -> None:
    import yaml

    crd = yaml.safe_load(CRD.read_text())
    path = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"
    live = kube.get(f"{path}/{crd['metadata']['name']}")
    if live is None:
        kube.create(path, crd)
    else:
        crd["metadata"]["resourceVersion"] = live["metadata"]["resourceVersion"]
        kube.replace(f"{path}/{crd['metadata']['name']}", crd)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        live = kube.get(f"{path}/{crd['metadata']['name']}") or {}
        conditions = live.get("status", {}).get("conditions") or []
        if any(c["type"] == "Established" and c["status"] == "True" for c in conditions):
            # The discovery cache of clients lags a moment behind "Established".
            time.sleep(1)
            return
        time.sleep(0.2)
    raise RuntimeError("the Function CRD did not become Established")


def function(name: str, index: int) -> dict[str, Any]:
    return {
        "apiVersion": GROUP_VERSION,
        "kind": limits.KIND,
        "metadata": {"name": name},
        "spec": {"runtime": "python3.11", "code": {"inline": {"main.py": CODE % index}}},
    }


METADATA_ONLY = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1"


def count_of(kube: RestKube, path: str, selector: str) -> int:
    """How many objects match, listing their metadata only (cheap for the API server)."""
    page = kube.request("GET", path, query=[("labelSelector", selector)], accept=METADATA_ONLY)
    return len(page.get("items") or [])


def census(kube: RestKube, namespace: str) -> dict[str, int]:
    """How many Functions are ready, and how many children of each kind exist."""
    selector = f"{naming.MANAGED_BY_LABEL}={naming.MANAGED_BY}"
    ready = 0
    for fn in kube.list_all(namespaced(GROUP_VERSION, limits.PLURAL, namespace)):
        status = fn.get("status") or {}
        if status.get("observedGeneration") != fn["metadata"].get("generation"):
            continue
        conditions = status.get("conditions") or []
        ready += any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)
    counts = {"ready": ready}
    for kind, group_version in (
        ("deployments", "apps/v1"),
        ("services", "v1"),
        ("configmaps", "v1"),
    ):
        counts[kind] = count_of(kube, namespaced(group_version, kind, namespace), selector)
    return counts


def wait_operator_started(operator: OperatorProcess, timeout: float = 120.0) -> float:
    started = time.monotonic()
    while STARTED_LINE not in operator.logs(tail=1_000_000):
        if not operator.alive():
            raise RuntimeError(f"the operator exited:\n{operator.logs()}")
        if time.monotonic() - started > timeout:
            raise RuntimeError(f"the operator did not start:\n{operator.logs()}")
        time.sleep(0.1)
    return time.monotonic() - started


def child_versions(kube: RestKube, namespace: str) -> dict[str, str]:
    """What changes when the operator writes a child: a Deployment's generation (its
    status, written by the Deployment controller, leaves it alone), a Service's or
    ConfigMap's resourceVersion (nobody else writes them)."""
    selector = f"{naming.MANAGED_BY_LABEL}={naming.MANAGED_BY}"
    versions: dict[str, str] = {}
    for kind, group_version in (
        ("deployments", "apps/v1"),
        ("services", "v1"),
        ("configmaps", "v1"),
    ):
        for item in kube.list_all(
            namespaced(group_version, kind, namespace), label_selector=selector
        ):
            meta = item["metadata"]
            mark = meta["generation"] if kind == "deployments" else meta["resourceVersion"]
            versions[f"{kind}/{meta['name']}"] = str(mark)
    return versions


def run(args: argparse.Namespace) -> dict[str, Any]:
    host = machine()
    count = args.count
    with api_server(args.kubeconfig) as kubeconfig, tempfile.TemporaryDirectory() as tmp:
        os.environ["KUBECONFIG"] = str(kubeconfig)
        kube = RestKube.from_environment(pool_size=CREATE_THREADS + 2)
        install_crd(kube)
        namespace = f"bench-{uuid.uuid4().hex[:8]}"
        kube.create(cluster("v1", "namespaces"), {"metadata": {"name": namespace}})
        scope = [namespace] if args.kubeconfig is not None else []
        env = {"KUBEFAAS_OPERATOR_WORKERS": str(args.workers)}
        operator = OperatorProcess(
            kubeconfig=kubeconfig,
            log_path=Path(tmp) / "operator.log",
            namespaces=scope,
            env=env,
        ).start()
        result: dict[str, Any] = {"machine": host, "count": count, "workers": args.workers}
        try:
            result["operator_start_seconds"] = round(wait_operator_started(operator), 2)
            cpu_before = cpu_seconds(operator.pid)
            collection = namespaced(GROUP_VERSION, limits.PLURAL, namespace)
            names = [f"fn-{i:05d}" for i in range(count)]
            began = time.monotonic()
            with ThreadPoolExecutor(CREATE_THREADS) as pool:
                list(
                    pool.map(
                        lambda item: kube.create(collection, function(item[1], item[0])),
                        enumerate(names),
                    )
                )
            created = time.monotonic() - began
            children_at = ready_at = None
            samples: list[dict[str, Any]] = []
            peak_rss = 0
            while ready_at is None or children_at is None:
                now = time.monotonic() - began
                if now > args.timeout:
                    raise RuntimeError(
                        f"not converged after {args.timeout}s: {samples[-1] if samples else {}}"
                        f"\n{operator.logs()}"
                    )
                if not operator.alive():
                    raise RuntimeError(f"the operator died:\n{operator.logs()}")
                counts = census(kube, namespace)
                peak_rss = max(peak_rss, operator.peak_rss_bytes())
                samples.append({"t": round(now, 2), **counts})
                if children_at is None and all(
                    counts[k] >= count for k in ("deployments", "services", "configmaps")
                ):
                    children_at = now
                if ready_at is None and counts["ready"] >= count:
                    ready_at = now
                time.sleep(POLL_SECONDS)
            result.update(
                {
                    "create_seconds": round(created, 2),
                    "all_children_seconds": round(children_at, 2),
                    "all_ready_seconds": round(ready_at, 2),
                    "functions_per_second": round(count / ready_at, 1),
                    "operator_cpu_seconds": round(cpu_seconds(operator.pid) - cpu_before, 2),
                    "operator_peak_rss_mib": round(
                        max(peak_rss, operator.peak_rss_bytes()) / 2**20, 1
                    ),
                    "samples": samples,
                }
            )
            exact = census(kube, namespace)
            result["children_after"] = {k: v for k, v in exact.items() if k != "ready"}
            if not args.no_restart:
                result.update(restart(kube, namespace, operator, count, args, tmp))
        finally:
            operator.stop()
            with contextlib.suppress(ApiError):
                kube.delete(cluster("v1", "namespaces") + f"/{namespace}")
            kube.close()
    return result


def restart(
    kube: RestKube,
    namespace: str,
    previous: OperatorProcess,
    count: int,
    args: argparse.Namespace,
    tmp: str,
) -> dict[str, Any]:
    """Restart the operator on settled Functions: how long to resume, how many writes."""
    previous.stop()
    before = child_versions(kube, namespace)
    operator = OperatorProcess(
        kubeconfig=previous.kubeconfig,
        log_path=Path(tmp) / "operator-restarted.log",
        namespaces=previous.namespaces,
        env=previous.env,
    ).start()
    try:
        wait_operator_started(operator)
        began = time.monotonic()
        while True:
            resumed = len(re.findall(RESUMED_LINE, operator.logs(tail=50_000_000)))
            if resumed >= count:
                break
            if time.monotonic() - began > args.timeout:
                raise RuntimeError(f"resumed only {resumed} of {count}\n{operator.logs()}")
            time.sleep(0.2)
        resume_seconds = time.monotonic() - began
        time.sleep(2 * POLL_SECONDS)  # let the children events of the resume settle
        after = child_versions(kube, namespace)
        rewritten = sum(1 for key, version in after.items() if before.get(key) != version)
        return {
            "resume_seconds": round(resume_seconds, 2),
            "children_rewritten_on_resume": rewritten,
            "restarted_peak_rss_mib": round(operator.peak_rss_bytes() / 2**20, 1),
        }
    finally:
        operator.stop()


def print_table(result: dict[str, Any]) -> None:
    host = result["machine"]
    rows = [
        ("Functions created", f"{result['count']}"),
        ("operator reconcile workers", f"{result['workers']}"),
        ("operator start (import + login)", f"{result['operator_start_seconds']} s"),
        ("POSTing the Functions took", f"{result['create_seconds']} s"),
        ("all children exist after", f"{result['all_children_seconds']} s"),
        ("all Ready=True after", f"{result['all_ready_seconds']} s"),
        ("throughput to Ready", f"{result['functions_per_second']} Functions/s"),
        ("operator CPU for the whole run", f"{result['operator_cpu_seconds']} s"),
        ("operator peak RSS", f"{result['operator_peak_rss_mib']} MiB"),
        ("children at the end", json.dumps(result["children_after"])),
    ]
    if "resume_seconds" in result:
        rows += [
            ("restart: all resumed after", f"{result['resume_seconds']} s"),
            ("restart: children rewritten", f"{result['children_rewritten_on_resume']}"),
            ("restart: peak RSS", f"{result['restarted_peak_rss_mib']} MiB"),
        ]
    width = max(len(k) for k, _ in rows)
    print()
    for key, value in rows:
        print(f"  {key:<{width}}  {value}")
    print(
        f"\nmachine: {host['nproc']} x {host['cpu']}, Python {host['python']}, "
        f"load average {host['loadavg_1m_at_start']} at start"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=1000, help="Functions to create")
    parser.add_argument(
        "--kubeconfig", type=Path, default=None, help="use this cluster (default: a private one)"
    )
    parser.add_argument("--json", type=Path, default=None, help="write the figures here")
    parser.add_argument("--workers", type=int, default=16, help="operator reconcile threads")
    parser.add_argument("--timeout", type=float, default=1200.0, help="give up after (s)")
    parser.add_argument(
        "--no-restart", action="store_true", help="skip the restart-and-resume measurement"
    )
    args = parser.parse_args(argv)
    result = run(args)
    print_table(result)
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
