{{/*
Names, labels and the small computed values every template shares.
*/}}

{{/* The chart name, or nameOverride. */}}
{{- define "mlgate.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
The full name of the release's resources: fullnameOverride, else the release name, followed by
the chart name unless the release name already contains it. Truncated to 63 characters (DNS label).
*/}}
{{- define "mlgate.fullname" -}}
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

{{/* name-version, for the helm.sh/chart label. */}}
{{- define "mlgate.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels that select the release's pods; never change them (Deployment selectors are immutable). */}}
{{- define "mlgate.selectorLabels" -}}
app.kubernetes.io/name: {{ include "mlgate.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* Labels on every resource of the release. */}}
{{- define "mlgate.labels" -}}
helm.sh/chart: {{ include "mlgate.chart" . }}
{{ include "mlgate.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: admission-controller
app.kubernetes.io/part-of: mlgate
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "mlgate.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "mlgate.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* repository:tag, or repository@digest when a digest is set. */}}
{{- define "mlgate.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{/* The ValidatingWebhookConfiguration's name; mlgate keeps its caBundle in step (mode self). */}}
{{- define "mlgate.webhookName" -}}
{{- include "mlgate.fullname" . -}}
{{- end -}}

{{/* The Secret holding the serving certificate, whichever TLS mode provides it. */}}
{{- define "mlgate.tlsSecretName" -}}
{{- $mode := .Values.tls.mode -}}
{{- if eq $mode "self" -}}
{{- default (printf "%s-tls" (include "mlgate.fullname" .)) .Values.tls.self.secretName -}}
{{- else if eq $mode "certManager" -}}
{{- default (printf "%s-tls" (include "mlgate.fullname" .)) .Values.tls.certManager.secretName -}}
{{- else if eq $mode "existingSecret" -}}
{{- required "tls.existingSecret.name is required when tls.mode is existingSecret" .Values.tls.existingSecret.name -}}
{{- else -}}
{{- fail (printf "tls.mode must be self, certManager or existingSecret, not %q" $mode) -}}
{{- end -}}
{{- end -}}

{{/* The Lease that elects the replica doing the write work (status, NetworkPolicies). */}}
{{- define "mlgate.leaseName" -}}
{{- default (include "mlgate.fullname" .) .Values.leaderElection.leaseName -}}
{{- end -}}

{{/*
The namespaceSelector of both webhooks: never kube-system, the release namespace or the excluded
namespaces (by the immutable kubernetes.io/metadata.name label), plus the user's expressions.
Pass (dict "root" $ "governedOnly" true) to also require the governed-namespace label.
*/}}
{{- define "mlgate.namespaceSelector" -}}
{{- $root := .root -}}
{{- $excluded := concat (list "kube-system" $root.Release.Namespace) $root.Values.webhook.excludeNamespaces | uniq | sortAlpha -}}
matchExpressions:
  - key: kubernetes.io/metadata.name
    operator: NotIn
    values:
      {{- toYaml $excluded | nindent 6 }}
{{- if .governedOnly }}
  - key: {{ $root.Values.governedNamespaceLabel.key }}
    operator: In
    values:
      - {{ $root.Values.governedNamespaceLabel.value | quote }}
{{- end }}
{{- with $root.Values.webhook.namespaceSelectorExpressions }}
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/*
Whether a workload rule from files/workload-rules.yaml is routed: built-in kinds always; an ML
group by its webhook.mlWorkloads switch (true, false, or "auto": when the cluster serves any of
the rule's API versions). Prints "true" or nothing.
*/}}
{{- define "mlgate.ruleEnabled" -}}
{{- $root := .root -}}
{{- $rule := .rule -}}
{{- if not $rule.workloads -}}
true
{{- else -}}
{{- $switch := index $root.Values.webhook.mlWorkloads $rule.workloads -}}
{{- if eq (toString $switch) "true" -}}
true
{{- else if eq (toString $switch) "auto" -}}
{{- range $version := $rule.apiVersions -}}
{{- if $root.Capabilities.APIVersions.Has (printf "%s/%s" (first $rule.apiGroups) $version) -}}
true
{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* The webhook.mlWorkloads switches set to "auto" whose API the cluster does not serve, for NOTES. */}}
{{- define "mlgate.mlWorkloadsNotFound" -}}
{{- $root := . -}}
{{- $found := dict -}}
{{- range $rule := .Files.Get "files/workload-rules.yaml" | fromYamlArray -}}
{{- if and $rule.workloads (include "mlgate.ruleEnabled" (dict "root" $root "rule" $rule)) -}}
{{- $_ := set $found $rule.workloads true -}}
{{- end -}}
{{- end -}}
{{- $missing := list -}}
{{- range $name, $switch := .Values.webhook.mlWorkloads -}}
{{- if and (eq (toString $switch) "auto") (not (hasKey $found $name)) -}}
{{- $missing = append $missing $name -}}
{{- end -}}
{{- end -}}
{{- $missing | sortAlpha | join ", " -}}
{{- end -}}

{{/* How the apiserver reaches mlgate: pass (dict "root" $ "path" "/validate"). */}}
{{- define "mlgate.clientConfig" -}}
{{- $root := .root -}}
clientConfig:
  service:
    name: {{ include "mlgate.fullname" $root }}
    namespace: {{ $root.Release.Namespace }}
    path: {{ .path }}
    port: {{ $root.Values.service.port }}
  {{- if and (eq $root.Values.tls.mode "existingSecret") $root.Values.tls.existingSecret.caBundle }}
  caBundle: {{ $root.Values.tls.existingSecret.caBundle }}
  {{- end }}
{{- end -}}

{{/* clientConfig and settings both webhooks share. */}}
{{- define "mlgate.webhookCommon" -}}
{{ include "mlgate.clientConfig" (dict "root" . "path" "/validate") }}
admissionReviewVersions: [v1]
sideEffects: NoneOnDryRun
failurePolicy: {{ .Values.webhook.failurePolicy }}
matchPolicy: Equivalent
timeoutSeconds: {{ .Values.webhook.timeoutSeconds }}
{{- end -}}

{{/* The workload rules both webhook configurations route, from files/workload-rules.yaml; with
"status", every kind's /status too (validation only: pinning a status write means nothing). */}}
{{- define "mlgate.workloadRules" -}}
{{- $root := .root -}}
{{- $status := .status -}}
{{- $rules := list -}}
{{- range $rule := $root.Files.Get "files/workload-rules.yaml" | fromYamlArray -}}
{{- if include "mlgate.ruleEnabled" (dict "root" $root "rule" $rule) -}}
{{- $resources := list -}}
{{- range $resource := $rule.resources -}}
{{- $resources = append $resources $resource -}}
{{- if and $status (not (contains "/" $resource)) -}}
{{- $resources = append $resources (printf "%s/status" $resource) -}}
{{- end -}}
{{- end -}}
{{- $rules = append $rules (dict "apiGroups" $rule.apiGroups "apiVersions" $rule.apiVersions "resources" $resources "operations" (list "CREATE" "UPDATE") "scope" ($rule.scope | default "Namespaced")) -}}
{{- end -}}
{{- end -}}
{{- toYaml $rules -}}
{{- end -}}

{{/* Annotations of both webhook configurations: the user's, and cert-manager's CA injection. */}}
{{- define "mlgate.webhookAnnotations" -}}
{{- $annotations := deepCopy .Values.webhook.annotations -}}
{{- if eq .Values.tls.mode "certManager" -}}
{{- $_ := set $annotations "cert-manager.io/inject-ca-from" (printf "%s/%s" .Release.Namespace (include "mlgate.fullname" .)) -}}
{{- else if and (eq .Values.tls.mode "existingSecret") .Values.tls.existingSecret.injectCAFromSecret -}}
{{- $_ := set $annotations "cert-manager.io/inject-ca-from-secret" .Values.tls.existingSecret.injectCAFromSecret -}}
{{- end -}}
{{- with $annotations -}}
{{- toYaml . -}}
{{- end -}}
{{- end -}}
