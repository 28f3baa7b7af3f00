{{/* The image <registry>/<name>:<tag>; a name containing "/" is used as it is. */}}
{{- define "daprs.image" -}}
{{- $name := index . 0 -}}
{{- $root := index . 1 -}}
{{- $tag := $root.Values.global.tag | default $root.Chart.AppVersion -}}
{{- if contains "/" $name -}}
{{- if contains ":" (last (splitList "/" $name)) -}}{{ $name }}{{- else -}}{{ $name }}:{{ $tag }}{{- end -}}
{{- else -}}
{{ $root.Values.global.registry }}/{{ $name }}:{{ $tag }}
{{- end -}}
{{- end -}}

{{/* Labels of every object; `component` is sentry, operator, injector, ... */}}
{{- define "daprs.labels" -}}
{{- $component := index . 0 -}}
{{- $root := index . 1 -}}
app.kubernetes.io/name: {{ $root.Chart.Name }}
app.kubernetes.io/instance: {{ $root.Release.Name }}
app.kubernetes.io/version: {{ $root.Chart.AppVersion | quote }}
app.kubernetes.io/component: {{ $component }}
app.kubernetes.io/part-of: daprs
app.kubernetes.io/managed-by: {{ $root.Release.Service }}
helm.sh/chart: {{ printf "%s-%s" $root.Chart.Name $root.Chart.Version }}
{{- with $root.Values.global.labels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* imagePullSecrets from a name, a list of names or a list of {name}. */}}
{{- define "daprs.imagePullSecrets" -}}
{{- $secrets := .Values.global.imagePullSecrets -}}
{{- if $secrets }}
imagePullSecrets:
{{- if kindIs "string" $secrets }}
  - name: {{ $secrets }}
{{- else }}
{{- range $secrets }}
{{- if kindIs "string" . }}
  - name: {{ . }}
{{- else }}
  - name: {{ .name }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
{{- end -}}

{{/* sentry's address for the control plane. */}}
{{- define "daprs.sentryAddress" -}}
{{- if .Values.testing.controlPlaneHost -}}
{{ .Values.testing.controlPlaneHost }}:{{ .Values.dapr_sentry.ports.targetPort }}
{{- else if .Values.global.mtls.sentryAddress -}}
{{ .Values.global.mtls.sentryAddress }}
{{- else -}}
dapr-sentry.{{ .Release.Namespace }}.svc{{ .Values.global.dnsSuffix }}:{{ .Values.dapr_sentry.ports.port }}
{{- end -}}
{{- end -}}

{{/* The Component ValidatingWebhookConfiguration: rendered in operator.yaml, its name passed to
the operator (--component-webhook-name) and its RBAC limited to it. */}}
{{- define "daprs.componentWebhookName" -}}
daprs-component-validator
{{- end -}}

{{/* The audience of the control plane's tokens for sentry (sentry's SPIFFE id). */}}
{{- define "daprs.sentryAudience" -}}
spiffe://{{ .Values.global.mtls.controlPlaneTrustDomain }}/ns/{{ .Release.Namespace }}/dapr-sentry
{{- end -}}

{{/* The metrics port of a component (`values` of the component, root). */}}
{{- define "daprs.metricsPort" -}}
{{- $values := index . 0 -}}
{{- $root := index . 1 -}}
{{- $values.metricsPort | default $root.Values.global.prometheus.port -}}
{{- end -}}

{{/* Common flags: logging and metrics. */}}
{{- define "daprs.commonArgs" -}}
{{- $values := index . 0 -}}
{{- $root := index . 1 -}}
- --log-level={{ $values.logLevel }}
{{- if $root.Values.global.logAsJson }}
- --log-as-json
{{- end }}
- --enable-metrics={{ $root.Values.global.prometheus.enabled }}
- --metrics-port={{ include "daprs.metricsPort" (list $values $root) }}
- --healthz-port={{ $values.healthzPort }}
{{- end -}}

{{/* Pod-level settings shared by the control plane: scheduling, security, HA spreading.
     `app` is the selector label value. */}}
{{- define "daprs.podSpec" -}}
{{- $app := index . 0 -}}
{{- $root := index . 1 -}}
{{- include "daprs.imagePullSecrets" $root }}
{{- with $root.Values.global.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- with $root.Values.global.nodeSelector }}
nodeSelector:
{{ toYaml . | indent 2 }}
{{- end }}
{{- with $root.Values.global.tolerations }}
tolerations:
{{ toYaml . | indent 2 }}
{{- end }}
securityContext:
  runAsNonRoot: true
{{- with $root.Values.global.seccompProfile }}
  seccompProfile:
    type: {{ . }}
{{- end }}
affinity:
  nodeAffinity:
    requiredDuringSchedulingIgnoredDuringExecution:
      nodeSelectorTerms:
        - matchExpressions:
            - key: kubernetes.io/os
              operator: In
              values: [{{ $root.Values.global.daprControlPlaneOs }}]
{{- with $root.Values.global.daprControlPlaneArch }}
            - key: kubernetes.io/arch
              operator: In
              values: [{{ . }}]
{{- end }}
{{- if $root.Values.global.ha.enabled }}
  podAntiAffinity:
    preferredDuringSchedulingIgnoredDuringExecution:
      - weight: 100
        podAffinityTerm:
          topologyKey: {{ $root.Values.global.ha.topologyKey }}
          labelSelector:
            matchLabels:
              app: {{ $app }}
{{- end }}
{{- end -}}

{{/* A container's security context: nothing but what the binaries need. */}}
{{- define "daprs.containerSecurityContext" -}}
securityContext:
  allowPrivilegeEscalation: false
  readOnlyRootFilesystem: true
  runAsNonRoot: true
  capabilities:
    drop: [ALL]
{{- end -}}

{{/* Liveness and readiness on /healthz. */}}
{{/* Pod annotations: the control-plane component for sentry, Prometheus scraping. */}}
{{- define "daprs.podAnnotations" -}}
{{- $component := index . 0 -}}
{{- $values := index . 1 -}}
{{- $root := index . 2 -}}
dapr.io/control-plane: {{ $component }}
{{- if $root.Values.global.prometheus.enabled }}
prometheus.io/scrape: "true"
prometheus.io/port: {{ include "daprs.metricsPort" (list $values $root) | quote }}
prometheus.io/path: /
{{- end }}
{{- end -}}

{{- define "daprs.probes" -}}
livenessProbe:
  httpGet: {path: /healthz, port: healthz}
  initialDelaySeconds: 10
  periodSeconds: 10
  failureThreshold: 5
readinessProbe:
  httpGet: {path: /healthz, port: healthz}
  initialDelaySeconds: 1
  periodSeconds: 3
  failureThreshold: 3
{{- end -}}

{{/* Replicas: HA or the component's own. */}}
{{- define "daprs.replicas" -}}
{{- $values := index . 0 -}}
{{- $root := index . 1 -}}
{{- if $root.Values.global.ha.enabled -}}{{ $root.Values.global.ha.replicaCount }}{{- else -}}{{ $values.replicaCount }}{{- end -}}
{{- end -}}

{{/* A PodDisruptionBudget in HA mode: name, selector app, root. */}}
{{- define "daprs.pdb" -}}
{{- $name := index . 0 -}}
{{- $app := index . 1 -}}
{{- $component := index . 2 -}}
{{- $root := index . 3 -}}
{{- if $root.Values.global.ha.enabled }}
---
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: {{ $name }}
  namespace: {{ $root.Release.Namespace }}
  labels:
    {{- include "daprs.labels" (list $component $root) | nindent 4 }}
spec:
{{- if $root.Values.global.ha.disruption.minimumAvailable }}
  minAvailable: {{ $root.Values.global.ha.disruption.minimumAvailable }}
{{- else }}
  maxUnavailable: {{ $root.Values.global.ha.disruption.maximumUnavailable }}
{{- end }}
  selector:
    matchLabels:
      app: {{ $app }}
{{- end }}
{{- end -}}

{{/* The Service of a component: ClusterIP, or ExternalName with testing.controlPlaneHost.
     Arguments: name, app, component, ports (list of dicts name/port/targetPort/appProtocol), root. */}}
{{- define "daprs.service" -}}
{{- $name := index . 0 -}}
{{- $app := index . 1 -}}
{{- $component := index . 2 -}}
{{- $ports := index . 3 -}}
{{- $root := index . 4 -}}
apiVersion: v1
kind: Service
metadata:
  name: {{ $name }}
  namespace: {{ $root.Release.Namespace }}
  labels:
    {{- include "daprs.labels" (list $component $root) | nindent 4 }}
spec:
{{- if $root.Values.testing.controlPlaneHost }}
  type: ExternalName
  externalName: {{ $root.Values.testing.controlPlaneHost }}
{{- else }}
  type: ClusterIP
  selector:
    app: {{ $app }}
{{- end }}
  ports:
{{- range $ports }}
    - name: {{ .name }}
      port: {{ .port }}
      targetPort: {{ .targetPort }}
      protocol: TCP
      appProtocol: {{ .appProtocol }}
{{- end }}
{{- end -}}
