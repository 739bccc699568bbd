{{- define "fission-rs.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{- define "fission-rs.labels" -}}
app.kubernetes.io/name: fission-rs
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ .Chart.Name }}-{{ .Chart.Version }}
{{- end -}}

{{- define "fission-rs.selector" -}}
app.kubernetes.io/name: fission-rs
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* Environment shared by every component. */}}
{{- define "fission-rs.commonEnv" -}}
- name: FISSION_STORE
  value: kubernetes
- name: FISSION_DEFAULT_NAMESPACE
  value: {{ .Values.defaultNamespace | quote }}
- name: RUST_LOG
  value: {{ .Values.logLevel | quote }}
- name: FISSION_DATA_DIR
  value: /var/lib/fission
- name: FISSION_AUTH_TOKEN
  valueFrom:
    secretKeyRef: {name: {{ .Values.auth.tokenSecret | quote }}, key: FISSION_AUTH_TOKEN}
{{- end -}}

{{/*
The URL of one of the chart's Services, from the variables Kubernetes gives every container
(<NAME>_SERVICE_HOST/_PORT of the Services of its namespace, expanded in args as $(VAR)): it
works in any cluster, with or without cluster DNS.
*/}}
{{- define "fission-rs.serviceUrl" -}}
http://$({{ . | upper }}_SERVICE_HOST):$({{ . | upper }}_SERVICE_PORT)
{{- end -}}

{{/* The executor container (a router pod's sidecar or its own Deployment). */}}
{{- define "fission-rs.executorContainer" -}}
{{- $pods := eq .Values.executor.instances "pods" }}
- name: executor
  image: {{ include "fission-rs.image" . }}
  imagePullPolicy: {{ .Values.image.pullPolicy }}
  args:
    - server
    - --role=executor
    - --executor-listen={{ if eq .Values.executor.mode "sidecar" }}127.0.0.1{{ else }}0.0.0.0{{ end }}:8889
    - --controller-url={{ include "fission-rs.serviceUrl" "controller" }}
    {{- if $pods }}
    - --instances=pods
    - --pod-namespace={{ .Values.executor.functionNamespace }}
    - --pod-nodejs-image={{ .Values.executor.runtimeImages.nodejs }}
    - --pod-python-image={{ .Values.executor.runtimeImages.python }}
    - --fetcher-image={{ .Values.executor.fetcherImage }}
    - --pod-image-pull-policy={{ .Values.image.pullPolicy }}
    - --sandbox=none
    {{- else }}
    - --sandbox={{ .Values.executor.sandbox }}
    {{- end }}
    {{- with .Values.executor.maxInstances }}
    - --max-instances={{ . }}
    {{- end }}
  env:
    {{- include "fission-rs.commonEnv" . | nindent 4 }}
  {{- if .Values.auth.existingSecret }}
  envFrom:
    - secretRef: {name: {{ .Values.auth.existingSecret | quote }}}
  {{- end }}
  {{- if and (not $pods) (eq .Values.executor.sandbox "bwrap") }}
  # Sandboxes need user, network and cgroup namespaces and nftables: root with privileges.
  securityContext:
    privileged: true
  {{- else }}
  securityContext:
    allowPrivilegeEscalation: false
  {{- end }}
  {{- if ne .Values.executor.mode "sidecar" }}
  ports:
    - {name: http, containerPort: 8889}
  readinessProbe:
    httpGet: {path: /healthz, port: 8889}
  {{- end }}
  resources:
    {{- toYaml .Values.executor.resources | nindent 4 }}
  volumeMounts:
    - {name: executor-data, mountPath: /var/lib/fission}
{{- end -}}
