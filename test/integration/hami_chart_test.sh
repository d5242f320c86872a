#!/usr/bin/env bash
# HAMi compatibility of the chart (issue 18, item 5): values.schema.json refuses unknown keys naming them;
# HAMi's common value names are honoured (or refused naming the Tessera key); the seed's ServiceMonitors
# (deploy/examples/servicemonitor.yaml) select both metrics Services of a rendered chart, by label and
# port name, and the rendering passes server-side dry run with the seed's workers.
set -euo pipefail
. "$(dirname "$0")/obs_lib.sh"

chart="$TESSERA_SOURCE_DIR/deploy/helm/tessera"
work=$(mktemp -d)
on_exit "rm -rf '$work'"
rel="hami-chart-$(obs_id)"

"$TESSERA_SOURCE_DIR/scripts/chart-schema" --check || obs_fail "values.schema.json does not match values.yaml"

bad() {  # bad EXPECTED-MESSAGE helm-args...
  local want=$1
  shift
  if "$HELM" template "$rel" "$chart" "$@" >"$work/bad.out" 2>&1; then obs_fail "accepted: $*"; fi
  grep -qF -- "$want" "$work/bad.out" || { cat "$work/bad.out" >&2; obs_fail "message for $* lacks: $want"; }
}
echo "== unknown keys are refused by name (lint and template)"
bad "additional properties 'splt' not allowed" --set agent.splt=3
bad "additional properties 'nodePolicyy' not allowed" --set scheduler.nodePolicyy=spread
if "$HELM" lint --strict "$chart" --set agent.splt=3 >"$work/lint.out" 2>&1; then obs_fail "lint accepted agent.splt"; fi
grep -q "splt" "$work/lint.out" || obs_fail "lint does not name agent.splt"
echo "== HAMi names Tessera has no equivalent for are refused naming the Tessera key"
bad "resourceName is HAMi's value name; Tessera's is resourceNames.gpu" --set resourceName=nvidia.com/gpu
bad "schedulerName is HAMi's value name; Tessera's is scheduler.name" --set schedulerName=hami-scheduler
bad "devicePlugin.deviceSplitCount (HAMi's name for agent.split) is 99; allowed: 1..64" --set devicePlugin.deviceSplitCount=99
bad "agent.memoryScaling (HAMi: devicePlugin.deviceMemoryScaling) is 40; allowed: 0.1..16" --set devicePlugin.deviceMemoryScaling=40
bad 'agent.computeMode is "mps"; allowed: time-sliced, spatial' --set agent.computeMode=mps

echo "== HAMi's common values are honoured"
"$HELM" template "$rel" "$chart" --namespace default --kube-version "$TESSERA_KUBE_VERSION" \
  --set scheduler.kubeScheduler.imageTag=v1.31.4 --set devicePlugin.deviceSplitCount=4 \
  --set devicePlugin.deviceMemoryScaling=1.5 --set devicePlugin.deviceCoreScaling=2 \
  --set-string nvidiaNodeSelector.gpu=on --set-string devicePlugin.nvidiaNodeSelector.pool=a \
  --set scheduler.defaultSchedulerPolicy.nodeSchedulerPolicy=spread \
  --set scheduler.defaultSchedulerPolicy.gpuSchedulerPolicy="binpack\\,topology-aware" \
  --set 'agent.nodeConfig[0].name=gpu-1' --set 'agent.nodeConfig[0].devicesplitcount=2' >"$work/hami.yaml" ||
  obs_fail "helm template with HAMi values failed"
for want in 'image: registry.k8s.io/kube-scheduler:v1.31.4$' '- --split=4$' '- --memory-scaling=1.5$' \
  '- --core-scaling=2$' '^        gpu: "on"$' '^        pool: a$' '- --node-policy=spread$' \
  '- --gpu-policy=binpack,topology-aware$' '"devicesplitcount": 2'; do
  grep -Eq -- "$want" "$work/hami.yaml" || obs_fail "HAMi values not honoured: no /$want/"
done

echo "== the seed's ServiceMonitors select both metrics Services"
python3 - "$work/hami.yaml" "$TESSERA_SOURCE_DIR/deploy/examples/servicemonitor.yaml" "$rel" <<'PY' ||
import sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
monitors = [d for d in yaml.safe_load_all(open(sys.argv[2])) if d]
rel = sys.argv[3]
services = [d for d in docs if d["kind"] == "Service"]
workloads = {d["metadata"]["name"]: d for d in docs if d["kind"] in ("Deployment", "DaemonSet")}
served = set()
for m in monitors:
    sel = m["spec"]["selector"]["matchLabels"]
    ports = {e["port"] for e in m["spec"]["endpoints"]}
    hits = [s for s in services if all(s["metadata"].get("labels", {}).get(k) == v for k, v in sel.items())
            and any(p.get("name") in ports for p in s["spec"]["ports"])]
    assert len(hits) == 1, f"{m['metadata']['name']}: selects {[s['metadata']['name'] for s in hits]}"
    svc = hits[0]
    # The Service reaches the component's metrics port: its selector matches the pods, targetPort is theirs.
    pods = [w for w in workloads.values()
            if all(w["spec"]["template"]["metadata"]["labels"].get(k) == v for k, v in svc["spec"]["selector"].items())]
    assert len(pods) == 1, f"{svc['metadata']['name']} selects {len(pods)} workloads"
    port = next(p for p in svc["spec"]["ports"] if p["name"] in ports)
    names = {cp.get("name") for c in pods[0]["spec"]["template"]["spec"]["containers"] for cp in c.get("ports", [])}
    assert port["targetPort"] in names, (port, names)
    served.add(pods[0]["kind"])
assert served == {"Deployment", "DaemonSet"}, served
print("seed ServiceMonitors select the scheduler and agent metrics")
PY
  obs_fail "the seed's ServiceMonitors do not select both metrics Services"

echo "== server-side dry run of that rendering, the seed's ServiceMonitors and workers"
"${KUBECTL[@]}" apply --dry-run=server --validate=strict -f "$work/hami.yaml" >"$work/dry.out" 2>&1 ||
  { cat "$work/dry.out" >&2; obs_fail "server-side dry run refused the HAMi-values rendering"; }
if "${KUBECTL[@]}" get crd servicemonitors.monitoring.coreos.com >/dev/null 2>&1; then
  "${KUBECTL[@]}" apply --dry-run=server -n default -f "$TESSERA_SOURCE_DIR/deploy/examples/servicemonitor.yaml" >/dev/null ||
    obs_fail "the seed's ServiceMonitors were refused"
fi
"${KUBECTL[@]}" apply --dry-run=server --validate=strict -n default -f "$TESSERA_SOURCE_DIR/deploy/examples/worker-a.yaml" \
  -f "$TESSERA_SOURCE_DIR/deploy/examples/worker-b.yaml" >/dev/null || obs_fail "the seed's workers were refused"
echo "ok: HAMi values honoured or refused by name; seed ServiceMonitors select both metrics Services"
