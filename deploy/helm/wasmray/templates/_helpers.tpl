{{- define "wasmray.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "wasmray.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- include "wasmray.name" . -}}
{{- end -}}
{{- end -}}

{{- define "wasmray.component" -}}
{{- default "wasmray-operator" .Values.componentOverride -}}
{{- end -}}

{{- define "wasmray.selectorLabels" -}}
app.kubernetes.io/name: {{ include "wasmray.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: {{ include "wasmray.component" . }}
{{- end -}}

{{- define "wasmray.labels" -}}
{{ include "wasmray.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "wasmray.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "wasmray.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* The namespaces the operator watches, comma-separated; empty means all. */}}
{{- define "wasmray.watchNamespaces" -}}
{{- if .Values.watchNamespace -}}
{{- join "," .Values.watchNamespace -}}
{{- else if .Values.singleNamespaceInstall -}}
{{- .Release.Namespace -}}
{{- end -}}
{{- end -}}

{{/* The settings only the config file carries (plugins), as YAML; empty when none. */}}
{{- define "wasmray.pluginSettings" -}}
{{- with .Values.plugins.bindings }}
bindings:
{{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.plugins.config }}
pluginConfig:
{{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.plugins.allowances }}
pluginAllowances:
{{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}
