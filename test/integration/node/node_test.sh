#!/usr/bin/env bash
# The real one-node cluster, step by step (ctest runs each step as a test, in this order; `make demo
# NODE=real` runs them all): node_test.sh STEP
#   up            scripts/kube-up --node: control plane, containerd + runc, kubelet, kube-proxy, CNI
#   kubelet       the Node is Ready, is the pinned kubelet on containerd 2 with our kubelet config
#   images        the test's stand-in images (kube-scheduler, worker) imported; the fake driver in place
#   quickstart    docs/quickstart.md's "without a registry" block, run verbatim: build and import the two
#                 images, helm install the chart (defaults), apply the seed's two workers, nvidia-smi
#   helm          the chart's pods run in containers; the device plugin registered with the kubelet
#   workers       the seed's workers Running, placed by Tessera (webhook reached through its Service)
#   in_container  inside each worker: cudaMemGetInfo, the slice's cores, nvidia-smi and the
#                 out-of-memory past the wall match what the scheduler chose; :31992 names the containers
#   pod_delete    a deleted worker pod's slice is removed on the node
#   agent_restart the agent pod restarted: the running workers keep their slices
#   dra_mode      the workers deleted, `helm upgrade --set mode=dra`: the agent is the kubelet's DRA plugin
#                 and publishes the node's ResourceSlice; tessera scheduler serves only the webhooks
#   dra_workers   the seed's workers applied again, unchanged: the webhook turned their requests into
#                 ResourceClaims, the cluster's kube-scheduler allocated them, the kubelet prepared them
#   dra_in_container  inside each worker, as in_container, the slice its claim was allocated
#   down          scripts/kube-down, then nothing left: processes, mounts, interfaces, iptables
#                 chains, cgroups, host directories, device stand-ins
# Environment (from CMake): TESSERA_NODE_STATE, TESSERA_SOURCE_DIR, TESSERA_BINARY_DIR. Needs root: exits
# 77 (skipped) otherwise.
set -euo pipefail
step=${1:?usage: node_test.sh STEP}
state=${TESSERA_NODE_STATE:?}
src=${TESSERA_SOURCE_DIR:?}
bld=${TESSERA_BINARY_DIR:?}
say() { echo "node_test $step: $*"; }
fail() { echo "node_test $step: FAIL: $*" >&2; exit 1; }
if [ "$(id -u)" != 0 ]; then say "needs root (a real kubelet and container runtime); skipped"; exit 77; fi

if [ "$step" = up ]; then
  exec "$src/scripts/kube-up" --node "$state" >/dev/null
fi
if [ "$step" = down ]; then
  "$src/scripts/kube-down" "$state"
  left=()
  [ ! -e "$state" ] || left+=("state directory $state")
  grep -qF "$state" /proc/self/mountinfo && left+=("mounts under $state")
  awk '{print $5}' /proc/self/mountinfo | grep -qE '^(/var/lib/kubelet|/run/containerd|/run/tessera|/var/lib/tessera)(/|$)' && left+=("mounts under the node's host directories")
  for d in /var/lib/kubelet /var/lib/tessera /run/tessera /run/containerd /run/cdi /var/lib/cni /var/log/containers /run/tessera-node.owner; do
    [ ! -e "$d" ] || left+=("$d")
  done
  for l in tessera-node0 tsr-cni0; do ip link show "$l" >/dev/null 2>&1 && left+=("interface $l"); done
  rules=$(iptables-save 2>/dev/null || true)
  if grep -q 'KUBE-' <<<"$rules"; then left+=("iptables KUBE-* chains"); fi
  for c in /sys/fs/cgroup/*/kubepods; do [ -d "$c" ] && left+=("cgroup $c"); done
  for p in /proc/[0-9]*; do
    if tr '\0' ' ' <"$p/cmdline" 2>/dev/null | grep -qF "$state/"; then left+=("process ${p#/proc/}: $(tr '\0' ' ' <"$p/cmdline")"); fi
  done
  for d in /dev/nvidiactl /dev/nvidia-uvm /dev/nvidia0 /dev/nvidia1; do
    [ -c "$d" ] && [ "$(stat -c %t:%T "$d")" = 1:3 ] && left+=("device stand-in $d")
  done
  [ ${#left[@]} -eq 0 ] || { printf 'left behind: %s\n' "${left[@]}" >&2; exit 1; }
  say "stopped; nothing left behind"
  exit 0
fi

[ -f "$state/env" ] || fail "no node in $state (the step 'up' failed?)"
# shellcheck source=/dev/null
. "$state/env"
export PATH="$TESSERA_KUBE_BIN:$TESSERA_NODE_BIN:$PATH"
ctr_() { ctr --address "$TESSERA_NODE_CONTAINERD" -n k8s.io "$@"; }
ns=tessera-system
# wait_for SECONDS WHAT CMD...: polls CMD until it succeeds.
wait_for() {
  local t=$1 what=$2 deadline
  shift 2
  deadline=$((SECONDS + t))
  until "$@" >/dev/null 2>&1; do
    [ $SECONDS -lt $deadline ] || fail "no $what after ${t}s"
    sleep 1
  done
}
worker_pod() { kubectl get pods -l "app=gpu-worker,instance=$1" --field-selector=status.phase=Running -o jsonpath='{.items[0].metadata.name}'; }
agent_pod() { kubectl -n $ns get pods -l app.kubernetes.io/component=agent -o jsonpath='{.items[0].metadata.name}'; }
# slice_dirs: the slice directories the agent keeps on the node, one "dir pod-uid" per line.
slice_dirs() {
  local d
  for d in /var/lib/tessera/slices/*/; do
    [ -f "$d/owner.json" ] || continue
    echo "${d%/} $(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["pod_uid"])' "$d/owner.json")"
  done
}

case "$step" in
kubelet)
  node=$TESSERA_NODE_NAME
  kubelet_v=$(kubectl get node "$node" -o jsonpath='{.status.nodeInfo.kubeletVersion}')
  runtime_v=$(kubectl get node "$node" -o jsonpath='{.status.nodeInfo.containerRuntimeVersion}')
  [ "$kubelet_v" = "$TESSERA_KUBE_VERSION" ] || fail "kubelet is $kubelet_v, want $TESSERA_KUBE_VERSION"
  case "$runtime_v" in containerd://v2.*|containerd://2.*) ;; *) fail "runtime is $runtime_v, want containerd 2" ;; esac
  node_ready() { [ "$(kubectl get node "$node" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}')" = True ]; }
  node_ready || fail "Node $node is not Ready"
  alloc=$(kubectl get node "$node" -o jsonpath='{.status.allocatable.pods}')
  [ "${alloc:-0}" = 30 ] || fail "Node $node allocatable pods is '$alloc', want the kubelet config's maxPods 30"
  say "Node $node Ready: kubelet $kubelet_v, $runtime_v, maxPods $alloc"
  ;;

images)
  out=$state/node/test-images
  "$src/deploy/images/build-oci" --build "$bld" --out "$out" --images kube-scheduler,worker --kube-bin "$TESSERA_KUBE_BIN"
  while read -r file repo tag; do
    ctr_ images import --all-platforms --base-name "$repo" "$out/$file" >/dev/null
    grep -qxF "$repo:$tag" <<<"$(ctr_ images ls -q)" || fail "$repo:$tag is not in containerd after the import"
  done <"$out/images.txt"
  # The GPU "driver" the node's container hook mounts into GPU containers: the fake libcuda and NVML
  # (two 16 GiB fake GPUs) and the nvidia-smi stand-in.
  install -m 0755 "$bld/src/shim/testing/lib/libcuda.so.1" "$bld/src/shim/testing/lib/libnvidia-ml.so.1" "$state/node/driver/lib/"
  install -m 0755 "$bld/test/integration/node/nvidia-smi" "$state/node/driver/bin/nvidia-smi"
  say "imported: $(awk '{printf "%s:%s ", $2, $3}' "$out/images.txt"); fake driver installed"
  ;;

quickstart)
  # The block between the markers, run as a user would from the repository root (build/ = the build).
  block=$(awk '/<!-- node-test:begin -->/{on=1; next} /<!-- node-test:end -->/{on=0} on' "$src/docs/quickstart.md" | sed '/^```/d')
  [ -n "$block" ] || fail "docs/quickstart.md has no <!-- node-test:begin --> ... <!-- node-test:end --> block"
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  ln -s "$src/deploy" "$work/deploy"
  ln -s "$src/test" "$work/test"
  ln -s "$bld" "$work/build"
  say "running docs/quickstart.md's commands:"
  echo "$block" | sed 's/^/    /'
  # ctr reaches the test node's containerd through CONTAINERD_ADDRESS, as on a node with its own socket.
  (cd "$work" && CONTAINERD_ADDRESS=$TESSERA_NODE_CONTAINERD bash -euxo pipefail -c "$block") \
    || fail "a command of docs/quickstart.md failed"
  ;;

helm)
  kubectl -n $ns rollout status ds -l app.kubernetes.io/component=agent --timeout=120s >/dev/null 2>&1 || true
  kubectl -n $ns get pods -o wide
  for c in agent scheduler; do
    n=$(kubectl -n $ns get pods -l app.kubernetes.io/component=$c -o jsonpath='{range .items[*]}{.status.phase}{"\n"}{end}' | grep -c Running || true)
    [ "$n" -ge 1 ] || fail "no Running $c pod"
  done
  alloc=$(kubectl get node "$TESSERA_NODE_NAME" -o jsonpath='{.status.allocatable.nvidia\.com/gpu}')
  [ "${alloc:-0}" -gt 0 ] || fail "the Node has no allocatable nvidia.com/gpu: the agent's device plugin did not register with the kubelet"
  grep -q 'tessera' <(ls /var/lib/kubelet/device-plugins/) || fail "no Tessera socket in /var/lib/kubelet/device-plugins"
  say "agent and scheduler Running in containers; kubelet advertises nvidia.com/gpu: $alloc"
  ;;

workers)
  for w in worker-a worker-b; do
    wait_for 120 "Running pod of $w" worker_pod "$w"
    pod=$(worker_pod "$w")
    sched=$(kubectl get pod "$pod" -o jsonpath='{.spec.schedulerName}')
    node=$(kubectl get pod "$pod" -o jsonpath='{.spec.nodeName}')
    devices=$(kubectl get pod "$pod" -o jsonpath='{.metadata.annotations.tessera\.dev/devices}')
    [ -n "$devices" ] || fail "$pod has no tessera.dev/devices annotation: not placed by Tessera"
    say "$w: $pod Running on $node, schedulerName $sched, devices $devices"
  done
  ;;

in_container)
  python3 "$src/test/integration/node/check_workers.py" --node-ip "$TESSERA_NODE_IP"
  ;;

pod_delete)
  pod=$(worker_pod worker-b)
  uid=$(kubectl get pod "$pod" -o jsonpath='{.metadata.uid}')
  # The agent names the pod in the slice's owner.json once the kubelet's PodResources confirms it.
  # Searched after the listing is complete: `slice_dirs | grep -q` under pipefail fails when grep stops
  # early and the listing dies of SIGPIPE.
  owned() { local l; l=$(slice_dirs); grep -q " $uid$" <<<"$l"; }
  wait_for 60 "slice of $pod ($uid) on the node before the delete" owned
  kubectl delete pod "$pod" --wait=true --timeout=90s >/dev/null
  gone() { ! owned; }
  wait_for 90 "removal of $pod's slice" gone
  say "deleted $pod: its slice is gone from /var/lib/tessera/slices"
  wait_for 120 "replacement worker-b pod" worker_pod worker-b
  ;;

agent_restart)
  before=$(slice_dirs | sort)
  [ -n "$before" ] || fail "no slices before the restart"
  old=$(agent_pod)
  kubectl -n $ns delete pod "$old" --wait=true --timeout=90s >/dev/null
  new_running() { [ "$(agent_pod)" != "$old" ] && kubectl -n $ns wait --for=condition=Ready "pod/$(agent_pod)" --timeout=5s; }
  wait_for 120 "a new Ready agent pod" new_running
  after=$(slice_dirs | sort)
  [ "$before" = "$after" ] || fail "slices changed across the agent restart: before [$before] after [$after]"
  python3 "$src/test/integration/node/check_workers.py" --node-ip "$TESSERA_NODE_IP"
  say "agent $old replaced by $(agent_pod); workers kept their slices"
  ;;

dra_mode)
  kubectl delete deployment gpu-worker-a gpu-worker-b --wait=true --timeout=90s >/dev/null
  no_workers() { [ -z "$(kubectl get pods -l app=gpu-worker -o name)" ]; }
  wait_for 90 "end of the extender-path workers" no_workers
  helm upgrade tessera "$src/deploy/helm/tessera" -n $ns --reuse-values --set mode=dra --wait --timeout 5m >/dev/null \
    || fail "helm upgrade --set mode=dra failed"
  kubectl get deviceclass gpu.tessera.io >/dev/null || fail "no DeviceClass gpu.tessera.io"
  slice_devices() { kubectl get resourceslice "$TESSERA_NODE_NAME-gpu.tessera.io" -o jsonpath='{range .spec.devices[*]}{.name}{"\n"}{end}'; }
  has_slice() { [ "$(slice_devices | grep -c .)" = 2 ]; }
  wait_for 120 "ResourceSlice of $TESSERA_NODE_NAME with the node's two GPUs" has_slice
  [ -S /var/lib/kubelet/plugins_registry/gpu.tessera.io-reg.sock ] || fail "no DRA registration socket in the kubelet's plugins_registry"
  args=$(kubectl -n $ns get deploy -l app.kubernetes.io/component=scheduler -o jsonpath='{.items[0].spec.template.spec.containers[*].args}')
  grep -q -- '--mode=dra' <<<"$args" || fail "tessera scheduler does not run --mode=dra: $args"
  say "mode dra: ResourceSlice $(slice_devices | tr '\n' ' ')published; the agent registered with the kubelet as DRA plugin"
  ;;

dra_workers)
  kubectl apply -f "$src/deploy/examples/worker-a.yaml" -f "$src/deploy/examples/worker-b.yaml" >/dev/null
  for w in worker-a worker-b; do
    wait_for 180 "Running pod of $w on the DRA path" worker_pod "$w"
    pod=$(worker_pod "$w")
    sched=$(kubectl get pod "$pod" -o jsonpath='{.spec.schedulerName}')
    claim=$(kubectl get pod "$pod" -o jsonpath='{.status.resourceClaimStatuses[0].resourceClaimName}')
    [ -n "$claim" ] || fail "$pod has no ResourceClaim: the DRA webhook did not translate it"
    [ "$sched" = default-scheduler ] || fail "$pod schedulerName is $sched, want default-scheduler"
    alloc=$(kubectl get resourceclaim "$claim" -o jsonpath='{.status.allocation.devices.results[0].device} {.status.allocation.devices.results[0].consumedCapacity}')
    say "$w: $pod Running, schedulerName $sched, claim $claim allocated $alloc"
  done
  ;;

dra_in_container)
  python3 "$src/test/integration/node/check_workers.py" --node-ip "$TESSERA_NODE_IP" --dra
  ;;

*) fail "unknown step '$step'" ;;
esac
