{{- define "podmaster.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}{{ .Release.Name | trunc 63 | trimSuffix "-" }}{{- else -}}{{ printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" }}{{- end -}}
{{- end -}}

{{- define "podmaster.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "podmaster.labels" -}}
{{ include "podmaster.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "podmaster.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}{{ default (include "podmaster.fullname" .) .Values.serviceAccount.name }}{{- else -}}{{ default "default" .Values.serviceAccount.name }}{{- end -}}
{{- end -}}

{{/* The ConfigMap data: a whole ini document, or one key per option. */}}
{{- define "podmaster.configData" -}}
{{- if .Values.config.ini }}
podmaster.ini: |
{{ .Values.config.ini | indent 2 }}
{{- else }}
{{- $opts := deepCopy .Values.config.options }}
{{- if not (hasKey $opts "socket") }}{{ $_ := set $opts "socket" (printf "0.0.0.0:%v" .Values.service.port) }}{{ end }}
{{- if not (hasKey $opts "probe-socket") }}{{ $_ := set $opts "probe-socket" (printf "0.0.0.0:%v" .Values.probes.port) }}{{ end }}
{{- $limits := (.Values.resources | default dict).limits | default dict }}
{{- if not (hasKey $opts "processes") }}{{ $_ := set $opts "processes" (ternary "auto" "2" (hasKey $limits "cpu")) }}{{ end }}
{{- if and .Values.memoryWatermark (hasKey $limits "memory") (not (hasKey $opts "reload-on-cgroup-memory")) }}{{ $_ := set $opts "reload-on-cgroup-memory" .Values.memoryWatermark }}{{ end }}
{{- range $k, $v := $opts }}
{{ $k }}: {{ if kindIs "slice" $v }}{{ join "\n" $v | quote }}{{ else }}{{ $v | toString | quote }}{{ end }}
{{- end }}
{{- end }}
{{- end -}}

{{/* terminationGracePeriodSeconds = drain-delay + worker-reload-mercy + margin
     (options mode reads them from config.options; defaults 0 and 25). */}}
{{- define "podmaster.grace" -}}
{{- $o := .Values.config.options | default dict -}}
{{- $drain := index $o "drain-delay" | default 0 | float64 -}}
{{- $mercy := index $o "worker-reload-mercy" | default 25 | float64 -}}
{{- add (ceil (addf $drain $mercy)) .Values.terminationGraceMargin -}}
{{- end -}}
