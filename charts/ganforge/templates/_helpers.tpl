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

{{/* The operator's rights on namespaced objects: in a ClusterRole, or in a Role per watched namespace. */}}
{{- define "ganforge.namespacedRules" }}
  # The jobs themselves: watch them, and patch metadata (finalizer, kopf's annotations) and status.
  - apiGroups: [ganforge.io]
    resources: [gantrainingjobs]
    verbs: [get, list, watch, patch]
  - apiGroups: [ganforge.io]
    resources: [gantrainingjobs/status]
    verbs: [get, patch]
  # The served models: watch them, patch metadata and status; a job's spec.rollout creates its
  # service or points it at the job.
  - apiGroups: [ganforge.io]
    resources: [ganinferenceservices]
    verbs: [get, list, watch, create, patch]
  - apiGroups: [ganforge.io]
    resources: [ganinferenceservices/status]
    verbs: [get, patch]
  # The gang and the export pod: created and deleted, watched for disruptions; Triton pods watched.
  - apiGroups: [""]
    resources: [pods]
    verbs: [get, list, watch, create, delete]
  # One Triton Deployment per revision: created, updated, removed once retired or failed.
  - apiGroups: [apps]
    resources: [deployments]
    verbs: [get, list, watch, create, patch, delete]
  # Rendezvous and revision Services, the stable Service whose selector moves traffic.
  - apiGroups: [""]
    resources: [services]
    verbs: [get, create, patch, delete]
  # With spec.gateway, each service's HTTPRoute: its weights move the canary's traffic step by step;
  # its status says whether the Gateway took the weights up.
  - apiGroups: [gateway.networking.k8s.io]
    resources: [httproutes]
    verbs: [get, create, patch]
  # Checkpoint claims and model repositories; a job's own claim is deleted with it only when
  # spec.checkpoint.retain is false.
  - apiGroups: [""]
    resources: [persistentvolumeclaims]
    verbs: [get, create, delete]
  - apiGroups: [""]
    resources: [configmaps]
    verbs: [get, create, update]
  # Each job's trainer identity, allowed only to patch that job's status. The operator can grant
  # this because it holds the same permission itself (no `escalate` or `bind` needed).
  - apiGroups: [""]
    resources: [serviceaccounts]
    verbs: [get, create]
  - apiGroups: [rbac.authorization.k8s.io]
    resources: [roles, rolebindings]
    verbs: [get, create]
  # Each job's NetworkPolicy: only its own pods reach its pods.
  - apiGroups: [networking.k8s.io]
    resources: [networkpolicies]
    verbs: [get, create]
  # Events on jobs and services for users.
  - apiGroups: ["", events.k8s.io]
    resources: [events]
    verbs: [create, patch]
{{- end -}}

{{/* Where the PodMonitors look: the watched namespaces, or all. */}}
{{- define "ganforge.podMonitorNamespaces" -}}
namespaceSelector:
{{- if .Values.watchNamespaces }}
  matchNames: {{ toJson .Values.watchNamespaces }}
{{- else }}
  any: true
{{- end }}
{{- end -}}
