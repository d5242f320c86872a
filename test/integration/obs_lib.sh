# Shell helpers for the observability/install integration tests (obs_*.sh). Sourced, not run.
# Every wait is a poll with a deadline; nothing sleeps a fixed time to hide a race.

: "${TESSERA_KUBE_BIN:?run through ctest (fixture kube) or source the env file of scripts/kube-up}"
: "${TESSERA_KUBECONFIG:?}"
: "${TESSERA_SOURCE_DIR:=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}"
: "${TESSERA_BINARY_DIR:=$TESSERA_SOURCE_DIR/build}"
KUBECTL=("$TESSERA_KUBE_BIN/kubectl" --kubeconfig "$TESSERA_KUBECONFIG")
HELM="$TESSERA_KUBE_BIN/helm"
TESSERA="$TESSERA_BINARY_DIR/src/cli/tessera"

obs_fail() {
  echo "FAIL: $*" >&2
  exit 1
}

# poll SECONDS DESCRIPTION CMD...: runs CMD every 100 ms until it succeeds or SECONDS pass.
poll() {
  local secs=$1 what=$2
  shift 2
  local deadline=$((SECONDS + secs))
  while ! "$@" >/dev/null 2>&1; do
    if ((SECONDS >= deadline)); then
      echo "timed out after ${secs}s waiting for: $what" >&2
      "$@" >&2 || true
      return 1
    fi
    sleep 0.1
  done
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

obs_id() { head -c 64 /dev/urandom | tr -dc 'a-z0-9' | head -c 6; }

# Cleanup actions run in reverse order at exit.
_obs_cleanup=()
on_exit() { _obs_cleanup+=("$*"); }
_obs_run_cleanup() {
  local i
  for ((i = ${#_obs_cleanup[@]} - 1; i >= 0; i--)); do eval "${_obs_cleanup[i]}" || true; done
}
trap _obs_run_cleanup EXIT

# start_bg LOG CMD...: starts CMD in the background, stops it at exit; sets BG_PID.
start_bg() {
  local log=$1
  shift
  "$@" >"$log" 2>&1 &
  BG_PID=$!
  on_exit "kill $BG_PID 2>/dev/null; wait $BG_PID 2>/dev/null"
}

# show_log_on_failure LOG: prints the tail of LOG when the test fails.
show_log_on_failure() {
  on_exit "[ \$? -eq 0 ] || { echo '---- $1 ----' >&2; tail -n 40 '$1' >&2; }"
}

# objects_json IN.yaml OUT.json: the objects of a multi-document manifest as one JSON array (kubectl does the
# YAML parsing, so the tests need no YAML module).
objects_json() {
  "${KUBECTL[@]}" create --dry-run=client -o json -f "$1" | python3 -c '
import json, sys
text, dec, pos, out = sys.stdin.read(), json.JSONDecoder(), 0, []
while True:
    while pos < len(text) and text[pos].isspace():
        pos += 1
    if pos >= len(text):
        break
    obj, pos = dec.raw_decode(text, pos)
    out.extend(obj["items"] if obj.get("kind") == "List" else [obj])
json.dump(out, open(sys.argv[1], "w"))' "$2"
}

# chart_sa_kubeconfig RELEASE COMPONENT OUTDIR CAN-I-ARGS...: applies, for real, the ServiceAccount,
# ClusterRole and ClusterRoleBinding that the chart renders for COMPONENT (agent or scheduler) of RELEASE
# in namespace default, writes OUTDIR/COMPONENT.kubeconfig holding a token of that ServiceAccount (from the
# TokenRequest API), and waits until `kubectl auth can-i CAN-I-ARGS` says yes for it (RBAC is applied
# asynchronously). Everything is removed at exit. Sets CHART_SA to the ServiceAccount's name.
chart_sa_kubeconfig() {
  local release=$1 component=$2 out=$3
  shift 3
  "$HELM" template "$release" "$TESSERA_SOURCE_DIR/deploy/helm/tessera" --namespace default \
    --kube-version "$TESSERA_KUBE_VERSION" >"$out/$component-chart.yaml"
  objects_json "$out/$component-chart.yaml" "$out/$component-chart.json"
  python3 - "$out/$component-chart.json" "$component" "$out/$component-rbac.yaml" <<'PY'
import json, sys
docs = json.load(open(sys.argv[1]))
suffix = "tessera-" + sys.argv[2]
rbac = [d for d in docs if d["kind"] in ("ServiceAccount", "ClusterRole", "ClusterRoleBinding")
        and d["metadata"]["name"].endswith(suffix)]
assert sorted(d["kind"] for d in rbac) == ["ClusterRole", "ClusterRoleBinding", "ServiceAccount"], rbac
json.dump({"apiVersion": "v1", "kind": "List", "items": rbac}, open(sys.argv[3], "w"))
PY
  "${KUBECTL[@]}" apply -f "$out/$component-rbac.yaml" >/dev/null
  on_exit "'${KUBECTL[0]}' --kubeconfig '$TESSERA_KUBECONFIG' delete -f '$out/$component-rbac.yaml' --ignore-not-found --wait=false >/dev/null 2>&1"
  CHART_SA=$(python3 -c 'import sys,json; print(next(d for d in json.load(open(sys.argv[1]))["items"] if d["kind"]=="ServiceAccount")["metadata"]["name"])' "$out/$component-rbac.yaml")
  local token server
  token=$("${KUBECTL[@]}" create token -n default "$CHART_SA" --duration 1h)
  server=$("${KUBECTL[@]}" config view --raw --minify -o jsonpath='{.clusters[0].cluster.server}')
  "${KUBECTL[@]}" config view --raw --minify -o jsonpath='{.clusters[0].cluster.certificate-authority-data}' |
    base64 -d >"$out/$component-ca.crt"
  if [ ! -s "$out/$component-ca.crt" ]; then
    cp "$("${KUBECTL[@]}" config view --raw --minify -o jsonpath='{.clusters[0].cluster.certificate-authority}')" \
      "$out/$component-ca.crt"
  fi
  cat >"$out/$component.kubeconfig" <<KC
apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "$server", certificate-authority: "$out/$component-ca.crt"}}]
users: [{name: u, user: {token: "$token"}}]
contexts: [{name: c, context: {cluster: c, user: u, namespace: default}}]
current-context: c
KC
  _can_i() { [ "$("${KUBECTL[@]}" auth can-i "$@" --as "system:serviceaccount:default:$CHART_SA" 2>/dev/null)" = yes ]; }
  poll 30 "the chart's $component role to be in force" _can_i "$@"
}

# cannot SA-ARGS...: the ServiceAccount CHART_SA may NOT do this.
chart_sa_cannot() {
  local answer
  answer=$("${KUBECTL[@]}" auth can-i "$@" --as "system:serviceaccount:default:$CHART_SA" 2>/dev/null || true)
  [ "$answer" = no ] || obs_fail "the chart's ServiceAccount $CHART_SA may $* ($answer): more than it needs"
}
