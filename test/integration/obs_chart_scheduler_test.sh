#!/usr/bin/env bash
# The chart's scheduler wiring, run for real: the KubeSchedulerConfiguration and the certificate Secret
# that `helm template` renders are given, as rendered, to a real kube-scheduler (v1.36, from the fixture)
# and a real `tessera scheduler`. Only what cannot exist outside a pod is changed: the kubeconfig (no
# service account here), leader election off (the fixture's scheduler identity may hold only its own
# Lease), and the mount path of the certificate. A pod written for HAMi (schedulerName = the chart's extra
# profile, seed worker A's limits) must then be bound through the extender over HTTPS, verified with the
# chart's certificate, to the one node that has GPUs, with Tessera's assignment annotations.
set -euo pipefail
. "$(dirname "$0")/obs_lib.sh"
[ -x "$TESSERA" ] || obs_fail "$TESSERA not built"
chart="$TESSERA_SOURCE_DIR/deploy/helm/tessera"
id=$(obs_id)
work=$(mktemp -d)
on_exit "rm -rf '$work'"
node="obs-cfg-$id"
pod="obs-cfg-$id"
https_port=$(free_port)
extender_port=$(free_port)
metrics_port=$(free_port)
# Unique profile names, so no other scheduler on the shared control plane competes for the pod.
main_name="obs-tessera-$id"
hami_name="obs-hami-$id"

"$HELM" template "obs-cfg-$id" "$chart" --namespace default --kube-version "$TESSERA_KUBE_VERSION" \
  --set scheduler.name="$main_name" --set "scheduler.extraNames={$hami_name}" \
  --set scheduler.port="$https_port" --set scheduler.extenderPort="$extender_port" >"$work/chart.yaml"
objects_json "$work/chart.yaml" "$work/chart.json"
python3 - "$work" <<'PY'
import base64, json, sys
work = sys.argv[1]
docs = json.load(open(f"{work}/chart.json"))
cm = next(d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"].endswith("-scheduler-config"))
sec = next(d for d in docs if d["kind"] == "Secret")
for k in ("tls.crt", "tls.key"):
    open(f"{work}/{k}", "wb").write(base64.b64decode(sec["data"][k]))
# Edited as text (no YAML module needed), each edit checked to apply exactly once.
cfg = cm["data"]["config.yaml"]
def edit(old, new):
    global cfg
    assert cfg.count(old) == 1, (old, cfg)
    cfg = cfg.replace(old, new)
edit("kind: KubeSchedulerConfiguration\n",
     "kind: KubeSchedulerConfiguration\nclientConnection: {kubeconfig: \"@KUBECONFIG@\"}\n")
edit("  leaderElect: true\n", "  leaderElect: false\n")
edit("caFile: /etc/tessera/tls/tls.crt", f"caFile: {work}/tls.crt")
open(f"{work}/kube-scheduler.yaml", "w").write(cfg)
dep = next(d for d in docs if d["kind"] == "Deployment")
args = next(c for c in dep["spec"]["template"]["spec"]["containers"] if c["name"] == "tessera-scheduler")["args"]
open(f"{work}/args", "w").write("\n".join(args) + "\n")
PY

# The chart's ServiceAccount and the scheduler's ClusterRole(Binding), for real; a kubeconfig with its token.
chart_sa_kubeconfig "obs-cfg-$id" scheduler "$work" create pods --subresource=binding
chart_sa_cannot patch pods
chart_sa_cannot create secrets

# tessera scheduler with the chart's own arguments, the certificate paths and the API access swapped.
mapfile -t args <"$work/args"
run_args=()
for a in "${args[@]}"; do
  case "$a" in
  --tls-cert=*) run_args+=("--tls-cert=$work/tls.crt") ;;
  --tls-key=*) run_args+=("--tls-key=$work/tls.key") ;;
  --listen=*) run_args+=("--listen=127.0.0.1:$https_port") ;;
  --webhook-exempt-namespace=*) ;;  # the release namespace "default" is shared with other tests here
  --metrics-port=*) run_args+=("--metrics-port=$metrics_port") ;;
  *) run_args+=("$a") ;;
  esac
done
start_bg "$work/tessera-scheduler.log" "$TESSERA" "${run_args[@]}" --kubeconfig "$work/scheduler.kubeconfig" \
  --metrics-address 127.0.0.1 --node-label-selector "obs-cfg=$id"
show_log_on_failure "$work/tessera-scheduler.log"
poll 60 "tessera scheduler /healthz" curl -sf "http://127.0.0.1:$metrics_port/healthz"

"$TESSERA_SOURCE_DIR/test/kube/start-scheduler" --state "$TESSERA_KUBE_STATE" --name "obs-$id" \
  --config "$work/kube-scheduler.yaml" >"$work/start-scheduler.out" 2>&1 ||
  { cat "$work/start-scheduler.out" >&2; obs_fail "kube-scheduler refused the chart's configuration"; }
on_exit "'$TESSERA_SOURCE_DIR/test/kube/start-scheduler' --state '$TESSERA_KUBE_STATE' --stop 'obs-$id' >/dev/null 2>&1"
show_log_on_failure "$TESSERA_KUBE_STATE/logs/kube-scheduler-obs-$id.log"

# A GPU node as the agent leaves it: GPUs published on the Node, nvidia.com/gpu in its capacity.
uuid="GPU-0cf90000-0000-4000-8000-0000000$(printf '%05d' $((RANDOM % 100000)))"
"${KUBECTL[@]}" apply -f - >/dev/null <<YAML
apiVersion: v1
kind: Node
metadata:
  name: $node
  labels: {obs-cfg: "$id", nvidia.com/gpu.present: "true"}
  annotations:
    tessera.dev/gpus: '[{"uuid":"$uuid","model":"NVIDIA L40S","memory_mib":46068,"cores":100,"numa":0,"healthy":true}]'
spec: {taints: [{key: obs.tessera.dev/cfg, value: "$id", effect: NoSchedule}]}
YAML
on_exit "'${KUBECTL[0]}' --kubeconfig '$TESSERA_KUBECONFIG' delete node $node --ignore-not-found >/dev/null 2>&1"
"${KUBECTL[@]}" patch node "$node" --subresource=status --type=merge -p \
  '{"status":{"capacity":{"nvidia.com/gpu":"10","cpu":"8","memory":"32Gi","pods":"110"},"allocatable":{"nvidia.com/gpu":"10","cpu":"8","memory":"32Gi","pods":"110"}}}' >/dev/null

# Seed worker A's pod spec, under the chart's extra (HAMi-style) profile name.
"${KUBECTL[@]}" create -f - >/dev/null <<YAML
apiVersion: v1
kind: Pod
metadata: {name: $pod, namespace: default}
spec:
  schedulerName: $hami_name
  nodeSelector: {obs-cfg: "$id"}
  tolerations: [{key: obs.tessera.dev/cfg, operator: Exists}]
  containers:
  - name: gpu-worker
    image: pytorch/pytorch:2.2.0-cuda12.1-cudnn8-runtime
    command: ["python3", "-u", "-c", "print('hi')"]
    resources:
      limits: {nvidia.com/gpu: "1", nvidia.com/gpucores: "25", nvidia.com/gpumem-percentage: "20"}
YAML
on_exit "'${KUBECTL[0]}' --kubeconfig '$TESSERA_KUBECONFIG' delete pod -n default $pod --grace-period=0 --force --ignore-not-found >/dev/null 2>&1"
bound() { [ "$("${KUBECTL[@]}" get pod -n default "$pod" -o jsonpath='{.spec.nodeName}')" = "$node" ]; }
poll 60 "the pod to be bound through the chart's kube-scheduler + extender" bound
devices=$("${KUBECTL[@]}" get pod -n default "$pod" -o jsonpath='{.metadata.annotations.tessera\.dev/devices}')
python3 - "$devices" "$uuid" <<'PY' || obs_fail "assignment annotation is not worker A's slice: $devices"
import json, sys
d = json.loads(sys.argv[1])
assert len(d) == 1 and len(d[0]) == 1, d
g = d[0][0]
assert g["uuid"] == sys.argv[2] and g["cores"] == 25 and g["memory_mib"] == 46068 * 20 // 100, g
PY
binds=$(curl -sf "http://127.0.0.1:$metrics_port/metrics" | awk '/^tessera_scheduler_binds_total /{print $2}')
[ "${binds:-0}" -ge 1 ] || obs_fail "tessera scheduler did not count the bind"
echo "ok: bound to $node with $devices"
