#!/usr/bin/env bash
# Runs scripts/demo and checks what it prints against the seed's requests: worker A at 20 % memory and
# 25 cores, worker B at 30 % and 40 cores, each on a GPU of a simulated node, and the slice the agent
# wrote for the container carrying the same memory and cores.
set -euo pipefail
out=$(scripts/demo 2>&1) || { echo "$out"; echo "demo_check: scripts/demo failed"; exit 1; }
echo "$out"
fail=0
expect() {  # expect WORKER PERCENT CORES
  local row
  row=$(grep -E "^ +$1 " <<<"$out" || true)
  [ -n "$row" ] || { echo "demo_check: no row for $1"; fail=1; return; }
  python3 - "$row" "$2" "$3" <<'PY' || fail=1
import re, sys
row, pct, cores = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
m = re.search(r"(GPU-\S+)\s+(\d+) \((\d+)% of (\d+)\)\s+(\d+)\s+(GPU-\S+): (\d+) MiB, (\d+) cores", row)
if not m:
    sys.exit(f"demo_check: row not understood: {row}")
uuid, mib, shown_pct, total, c, slice_uuid, slice_mib, slice_cores = m.groups()
want_mib = int(total) * pct // 100
errors = []
if int(mib) != want_mib: errors.append(f"memory {mib} MiB, want {want_mib} ({pct}% of {total})")
if int(c) != cores: errors.append(f"cores {c}, want {cores}")
if slice_uuid != uuid or int(slice_mib) != int(mib) or int(slice_cores) != cores:
    errors.append(f"container slice {slice_uuid} {slice_mib} MiB {slice_cores} cores differs from the assignment")
if errors:
    sys.exit("demo_check: " + "; ".join(errors))
PY
}
expect worker-a 20 25
expect worker-b 30 40
grep -q '^ *vGPUMemoryAllocated{' <<<"$out" || { echo "demo_check: no allocation metrics printed"; fail=1; }
exit $fail
