{{/*
RBAC rules of the operator and the gateway, shared by their ClusterRoles and Roles
(docs/architecture.md, "Rights only where Functions live"). With watchNamespaces empty they
go into ClusterRoles; with watchNamespaces set, into a Role in each watched namespace, and
the ClusterRoles keep only what is cluster-scoped. No Secrets for the operator, no wildcards.
*/}}

{{/* The operator's cluster-scoped reads: kopf notices CRDs and namespaces appearing. */}}
{{- define "kubefaas.operatorClusterRules" -}}
# kopf notices CRDs and namespaces appearing and going.
- apiGroups: ["apiextensions.k8s.io"]
  resources: ["customresourcedefinitions"]
  verbs: ["list", "watch"]
- apiGroups: [""]
  resources: ["namespaces"]
  verbs: ["list", "watch"]
{{- end -}}

{{/* The operator's rights where Functions live (kube_sync.py is its one door). */}}
{{- define "kubefaas.operatorFunctionRules" -}}
# Watch Functions; kopf keeps its finalizer and progress annotations on them.
- apiGroups: ["kubefaas.io"]
  resources: ["functions"]
  verbs: ["get", "list", "watch", "patch", "update"]
- apiGroups: ["kubefaas.io"]
  resources: ["functions/status"]
  verbs: ["get", "patch", "update"]
# Each Function's children.
- apiGroups: [""]
  resources: ["configmaps", "services"]
  verbs: ["get", "list", "watch", "create", "update", "patch", "delete"]
- apiGroups: ["apps"]
  resources: ["deployments"]
  verbs: ["get", "list", "watch", "create", "update", "patch", "delete"]
# Each Function's NetworkPolicy (deleted again when networkPolicy.enabled is turned off).
- apiGroups: ["networking.k8s.io"]
  resources: ["networkpolicies"]
  verbs: ["get", "list", "watch", "create", "update", "patch", "delete"]
# The autoscaler sets replicas.
- apiGroups: ["apps"]
  resources: ["deployments/scale"]
  verbs: ["get", "patch", "update"]
# Build Jobs of Functions with a requirements.txt (docs/packaging.md), and their pods'
# termination messages (the built image's digest, or pip's error).
- apiGroups: ["batch"]
  resources: ["jobs"]
  verbs: ["get", "list", "watch", "create", "delete"]
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["get", "list", "watch"]
# kopf reports handler outcomes as events on the Function.
- apiGroups: ["", "events.k8s.io"]
  resources: ["events"]
  verbs: ["create"]
{{- end -}}

{{/* The operator's autoscaler reads the stats of every gateway pod (release namespace). */}}
{{- define "kubefaas.operatorGatewayPodRules" -}}
# The autoscaler reads the stats of every gateway pod.
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["get", "list", "watch"]
{{- end -}}

{{/*
What the gateway's code uses, nothing more (kube_async.py is its one door): list and watch
Functions and function pods (backends/kubernetes.py), get and patch a Deployment's scale
subresource to activate it from zero (backends/activation.py), get the Secrets that hold
invoke keys by name (secrets.py; never list or watch), and with the console the server-side
apply of Functions (console/store.py: create and patch).
*/}}
{{- define "kubefaas.gatewayRules" -}}
# Each Function's timeout, scaling, auth and async policy.
- apiGroups: ["kubefaas.io"]
  resources: ["functions"]
  verbs: ["list", "watch"]
# Discover ready function pods and route to them.
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["list", "watch"]
# Keep an ending function pod's log before the kubelet removes it (docs/logs.md).
- apiGroups: [""]
  resources: ["pods/log"]
  verbs: ["get"]
# Activation: scale a Deployment from 0 to 1 on the first request after idle.
- apiGroups: ["apps"]
  resources: ["deployments/scale"]
  verbs: ["get", "patch"]
# Invoke auth: the keys of `token` Functions, the public keys of `jwt` ones, by name.
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get"]
{{- if gt (int .Values.warmPool.size) 0 }}
# Warm pool (docs/warm-pool.md): claim a pool pod (a JSON patch of its labels), delete it
# when specialising fails or once it is retired, read a function's code from its ConfigMap
# and its version from its Deployment to send them. Only when pools are on.
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["patch", "delete"]
- apiGroups: [""]
  resources: ["configmaps"]
  verbs: ["get"]
- apiGroups: ["apps"]
  resources: ["deployments"]
  verbs: ["get"]
{{- end }}
{{- if .Values.console.enabled }}
# The console's Deploy and Delete: create or update Functions (server-side apply),
# delete them.
- apiGroups: ["kubefaas.io"]
  resources: ["functions"]
  verbs: ["create", "patch", "delete"]
{{- end }}
{{- end -}}
