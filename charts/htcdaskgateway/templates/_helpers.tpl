{{/* Names: every object is <fullname>-<component>, cut to 63 characters. */}}
{{- define "htcdg.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "htcdg.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "htcdg.componentName" -}}
{{- printf "%s-%s" (include "htcdg.fullname" .root) .component | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "htcdg.apiName" -}}{{ include "htcdg.componentName" (dict "root" . "component" "api") }}{{- end -}}
{{- define "htcdg.controllerName" -}}{{ include "htcdg.componentName" (dict "root" . "component" "controller") }}{{- end -}}
{{- define "htcdg.proxyName" -}}{{ include "htcdg.componentName" (dict "root" . "component" "proxy") }}{{- end -}}
{{- define "htcdg.configName" -}}{{ include "htcdg.componentName" (dict "root" . "component" "gateway-config") }}{{- end -}}
{{- define "htcdg.clientConfigName" -}}{{ include "htcdg.componentName" (dict "root" . "component" "client-config") }}{{- end -}}
{{- define "htcdg.clusterOwnerName" -}}{{ include "htcdg.componentName" (dict "root" . "component" "clusters") }}{{- end -}}
{{- define "htcdg.secretName" -}}{{ include "htcdg.componentName" (dict "root" . "component" "secret") }}{{- end -}}

{{/*
The gateway instance: the controller, the API and Traefik select the
DaskCluster objects, pods and routes of this release by this label value.
*/}}
{{- define "htcdg.instance" -}}{{ include "htcdg.fullname" . }}{{- end -}}

{{- define "htcdg.labels" -}}
app.kubernetes.io/name: {{ include "htcdg.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
gateway.dask.org/instance: {{ include "htcdg.instance" . }}
{{- end -}}

{{- define "htcdg.selectorLabels" -}}
app.kubernetes.io/name: {{ include "htcdg.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "htcdg.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}{{ with .Values.image.digest }}@{{ . }}{{ end }}
{{- end -}}

{{- define "htcdg.proxyImage" -}}
{{ .Values.proxy.image.repository }}:{{ .Values.proxy.image.tag }}{{ with .Values.proxy.image.digest }}@{{ . }}{{ end }}
{{- end -}}

{{- define "htcdg.schedulerNamespace" -}}
{{- .Values.cluster.namespace | default .Release.Namespace -}}
{{- end -}}

{{/* Ports the proxy listens on inside its pod. */}}
{{- define "htcdg.proxyWebPort" -}}8000{{- end -}}
{{- define "htcdg.proxyTcpPort" -}}8786{{- end -}}

{{/*
Public ports: explicit proxy.public.*Port, else the node port (NodePort) or
the Service port (LoadBalancer). Empty when a NodePort Service has no fixed
node port and none is given: only Kubernetes knows it then.
*/}}
{{- define "htcdg.publicPort" -}}
{{- $p := index .root.Values.proxy.service.ports .port -}}
{{- $explicit := index .root.Values.proxy.public (printf "%sPort" .port) -}}
{{- if $explicit -}}
{{- $explicit -}}
{{- else if eq .root.Values.proxy.service.type "NodePort" -}}
{{- $p.nodePort | default "" -}}
{{- else -}}
{{- $p.port -}}
{{- end -}}
{{- end -}}

{{/* "host:port" of the proxy for analysts and execute nodes; empty while unknown. */}}
{{- define "htcdg.publicEndpoint" -}}
{{- $port := include "htcdg.publicPort" . -}}
{{- if and .root.Values.proxy.public.host $port -}}
{{- printf "%s:%s" .root.Values.proxy.public.host $port -}}
{{- end -}}
{{- end -}}

{{/*
Pod and container security: every container runs as a non-root user, with
no capabilities and a read-only root filesystem (writable /tmp comes from
an emptyDir).
*/}}
{{- define "htcdg.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ .uid }}
runAsGroup: {{ .uid }}
fsGroup: {{ .uid }}
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "htcdg.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
capabilities:
  drop: [ALL]
{{- end -}}

{{/*
Checks across values that the schema cannot express clearly; each message
names the keys to set.
*/}}
{{- define "htcdg.validate" -}}
{{- $auth := .Values.gateway.auth -}}
{{- if eq $auth.type "jupyterhub" -}}
{{- $hub := $auth.jupyterhub | default dict -}}
{{- $secret := $hub.existingSecret | default dict -}}
{{- if and (not $hub.apiToken) (not $secret.name) -}}
{{- fail "gateway.auth.type is jupyterhub but no token source is set: set gateway.auth.jupyterhub.existingSecret.name/key (the Secret holding the gateway's JupyterHub service token) or gateway.auth.jupyterhub.apiToken" -}}
{{- end -}}
{{- if and $hub.apiToken $secret.name -}}
{{- fail "gateway.auth.jupyterhub: both apiToken and existingSecret.name are set; keep one (set existingSecret.name to \"\" to use apiToken)" -}}
{{- end -}}
{{- end -}}
{{- if and (eq $auth.type "simple") (not ($auth.simple | default dict).password) -}}
{{- fail "gateway.auth.type is simple but gateway.auth.simple.password is not set: without one anybody reaching the gateway may act as any user. Set it (helm --set-string gateway.auth.simple.password=...; the chart keeps it in its Secret) or use gateway.auth.type jupyterhub" -}}
{{- end -}}
{{- if ne .Values.proxy.service.type "NodePort" -}}
{{- range $name, $p := .Values.proxy.service.ports -}}
{{- if $p.nodePort -}}
{{- fail (printf "proxy.service.ports.%s.nodePort is set but proxy.service.type is %s: node ports apply only to type NodePort" $name $.Values.proxy.service.type) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- if gt (int .Values.cluster.keptClaims.seconds) (int .Values.cluster.keptClaims.max) -}}
{{- fail "cluster.keptClaims.seconds is larger than cluster.keptClaims.max: every analyst's client would refuse its own default" -}}
{{- end -}}
{{- if gt (float64 .Values.cluster.scheduler.cores.request) (float64 .Values.cluster.scheduler.cores.limit) -}}
{{- fail "cluster.scheduler.cores.request is larger than cluster.scheduler.cores.limit" -}}
{{- end -}}
{{- end -}}

{{/* The analysts' dask config (NOTES and the client-config ConfigMap). */}}
{{- define "htcdg.clientConfig" -}}
{{- $web := include "htcdg.publicEndpoint" (dict "root" . "port" "web") -}}
{{- $tcp := include "htcdg.publicEndpoint" (dict "root" . "port" "tcp") -}}
{{- $ca := include "htcdg.apiCa" . -}}
gateway:
  address: {{ include "htcdg.webScheme" . }}://{{ $web }}
  proxy-address: tls://{{ $tcp }}
  auth:
    type: {{ eq .Values.gateway.auth.type "jupyterhub" | ternary "jupyterhub" "basic" }}
  htcondor:
    # What the HTCondor workers dial: the same proxy, from the execute nodes.
    scheduler-address: tls://{{ $tcp }}
    # The name this gateway's jobs carry, whatever address a client uses:
    # `htcdaskgateway cleanup` judges only jobs with it.
    gateway-id: {{ .Release.Namespace }}/{{ .Release.Name }}
    {{- if $ca }}
    # The CA of the API's HTTPS certificate (the chart made it).
    api-ca: |
      {{- $ca | trim | nindent 6 }}
    {{- end }}
    # The operator's kept claims (HTCondor's keep_claim_idle) and their cap.
    max-keep-claim-idle: {{ .Values.cluster.keptClaims.max }}
    worker:
      keep-claim-idle: {{ .Values.cluster.keptClaims.seconds }}
    {{- with .Values.cluster.workerGroups }}
    # The operator's worker group presets: scale(n, worker_group=NAME).
    worker-groups:
      {{- toYaml . | nindent 6 }}
    {{- end }}
{{- end -}}

{{/* Cluster-scoped objects (ClusterRoles) carry the namespace: releases of the same name may live in several namespaces. */}}
{{- define "htcdg.clusterScopedName" -}}
{{- printf "%s-%s" .root.Release.Namespace (include "htcdg.componentName" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
A component's RBAC: by default a Role and RoleBinding in each namespace it
works in; with rbac.clusterWide one ClusterRole and ClusterRoleBinding.
Called with (dict "root" $ "component" NAME "account" SA "namespaces" LIST
"rules" YAML).
*/}}
{{- define "htcdg.rbac" -}}
{{- $root := .root -}}
{{- $subject := dict "kind" "ServiceAccount" "name" .account "namespace" $root.Release.Namespace -}}
{{- if $root.Values.rbac.clusterWide }}
{{- $name := include "htcdg.clusterScopedName" (dict "root" $root "component" .component) }}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: {{ $name }}
  labels:
    {{- include "htcdg.labels" $root | nindent 4 }}
rules:
  {{- .rules | nindent 2 }}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: {{ $name }}
  labels:
    {{- include "htcdg.labels" $root | nindent 4 }}
subjects:
  - {{ toJson $subject }}
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: ClusterRole
  name: {{ $name }}
{{- else }}
{{- $name := include "htcdg.componentName" (dict "root" $root "component" .component) }}
{{- range $namespace := .namespaces | uniq }}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata:
  name: {{ $name }}
  namespace: {{ $namespace }}
  labels:
    {{- include "htcdg.labels" $root | nindent 4 }}
rules:
  {{- $.rules | nindent 2 }}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata:
  name: {{ $name }}
  namespace: {{ $namespace }}
  labels:
    {{- include "htcdg.labels" $root | nindent 4 }}
subjects:
  - {{ toJson $subject }}
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: Role
  name: {{ $name }}
{{- end }}
{{- end }}
{{- end -}}

{{/* The namespace the API and controller watch: "" (all) with rbac.clusterWide. */}}
{{- define "htcdg.watchNamespace" -}}
{{- if not .Values.rbac.clusterWide }}{{ include "htcdg.schedulerNamespace" . }}{{ end -}}
{{- end -}}

{{/* The Secret (kubernetes.io/tls) holding the API's certificate: the operator's or the chart's. */}}
{{- define "htcdg.httpsSecretName" -}}
{{- .Values.proxy.https.existingSecret | default (include "htcdg.componentName" (dict "root" . "component" "https")) -}}
{{- end -}}

{{/*
The chart's own HTTPS certificate when the operator names none: a CA and a
certificate it signs for proxy.public.host and the proxy Service's names.
Made once per release and then read back from its Secret, so upgrades keep
it (and analysts' copies of the CA stay valid). Computed once per render
and kept in .Values._generatedHttps (the ConfigMap of values omits it):
the Secret, NOTES and the client config must show the same CA.
Returns JSON (read it with fromJson): ca.crt, ca.key, tls.crt, tls.key
(PEM) and host (the name the certificate was made for, an annotation of
the Secret: a new proxy.public.host gets a new certificate from the same
CA); empty with existingSecret or with HTTPS off. JSON, not YAML: helm's
toYaml trims the document's last newline, which is the last PEM's own, so
a toYaml | fromYaml round trip stored tls.key one byte short of what was
generated (and a hash of the generated text changed at the first upgrade).
*/}}
{{- define "htcdg.generatedHttps" -}}
{{- if and .Values.proxy.https.enabled (not .Values.proxy.https.existingSecret) -}}
{{- if not (hasKey .Values "_generatedHttps") -}}
{{- $name := include "htcdg.httpsSecretName" . -}}
{{- $svc := include "htcdg.proxyName" . -}}
{{- $ns := .Release.Namespace -}}
{{- $host := .Values.proxy.public.host -}}
{{- $found := lookup "v1" "Secret" $ns $name -}}
{{- $data := $found.data | default dict -}}
{{- $ca := dict -}}
{{- if and (hasKey $data "ca.crt") (hasKey $data "ca.key") -}}
{{- $ca = buildCustomCert (index $data "ca.crt") (index $data "ca.key") -}}
{{- else -}}
{{- $ca = genCA (printf "htcdaskgateway %s/%s CA" $ns .Release.Name) 3650 -}}
{{- end -}}
{{- $pem := dict "ca.crt" $ca.Cert "ca.key" $ca.Key "host" $host -}}
{{- $oldHost := index ($found.metadata | default dict) "annotations" | default dict -}}
{{- if and (hasKey $data "tls.key") (eq (index $oldHost "htcdaskgateway.dask.org/certificate-host" | default "") $host) -}}
{{- $_ := set $pem "tls.crt" (index $data "tls.crt" | b64dec) -}}
{{- $_ := set $pem "tls.key" (index $data "tls.key" | b64dec) -}}
{{- else -}}
{{- /* New, or proxy.public.host changed: a certificate for the current names, same CA. */ -}}
{{- $dns := list $svc (printf "%s.%s" $svc $ns) (printf "%s.%s.svc" $svc $ns) (printf "%s.%s.svc.cluster.local" $svc $ns) -}}
{{- $ips := list -}}
{{- if $host -}}
{{- if regexMatch "^[0-9.]+$|:" $host -}}{{- $ips = append $ips $host -}}{{- else -}}{{- $dns = append $dns $host -}}{{- end -}}
{{- end -}}
{{- $cert := genSignedCert ($host | default $svc) $ips $dns 825 $ca -}}
{{- $_ := set $pem "tls.crt" $cert.Cert -}}
{{- $_ := set $pem "tls.key" $cert.Key -}}
{{- end -}}
{{- $_ := set .Values "_generatedHttps" $pem -}}
{{- end -}}
{{- toJson .Values._generatedHttps -}}
{{- end -}}
{{- end -}}

{{/* PEM of the CA analysts' clients must trust for the API; empty: the system's trust store will do. */}}
{{- define "htcdg.apiCa" -}}
{{- if .Values.proxy.https.enabled -}}
{{- if .Values.proxy.https.existingSecret -}}
{{- .Values.proxy.https.caCertificate | default "" -}}
{{- else -}}
{{- index (include "htcdg.generatedHttps" . | fromJson) "ca.crt" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "htcdg.webScheme" -}}{{ .Values.proxy.https.enabled | ternary "https" "http" }}{{- end -}}

{{/*
A NetworkPolicy peer, as JSON: the pods of one component of this release
("namespace", "instance", "component") in their namespace.
*/}}
{{- define "htcdg.peer" -}}
{{- $namespace := dict "matchLabels" (dict "kubernetes.io/metadata.name" .namespace) -}}
{{- $pods := dict "matchLabels" (dict "gateway.dask.org/instance" .instance "app.kubernetes.io/component" .component) -}}
{{- toJson (dict "namespaceSelector" $namespace "podSelector" $pods) -}}
{{- end }}
