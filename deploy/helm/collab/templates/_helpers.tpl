{{/*
Names, labels and the pieces every workload shares. Every template name is prefixed
with "collab." so that a parent chart's helpers never collide with these.
*/}}

{{/* The chart name, or nameOverride. */}}
{{- define "collab.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The prefix of every resource name: the release name, plus the chart name unless the
release name already holds it. Kept to 45 characters so that suffixes such as
"-gateway" and "-migrate" stay within the 63 of a label value. */}}
{{- define "collab.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 45 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 45 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 45 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* chart-version, for the helm.sh/chart label. */}}
{{- define "collab.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels of every resource; pass (dict "root" $ "component" "editor"), the component
being optional for shared resources. */}}
{{- define "collab.labels" -}}
helm.sh/chart: {{ include "collab.chart" .root }}
{{ include "collab.selectorLabels" . }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/part-of: collab
{{- with .root.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* The labels selectors match on: name, instance and component. */}}
{{- define "collab.selectorLabels" -}}
app.kubernetes.io/name: {{ include "collab.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
{{- with .component }}
app.kubernetes.io/component: {{ . }}
{{- end }}
{{- end }}

{{/* Resource name of a component: <fullname>-<component>. */}}
{{- define "collab.componentName" -}}
{{- printf "%s-%s" (include "collab.fullname" .root) .component }}
{{- end }}

{{/* The Secret the chart generates (keys named after the environment variables). */}}
{{- define "collab.secretName" -}}
{{- include "collab.fullname" . }}
{{- end }}

{{- define "collab.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "collab.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* registry/repository:tag[@digest]; pass (dict "root" $ "image" .Values.editor.image). */}}
{{- define "collab.image" -}}
{{- $repository := .image.repository }}
{{- with .root.Values.imageRegistry }}
{{- $repository = printf "%s/%s" (trimSuffix "/" .) $repository }}
{{- end }}
{{- $tag := .image.tag | default .root.Chart.AppVersion | toString }}
{{- if .image.digest }}
{{- printf "%s:%s@%s" $repository $tag .image.digest }}
{{- else }}
{{- printf "%s:%s" $repository $tag }}
{{- end }}
{{- end }}

{{/* The editor's headless Service, host:port, as the gateway resolves it. */}}
{{- define "collab.editorUpstream" -}}
{{- printf "%s.%s.svc.%s:%v" (include "collab.componentName" (dict "root" . "component" "editor")) .Release.Namespace .Values.clusterDomain .Values.editor.port }}
{{- end }}

{{/* True ("true") when the chart's own Secret holds at least one key. */}}
{{- define "collab.ownSecretNeeded" -}}
{{- $v := .Values }}
{{- if or (not $v.django.existingSecret) (not $v.auth.existingSecret) (and $v.database.url (not $v.database.existingSecret)) (and (not $v.redis.existingSecret) (or $v.redis.url $v.redis.bundled.enabled)) }}true{{ end }}
{{- end }}

{{/* One environment variable read from a Secret: the existing one when named, else the
chart's (whose keys are the variable names). Pass (dict "root" $ "env" NAME
"existingSecret" NAME "existingSecretKey" KEY). */}}
{{- define "collab.secretEnvVar" -}}
- name: {{ .env }}
  valueFrom:
    secretKeyRef:
      {{- if .existingSecret }}
      name: {{ .existingSecret }}
      key: {{ .existingSecretKey }}
      {{- else }}
      name: {{ include "collab.secretName" .root }}
      key: {{ .env }}
      {{- end }}
{{- end }}

{{- define "collab.env.djangoSecretKey" -}}
{{ include "collab.secretEnvVar" (dict "root" . "env" "DJANGO_SECRET_KEY" "existingSecret" .Values.django.existingSecret "existingSecretKey" .Values.django.existingSecretKey) }}
{{- end }}

{{- define "collab.env.tokenSecret" -}}
{{ include "collab.secretEnvVar" (dict "root" . "env" "COLLAB_TOKEN_SECRET" "existingSecret" .Values.auth.existingSecret "existingSecretKey" .Values.auth.existingSecretKey) }}
{{- end }}

{{- define "collab.env.databaseUrl" -}}
{{ include "collab.secretEnvVar" (dict "root" . "env" "DATABASE_URL" "existingSecret" .Values.database.existingSecret "existingSecretKey" .Values.database.existingSecretKey) }}
{{- end }}

{{- define "collab.env.redisUrl" -}}
{{ include "collab.secretEnvVar" (dict "root" . "env" "REDIS_URL" "existingSecret" .Values.redis.existingSecret "existingSecretKey" .Values.redis.existingSecretKey) }}
{{- end }}

{{/* Checksums of the configuration a workload reads, as pod annotations: a change rolls
the pods. Pass (dict "root" $ "config" "editor-configmap.yaml"). */}}
{{- define "collab.checksums" -}}
{{- with .config }}
checksum/config: {{ include (print $.root.Template.BasePath "/" .) $.root | sha256sum }}
{{- end }}
{{- if include "collab.ownSecretNeeded" .root }}
checksum/secret: {{ include (print .root.Template.BasePath "/secret.yaml") .root | sha256sum }}
{{- end }}
{{- end }}

{{/* The annotations block of a pod template: the checksums plus "extra" (a map), or
nothing at all. Pass (dict "root" $ "config" FILE "extra" MAP). */}}
{{- define "collab.podAnnotations" -}}
{{- $annotations := include "collab.checksums" . | fromYaml | default dict }}
{{- $annotations = merge $annotations (.extra | default dict) }}
{{- with $annotations }}
annotations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/* Pod-level settings every pod of the chart shares; pass (dict "root" $), with
"serviceAccountName" to replace the release's ServiceAccount. */}}
{{- define "collab.podCommon" -}}
serviceAccountName: {{ .serviceAccountName | default (include "collab.serviceAccountName" .root) }}
automountServiceAccountToken: false
securityContext:
  {{- toYaml .root.Values.podSecurityContext | nindent 2 }}
{{- with .root.Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/* The writable /tmp of a read-only root filesystem. */}}
{{- define "collab.tmpVolume" -}}
- name: tmp
  emptyDir:
    sizeLimit: 128Mi
{{- end }}

{{- define "collab.tmpMount" -}}
- name: tmp
  mountPath: /tmp
{{- end }}

{{/* Anti-affinity and spread of a component's pods; pass (dict "root" $ "component"
"editor" "values" .Values.editor). */}}
{{- define "collab.scheduling" -}}
{{- $selector := include "collab.selectorLabels" . | fromYaml }}
{{- if .values.affinity }}
affinity:
  {{- toYaml .values.affinity | nindent 2 }}
{{- else if eq .values.podAntiAffinity "hard" }}
affinity:
  podAntiAffinity:
    requiredDuringSchedulingIgnoredDuringExecution:
      - topologyKey: kubernetes.io/hostname
        labelSelector:
          matchLabels:
            {{- toYaml $selector | nindent 12 }}
{{- else if eq .values.podAntiAffinity "soft" }}
affinity:
  podAntiAffinity:
    preferredDuringSchedulingIgnoredDuringExecution:
      - weight: 100
        podAffinityTerm:
          topologyKey: kubernetes.io/hostname
          labelSelector:
            matchLabels:
              {{- toYaml $selector | nindent 14 }}
{{- end }}
{{- with .values.topologySpreadConstraints }}
topologySpreadConstraints:
  {{- range . }}
  - {{ toYaml (merge (dict "labelSelector" (dict "matchLabels" $selector)) .) | nindent 4 | trim }}
  {{- end }}
{{- end }}
{{- with .values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .values.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- end }}

{{/* Probes on the container port "http"; pass (dict "path" "/readyz" "timing" .Values.editor.readinessProbe). */}}
{{- define "collab.probe" -}}
httpGet:
  path: {{ .path }}
  port: http
{{ toYaml .timing }}
{{- end }}

{{/* NetworkPolicy egress rules: DNS, and PostgreSQL (any address on its port unless
networkPolicy.database.to narrows it). */}}
{{- define "collab.networkPolicy.dnsEgress" -}}
- to:
    {{- toYaml .Values.networkPolicy.dns | nindent 4 }}
  ports:
    - protocol: UDP
      port: 53
    - protocol: TCP
      port: 53
{{- end }}
{{- define "collab.networkPolicy.databaseEgress" -}}
- ports:
    - protocol: TCP
      port: {{ .Values.networkPolicy.database.port }}
  {{- with .Values.networkPolicy.database.to }}
  to:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end }}

{{/* Rules that span several values; rendered (as nothing) by templates/validate.yaml. */}}
{{- define "collab.validate" -}}
{{- $v := .Values }}
{{- if not (or $v.database.url $v.database.existingSecret) }}
{{- fail "database.url or database.existingSecret is required: documents are stored in PostgreSQL" }}
{{- end }}
{{- $redisSources := 0 }}
{{- range (list $v.redis.url $v.redis.existingSecret $v.redis.bundled.enabled) }}
{{- if . }}{{ $redisSources = add1 $redisSources }}{{ end }}
{{- end }}
{{- if ne (int $redisSources) 1 }}
{{- fail "set exactly one of redis.url, redis.existingSecret or redis.bundled.enabled: editor pods share documents through Redis" }}
{{- end }}
{{- if and $v.auth.tokenSecret (lt (len $v.auth.tokenSecret) 32) }}
{{- fail "auth.tokenSecret must be at least 32 bytes (the editor refuses shorter ones, check collab.E001)" }}
{{- end }}
{{- if le (int $v.editor.terminationGracePeriodSeconds) (add $v.editor.preStopSleepSeconds $v.editor.gracefulTimeoutSeconds | int) }}
{{- fail "editor.terminationGracePeriodSeconds must exceed editor.preStopSleepSeconds + editor.gracefulTimeoutSeconds, or sockets are killed before they drain" }}
{{- end }}
{{- if le (int $v.gateway.terminationGracePeriodSeconds) (add $v.gateway.preStopSleepSeconds $v.gateway.drainSeconds | int) }}
{{- fail "gateway.terminationGracePeriodSeconds must exceed gateway.preStopSleepSeconds + gateway.drainSeconds, or sockets are killed before they drain" }}
{{- end }}
{{- range $component := list "editor" "gateway" }}
{{- $scaling := (index $v $component).autoscaling }}
{{- if and $scaling.enabled (gt (int $scaling.minReplicas) (int $scaling.maxReplicas)) }}
{{- fail (printf "%s.autoscaling.minReplicas must not exceed maxReplicas" $component) }}
{{- end }}
{{- end }}
{{- end }}
