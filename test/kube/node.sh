# The real one-node cluster's node: containerd (+ runc, Debian's), the pinned kubelet and kube-proxy, CNI
# bridge networking. Sourced by scripts/kube-up --node and scripts/kube-down, after lib.sh.
#
# The node keeps the standard layout, so the chart installs with its defaults (as on a user's node):
# the kubelet's root /var/lib/kubelet, the agent's /var/lib/tessera and /run/tessera. Those, and what
# else must live outside STATE/node (containerd's shim sockets in /run/containerd, the CNI result cache
# /var/lib/cni, /var/log/containers, the dummy interface that carries the node's address, the CNI bridge,
# the kubepods cgroups, kube-proxy's iptables chains, stand-in /dev/nvidia* nodes) must not exist before
# (kube-up refuses otherwise); they, and the host sysctls the kubelet and CNI set, are recorded in
# STATE/node/created and removed (restored) by node_down. Runtime state (containerd's root and state, runc's, CNI IP leases, pod logs)
# stays in STATE/node.
#
# Networking, the smallest that runs the chart unchanged: the node's address TESSERA_NODE_IP (default
# 10.250.0.1) on an interface of its own (a bridge with no ports; nothing outside this machine routes to it); pods on a
# CNI bridge (reference plugins bridge, host-local, loopback from Debian) in 10.244.0.0/24, no masquerade;
# kube-proxy (iptables) for Service IPs (10.96.0.0/16: the API server's "kubernetes" Service the pods
# use, the webhook's Service the API server calls) and NodePorts, which it opens on the node address only.

NODE_IFACE=tessera-node0
NODE_BRIDGE=tsr-cni0
NODE_POD_CIDR=10.244.0.0/24
NODE_OWNER=/run/tessera-node.owner
NODE_KUBELET_DIR=/var/lib/kubelet
# Host directories the node creates (and node_down removes).
NODE_HOST_DIRS=(/var/lib/kubelet /var/lib/tessera /run/tessera /run/containerd /run/cdi /var/lib/cni /var/log/containers)

node_ip() { echo "${TESSERA_NODE_IP:-10.250.0.1}"; }
node_name() { echo "${TESSERA_NODE_NAME:-tessera-node}"; }
node_record() { local f=$1/node/created; shift; echo "$*" >>"$f"; }

# node_prepare STATE: checks, then the node's address. Runs before the API server (which binds to it).
node_prepare() {
  local state=$1 ip t owner
  ip=$(node_ip)
  [ "$(id -u)" = 0 ] || kube_die "--node needs root (containerd, kubelet, network namespaces)"
  for t in runc ip iptables iptables-restore umoci cc mountpoint; do
    command -v "$t" >/dev/null 2>&1 || kube_die "'$t' is not installed (scripts/setup installs it)"
  done
  for t in bridge host-local loopback; do
    [ -x "/usr/lib/cni/$t" ] || kube_die "/usr/lib/cni/$t is missing (Debian package containernetworking-plugins; scripts/setup)"
  done
  grep -q ' cgroup ' /proc/mounts || grep -q ' cgroup2 ' /proc/mounts || kube_die "no cgroup filesystem mounted"
  # One node per machine: it owns fixed host things (an interface, NodePorts, kubepods cgroups).
  if [ -f "$NODE_OWNER" ]; then
    owner=$(cat "$NODE_OWNER")
    if [ "$owner" != "$state" ] && [ -d "$owner/node" ]; then
      kube_die "a node of $owner is still up on this machine (scripts/kube-down $owner stops it)"
    fi
  fi
  if node_kube_chains; then
    # Chains with no kubelet or kube-proxy alive are a dead node's leftovers (a run killed before its
    # teardown): removed. With one alive, they are another node's: refuse.
    if pgrep -x kubelet >/dev/null 2>&1 || pgrep -x kube-proxy >/dev/null 2>&1; then
      kube_die "iptables has KUBE-* chains and a kubelet or kube-proxy runs on this machine; the test node needs neither"
    fi
    echo "$KUBE_PROG: removing KUBE-* iptables chains left by a node that is gone (no kubelet or kube-proxy runs)" >&2
    node_iptables_clean
    node_kube_chains && kube_die "KUBE-* iptables chains could not be removed"
  fi
  ip link show "$NODE_IFACE" >/dev/null 2>&1 && kube_die "interface $NODE_IFACE exists already (a node left behind? scripts/kube-down its state dir, or: ip link del $NODE_IFACE)"
  ip link show "$NODE_BRIDGE" >/dev/null 2>&1 && kube_die "interface $NODE_BRIDGE exists already (a node left behind? ip link del $NODE_BRIDGE)"
  local sock="$state/node/containerd/containerd.sock.ttrpc" d node_alive=
  [ ${#sock} -lt 100 ] || kube_die "state directory $state is too long for containerd's unix sockets (${#sock} > 99 bytes); use a shorter one"
  { pgrep -x kubelet || pgrep -x containerd; } >/dev/null 2>&1 && node_alive=1
  for d in "${NODE_HOST_DIRS[@]}"; do
    [ -e "$d" ] || continue
    # A directory tree with nothing but directories in it, no mount under it and no kubelet or
    # containerd alive holds no one's state (a tool that made it and exited, a run killed mid-teardown):
    # removed. Anything else may be another node's: refused, naming what is there.
    if [ -z "$node_alive" ] && [ -d "$d" ] && [ -z "$(find "$d" ! -type d -print -quit 2>/dev/null)" ] &&
       [ -z "$(node_mounts_under "$d")" ]; then
      echo "$KUBE_PROG: removing $d (only empty directories, no kubelet or containerd runs)" >&2
      rm -rf --one-file-system "$d"
      continue
    fi
    kube_die "$d exists: another kubelet or container runtime on this machine? The test node needs it absent (and removes it when done); it holds: $(find "$d" -maxdepth 2 ! -type d 2>/dev/null | head -n 5 | tr '\n' ' ')"
  done
  mkdir -p "$state/node"/{containerd,cni/net.d,cni/ipam,pod-logs,images}
  : >"$state/node/created"
  echo "$state" >"$NODE_OWNER"
  for d in "${NODE_HOST_DIRS[@]}"; do
    mkdir -p "$d"
    node_record "$state" "dir $d"
  done
  # Host sysctls the node changes: the CNI bridge turns on forwarding; the kubelet sets its kernel
  # tunables (overcommit, panic on oops, key quotas). Restored by node_down.
  local k
  for k in net.ipv4.ip_forward vm.overcommit_memory vm.panic_on_oom kernel.panic kernel.panic_on_oops \
      kernel.keys.root_maxkeys kernel.keys.root_maxbytes; do
    [ -f "/proc/sys/${k//.//}" ] && node_record "$state" "sysctl $k $(cat "/proc/sys/${k//.//}")"
  done
  ip link add "$NODE_IFACE" type bridge  # a bridge without ports: the kernel may lack dummy devices
  node_record "$state" "link $NODE_IFACE"
  ip addr add "$ip/32" dev "$NODE_IFACE"
  ip link set "$NODE_IFACE" up
}

# node_start STATE TIMEOUT: containerd, the pause image, kubelet, kube-proxy; waits until the Node is Ready.
node_start() {
  local state=$1 timeout=$2 node=$1/node pki=$1/pki ip name nbin sock
  ip=$(node_ip); name=$(node_name)
  if [ -n "${TESSERA_NODE_BIN:-}" ]; then nbin=$TESSERA_NODE_BIN; else nbin=$("$root/test/kube/build-node"); fi
  for b in kubelet kube-proxy containerd containerd-shim-runc-v2 ctr; do
    [ -x "$nbin/$b" ] || kube_die "$nbin/$b is missing (run test/kube/build-node)"
  done
  ln -sfn "$nbin" "$node/bin"
  sock=$node/containerd/containerd.sock

  # GPU device nodes the device plugin may hand to containers; on a machine without NVIDIA's driver they
  # are stand-ins (the null device), created only where absent, so the fake driver's containers start.
  local d
  for d in nvidiactl nvidia-uvm nvidia0 nvidia1; do
    if [ ! -e "/dev/$d" ]; then
      mknod -m 0666 "/dev/$d" c 1 3
      node_record "$state" "dev /dev/$d"
    fi
  done

  # --- The GPU driver's container hook, as NVIDIA's container toolkit does it: a container whose
  # environment names GPUs (NVIDIA_VISIBLE_DEVICES, which the agent's Allocate sets) gets the driver's
  # libcuda.so.1, libnvidia-ml.so.1 and nvidia-smi bind-mounted in. Here "the driver" is whatever is in
  # STATE/node/driver/{lib,bin} (the test puts the fake driver, fake NVML and the nvidia-smi stand-in
  # there); empty, containers run untouched. runc itself does the rest.
  mkdir -p "$node/driver/lib" "$node/driver/bin"
  cat >"$node/runc-gpu-hook" <<EOF
#!/bin/sh
# runc with NVIDIA-container-toolkit-like driver injection for the test node (test/kube/node.sh).
bundle=
prev=
for a in "\$@"; do
  [ "\$prev" = --bundle ] && bundle=\$a
  case "\$a" in --bundle=*) bundle=\${a#--bundle=} ;; esac
  prev=\$a
done
case " \$* " in
  *" create "*) [ -n "\$bundle" ] && python3 - "\$bundle/config.json" "$node/driver" <<'PY' || exit 1
import json, os, sys
path, driver = sys.argv[1], sys.argv[2]
with open(path) as f:
    spec = json.load(f)
env = dict(e.split("=", 1) for e in spec.get("process", {}).get("env", []) if "=" in e)
gpus = env.get("NVIDIA_VISIBLE_DEVICES", "")
if gpus and gpus not in ("void", "none"):
    targets = {"lib": "/usr/lib/x86_64-linux-gnu", "bin": "/usr/bin"}
    for sub, dest in targets.items():
        d = os.path.join(driver, sub)
        for name in sorted(os.listdir(d)) if os.path.isdir(d) else []:
            spec.setdefault("mounts", []).append({"destination": dest + "/" + name, "type": "bind",
                "source": os.path.join(d, name), "options": ["rbind", "ro", "nosuid", "nodev"]})
    with open(path + ".tmp", "w") as f:
        json.dump(spec, f)
    os.rename(path + ".tmp", path)
PY
  ;;
esac
exec $(command -v runc) "\$@"
EOF
  chmod 0755 "$node/runc-gpu-hook"

  # --- containerd: everything under STATE/node/containerd; no NRI, no /opt plugin dir, no pulls needed.
  cat >"$node/cni/net.d/10-tessera.conflist" <<EOF
{"cniVersion": "1.0.0", "name": "tessera-node", "plugins": [
  {"type": "bridge", "bridge": "$NODE_BRIDGE", "isGateway": true, "ipMasq": false, "hairpinMode": true,
   "ipam": {"type": "host-local", "dataDir": "$node/cni/ipam", "ranges": [[{"subnet": "$NODE_POD_CIDR"}]],
            "routes": [{"dst": "0.0.0.0/0"}]}}
]}
EOF
  node_record "$state" "link $NODE_BRIDGE"
  cat >"$node/containerd/config.toml" <<EOF
version = 3
root = "$node/containerd/root"
state = "$node/containerd/state"
disabled_plugins = ["io.containerd.internal.v1.opt", "io.containerd.nri.v1.nri", "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]
[grpc]
  address = "$sock"
[ttrpc]
  address = "$sock.ttrpc"
[debug]
  address = ""
[metrics]
  address = ""
[plugins.'io.containerd.cri.v1.images']
  snapshotter = "overlayfs"
  [plugins.'io.containerd.cri.v1.images'.pinned_images]
    sandbox = "registry.k8s.io/pause:3.10"
[plugins.'io.containerd.cri.v1.runtime']
  netns_mounts_under_state_dir = true
  # The kubelet asks for oom_score_adj -998 (sandboxes) and -997 (Guaranteed pods); where this process may
  # not lower its score (a container, a restricted VM), runc's nsexec fails writing it and every sandbox
  # dies with "can't get final child's PID from pipe: EOF". Clamp to containerd's own score instead.
  restrict_oom_score_adj = true
  # CDI on, reading only /run/cdi (= /var/run/cdi, the chart's agent.cdiDir): in mode dra the agent hands a
  # prepared claim's slice to containers as a CDI device. The device plugin path uses no CDI.
  enable_cdi = true
  cdi_spec_dirs = ["/run/cdi"]
  [plugins.'io.containerd.cri.v1.runtime'.cni]
    bin_dirs = ["/usr/lib/cni"]
    conf_dir = "$node/cni/net.d"
  [plugins.'io.containerd.cri.v1.runtime'.containerd]
    default_runtime_name = "runc"
    [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
        BinaryName = "$node/runc-gpu-hook"
        Root = "$node/containerd/runc"
        SystemdCgroup = false
[plugins.'io.containerd.grpc.v1.cri']
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
EOF
  kube_start "$state" containerd env PATH="$nbin:$PATH" "$nbin/containerd" --config "$node/containerd/config.toml"
  kube_wait "$state" containerd "its socket" "$timeout" "$nbin/ctr" --address "$sock" version
  # Where `ctr` and other tools look by default (/run/containerd is the node's own, see NODE_HOST_DIRS).
  ln -s "$sock" /run/containerd/containerd.sock

  # The sandbox image, built here (no registry to pull it from).
  "$root/deploy/images/build-oci" --out "$node/images" --images pause 2>>"$state/logs/images.log" \
    || kube_die "building the pause image failed; see $state/logs/images.log"
  node_import "$state" "$node/images"

  # --- kubelet: identity system:node:<name>; serves on the node address with a cert from our CA.
  kube_cert "$state" kubelet "/O=system:nodes/CN=system:node:$name" clientAuth
  kube_cert "$state" kubelet-serving "/O=system:nodes/CN=system:node:$name" serverAuth "IP:$ip,DNS:$name"
  kube_kubeconfig "$state" "$state/kubelet.kubeconfig" kubelet
  local kport hport
  read -r kport hport <<<"$(kube_free_ports 2)"
  echo "$kport" >"$state/run/kubelet.port"
  cat >"$node/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
failCgroupV1: false
cgroupDriver: cgroupfs
containerRuntimeEndpoint: unix://$sock
address: $ip
port: $kport
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: $hport
tlsCertFile: $pki/kubelet-serving.crt
tlsPrivateKeyFile: $pki/kubelet-serving.key
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $pki/ca.crt}
authorization: {mode: Webhook}
failSwapOn: false
podLogsDir: $node/pod-logs
resolvConf: /etc/resolv.conf
evictionHard: {memory.available: 100Mi, nodefs.available: 1%, imagefs.available: 1%, nodefs.inodesFree: 1%}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
nodeStatusUpdateFrequency: 5s
syncFrequency: 10s
maxPods: 30
EOF
  node_record "$state" "iptables"
  kube_start "$state" kubelet "$nbin/kubelet" --config="$node/kubelet.yaml" --kubeconfig="$state/kubelet.kubeconfig" \
    --root-dir="$NODE_KUBELET_DIR" --node-ip="$ip" --hostname-override="$name" \
    --node-labels="${TESSERA_NODE_LABELS-nvidia.com/gpu.present=true}" --v=2
  node_record "$state" "cgroup kubepods"
  kube_wait "$state" kubelet "/healthz" "$timeout" curl -sf --max-time 2 "http://127.0.0.1:$hport/healthz"

  # --- kube-proxy (iptables): Service IPs and NodePorts (on the node address only).
  kube_cert "$state" kube-proxy "/CN=system:kube-proxy" clientAuth
  kube_kubeconfig "$state" "$state/kube-proxy.kubeconfig" kube-proxy
  local php pmp
  read -r php pmp <<<"$(kube_free_ports 2)"
  cat >"$node/kube-proxy.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection: {kubeconfig: $state/kube-proxy.kubeconfig}
mode: iptables
hostnameOverride: $name
clusterCIDR: $NODE_POD_CIDR
nodePortAddresses: ["$ip/32"]
healthzBindAddress: 127.0.0.1:$php
metricsBindAddress: 127.0.0.1:$pmp
iptables: {localhostNodePorts: false}
conntrack: {maxPerCore: 0, min: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s}
EOF
  kube_start "$state" kube-proxy "$nbin/kube-proxy" --config="$node/kube-proxy.yaml" --v=2
  kube_wait "$state" kube-proxy "/healthz" "$timeout" curl -sf --max-time 2 "http://127.0.0.1:$php/healthz"

  kube_wait "$state" kubelet "Node $name Ready" "$timeout" node_ready "$state" "$name"
}

# node_ready STATE NAME: whether Node NAME reports Ready.
node_ready() {
  "$1/bin/kubectl" --kubeconfig "$1/kubeconfig" get node "$2" \
    -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null | grep -qx True
}

# node_import STATE DIR: imports every archive DIR/images.txt names (deploy/images/build-oci) into the
# node's containerd, under the names there.
node_import() {
  local state=$1 dir=$2 file repo tag
  while read -r file repo tag; do
    [ -n "$file" ] || continue
    "$state/node/bin/ctr" --address "$state/node/containerd/containerd.sock" -n k8s.io images import \
      --all-platforms --base-name "$repo" "$dir/$file" >/dev/null \
      || kube_die "ctr images import $dir/$file failed"
  done <"$dir/images.txt"
}

# node_kube_chains: whether any KUBE-* iptables chain exists (IPv4 or IPv6).
# Saved first, then searched: `iptables-save | grep -q` under pipefail fails when grep stops early and
# the save dies of SIGPIPE, which read as "no chains" at random.
node_kube_chains() {
  local rules
  rules=$({ iptables-save; ip6tables-save; } 2>/dev/null || true)
  grep -q '^:KUBE-' <<<"$rules"
}

# node_iptables_clean: removes every KUBE-* chain and the rules that jump to them, IPv4 and IPv6: the
# kubelet's (KUBE-FIREWALL, canaries) and kube-proxy's. Only called for a node that found none.
node_iptables_clean() {
  local cmd t try rules
  # Until none is left (20 rounds): a restore can lose to a last write of a process that was still
  # exiting, and then it has to be done again.
  for try in $(seq 20); do
    for cmd in iptables ip6tables; do
      command -v "$cmd" >/dev/null 2>&1 || continue
      for t in filter nat mangle; do
        rules=$("$cmd-save" -t "$t" 2>/dev/null) || continue
        grep -q 'KUBE-' <<<"$rules" || continue
        # The table again without KUBE-* chains and the rules that jump to them (restore replaces it whole).
        grep -vE '^:KUBE-|^-A KUBE-|-j KUBE-' <<<"$rules" | "$cmd-restore" -w 5 2>/dev/null || true
      done
    done
    node_kube_chains || return 0
    sleep 0.2
  done
  echo "$KUBE_PROG: KUBE-* iptables chains are still there after 20 rounds of removal" >&2
}

# node_mounts STATE: mount points at or under STATE and the node's host directories, deepest first (the
# kubelet bind-mounts its root onto itself).
node_mounts() { node_mounts_under "$1" "${NODE_HOST_DIRS[@]}"; }

# node_mounts_under DIR...: mount points at or under any DIR, deepest first.
node_mounts_under() {
  local roots="$*"
  awk -v roots="$roots" 'BEGIN { n = split(roots, r, " ") }
    { for (i = 1; i <= n; i++) if ($5 == r[i] || index($5, r[i] "/") == 1) { print $5; break } }' \
    /proc/self/mountinfo | awk '{print length, $0}' | sort -rn | cut -d' ' -f2-
}

# node_pod_pids: the processes in the kubelet's pod cgroups (any hierarchy), one per line.
node_pod_pids() {
  local f pid
  for f in /proc/[0-9]*/cgroup; do
    pid=${f#/proc/}; pid=${pid%/cgroup}
    grep -qE '^[0-9]+:[^:]*:/kubepods(/|$)' "$f" 2>/dev/null || continue
    # A zombie is dead already (its reaper may not be ours).
    [ "$(sed 's/.*) //' "/proc/$pid/stat" 2>/dev/null | cut -d' ' -f1)" = Z ] || echo "$pid"
  done
  return 0
}

# node_kill_pods: SIGKILLs every process in the pods' cgroups and waits (10 s at most) until none is left.
node_kill_pods() {
  local pid i left
  for i in $(seq 100); do
    left=$(node_pod_pids)
    [ -z "$left" ] && return 0
    if [ "$i" = 1 ]; then
      for pid in $left; do
        echo "$KUBE_PROG: killing $pid left in the pods' cgroups: $(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null)" >&2
      done
    fi
    for pid in $left; do kill -KILL "$pid" 2>/dev/null || true; done
    sleep 0.1
  done
  echo "$KUBE_PROG: processes still in the pods' cgroups after SIGKILL: $(echo $left)" >&2
}

# node_rm_dir DIR: removes a host directory the node created. Retried a few times, since a process that
# was just killed may have been writing there; says what is left (and who holds it) if it cannot.
node_rm_dir() {
  local dir=$1 i
  for i in $(seq 20); do
    rm -rf --one-file-system "$dir" 2>/dev/null
    [ -e "$dir" ] || { [ "$i" = 1 ] || echo "$KUBE_PROG: removed $dir at try $i" >&2; return 0; }
    sleep 0.1
  done
  rm -rf --one-file-system "$dir" || true
  [ -e "$dir" ] || return 0
  echo "$KUBE_PROG: cannot remove $dir; it holds:" >&2
  find "$dir" -maxdepth 3 -printf '  %M %u %s %TT %p\n' 2>/dev/null | head -n 40 >&2
  local p
  for p in /proc/[0-9]*; do
    if ls -l "$p/fd" "$p/cwd" 2>/dev/null | grep -qF " -> $dir"; then
      echo "  held by ${p#/proc/}: $(tr '\0' ' ' <"$p/cmdline" 2>/dev/null)" >&2
    fi
  done
}

# node_down STATE: stops the node and removes everything node_prepare/node_start made outside STATE, and
# every mount under STATE. Fails (so kube-down keeps STATE) if a mount cannot be removed.
node_down() {
  local state=$1 node=$1/node sock=$1/node/containerd/containerd.sock ctr what arg m pid i
  [ -d "$node" ] || return 0
  ctr=("$node/bin/ctr" --address "$sock" -n k8s.io)
  # Pods first, while the kubelet still runs (it tears their networks down through CNI); no controller
  # may recreate them meanwhile.
  kube_stop "$state" kube-controller-manager
  if kube_alive "$state" kubelet && kube_alive "$state" kube-apiserver; then
    "$state/bin/kubectl" --kubeconfig "$state/kubeconfig" delete pods --all -A --grace-period=2 --wait=false >/dev/null 2>&1 || true
    for i in $(seq 600); do
      [ -z "$("${ctr[@]}" tasks ls -q 2>/dev/null)" ] && break
      sleep 0.1
    done
  fi
  kube_stop "$state" kube-proxy kubelet
  if [ -S "$sock" ]; then
    for m in $("${ctr[@]}" tasks ls -q 2>/dev/null); do "${ctr[@]}" tasks kill -s KILL "$m" >/dev/null 2>&1 || true; done
    for i in $(seq 100); do [ -z "$("${ctr[@]}" tasks ls -q 2>/dev/null)" ] && break; sleep 0.1; done
    for m in $("${ctr[@]}" tasks ls -q 2>/dev/null); do "${ctr[@]}" tasks rm -f "$m" >/dev/null 2>&1 || true; done
    for m in $("${ctr[@]}" containers ls -q 2>/dev/null); do "${ctr[@]}" containers rm "$m" >/dev/null 2>&1 || true; done
  fi
  kube_stop "$state" containerd
  # Shims outlive containerd by design; ours name our socket.
  for pid in $(pgrep -f "containerd-shim-runc-v2 .*$sock" 2>/dev/null || true); do
    kill -KILL "$pid" 2>/dev/null || true
  done
  for pid in $(pgrep -f "^$node/" 2>/dev/null || true); do kill -KILL "$pid" 2>/dev/null || true; done
  # A container's processes outlive a killed shim, and a hostPID container's children (the agent's) its
  # init: whatever still runs in the pods' cgroups is killed, and reaped before its files are removed.
  node_kill_pods
  for m in $(node_mounts "$state"); do umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true; done
  local left
  left=$(node_mounts "$state")
  [ -z "$left" ] || { echo "$KUBE_PROG: mounts left under $state: $left" >&2; return 1; }
  if [ -f "$node/created" ]; then
    while read -r what arg rest; do
      case "$what" in
        link) ip link del "$arg" 2>/dev/null || true ;;
        dir) node_rm_dir "$arg" ;;
        dev) [ -c "$arg" ] && [ "$(stat -c %t:%T "$arg")" = 1:3 ] && rm -f "$arg" ;;
        sysctl) echo "$rest" >"/proc/sys/${arg//.//}" 2>/dev/null || true ;;
        iptables) node_iptables_clean ;;
        cgroup)
          for m in /sys/fs/cgroup/*/"$arg" /sys/fs/cgroup/"$arg"; do
            [ -d "$m" ] && find "$m" -depth -type d -exec rmdir {} \; 2>/dev/null
          done ;;
      esac
    done < <(tac "$node/created")
  fi
  [ "$(cat "$NODE_OWNER" 2>/dev/null)" = "$state" ] && rm -f "$NODE_OWNER"
  return 0
}
