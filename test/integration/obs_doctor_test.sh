#!/usr/bin/env bash
# `tessera doctor` on a real API server (issue 8, item 5): each case creates one broken state on the
# fixture's control plane, runs the doctor and expects the diagnosis (check name, object, what is wrong),
# and where it can, repairs the state and expects the finding gone, so no answer is a constant.
#   obs_doctor_test.sh gpu-node-without-agent|gpu-pod-not-isolated|bound-not-allocated|
#                      container-without-shim|version-skew|webhook-unreachable
set -euo pipefail
. "$(dirname "$0")/obs_lib.sh"
case_name=${1:?which check}
[ -x "$TESSERA" ] || obs_fail "$TESSERA not built"
id=$(obs_id)
work=$(mktemp -d)
on_exit "rm -rf '$work'"
mkdir -p "$work/noproc"
K() { "${KUBECTL[@]}" "$@"; }
cleanup_obj() { on_exit "'${KUBECTL[0]}' --kubeconfig '$TESSERA_KUBECONFIG' delete $* --ignore-not-found --wait=false >/dev/null 2>&1"; }

# doctor ARGS...: runs `tessera doctor --json` (exit 1 means "problems found", anything else is a failure).
doctor() {
  local rc=0
  "$TESSERA" doctor --kubeconfig "$TESSERA_KUBECONFIG" --json "$@" >"$work/doctor.json" 2>"$work/doctor.err" || rc=$?
  if [ "$rc" -gt 1 ]; then
    cat "$work/doctor.err" >&2
    obs_fail "tessera doctor exited $rc"
  fi
  cp "$work/doctor.json" "$work/last.json"
}
# finding CHECK OBJECT [PHRASE...]: the last run reported CHECK on OBJECT with every PHRASE in problem/fix.
finding() {
  python3 - "$work/last.json" "$@" <<'PY' || { cat "$work/last.json" >&2; obs_fail "expected finding: $*"; }
import json, sys
out = json.load(open(sys.argv[1]))
check, obj, phrases = sys.argv[2], sys.argv[3], sys.argv[4:]
hits = [f for f in out["findings"] if f["check"] == check and f["object"] == obj]
assert hits, f"no {check} finding for {obj}"
text = " ".join(f["problem"] + " " + f["fix"] for f in hits)
missing = [p for p in phrases if p not in text]
assert not missing, f"{check} {obj}: missing {missing} in: {text}"
assert all(f["fix"] for f in hits), "a finding without a fix"
PY
}
no_finding() {  # no_finding CHECK OBJECT
  python3 - "$work/last.json" "$1" "$2" <<'PY' || { cat "$work/last.json" >&2; obs_fail "unexpected finding: $*"; }
import json, sys
out = json.load(open(sys.argv[1]))
assert not [f for f in out["findings"] if f["check"] == sys.argv[2] and f["object"] == sys.argv[3]]
PY
}

# gpu_node NAME [LABELS-JSON]: a tainted Node only this test uses.
gpu_node() {
  K apply -f - >/dev/null <<YAML
apiVersion: v1
kind: Node
metadata: {name: $1, labels: ${2:-{\}}}
spec: {taints: [{key: obs.tessera.dev/doctor, value: "$id", effect: NoSchedule}]}
YAML
  cleanup_obj node "$1"
}

# pod NAME NODE SCHEDULER ANNOTATIONS-JSON [LABELS-JSON] [IMAGE] [LIMITS-JSON]: a pod bound to NODE.
pod() {
  K create -f - >/dev/null <<YAML
apiVersion: v1
kind: Pod
metadata: {name: $1, namespace: default, annotations: $4, labels: ${5:-{\}}}
spec:
  nodeName: $2
  schedulerName: $3
  tolerations: [{operator: Exists}]
  containers:
  - name: main
    image: ${6:-pause}
    resources: {limits: ${7:-{nvidia.com/gpu: "1", nvidia.com/gpucores: "25"\}}}
YAML
  on_exit "'${KUBECTL[0]}' --kubeconfig '$TESSERA_KUBECONFIG' delete pod -n default $1 --grace-period=0 --force --ignore-not-found >/dev/null 2>&1"
}

# pod_status NAME PHASE READY [WAITING-REASON]: what a kubelet would report.
pod_status() {
  local cs=""
  [ -n "${4:-}" ] && cs=",\"containerStatuses\":[{\"name\":\"main\",\"ready\":false,\"restartCount\":3,\"image\":\"pause\",\"imageID\":\"\",\"state\":{\"waiting\":{\"reason\":\"$4\"}}}]"
  K patch pod -n default "$1" --subresource=status --type=merge \
    -p "{\"status\":{\"phase\":\"$2\",\"conditions\":[{\"type\":\"Ready\",\"status\":\"$3\"}]$cs}}" >/dev/null
}

agent_labels='{app.kubernetes.io/name: tessera, app.kubernetes.io/part-of: tessera, app.kubernetes.io/component: agent, helm.sh/chart: tessera-0.1.0}'
sched_labels='{app.kubernetes.io/name: tessera, app.kubernetes.io/part-of: tessera, app.kubernetes.io/component: scheduler, helm.sh/chart: tessera-0.1.0}'

# workload KIND NAME LABELS IMAGE: an inert Deployment/DaemonSet (no controller manager runs here).
workload() {
  K create -f - >/dev/null <<YAML
apiVersion: apps/v1
kind: $1
metadata: {name: $2, namespace: default, labels: $3}
spec:
  selector: {matchLabels: {obs-doctor: "$2"}}
  template:
    metadata: {labels: {obs-doctor: "$2"}}
    spec:
      nodeSelector: {obs-doctor-never: "true"}
      containers: [{name: main, image: $4}]
YAML
  cleanup_obj "$1" -n default "$2"
}

bind_time() { date -u -d "@$(($(date +%s) - $1))" +%Y-%m-%dT%H:%M:%SZ; }
devices='[[{"uuid":"GPU-0d0c0000-0000-4000-8000-000000000001","memory_mib":1000,"cores":25}]]'

case "$case_name" in
gpu-node-without-agent)
  n1="obs-doc-a-$id"
  n2="obs-doc-b-$id"
  gpu_node "$n1" '{nvidia.com/gpu.present: "true"}'
  doctor --node "$n1" --no-probe --proc-root "$work/noproc"
  finding gpu-node-without-agent "node/$n1"
  # Gotcha 2: GPUs advertised (here by another device plugin) but none of the standard labels.
  gpu_node "$n2"
  K patch node "$n2" --subresource=status --type=merge -p '{"status":{"capacity":{"nvidia.com/gpu":"4"},"allocatable":{"nvidia.com/gpu":"4"}}}' >/dev/null
  workload DaemonSet "obs-doc-agent-$id" "$agent_labels" ghcr.io/tessera-gpu/tessera-agent:0.1.0
  doctor --node "$n2" --no-probe --proc-root "$work/noproc"
  finding gpu-node-without-agent "node/$n2" "none of the labels" "nvidia.com/gpu.present=true" "Node Feature Discovery"
  # An agent pod that crash-loops.
  pod "obs-doc-agent-$id" "$n1" default-scheduler '{}' "$agent_labels" ghcr.io/tessera-gpu/tessera-agent:0.1.0 '{}'
  pod_status "obs-doc-agent-$id" Running False CrashLoopBackOff
  doctor --node "$n1" --no-probe --proc-root "$work/noproc"
  finding gpu-node-without-agent "node/$n1" "not ready" "CrashLoopBackOff" "logs obs-doc-agent-$id"
  # Repaired: the agent is ready, the finding is gone.
  pod_status "obs-doc-agent-$id" Running True
  doctor --node "$n1" --no-probe --proc-root "$work/noproc"
  no_finding gpu-node-without-agent "node/$n1"
  ;;

gpu-pod-not-isolated)
  n="obs-doc-c-$id"
  gpu_node "$n" '{nvidia.com/gpu.present: "true"}'
  # Gotcha 1: a GPU pod placed by the default scheduler, and one bound by hand past the extender.
  pod "obs-doc-default-$id" "$n" default-scheduler '{}'
  pod "obs-doc-byhand-$id" "$n" tessera-scheduler '{}'
  pod "obs-doc-ok-$id" "$n" tessera-scheduler "{tessera.dev/devices: '$devices', tessera.dev/allocation-state: allocated}"
  doctor --node "$n" --no-probe --proc-root "$work/noproc"
  finding gpu-pod-not-isolated "pod/default/obs-doc-default-$id" 'scheduled by "default-scheduler"' "no memory wall" "webhook"
  finding gpu-pod-not-isolated "pod/default/obs-doc-byhand-$id" "no Tessera assignment"
  no_finding gpu-pod-not-isolated "pod/default/obs-doc-ok-$id"
  ;;

bound-not-allocated)
  n="obs-doc-d-$id"
  gpu_node "$n" '{nvidia.com/gpu.present: "true"}'
  # Gotcha 3: bound ten minutes ago, the agent never allocated it; one bound just now is still in grace.
  pod "obs-doc-stuck-$id" "$n" tessera-scheduler \
    "{tessera.dev/devices: '$devices', tessera.dev/allocation-state: pending, tessera.dev/bind-time: '$(bind_time 600)'}"
  pod "obs-doc-fresh-$id" "$n" tessera-scheduler \
    "{tessera.dev/devices: '$devices', tessera.dev/allocation-state: pending, tessera.dev/bind-time: '$(bind_time 0)'}"
  doctor --node "$n" --no-probe --proc-root "$work/noproc" --allocation-grace 120
  finding bound-not-allocated "pod/default/obs-doc-stuck-$id" "never allocated" "no ready Tessera agent" "UnexpectedAdmissionError"
  no_finding bound-not-allocated "pod/default/obs-doc-fresh-$id"
  # The agent allocates it: the finding is gone.
  K annotate pod -n default "obs-doc-stuck-$id" --overwrite tessera.dev/allocation-state=allocated >/dev/null
  doctor --node "$n" --no-probe --proc-root "$work/noproc" --allocation-grace 120
  no_finding bound-not-allocated "pod/default/obs-doc-stuck-$id"
  ;;

container-without-shim)
  n="obs-doc-e-$id"
  gpu_node "$n" '{nvidia.com/gpu.present: "true"}'
  pod "obs-doc-noshim-$id" "$n" tessera-scheduler "{tessera.dev/devices: '$devices', tessera.dev/allocation-state: allocated}"
  pod_status "obs-doc-noshim-$id" Running True
  uid=$(K get pod -n default "obs-doc-noshim-$id" -o jsonpath='{.metadata.uid}')
  # This host has no GPU and no kubelet, so the node's processes are given as a /proc tree: the pod's
  # container runs two processes with the GPU open, one with libtessera.so mapped and one without.
  proc="$work/proc"
  cid=$(printf 'c%.0s' $(seq 1 64))
  for p in 4101 4102; do
    mkdir -p "$proc/$p/fd"
    echo python3 >"$proc/$p/comm"
    echo "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod${uid//-/_}.slice/cri-containerd-$cid.scope" >"$proc/$p/cgroup"
    ln -s /dev/nvidia0 "$proc/$p/fd/5"
  done
  echo "7f0000000000-7f0000001000 r-xp 00000000 00:00 0 /usr/lib/x86_64-linux-gnu/libcuda.so.1" >"$proc/4101/maps"
  echo "7f0000000000-7f0000001000 r-xp 00000000 00:00 0 /usr/local/lib/tessera/libtessera.so" >"$proc/4102/maps"
  doctor --node "$n" --no-probe --proc-root "$proc"
  finding container-without-shim "pod/default/obs-doc-noshim-$id" "process 4101 (python3)" "without libtessera.so" "/etc/ld.so.preload"
  python3 -c 'import json,sys; f=json.load(open(sys.argv[1]))["findings"]; sys.exit(any("process 4102" in x["problem"] for x in f))' "$work/last.json" ||
    obs_fail "the process with the shim loaded was reported"
  # The process restarts with the shim: nothing to report.
  echo "7f0000000000-7f0000001000 r-xp 00000000 00:00 0 /usr/local/lib/tessera/libtessera.so" >"$proc/4101/maps"
  doctor --node "$n" --no-probe --proc-root "$proc"
  no_finding container-without-shim "pod/default/obs-doc-noshim-$id"
  ;;

version-skew)
  workload Deployment "obs-doc-sched-$id" "$sched_labels" ghcr.io/tessera-gpu/tessera-scheduler:0.1.0
  workload DaemonSet "obs-doc-agent-$id" "$agent_labels" ghcr.io/tessera-gpu/tessera-agent:0.0.9
  doctor --no-probe
  finding version-skew tessera "0.0.9 (" "daemonset/default/obs-doc-agent-$id image" "deployment/default/obs-doc-sched-$id" "helm upgrade"
  ;;

webhook-unreachable)
  # A namespace of its own, selected by the webhook, so a broken webhook cannot refuse other tests' pods.
  ns="obs-doc-$id"
  K create namespace "$ns" >/dev/null
  K label namespace "$ns" "obs-doctor=$id" >/dev/null
  K apply -f - >/dev/null <<YAML
apiVersion: admissionregistration.k8s.io/v1
kind: MutatingWebhookConfiguration
metadata: {name: obs-doc-$id}
webhooks:
- name: mutate.tessera.dev
  admissionReviewVersions: [v1]
  sideEffects: None
  failurePolicy: Fail
  timeoutSeconds: 5
  clientConfig: {service: {name: obs-doc-missing-$id, namespace: default, path: /mutate, port: 443}}
  rules: [{apiGroups: [""], apiVersions: [v1], operations: [CREATE], resources: [pods], scope: Namespaced}]
  namespaceSelector: {matchLabels: {obs-doctor: "$id"}}
  matchConditions:
  - name: asks-for-gpu
    expression: "object.spec.containers.exists(c, has(c.resources.limits) && 'nvidia.com/gpu' in c.resources.limits)"
YAML
  cleanup_obj mutatingwebhookconfiguration "obs-doc-$id"
  doctor --probe-namespace "$ns"
  finding webhook-unreachable "mutatingwebhookconfiguration/obs-doc-$id" "default/obs-doc-missing-$id, which does not exist"
  finding webhook-unreachable "mutatingwebhookconfiguration/obs-doc-$id" "no caBundle"
  finding webhook-unreachable tessera "could not call the webhook" "failed calling webhook"
  ;;

*) obs_fail "unknown case $case_name" ;;
esac
echo "ok: $case_name diagnosed"
