{{/* The chart name, at most 63 characters (a DNS label). */}}
{{- define "frugal.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The full name: release-chart, or the release name when it already contains the chart name. */}}
{{- define "frugal.fullname" -}}
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

{{/* Chart name and version, for the helm.sh/chart label. */}}
{{- define "frugal.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels that select the operator's pods; never change them after a release. */}}
{{- define "frugal.selectorLabels" -}}
app.kubernetes.io/name: {{ include "frugal.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{/* Standard labels on every object. */}}
{{- define "frugal.labels" -}}
helm.sh/chart: {{ include "frugal.chart" . }}
{{ include "frugal.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: frugal
{{- end }}

{{/* The operator's ServiceAccount name. */}}
{{- define "frugal.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "frugal.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The full image (the Containerfile's target full): the operator and compression Jobs. */}}
{{- define "frugal.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/* The serving image (target serving, no torch): serving pods, the front, profiling and batch Jobs. */}}
{{- define "frugal.servingImage" -}}
{{- default (printf "%s:%s-serving" .Values.image.repository (default .Chart.AppVersion .Values.image.tag)) .Values.operator.servingImage }}
{{- end }}

{{/* The gpu image (target gpu): every pod on an nvidia-gpu HardwareProfile that names no image. */}}
{{- define "frugal.gpuImage" -}}
{{- default (printf "%s:%s-gpu" .Values.image.repository (default .Chart.AppVersion .Values.image.tag)) .Values.operator.gpuImage }}
{{- end }}

{{/* The operator's default artifact storage: operator.storageUri, or the chart's claim. */}}
{{- define "frugal.storageUri" -}}
{{- $uri := default (printf "pvc://%s/" .Values.artifacts.claimName) .Values.operator.storageUri }}
{{- if and (hasPrefix "file://" $uri) (not .Values.operator.allowHostPath) }}
{{- fail (printf "operator.storageUri %q is a directory of the node (hostPath), which the operator refuses unless operator.allowHostPath=true (single-node development clusters only): use pvc://%s/" $uri .Values.artifacts.claimName) }}
{{- end }}
{{- $uri }}
{{- end }}

{{/*
"true" when the default storage is a PVC, which the operator pod then mounts so it can read the
artifacts it plans from. Fails when it names a claim other than artifacts.claimName.
*/}}
{{- define "frugal.mountsClaim" -}}
{{- $uri := include "frugal.storageUri" . }}
{{- if hasPrefix "pvc://" $uri }}
{{- $claim := regexReplaceAll "^pvc://([^/]*).*$" $uri "${1}" }}
{{- if ne $claim .Values.artifacts.claimName }}
{{- fail (printf "operator.storageUri %q names the claim %q, but the operator mounts only artifacts.claimName %q: set artifacts.claimName to %q (and artifacts.create=false if that claim exists already)" $uri $claim .Values.artifacts.claimName $claim) }}
{{- end }}
{{- true }}
{{- end }}
{{- end }}

{{/* Where the operator pod sees the claim: <pvcRoot>/<claimName>. */}}
{{- define "frugal.claimMountPath" -}}
{{- printf "%s/%s" .Values.artifacts.pvcRoot .Values.artifacts.claimName }}
{{- end }}

{{/* The model cache's pods: labels of their own, so no selector of the operator's pods matches them. */}}
{{- define "frugal.modelCacheSelectorLabels" -}}
app.kubernetes.io/name: {{ include "frugal.name" . }}-model-cache
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}
