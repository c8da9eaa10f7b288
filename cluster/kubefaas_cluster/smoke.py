"""``python -m kubefaas_cluster smoke``: prove the full cluster runs a real pod.

The riskiest part of this setup is kernel 6 + cgroup v1 + containerd 1.6, so the check is
a pod with a memory limit (a Guaranteed pod: its own memory cgroup and a negative OOM score
request) running the local pause image, scheduled by the scheduler and started through
CNI. It runs in its own namespace, which is deleted afterwards.
"""

from __future__ import annotations

import subprocess
import time
import uuid
from pathlib import Path

from kubefaas_cluster.images import PAUSE_IMAGE

SMOKE_TIMEOUT_SECONDS = 120
MEMORY_LIMIT = "64Mi"


def smoke_pod_manifest(*, namespace: str) -> str:
    """A Guaranteed pod running the local pause image; never pulled."""
    return f"""\
apiVersion: v1
kind: Pod
metadata:
  name: smoke
  namespace: {namespace}
spec:
  automountServiceAccountToken: false
  containers:
    - name: pause
      image: {PAUSE_IMAGE}
      imagePullPolicy: Never
      resources:
        limits: {{memory: {MEMORY_LIMIT}, cpu: 100m}}
      securityContext:
        runAsNonRoot: true
        runAsUser: 65534
        allowPrivilegeEscalation: false
        readOnlyRootFilesystem: true
        capabilities: {{drop: [ALL]}}
        seccompProfile: {{type: RuntimeDefault}}
"""


def run_smoke(*, kubectl: Path, kubeconfig: Path) -> str:
    """Start the smoke pod, wait until Ready, delete it; return its pod IP."""

    def run(*args: str, stdin: str | None = None) -> str:
        result = subprocess.run(
            [str(kubectl), f"--kubeconfig={kubeconfig}", *args],
            input=stdin,
            capture_output=True,
            text=True,
            check=False,
            timeout=SMOKE_TIMEOUT_SECONDS + 30,
        )
        if result.returncode != 0:
            raise RuntimeError(f"kubectl {' '.join(args)}: {result.stderr.strip()}")
        return result.stdout

    namespace = f"kubefaas-smoke-{uuid.uuid4().hex[:6]}"
    run("create", "namespace", namespace)
    try:
        # Admission refuses pods until the controller-manager has made the namespace's
        # default ServiceAccount, a second or so after the namespace exists.
        deadline = time.monotonic() + SMOKE_TIMEOUT_SECONDS
        while True:
            try:
                run("get", "serviceaccount", "default", "-n", namespace)
                break
            except RuntimeError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
        run("apply", "-f", "-", stdin=smoke_pod_manifest(namespace=namespace))
        try:
            run(
                "wait", "--for=condition=Ready", "pod/smoke", "-n", namespace,
                f"--timeout={SMOKE_TIMEOUT_SECONDS}s",
            )  # fmt: skip
        except RuntimeError as exc:
            events = run("get", "events", "-n", namespace, "--sort-by=.lastTimestamp")
            raise RuntimeError(f"{exc}\n{events}") from exc
        return run("get", "pod", "smoke", "-n", namespace, "-o", "jsonpath={.status.podIP}")
    finally:
        run("delete", "namespace", namespace, "--wait=false")
