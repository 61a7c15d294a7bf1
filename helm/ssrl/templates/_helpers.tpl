{{/* Chart name. */}}
{{- define "ssrl.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Fully qualified app name, at most 63 characters (room is left for suffixes by trunc 50). */}}
{{- define "ssrl.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 50 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 50 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 50 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* Chart name and version for the chart label. */}}
{{- define "ssrl.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Common labels. */}}
{{- define "ssrl.labels" -}}
helm.sh/chart: {{ include "ssrl.chart" . }}
{{ include "ssrl.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: ssrl
{{- end }}

{{/* Selector labels. */}}
{{- define "ssrl.selectorLabels" -}}
app.kubernetes.io/name: {{ include "ssrl.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Pod template labels, given (dict "root" $ "component" "train"): stable ones only, because a Job's pod
template is immutable (a chart or app version here would make every upgrade fail) and the NetworkPolicies
select on them (part-of + component, so `ssrl submit` pods of any name are admitted too). */}}
{{- define "ssrl.podLabels" -}}
{{ include "ssrl.selectorLabels" .root }}
app.kubernetes.io/part-of: ssrl
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* ServiceAccount name. */}}
{{- define "ssrl.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "ssrl.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* Secret with the store credentials: an existing one, or the chart's. */}}
{{- define "ssrl.storeSecretName" -}}
{{- if .Values.store.existingSecret }}
{{- .Values.store.existingSecret }}
{{- else if not .Values.minio.enabled }}
{{- fail "store.existingSecret is required when minio.enabled=false: the chart creates credentials only for its own MinIO" }}
{{- else }}
{{- printf "%s-store" (include "ssrl.fullname" .) }}
{{- end }}
{{- end }}

{{/* S3 endpoint: the bundled MinIO Service, or store.endpoint. */}}
{{- define "ssrl.storeEndpoint" -}}
{{- if .Values.minio.enabled }}
{{- printf "http://%s-minio.%s.svc:9000" (include "ssrl.fullname" .) .Release.Namespace }}
{{- else }}
{{- required "store.endpoint is required when minio.enabled=false" .Values.store.endpoint }}
{{- end }}
{{- end }}

{{/* Image reference registry/repository:tag; refuses a missing or placeholder registry and an empty or "latest"
tag (a tag may end in @sha256:… to pin the digest make images prints). */}}
{{- define "ssrl.image" -}}
{{- $img := index .root.Values.images .name }}
{{- if or (not $img.tag) (eq (toString $img.tag) "latest") }}
{{- fail (printf "images.%s.tag must be a pinned tag, not %q" .name (toString $img.tag)) }}
{{- end }}
{{- $registry := trimSuffix "/" (required "images.registry is required: build and push the images with `make images REGISTRY=<registry> PUSH=1` and set images.registry (README: Deployment)" .root.Values.images.registry) }}
{{- if eq $registry "ghcr.io/ssrl" }}
{{- fail "images.registry=ghcr.io/ssrl is a placeholder nothing publishes: push the images with `make images REGISTRY=<registry> PUSH=1` and set images.registry to that registry" }}
{{- end }}
{{- printf "%s/%s:%s" $registry $img.repository (toString $img.tag) }}
{{- end }}

{{/* The Secret holding one role's store credentials, given (dict "root" $ "role" "trainer"): the role's own with the
bundled MinIO (bucket-init creates the scoped user: see ssrl/cluster/store_users.py), or store.roleSecrets.<role>,
else the one store Secret (an external store, whose users are yours to scope). */}}
{{- define "ssrl.roleSecretName" -}}
{{- $given := index (.root.Values.store.roleSecrets | default dict) .role }}
{{- if $given }}
{{- $given }}
{{- else if .root.Values.minio.enabled }}
{{- printf "%s-store-%s" (include "ssrl.fullname" .root) .role }}
{{- else }}
{{- include "ssrl.storeSecretName" .root }}
{{- end }}
{{- end }}

{{/* Store environment for a role, given (dict "root" $ "role" "trainer"): the endpoint plus that role's credentials
from its Secret (never inline). */}}
{{- define "ssrl.storeEnv" -}}
{{- $secret := include "ssrl.roleSecretName" . }}
- name: SSRL_S3_ENDPOINT
  value: {{ include "ssrl.storeEndpoint" .root | quote }}
- name: AWS_ACCESS_KEY_ID
  valueFrom:
    secretKeyRef:
      name: {{ $secret }}
      key: {{ .root.Values.store.accessKeyKey }}
- name: AWS_SECRET_ACCESS_KEY
  valueFrom:
    secretKeyRef:
      name: {{ $secret }}
      key: {{ .root.Values.store.secretKeyKey }}
- name: HOME
  value: /home/ssrl
{{- end }}

{{/* The scoped store roles (ssrl/cluster/store_users.py ROLES). */}}
{{- define "ssrl.storeRoles" -}}
generator trainer eval reader
{{- end }}

{{/* Writable scratch for a read-only root filesystem: volume mounts and volumes. */}}
{{- define "ssrl.scratchMounts" -}}
- name: tmp
  mountPath: /tmp
- name: home
  mountPath: /home/ssrl
{{- end }}
{{- define "ssrl.scratchVolumes" -}}
- name: tmp
  emptyDir: {}
- name: home
  emptyDir: {}
{{- end }}

{{/* The trainer pods of the namespace (the chart's and `ssrl submit train`'s): NetworkPolicy peers. */}}
{{- define "ssrl.trainPeers" -}}
app.kubernetes.io/part-of: ssrl
app.kubernetes.io/component: train
{{- end }}

{{/* Name of a run object (generate/eval Job, train PyTorchJob), given (dict "root" $ "component" "train"): the
component plus a hash of its spec. A Job's pod template is immutable and the training operator ignores a changed
PyTorchJob, so a changed spec (image tag, config, resources) must be a new object: `helm upgrade` creates it and
deletes the old one; the trainer resumes from the latest checkpoint, the generator skips committed shards. The
same spec keeps its name, so an upgrade that changes nothing else leaves running jobs alone. */}}
{{- define "ssrl.runName" -}}
{{- $spec := include (printf "ssrl.%s.spec" .component) .root }}
{{- printf "%s-%s-%s" (include "ssrl.fullname" .root | trunc 38 | trimSuffix "-") .component (sha256sum $spec | trunc 6) }}
{{- end }}

{{/* Extra pod labels (Kueue's queue label…) and annotations (Multus networks…) of a component, given
(dict "root" $ "values" .Values.train): user labels go after ours and may not replace them. */}}
{{- define "ssrl.podExtraLabels" -}}
{{- range $k, $v := .values.podLabels }}
{{- if not (hasPrefix "app.kubernetes.io/" $k) }}
{{ $k }}: {{ $v | quote }}
{{- end }}
{{- end }}
{{- end }}

{{/* Placement of a component's pods (nodeSelector, tolerations, affinity, priorityClassName), given
(dict "values" .Values.train). */}}
{{- define "ssrl.placement" -}}
{{- with .values.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- with .values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .values.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/* Writable scratch with a size, given (dict "values" .Values.train): the emptyDirs' sizeLimit, and the
container's ephemeral-storage request/limit that lets the scheduler place it and the kubelet bound it. */}}
{{- define "ssrl.sizedScratchVolumes" -}}
- name: tmp
  emptyDir:
    sizeLimit: {{ .values.scratchSize }}
- name: home
  emptyDir:
    sizeLimit: {{ .values.scratchSize }}
{{- end }}

{{/* Container resources, given (dict "values" .Values.train "gpus" 8): the component's resources plus
nvidia.com/gpu, ephemeral-storage = scratchSize (the scratch emptyDirs live there) and any extraResources (RDMA,
EFA), each as request and limit. */}}
{{- define "ssrl.resources" -}}
{{- $r := deepCopy .values.resources }}
{{- $extra := deepCopy (.values.extraResources | default dict) }}
{{- if gt (int .gpus) 0 }}
{{- $_ := set $extra "nvidia.com/gpu" (int .gpus) }}
{{- end }}
{{- $_ := set $extra "ephemeral-storage" .values.scratchSize }}
{{- /* merge writes into its first argument: each side gets its own copy, or the requests would inherit the
limits' cpu and memory (they did: the trainer asked for its limits, 8 CPUs, and stayed Pending on real nodes). */}}
{{- $_ := set $r "limits" (merge (deepCopy $extra) (default (dict) $r.limits)) }}
{{- $_ := set $r "requests" (merge (deepCopy $extra) (default (dict) $r.requests)) }}
{{- toYaml $r }}
{{- end }}

{{/* The optional shared cache (cacheClaim, a ReadWriteMany PVC) over ~/.cache/ssrl, given (dict "root" $
"subPath" "…"): mounts, and the volume. One sub-folder per pod, so no two pods write one file, and a restarted
trainer pod (same name) finds its verified model, shards and checkpoint files and fetches nothing again. */}}
{{- define "ssrl.cacheMounts" -}}
{{- if .root.Values.cacheClaim }}
- name: cache
  mountPath: /home/ssrl/.cache/ssrl
  subPathExpr: {{ .subPath }}
{{- end }}
{{- end }}
{{- define "ssrl.cacheVolumes" -}}
{{- if .root.Values.cacheClaim }}
- name: cache
  persistentVolumeClaim:
    claimName: {{ .root.Values.cacheClaim }}
{{- end }}
{{- end }}
{{- define "ssrl.podNameEnv" -}}
{{- if .root.Values.cacheClaim }}
- name: SSRL_POD_NAME
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
{{- end }}
{{- end }}
