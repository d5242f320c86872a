{{/* Names, labels and image references shared by every template. */}}

{{- define "tessera.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "tessera.fullname" -}}
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

{{- define "tessera.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "tessera.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: tessera
{{- end }}

{{/* Selector labels of one component: (dict "ctx" . "component" "scheduler"). */}}
{{- define "tessera.selectorLabels" -}}
app.kubernetes.io/name: {{ include "tessera.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "tessera.componentLabels" -}}
{{ include "tessera.labels" .ctx }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "tessera.schedulerFullname" -}}
{{- printf "%s-scheduler" (include "tessera.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "tessera.agentFullname" -}}
{{- printf "%s-agent" (include "tessera.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "tessera.schedulerServiceAccount" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "tessera.schedulerFullname" .) .Values.serviceAccount.schedulerName }}
{{- else }}
{{- required "serviceAccount.schedulerName is required when serviceAccount.create=false" .Values.serviceAccount.schedulerName }}
{{- end }}
{{- end }}

{{- define "tessera.agentServiceAccount" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "tessera.agentFullname" .) .Values.serviceAccount.agentName }}
{{- else }}
{{- required "serviceAccount.agentName is required when serviceAccount.create=false" .Values.serviceAccount.agentName }}
{{- end }}
{{- end }}

{{- define "tessera.webhookName" -}}
{{- printf "%s-webhook" (include "tessera.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "tessera.certSecretName" -}}
{{- default (printf "%s-scheduler-tls" (include "tessera.fullname" .)) .Values.webhook.certSecretName | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Image reference: (dict "ctx" . "image" .Values.scheduler.image). */}}
{{- define "tessera.image" -}}
{{- $tag := .image.tag | default .ctx.Values.image.tag | default .ctx.Chart.AppVersion }}
{{- printf "%s/%s:%s" .ctx.Values.image.registry .image.repository $tag }}
{{- end }}

{{- define "tessera.kubeSchedulerImage" -}}
{{- $v := .Capabilities.KubeVersion }}
{{- $tag := .Values.scheduler.kubeScheduler.image.tag | default .Values.scheduler.kubeScheduler.imageTag | default (printf "v%s.%s.%s" $v.Major ($v.Minor | trimSuffix "+") (regexReplaceAll "^v?[0-9]+\\.[0-9]+\\.([0-9]+).*$" $v.Version "${1}")) }}
{{- printf "%s:%s" .Values.scheduler.kubeScheduler.image.repository $tag }}
{{- end }}

{{/* All scheduler names: the main one then the extra profiles, deduplicated. */}}
{{- define "tessera.schedulerNames" -}}
{{- $names := list .Values.scheduler.name }}
{{- range .Values.scheduler.extraNames }}{{ if not (has . $names) }}{{ $names = append $names . }}{{ end }}{{ end }}
{{- toJson $names }}
{{- end }}

{{/* The GPU resource names as a CEL list literal, for the webhooks' matchConditions. */}}
{{- define "tessera.gpuResourceCEL" -}}
{{- $r := .Values.resourceNames }}
{{- $q := list }}
{{- range (list $r.gpu $r.memory $r.memoryPercentage $r.cores $r.priority) }}{{ $q = append $q (printf "'%s'" .) }}{{ end }}
{{- printf "[%s]" (join ", " $q) }}
{{- end }}

{{/* CEL: the pod asks for a GPU resource in any container, init container, limit or request. */}}
{{- define "tessera.gpuPodCEL" -}}
{{- $names := include "tessera.gpuResourceCEL" . }}
{{- $one := printf "(has(c.resources.limits) && c.resources.limits.exists(k, k in %s)) || (has(c.resources.requests) && c.resources.requests.exists(k, k in %s))" $names $names }}
{{- printf "object.spec.containers.exists(c, %s) || (has(object.spec.initContainers) && object.spec.initContainers.exists(c, %s))" $one $one }}
{{- end }}

{{/* Tessera's own pod annotations (src/kube/annotations.h), as a CEL list literal. */}}
{{- define "tessera.ownAnnotationsCEL" -}}
['tessera.dev/assigned-node','tessera.dev/devices','tessera.dev/init-devices','tessera.dev/bind-time','tessera.dev/allocation-state','hami.io/vgpu-devices-allocated','hami.io/bind-phase','hami.io/vgpu-node','tessera.dev/container-settings']
{{- end }}

{{/* The usernames that may change those annotations on a pod (comma-separated): the scheduler's and the
agent's ServiceAccounts, then webhook.trustedUsers. */}}
{{- define "tessera.trustedUsers" -}}
{{- $ns := .Release.Namespace }}
{{- $u := list (printf "system:serviceaccount:%s:%s" $ns (include "tessera.schedulerServiceAccount" .)) (printf "system:serviceaccount:%s:%s" $ns (include "tessera.agentServiceAccount" .)) }}
{{- range .Values.webhook.trustedUsers }}
{{- if or (not .) (contains "'" .) (contains "\\" .) (contains "\"" .) (contains "," .) }}
{{- fail (printf "webhook.trustedUsers: %q is not a username (empty, or has a quote, backslash or comma)" .) }}
{{- end }}
{{- if not (has . $u) }}{{ $u = append $u . }}{{ end }}
{{- end }}
{{- join "," $u }}
{{- end }}

{{/* CEL (src/scheduler/webhook.cc ForbiddenEnvCondition): a container of the given lists sets
NVIDIA_VISIBLE_DEVICES, CUDA_VISIBLE_DEVICES, LD_PRELOAD or TESSERA_* (env, or an envFrom prefix that can
produce one). Called with (dict "lists" (list ...)). */}}
{{- define "tessera.forbiddenEnvCEL" -}}
{{- $names := "['NVIDIA_VISIBLE_DEVICES','CUDA_VISIBLE_DEVICES','LD_PRELOAD']" }}
{{- $one := printf "(has(c.env) && c.env.exists(e, e.name in %s || e.name.startsWith('TESSERA_'))) || (has(c.envFrom) && c.envFrom.exists(f, has(f.prefix) && f.prefix != '' && (f.prefix.startsWith('TESSERA_') || ['NVIDIA_VISIBLE_DEVICES','CUDA_VISIBLE_DEVICES','LD_PRELOAD','TESSERA_'].exists(n, n.startsWith(f.prefix)))))" $names }}
{{- $parts := list }}
{{- range .lists }}{{ $parts = append $parts (printf "(has(object.spec.%s) && object.spec.%s.exists(c, %s))" . . $one) }}{{ end }}
{{- printf "(%s)" (join " || " $parts) }}
{{- end }}

{{/* CEL for the validating webhook (src/scheduler/webhook.cc ValidatingMatchCondition): a CREATE of a pod
that asks for a GPU, sets one of our annotations or (outside the release namespace) a forbidden variable;
an UPDATE by anyone but the trusted users that sets, changes or removes one of our annotations, or that
adds an ephemeral container setting a forbidden variable. */}}
{{- define "tessera.validatingCEL" -}}
{{- $own := include "tessera.ownAnnotationsCEL" . }}
{{- $users := list }}
{{- range (splitList "," (include "tessera.trustedUsers" .)) }}{{ $users = append $users (printf "'%s'" .) }}{{ end }}
{{- $hn := "(has(object.metadata.annotations) && k in object.metadata.annotations)" }}
{{- $ho := "(has(oldObject.metadata.annotations) && k in oldObject.metadata.annotations)" }}
{{- $changed := printf "%s.exists(k, %s != %s || (%s && %s && object.metadata.annotations[k] != oldObject.metadata.annotations[k]))" $own $hn $ho $hn $ho }}
{{- $sets := printf "(has(object.metadata.annotations) && %s.exists(k, k in object.metadata.annotations))" $own }}
{{- $outside := printf "request.namespace != '%s'" .Release.Namespace }}
{{- $envCreate := printf "(%s && %s)" $outside (include "tessera.forbiddenEnvCEL" (dict "lists" (list "initContainers" "containers" "ephemeralContainers"))) }}
{{- $envEphemeral := printf "(has(request.subResource) && request.subResource == 'ephemeralcontainers' && %s && %s)" $outside (include "tessera.forbiddenEnvCEL" (dict "lists" (list "ephemeralContainers"))) }}
{{- printf "request.operation == 'UPDATE' ? ((!(request.userInfo.username in [%s]) && %s) || %s) : (%s || %s || %s)" (join "," $users) $changed $envEphemeral (include "tessera.gpuPodCEL" .) $sets $envCreate }}
{{- end }}

{{/* The allocation path this release runs: "dra" or "extender" (mode auto resolved against the API server). */}}
{{- define "tessera.mode" -}}
{{- $m := .Values.mode | default "extender" }}
{{- if not (has $m (list "dra" "extender" "auto")) }}
{{- fail (printf "mode is %q; allowed: dra, extender, auto" $m) }}
{{- end }}
{{- if eq $m "auto" }}
{{- if and (.Capabilities.APIVersions.Has "resource.k8s.io/v1/ResourceSlice") (semverCompare ">=1.36.0-0" .Capabilities.KubeVersion.Version) }}dra{{ else }}extender{{ end }}
{{- else }}{{ $m }}{{ end }}
{{- end }}
