"""The chart's NetworkPolicies on a real API server: every one is admitted as rendered.

The API tier has no network plugin, so nothing is enforced here (nor on the development
cluster, whose bridge plugin ignores NetworkPolicy; docs/architecture.md, "Network
policies"): what this shows is that the API server accepts the policies as the chart
renders them, with nothing dropped or defaulted away. Function pods get theirs from the
operator (tests/api/test_function_networkpolicy.py); tests/unit/test_chart_networkpolicy.py
shows that the selectors match the real pods.
"""

from __future__ import annotations

import json
import uuid

from kubefaas_cluster.pytest_plugin import KubeApi
from tests.api.test_chart_rbac import helm_template


def test_the_rendered_network_policies_are_admitted_unchanged(kube_api: KubeApi) -> None:
    suffix = uuid.uuid4().hex[:8]
    release, namespace = f"np{suffix}", f"np-{suffix}"
    functions = [f"np-{suffix}-a", f"np-{suffix}-b"]
    sets = (
        f"watchNamespaces={{{','.join(functions)}}}",
        "networkPolicy.gatewayIngressFrom[0].namespaceSelector.matchLabels"
        ".kubernetes\\.io/metadata\\.name=ingress",
    )
    policies = [o for o in helm_template(release, namespace, *sets) if o["kind"] == "NetworkPolicy"]
    # The chart's own pods only: function pods get theirs from the operator.
    assert {p["metadata"]["namespace"] for p in policies} == {namespace}
    for ns in (namespace, *functions):
        kube_api.kubectl("create", "namespace", ns)
    try:
        manifest = json.dumps({"apiVersion": "v1", "kind": "List", "items": policies})
        kube_api.kubectl("apply", "-f", "-", input=manifest)
        for policy in policies:
            meta = policy["metadata"]
            stored = kube_api.kubectl_json(
                "get", "networkpolicy", meta["name"], "-n", meta["namespace"]
            )
            assert stored["spec"] == policy["spec"], meta
    finally:
        for ns in (namespace, *functions):
            kube_api.kubectl("delete", "namespace", ns, "--wait=false", check=False)
