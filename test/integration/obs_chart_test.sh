#!/usr/bin/env bash
# The Helm chart (issue 8, item 7): `helm lint --strict`, `helm template` and `kubectl apply
# --dry-run=server` of every rendering against the fixture's real kube-apiserver (which validates every
# field, the webhooks' CEL match conditions, RBAC references and NodePorts), for the default values and
# for each optional part; bad values must fail naming the value.
set -euo pipefail
. "$(dirname "$0")/obs_lib.sh"

chart="$TESSERA_SOURCE_DIR/deploy/helm/tessera"
work=$(mktemp -d)
on_exit "rm -rf '$work'"
rel="obs-chart-$(obs_id)"

# ServiceMonitor is a Prometheus Operator CRD; the control plane has none, so install a schema-less stand-in
# (left in place: other runs may use it, and a real one is never replaced).
if ! "${KUBECTL[@]}" get crd servicemonitors.monitoring.coreos.com >/dev/null 2>&1; then
  "${KUBECTL[@]}" apply -f - >/dev/null <<'CRD' || "${KUBECTL[@]}" get crd servicemonitors.monitoring.coreos.com >/dev/null
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: servicemonitors.monitoring.coreos.com}
spec:
  group: monitoring.coreos.com
  names: {kind: ServiceMonitor, listKind: ServiceMonitorList, plural: servicemonitors, singular: servicemonitor}
  scope: Namespaced
  versions:
  - name: v1
    served: true
    storage: true
    schema: {openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}}
CRD
fi
"${KUBECTL[@]}" wait --for=condition=Established --timeout=60s crd/servicemonitors.monitoring.coreos.com >/dev/null

render() {  # render NAME [helm args...]
  local name=$1
  shift
  "$HELM" template "$rel" "$chart" --namespace default --kube-version "$TESSERA_KUBE_VERSION" "$@" \
    >"$work/$name.yaml" || obs_fail "helm template ($name) failed"
}

dry_run() {  # dry_run NAME
  "${KUBECTL[@]}" apply --dry-run=server --validate=strict -f "$work/$name.yaml" >"$work/$name.out" 2>&1 ||
    { cat "$work/$name.out" >&2; obs_fail "server-side dry run of the $name rendering was refused"; }
}

expect() {  # expect NAME REGEX WHAT
  grep -Eq -- "$2" "$work/$1.yaml" || obs_fail "$1 rendering: $3 (no match for /$2/)"
}

echo "== helm lint"
"$HELM" lint --strict "$chart" >"$work/lint.out" 2>&1 || { cat "$work/lint.out" >&2; obs_fail "helm lint (defaults)"; }
"$HELM" lint --strict "$chart" --set scheduler.replicas=2 --set metrics.serviceMonitor.enabled=true \
  --set grafanaDashboard.enabled=true >"$work/lint2.out" 2>&1 || { cat "$work/lint2.out" >&2; obs_fail "helm lint (all parts)"; }

echo "== defaults"
name=defaults
render $name
expect $name '^kind: Deployment' "a scheduler Deployment"
expect $name '^kind: DaemonSet' "an agent DaemonSet"
expect $name 'hostPID: true' "the agent in the host's pid namespace (host pids of container processes)"
expect $name 'key: nvidia.com/gpu.present' "agent selected by nvidia.com/gpu.present"
expect $name 'key: feature.node.kubernetes.io/pci-10de.present' "agent selected by NFD's PCI vendor label"
expect $name 'schedulerName: tessera-scheduler' "a tessera-scheduler profile"
expect $name 'schedulerName: hami-scheduler' "a hami-scheduler profile"
expect $name 'nodePort: 31992' "agent metrics NodePort 31992"
expect $name 'nodePort: 31993' "scheduler metrics NodePort 31993"
expect $name 'failurePolicy: Fail' "webhooks fail closed"
expect $name 'operations: \[CREATE, UPDATE\]' "the validating webhook sees updates"
expect $name "- --webhook-trusted-users=system:serviceaccount:default:$rel-tessera-scheduler,system:serviceaccount:default:$rel-tessera-agent\$" \
  "the scheduler trusts the chart's own ServiceAccounts with its annotations"
expect $name "request.userInfo.username in \\['system:serviceaccount:default:$rel-tessera-scheduler','system:serviceaccount:default:$rel-tessera-agent'\\]" \
  "the validating webhook's match condition skips the chart's own ServiceAccounts"
expect $name 'image: registry.k8s.io/kube-scheduler:v[0-9]+\.[0-9]+\.[0-9]+$' "kube-scheduler tag from the cluster version"
grep -Eq '(^|[^v])gpu-node' "$work/$name.yaml" && obs_fail "the agent must never wait on a manual label"
[ "$(grep -c '^kind: MutatingWebhookConfiguration' "$work/$name.yaml")" = 1 ] || obs_fail "one mutating webhook"
[ "$(grep -c '^kind: ValidatingWebhookConfiguration' "$work/$name.yaml")" = 1 ] || obs_fail "one validating webhook"
# The caBundle is the serving certificate itself (the chart generated it): both must carry the same PEM.
python3 - "$work/$name.yaml" <<'PY' || obs_fail "webhook caBundle differs from the generated certificate"
import sys, re, base64
text = open(sys.argv[1]).read()
crt = re.search(r'^  tls\.crt: (\S+)$', text, re.M).group(1)
bundles = re.findall(r'^      caBundle: (\S+)$', text, re.M)
assert len(bundles) == 2 and all(b == crt for b in bundles), bundles
assert base64.b64decode(crt).startswith(b'-----BEGIN CERTIFICATE-----')
PY
dry_run $name

echo "== every optional part on"
name=full
render $name --set scheduler.replicas=2 --set metrics.serviceMonitor.enabled=true \
  --set metrics.serviceMonitor.labels.release=kube-prometheus-stack \
  --set grafanaDashboard.enabled=true --set metrics.hamiMetricNames=false --set agent.backend=sim \
  --set agent.simConfig=/etc/tessera/gpus.yaml --set-string 'webhook.namespaceSelector.matchLabels.gpu=allowed' \
  --set 'agent.gpuNodeLabels[0].key=feature.node.kubernetes.io/pci-10de.present' \
  --set 'agent.gpuNodeLabels[0].value=true' --set scheduler.nodePolicy=spread
expect $name '^kind: ServiceMonitor' "ServiceMonitors"
expect $name '^kind: PodDisruptionBudget' "a PDB with 2 replicas"
expect $name 'replicas: 2' "2 scheduler replicas"
expect $name 'leaderElect: true' "leader election on"
expect $name 'tessera\.json:' "the dashboard ConfigMap"
[ "$(grep -c -- '- --no-hami-metric-names' "$work/$name.yaml")" = 2 ] || obs_fail "HAMi names off in agent and scheduler"
[ "$(grep -c '^kind: ServiceMonitor' "$work/$name.yaml")" = 2 ] || obs_fail "two ServiceMonitors"
dry_run $name

echo "== minimal: no webhook, no agent, existing service accounts"
name=minimal
render $name --set webhook.enabled=false --set agent.enabled=false --set rbac.create=false \
  --set serviceAccount.create=false --set serviceAccount.schedulerName=default --set serviceAccount.agentName=default
grep -q '^kind: DaemonSet' "$work/$name.yaml" && obs_fail "agent.enabled=false still renders the DaemonSet"
grep -q 'WebhookConfiguration' "$work/$name.yaml" && obs_fail "webhook.enabled=false still renders webhooks"
dry_run $name

echo "== bad values are refused naming the value"
bad() {  # bad EXPECTED-MESSAGE helm-args...
  local want=$1
  shift
  if "$HELM" template "$rel" "$chart" "$@" >"$work/bad.out" 2>&1; then obs_fail "accepted: $*"; fi
  grep -q -- "$want" "$work/bad.out" || { cat "$work/bad.out" >&2; obs_fail "message for $* lacks: $want"; }
}
bad 'agent.split is 0; allowed: 1..64' --set agent.split=0
bad 'agent.backend is "gpu"; allowed: nvml, sim' --set agent.backend=gpu
bad 'webhook.failurePolicy is "Maybe"; allowed: Fail, Ignore' --set webhook.failurePolicy=Maybe
bad 'scheduler.replicas > 1 needs scheduler.leaderElection.enabled=true' --set scheduler.replicas=3 \
  --set scheduler.leaderElection.enabled=false
bad 'agent.gpuNodeLabels is empty' --set 'agent.gpuNodeLabels=null'
bad "webhook.trustedUsers: \"o'brien\" is not a username" --set "webhook.trustedUsers={o'brien}"
echo "ok: chart lints, renders and passes server-side dry run"
