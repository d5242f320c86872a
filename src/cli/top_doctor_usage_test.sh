#!/usr/bin/env bash
# Bad flags of `tessera top` and `tessera doctor` end with exit status 2 and a message naming the flag and
# what is allowed; nothing is read or contacted first.
set -uo pipefail
tessera=${1:?path of the tessera binary}
fail() { echo "FAIL: $*" >&2; exit 1; }
expect_usage() {  # expect_usage MESSAGE ARGS...
  local want=$1
  shift
  local out rc
  out=$("$tessera" "$@" 2>&1)
  rc=$?
  [ "$rc" = 2 ] || fail "tessera $* exited $rc, want 2 (output: $out)"
  grep -qF -- "$want" <<<"$out" || fail "tessera $*: message lacks '$want': $out"
}
expect_usage "--interval" top --interval 0
expect_usage "--iterations" top -n -1
expect_usage "expected host:port" top --endpoint nohost
expect_usage "port must be 1..65535" top --endpoint http://h:0
expect_usage "https is not supported" top --endpoint https://h:9394
expect_usage "--allocation-grace" doctor --allocation-grace 0
expect_usage "expected KEY=VALUE" doctor --gpu-node-label novalue
expect_usage "--bogus" doctor --bogus
"$tessera" top --help | grep -q -- "--endpoint" || fail "top --help lacks --endpoint"
"$tessera" doctor --help | grep -q -- "--node" || fail "doctor --help lacks --node"
# An empty host: no slices is not an error.
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
"$tessera" top --once --no-color --slices-dir "$dir" | grep -q "(no slices)" || fail "top on an empty host"
echo ok
