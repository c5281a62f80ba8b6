{{/* Names and labels shared by every template. */}}
{{- define "delf.fullname" -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 50 | trimSuffix "-" -}}
{{- end -}}

{{- define "delf.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "delf.selector" -}}
app.kubernetes.io/name: {{ .root.Chart.Name }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "delf.image" -}}
{{- printf "%s:%s" .repository .tag -}}
{{- end -}}

{{- define "delf.tokenSecret" -}}
{{- if .Values.token.existingSecret -}}{{ .Values.token.existingSecret }}{{- else -}}{{ include "delf.fullname" . }}-token{{- end -}}
{{- end -}}

{{/* The headless service of the coordinators, and the address of coordinator i (0-based ordinal). */}}
{{- define "delf.coordinatorAddress" -}}
{{- $name := include "delf.fullname" .root -}}
{{- printf "%s-coordinator-%d.%s-coordinator-headless.%s.svc.cluster.local:%d" $name (int .i) $name .root.Release.Namespace (int .root.Values.coordinator.port) -}}
{{- end -}}

{{/* Environment every delf container gets: the configuration, the token, object-store settings, its pod. */}}
{{- define "delf.env" -}}
- name: DELF_CONFIG
  value: /etc/delf/delf.toml
- name: DELF_CLUSTER__TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ include "delf.tokenSecret" . }}
      key: token
- name: POD_NAME
  valueFrom: {fieldRef: {fieldPath: metadata.name}}
- name: POD_IP
  valueFrom: {fieldRef: {fieldPath: status.podIP}}
{{- range $k, $v := .Values.objectStore.env }}
- name: {{ $k }}
  value: {{ $v | quote }}
{{- end }}
{{- end -}}

{{- define "delf.envFrom" -}}
{{- if .Values.objectStore.existingSecret }}
envFrom:
  - secretRef:
      name: {{ .Values.objectStore.existingSecret }}
{{- end }}
{{- end -}}

{{/* gRPC health of the role on `port`, through `delf health` (works with TLS and mutual TLS). */}}
{{- define "delf.probes" -}}
readinessProbe:
  exec:
    command: ["delf", "-q", "health", "127.0.0.1:{{ .port }}"]
  periodSeconds: 10
  timeoutSeconds: 5
livenessProbe:
  exec:
    command: ["delf", "-q", "health", "127.0.0.1:{{ .port }}"]
  initialDelaySeconds: 30
  periodSeconds: 20
  timeoutSeconds: 5
  failureThreshold: 6
{{- end -}}

{{/* TLS (values `tls`): the certificate Secret mounted into every pod, its paths in [cluster.tls]. */}}
{{- define "delf.tlsMount" -}}
{{- if .Values.tls.enabled }}
- {name: tls, mountPath: /etc/delf-tls, readOnly: true}
{{- end }}
{{- end -}}

{{- define "delf.tlsVolume" -}}
{{- if .Values.tls.enabled }}
- name: tls
  secret: {secretName: {{ required "tls.enabled needs tls.existingSecret: a Secret with tls.crt, tls.key and ca.crt (docs/operations.md)" .Values.tls.existingSecret | quote }}}
{{- end }}
{{- end -}}
