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
