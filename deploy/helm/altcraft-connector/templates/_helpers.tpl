{{/*
Names. With the release named "altcraft-connector" every object gets the name the Kustomize base
uses; otherwise "<release>-altcraft-connector", like most charts.
*/}}
{{- define "altcraft-connector.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "altcraft-connector.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "altcraft-connector.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Selector labels: never change them after the first install (selectors are immutable). */}}
{{- define "altcraft-connector.selectorLabels" -}}
app.kubernetes.io/name: {{ include "altcraft-connector.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Labels of every object and pod: the Kustomize base's three, plus Helm's bookkeeping. */}}
{{- define "altcraft-connector.labels" -}}
helm.sh/chart: {{ include "altcraft-connector.chart" . }}
{{ include "altcraft-connector.selectorLabels" . }}
app.kubernetes.io/component: kafka-consumer
app.kubernetes.io/part-of: altcraft-kafka-connector
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "altcraft-connector.podLabels" -}}
{{ include "altcraft-connector.selectorLabels" . }}
app.kubernetes.io/component: kafka-consumer
app.kubernetes.io/part-of: altcraft-kafka-connector
{{- with .Values.podLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "altcraft-connector.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "altcraft-connector.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "altcraft-connector.altcraftSecret" -}}
{{- default (printf "%s-altcraft" (include "altcraft-connector.fullname" .)) .Values.secrets.altcraft.name }}
{{- end }}

{{- define "altcraft-connector.kafkaSecret" -}}
{{- default (printf "%s-kafka" (include "altcraft-connector.fullname" .)) .Values.secrets.kafka.name }}
{{- end }}

{{/* The image reference; a digest, when given, pins it (the tag then only documents it). */}}
{{- define "altcraft-connector.image" -}}
{{- $tag := .Values.image.tag | default .Chart.AppVersion }}
{{- if .Values.image.digest }}
{{- printf "%s:%s@%s" .Values.image.repository $tag .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository $tag }}
{{- end }}
{{- end }}

{{/* observability.port of the connector config: the container port, probes and scrapers use it. */}}
{{- define "altcraft-connector.metricsPort" -}}
{{- $obs := .Values.config.observability | default dict }}
{{- $obs.port | default 9108 | int }}
{{- end }}

{{/* The drain budget (shutdown.drain_timeout_s, connector default 25 s). */}}
{{- define "altcraft-connector.drainSeconds" -}}
{{- $shutdown := .Values.config.shutdown | default dict }}
{{- $shutdown.drain_timeout_s | default 25 | int }}
{{- end }}
