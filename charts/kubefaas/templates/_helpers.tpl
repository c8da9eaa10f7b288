{{/*
Names, labels and the pod settings every kubefaas workload shares.
*/}}

{{/* The chart name, or nameOverride. */}}
{{- define "kubefaas.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
The prefix of every resource name: fullnameOverride, else the release name when it already
contains the chart name, else "<release>-<chart>". Truncated so that "-operator" and
"-gateway" suffixes still fit in a 63-character DNS label.
*/}}
{{- define "kubefaas.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 54 | trimSuffix "-" -}}
{{- else -}}
{{- $name := include "kubefaas.name" . -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 54 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 54 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* "name-version" for the helm.sh/chart label. */}}
{{- define "kubefaas.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
Labels for every object. Call with (dict "context" $ "component" "gateway").
app.kubernetes.io/component "gateway" is how the operator's autoscaler finds gateway pods.
*/}}
{{- define "kubefaas.labels" -}}
helm.sh/chart: {{ include "kubefaas.chart" .context }}
{{ include "kubefaas.selectorLabels" . }}
app.kubernetes.io/version: {{ .context.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .context.Release.Service }}
app.kubernetes.io/part-of: kubefaas
{{- with .context.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Labels that select one component's pods. Call like kubefaas.labels. */}}
{{- define "kubefaas.selectorLabels" -}}
app.kubernetes.io/name: {{ include "kubefaas.name" .context }}
app.kubernetes.io/instance: {{ .context.Release.Name }}
{{- with .component }}
app.kubernetes.io/component: {{ . }}
{{- end }}
{{- end -}}

{{/*
The ServiceAccount name of a component. Call with (dict "context" $ "component" "operator").
*/}}
{{- define "kubefaas.serviceAccountName" -}}
{{- $values := index .context.Values .component -}}
{{- if $values.serviceAccount.create -}}
{{- default (printf "%s-%s" (include "kubefaas.fullname" .context) .component) $values.serviceAccount.name -}}
{{- else -}}
{{- required (printf "%s.serviceAccount.name is required when %s.serviceAccount.create is false" .component .component) $values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* A label map as a label selector string: "a=1,b=2" (sorted by key). */}}
{{- define "kubefaas.labelSelectorString" -}}
{{- $pairs := list -}}
{{- range $key, $value := . -}}
{{- $pairs = append $pairs (printf "%s=%s" $key $value) -}}
{{- end -}}
{{- join "," $pairs -}}
{{- end -}}

{{/* "repository:tag" of an image value. */}}
{{- define "kubefaas.image" -}}
{{- printf "%s:%s" .repository (toString .tag) -}}
{{- end -}}

{{/* The gateway Service's in-cluster URL, without a trailing slash. */}}
{{- define "kubefaas.gatewayServiceUrl" -}}
{{- $port := int .Values.gateway.service.port -}}
{{- $host := printf "%s-gateway.%s.svc" (include "kubefaas.fullname" .) .Release.Namespace -}}
{{- if eq $port 80 -}}
{{- printf "http://%s" $host -}}
{{- else -}}
{{- printf "http://%s:%d" $host $port -}}
{{- end -}}
{{- end -}}

{{/* The runtime name -> image map the operator reads from KUBEFAAS_RUNTIME_IMAGES. */}}
{{- define "kubefaas.runtimeImages" -}}
{{- $images := dict "python3.11" (include "kubefaas.image" .Values.runtime.image) -}}
{{- toJson (merge (deepCopy .Values.runtime.extraImages) $images) -}}
{{- end -}}

{{/* Name of the Secret holding the admin token (the chart's own, or existingSecret). */}}
{{- define "kubefaas.adminTokenSecretName" -}}
{{- default (printf "%s-gateway" (include "kubefaas.fullname" .)) .Values.gateway.existingSecret -}}
{{- end -}}

{{/* Name of the Secret holding the Redis URL, or nothing when Redis is not used. */}}
{{- define "kubefaas.redisSecretName" -}}
{{- if .Values.redis.existingSecret -}}
{{- .Values.redis.existingSecret -}}
{{- else if .Values.redis.url -}}
{{- printf "%s-gateway" (include "kubefaas.fullname" .) -}}
{{- end -}}
{{- end -}}

{{/* Whether the chart creates the gateway Secret (admin token and/or Redis URL). */}}
{{/* Invoke auth of Functions without spec.auth: auth.default, token or none. */}}
{{- define "kubefaas.authDefault" -}}
{{- $mode := default "token" .Values.auth.default -}}
{{- if not (has $mode (list "token" "none")) -}}
{{- fail (printf "auth.default must be token or none, got %q" $mode) -}}
{{- end -}}
{{- $mode -}}
{{- end -}}

{{- define "kubefaas.createGatewaySecret" -}}
{{- if or (not .Values.gateway.existingSecret) (and .Values.redis.url (not .Values.redis.existingSecret)) -}}
true
{{- end -}}
{{- end -}}

{{/*
Pod-level security context of the restricted Pod Security Standard: a fixed non-root UID
(65532, the images' USER) and the runtime's default seccomp profile. fsGroup makes a
persistent volume writable by that UID.
*/}}
{{- define "kubefaas.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
fsGroup: 65532
fsGroupChangePolicy: OnRootMismatch
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/*
Container-level security context of the restricted Pod Security Standard: nothing can
escalate, every capability is dropped, and only mounted volumes (/tmp, the state dir) are
writable.
*/}}
{{- define "kubefaas.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
privileged: false
capabilities:
  drop:
    - ALL
seccompProfile:
  type: RuntimeDefault
{{- end -}}
