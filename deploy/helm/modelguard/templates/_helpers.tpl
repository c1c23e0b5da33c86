{{- define "modelguard.name" -}}
{{- .Chart.Name -}}
{{- end -}}

{{- define "modelguard.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "modelguard.selectorLabels" -}}
app.kubernetes.io/name: {{ include "modelguard.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "modelguard.labels" -}}
{{ include "modelguard.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "modelguard.secretName" -}}
{{- .Values.secret.existingSecret | default (printf "%s-keys" (include "modelguard.fullname" .)) -}}
{{- end -}}
