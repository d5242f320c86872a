{{/* HAMi's value names mapped onto Tessera's (values.yaml, "HAMi's value names"), and the HAMi keys that
are refused with the Tessera key to use. Every template reads the effective values through these. */}}

{{- define "tessera.split" -}}
{{- if not (kindIs "invalid" .Values.devicePlugin.deviceSplitCount) }}{{ .Values.devicePlugin.deviceSplitCount }}{{ else }}{{ .Values.agent.split }}{{ end }}
{{- end }}

{{- define "tessera.memoryScaling" -}}
{{- if not (kindIs "invalid" .Values.devicePlugin.deviceMemoryScaling) }}{{ .Values.devicePlugin.deviceMemoryScaling }}{{ else }}{{ .Values.agent.memoryScaling }}{{ end }}
{{- end }}

{{- define "tessera.coreScaling" -}}
{{- if not (kindIs "invalid" .Values.devicePlugin.deviceCoreScaling) }}{{ .Values.devicePlugin.deviceCoreScaling }}{{ else }}{{ .Values.agent.coreScaling }}{{ end }}
{{- end }}

{{- define "tessera.nodePolicy" -}}
{{- .Values.scheduler.defaultSchedulerPolicy.nodeSchedulerPolicy | default .Values.scheduler.nodePolicy }}
{{- end }}

{{- define "tessera.gpuPolicy" -}}
{{- .Values.scheduler.defaultSchedulerPolicy.gpuSchedulerPolicy | default .Values.scheduler.gpuPolicy }}
{{- end }}

{{/* agent.nodeSelector merged with HAMi's two node selectors (YAML, possibly empty). */}}
{{- define "tessera.agentNodeSelector" -}}
{{- $s := merge (dict) (.Values.agent.nodeSelector | default dict) (.Values.devicePlugin.nvidiaNodeSelector | default dict) (.Values.nvidiaNodeSelector | default dict) }}
{{- if $s }}{{ toYaml $s }}{{ end }}
{{- end }}

{{/* Checks; renders nothing. */}}
{{- define "tessera.hamiChecks" -}}
{{- $refused := dict
  "resourceName" "resourceNames.gpu"
  "resourceMem" "resourceNames.memory"
  "resourceMemPercentage" "resourceNames.memoryPercentage"
  "resourceCores" "resourceNames.cores"
  "resourcePriority" "resourceNames.priority"
  "schedulerName" "scheduler.name" }}
{{- range $k, $tessera := $refused }}
{{- if hasKey $.Values $k }}
{{- fail (printf "%s is HAMi's value name; Tessera's is %s (set that instead)" $k $tessera) }}
{{- end }}
{{- end }}
{{- $split := int (include "tessera.split" .) }}
{{- if and (not (kindIs "invalid" .Values.devicePlugin.deviceSplitCount)) (or (lt $split 1) (gt $split 64)) }}
{{- fail (printf "devicePlugin.deviceSplitCount (HAMi's name for agent.split) is %v; allowed: 1..64" (include "tessera.split" .)) }}
{{- end }}
{{- range $name, $v := dict "agent.memoryScaling (HAMi: devicePlugin.deviceMemoryScaling)" (include "tessera.memoryScaling" .) "agent.coreScaling (HAMi: devicePlugin.deviceCoreScaling)" (include "tessera.coreScaling" .) }}
{{- if or (lt (float64 $v) 0.1) (gt (float64 $v) 16.0) }}
{{- fail (printf "%s is %v; allowed: 0.1..16" $name $v) }}
{{- end }}
{{- end }}
{{- if not (has .Values.agent.computeMode (list "time-sliced" "spatial")) }}
{{- fail (printf "agent.computeMode is %q; allowed: time-sliced, spatial" .Values.agent.computeMode) }}
{{- end }}
{{- end }}
