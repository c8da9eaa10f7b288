{{/*
The namespaces whose function pods get the chart's NetworkPolicy, as a JSON list:
networkPolicy.functionNamespaces, else watchNamespaces, else gateway.defaultNamespace
(with every namespace watched the chart cannot know the others; NOTES.txt says so).
*/}}
{{- define "kubefaas.functionNamespaces" -}}
{{- $namespaces := .Values.networkPolicy.functionNamespaces | default .Values.watchNamespaces | default (list .Values.gateway.defaultNamespace) -}}
{{- toJson $namespaces -}}
{{- end -}}
