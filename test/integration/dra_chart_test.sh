#!/usr/bin/env bash
# The chart's allocation mode (issue 19, item 4): mode=dra renders the DeviceClass, the agent as DRA driver
# (--mode=dra, the kubelet's plugins/ and plugins_registry/ and the CDI directory mounted, RBAC for its
# ResourceSlice and claims), and `tessera scheduler --mode=dra` serving only the webhooks (GPU requests become
# ResourceClaims) with no kube-scheduler or extender of ours; mode=extender is the old install; mode=auto
# picks dra only where the API server serves resource.k8s.io/v1 ResourceSlices at v1.36+. Each rendering is
# applied with `kubectl apply --dry-run=server` to the fixture's real kube-apiserver; a bad mode is refused.
set -euo pipefail
. "$(dirname "$0")/obs_lib.sh"

chart="$TESSERA_SOURCE_DIR/deploy/helm/tessera"
work=$(mktemp -d)
on_exit "rm -rf '$work'"
rel="dra-chart-$(obs_id)"

render() {  # render NAME [helm args...]
  local name=$1
  shift
  "$HELM" template "$rel" "$chart" --namespace default "$@" >"$work/$name.yaml" || obs_fail "helm template ($name)"
}
dry_run() {
  "${KUBECTL[@]}" apply --dry-run=server --validate=strict -f "$work/$1.yaml" >"$work/$1.out" 2>&1 ||
    { cat "$work/$1.out" >&2; obs_fail "server-side dry run of the $1 rendering was refused"; }
}
has() { grep -Eq -- "$2" "$work/$1.yaml" || obs_fail "$1 rendering: $3 (no match for /$2/)"; }
hasnt() { if grep -Eq -- "$2" "$work/$1.yaml"; then obs_fail "$1 rendering: $3 (matched /$2/)"; fi; }

"$HELM" lint --strict "$chart" --set mode=dra >"$work/lint.out" 2>&1 || { cat "$work/lint.out" >&2; obs_fail "helm lint mode=dra"; }

echo "== mode=dra"
render dra --set mode=dra --kube-version "$TESSERA_KUBE_VERSION"
has dra '^kind: DeviceClass' "the DeviceClass"
has dra 'expression: device.driver == "gpu.tessera.io"' "the DeviceClass selects driver gpu.tessera.io"
has dra '- --mode=dra' "the agent runs as DRA driver"
has dra '- --cdi-dir=/var/run/cdi' "the agent writes CDI specs where the runtime reads them"
has dra 'mountPath: /var/lib/kubelet/plugins_registry' "the kubelet's plugin registry is mounted"
has dra 'mountPath: /var/lib/kubelet/plugins\}' "the kubelet's plugin directory is mounted"
has dra 'resources: \[resourceslices\]' "RBAC for ResourceSlices"
has dra 'resources: \[resourceclaims\]' "RBAC for ResourceClaims"
has dra '^kind: Deployment' "the webhook's Deployment"
has dra '- --dra-scheduler-name=default-scheduler' "tessera scheduler --mode=dra hands GPU pods to kube-scheduler"
hasnt dra '- name: kube-scheduler$' "no kube-scheduler of ours in DRA mode"
hasnt dra '--extender-listen' "no extender in DRA mode"
has dra '^kind: MutatingWebhookConfiguration' "the webhook that turns GPU requests into claims"
has dra 'sideEffects: NoneOnDryRun' "it creates claim templates, except on a dry run"
has dra 'resources: \[resourceclaimtemplates\]' "RBAC to create them"
dry_run dra

echo "== mode=extender (default)"
render ext --kube-version "$TESSERA_KUBE_VERSION"
hasnt ext '^kind: DeviceClass' "no DeviceClass on the extender path"
hasnt ext '--mode=dra' "the agent is the device plugin"
has ext '^kind: Deployment' "the extender scheduler"
dry_run ext

echo "== mode=auto"
render auto-new --set mode=auto --kube-version "$TESSERA_KUBE_VERSION" --api-versions resource.k8s.io/v1/ResourceSlice
has auto-new '^kind: DeviceClass' "auto picks dra on $TESSERA_KUBE_VERSION serving resource.k8s.io/v1"
render auto-old --set mode=auto --kube-version v1.33.0 --api-versions resource.k8s.io/v1beta1/ResourceSlice
hasnt auto-old '^kind: DeviceClass' "auto picks the extender on v1.33"
has auto-old '^kind: Deployment' "auto picks the extender on v1.33"
render auto-nodra --set mode=auto --kube-version "$TESSERA_KUBE_VERSION"
hasnt auto-nodra '^kind: DeviceClass' "auto picks the extender when resource.k8s.io/v1 is not served"

echo "== a bad mode is refused naming the value"
if "$HELM" template "$rel" "$chart" --set mode=native >"$work/bad.out" 2>&1; then obs_fail "mode=native accepted"; fi
grep -q 'mode is "native"; allowed: dra, extender, auto' "$work/bad.out" || { cat "$work/bad.out" >&2; obs_fail "message"; }
echo "PASS"
