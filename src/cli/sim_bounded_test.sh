#!/usr/bin/env bash
# `tessera sim` reads its trace lists with a size limit: a device or a huge file named by mistake fails at
# once with one line naming the flag, the file and the limit (exit status 1), instead of filling memory.
set -uo pipefail
tessera=${1:?path of the tessera binary}
fail() { echo "FAIL: $*" >&2; exit 1; }
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
printf 'sn,cpu_milli,memory_mib,gpu,model\nn1,64000,262144,2,T4\n' >"$dir/nodes.csv"
printf 'name,cpu_milli,memory_mib,num_gpu,gpu_milli\np1,1000,1024,1,500\n' >"$dir/pods.csv"
truncate -s 65M "$dir/huge.csv"
expect_limit() {  # expect_limit FLAG FILE ARGS...
  local flag=$1 file=$2 out rc
  shift 2
  out=$(timeout 60 "$tessera" sim --quiet --jobs 1 "$@" 2>&1)
  rc=$?
  [ "$rc" = 1 ] || fail "tessera sim $*: exit $rc, want 1 (output: $out)"
  [ "$(wc -l <<<"$out")" = 1 ] || fail "tessera sim $*: want one line, got: $out"
  grep -qF -- "$flag: $file: larger than 64 MiB" <<<"$out" || fail "tessera sim $*: message lacks the file and limit: $out"
}
expect_limit --nodes /dev/zero --nodes /dev/zero --pods "$dir/pods.csv"
expect_limit --pods /dev/zero --nodes "$dir/nodes.csv" --pods /dev/zero
expect_limit --nodes "$dir/huge.csv" --nodes "$dir/huge.csv" --pods "$dir/pods.csv"
# Files within the limit still replay.
"$tessera" sim --quiet --jobs 1 --seeds 1 --nodes "$dir/nodes.csv" --pods "$dir/pods.csv" >/dev/null 2>&1 ||
  fail "tessera sim on small valid lists failed"
echo ok
