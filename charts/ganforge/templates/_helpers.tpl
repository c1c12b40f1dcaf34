{{/* The release's name for its objects: the release name, or ganforge-<release> when it lacks "ganforge". */}}
{{- define "ganforge.fullname" -}}
{{- if contains "ganforge" .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "ganforge-%s" .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "ganforge.labels" -}}
app.kubernetes.io/name: ganforge-operator
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/part-of: ganforge
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "ganforge.selector" -}}
app.kubernetes.io/name: ganforge-operator
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "ganforge.serviceAccountName" -}}
{{- default (include "ganforge.fullname" .) .Values.serviceAccount.name -}}
{{- end -}}
