# Shell helpers shared by scripts/kube-up, scripts/kube-down and test/kube/start-scheduler. Sourced, not run.
# Every process started here is recorded as STATE/run/<name>.pid and logs to STATE/logs/<name>.log.

# The file that marks a directory as a control plane's state, so kube-down never deletes anything else.
KUBE_STATE_MARKER=.tessera-kube-state

kube_die() { echo "$KUBE_PROG: $*" >&2; exit 1; }

# kube_state_dir ARG: the absolute state directory (ARG, else $TESSERA_KUBE_STATE, else /tmp/tessera-kube-<uid>).
kube_state_dir() {
  local d=${1:-${TESSERA_KUBE_STATE:-/tmp/tessera-kube-$(id -u)}}
  case "$d" in /*) ;; *) d="$PWD/$d" ;; esac
  echo "${d%/}"
}

# kube_free_ports N: N distinct free TCP ports on 127.0.0.1, all held open together while choosing so they
# differ, never one of the ports the product's components use by default.
kube_free_ports() {
  python3 - "$1" <<'EOF'
import socket, sys
reserved = {9394, 9395, 31992, 31993}
held, ports = [], []
while len(ports) < int(sys.argv[1]):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    held.append(s)
    p = s.getsockname()[1]
    if p not in reserved:
        ports.append(p)
print(" ".join(map(str, ports)))
EOF
}

# kube_start STATE NAME CMD...: starts CMD detached (own session, no inherited terminal or pipes, so a
# caller such as ctest does not wait on it), records its pid.
kube_start() {
  local state=$1 name=$2; shift 2
  setsid "$@" </dev/null >"$state/logs/$name.log" 2>&1 &
  echo $! >"$state/run/$name.pid"
}

# kube_alive STATE NAME: whether the recorded process still runs.
kube_alive() {
  local pid
  pid=$(cat "$1/run/$2.pid" 2>/dev/null) || return 1
  kube_running "$pid"
}

# kube_wait STATE NAME WHAT TIMEOUT CMD...: polls CMD every 0.1 s until it succeeds; fails (showing the
# component's log) when NAME exits or TIMEOUT seconds pass.
kube_wait() {
  local state=$1 name=$2 what=$3 timeout=$4; shift 4
  local deadline=$((SECONDS + timeout))
  until "$@" >/dev/null 2>&1; do
    if ! kube_alive "$state" "$name"; then
      echo "$KUBE_PROG: $name exited while waiting for $what; last lines of $state/logs/$name.log:" >&2
      tail -n 25 "$state/logs/$name.log" >&2
      return 1
    fi
    if [ $SECONDS -ge $deadline ]; then
      echo "$KUBE_PROG: $name: no $what after ${timeout}s; last lines of $state/logs/$name.log:" >&2
      tail -n 25 "$state/logs/$name.log" >&2
      return 1
    fi
    sleep 0.1
  done
}

# kube_running PID: whether PID is a live process (a zombie waiting for its reaper counts as gone).
kube_running() {
  kill -0 "$1" 2>/dev/null && [ "$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)" != Z ]
}

# kube_stop STATE NAME...: stops the recorded processes together (TERM, then KILL after 15 s) if each is
# still the one we started: its command line must mention the state directory, so a recycled pid is
# never hit.
kube_stop() {
  local state=$1 name pid pids=() i
  shift
  for name in "$@"; do
    pid=$(cat "$state/run/$name.pid" 2>/dev/null) || continue
    if kube_running "$pid" && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF "$state"; then
      kill -TERM "$pid" 2>/dev/null && pids+=("$pid")
    fi
    rm -f "$state/run/$name.pid"
  done
  for i in $(seq 150); do
    local left=()
    for pid in "${pids[@]}"; do kube_running "$pid" && left+=("$pid"); done
    pids=("${left[@]}")
    [ ${#pids[@]} -eq 0 ] && return 0
    sleep 0.1
  done
  kill -KILL "${pids[@]}" 2>/dev/null || true
  for i in $(seq 50); do  # killed: gone once the kernel has reaped it
    local alive=0
    for pid in "${pids[@]}"; do kube_running "$pid" && alive=1; done
    [ $alive = 0 ] && return 0
    sleep 0.1
  done
}

# kube_cert STATE NAME SUBJECT EKU [SANS]: an EC P-256 key and a certificate signed by STATE/pki/ca.
kube_cert() {
  local pki=$1/pki name=$2 subj=$3 eku=$4 sans=${5:-}
  local ext="$pki/$name.ext"
  {
    echo "basicConstraints=critical,CA:FALSE"
    echo "keyUsage=critical,digitalSignature,keyEncipherment"
    echo "extendedKeyUsage=$eku"
    [ -n "$sans" ] && echo "subjectAltName=$sans"
  } >"$ext"
  openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$pki/$name.key" 2>/dev/null
  openssl req -new -key "$pki/$name.key" -subj "$subj" -out "$pki/$name.csr" 2>/dev/null
  openssl x509 -req -in "$pki/$name.csr" -CA "$pki/ca.crt" -CAkey "$pki/ca.key" -set_serial "0x$(openssl rand -hex 16)" \
    -days 365 -extfile "$ext" -out "$pki/$name.crt" 2>/dev/null
  rm -f "$pki/$name.csr" "$ext"
}

# kube_kubeconfig STATE FILE USER: a self-contained kubeconfig for the API server with USER's certificate.
kube_kubeconfig() {
  local state=$1 file=$2 user=$3 server
  server=$(cat "$state/run/server")
  cat >"$file" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: tessera-local
  cluster:
    server: $server
    certificate-authority-data: $(base64 -w0 <"$state/pki/ca.crt")
users:
- name: $user
  user:
    client-certificate-data: $(base64 -w0 <"$state/pki/$user.crt")
    client-key-data: $(base64 -w0 <"$state/pki/$user.key")
contexts:
- name: tessera-local
  context:
    cluster: tessera-local
    user: $user
    namespace: default
current-context: tessera-local
EOF
  chmod 600 "$file"
}

# kube_https_ok STATE PORT PATH: GET https://$KUBE_API_HOST:PORT/PATH (default host 127.0.0.1), verified
# against our CA, as admin.
kube_https_ok() {
  local state=$1
  [ "$(curl -s --max-time 2 --cacert "$state/pki/ca.crt" --cert "$state/pki/admin.crt" --key "$state/pki/admin.key" \
        "https://${KUBE_API_HOST:-127.0.0.1}:$2$3")" = ok ]
}

# kube_scheduler_start STATE NAME CONFIG: starts a kube-scheduler with the KubeSchedulerConfiguration
# CONFIG, after replacing @KUBECONFIG@ (the scheduler's own identity, system:kube-scheduler) and
# @ADMIN_KUBECONFIG@ in it; waits until it serves /healthz.
kube_scheduler_start() {
  local state=$1 name=$2 config=$3 port
  [ -f "$config" ] || kube_die "scheduler config $config: no such file"
  port=$(kube_free_ports 1)
  sed -e "s|@KUBECONFIG@|$state/scheduler.kubeconfig|g" -e "s|@ADMIN_KUBECONFIG@|$state/kubeconfig|g" \
    "$config" >"$state/run/$name.config.yaml"
  kube_start "$state" "$name" "$state/bin/kube-scheduler" \
    --config="$state/run/$name.config.yaml" \
    --bind-address=127.0.0.1 --secure-port="$port" \
    --tls-cert-file="$state/pki/scheduler-serving.crt" --tls-private-key-file="$state/pki/scheduler-serving.key" \
    --authentication-kubeconfig="$state/scheduler.kubeconfig" --authorization-kubeconfig="$state/scheduler.kubeconfig" \
    --client-ca-file="$state/pki/ca.crt"
  echo "$port" >"$state/run/$name.port"
  kube_wait "$state" "$name" "/healthz on port $port" 60 \
    bash -c "[ \"\$(curl -s --max-time 2 --cacert '$state/pki/ca.crt' https://127.0.0.1:$port/healthz)\" = ok ]"
}
