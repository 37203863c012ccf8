{{/* Labels on every object: the one kustomize sets in manifests/, and Helm's own. */}}
{{- define "tenantgw.labels" -}}
app.kubernetes.io/part-of: tenantgw
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end -}}

{{/* repository:tag, or repository@digest when a digest is given. */}}
{{- define "tenantgw.image" -}}
{{- if .digest -}}
{{ .repository }}@{{ .digest }}
{{- else -}}
{{ .repository }}:{{ required "an image needs a tag or a digest" .tag }}
{{- end -}}
{{- end -}}

{{/* The log format, json or text (values.logFormat); anything else fails the render. */}}
{{- define "tenantgw.logFormat" -}}
{{- if not (has .Values.logFormat (list "json" "text")) -}}
{{- fail (printf "logFormat must be json or text, not %v" .Values.logFormat) -}}
{{- end -}}
{{- .Values.logFormat -}}
{{- end -}}

{{/* kopf's --log-format for values.logFormat: json, or its full text format. */}}
{{- define "tenantgw.kopfLogFormat" -}}
{{- if eq (include "tenantgw.logFormat" .) "json" }}json{{ else }}full{{ end -}}
{{- end -}}
