{{/*
The SSRF rule of callbacks and URL destinations (docs/security.md), the same for the
gateway (which refuses at submit and send) and the operator (which reports refused
destination URLs as a condition on the Function): env entries, nothing when unset.
*/}}
{{- define "kubefaas.callbackGuardEnv" -}}
{{- with .Values.callbackGuard.allowedCidrs }}
- name: KUBEFAAS_CALLBACK_ALLOWED_CIDRS
  value: {{ join "," . | quote }}
{{- end }}
{{- with .Values.callbackGuard.blockedCidrs }}
- name: KUBEFAAS_CALLBACK_BLOCKED_CIDRS
  value: {{ join "," . | quote }}
{{- end }}
{{- end -}}
