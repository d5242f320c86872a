# Compute caps, priority and spatial (MPS) mode (issue 3; owned by the compute-cap work). The work is
# in bench/cap/run.py (builds capbench with nvcc, runs every experiment with its uncapped baseline in
# this same run, through the shim: LD_PRELOAD=libtessera.so). This section records its result under
# results.cap and turns the issue's "must show" lines into checks.

section_cap() {
  local dir=$WORK/cap
  # spatial-agent: the latency experiment on two pods' slices written by the agent's own code
  # (gpu_agentslices: SliceWriter + MpsSupervisor), each process in a mount namespace with the agent's mounts.
  if ! CAP_AGENTSLICES="$BUILD/test/gpu/gpu_agentslices" python3 "$ROOT/bench/cap/run.py" "$dir" --lib "$SHIM" \
      --build "$WORK/capbuild" --seconds "${CAP_SECONDS:-2}" \
      --only "${CAP_ONLY:-cap,launch,tenants,latency,fault,variants}" \
      --modes "${CAP_MODES:-timesliced,spatial,spatial-agent}"; then
    check run fail "bench/cap/run.py failed (see gpu-log.txt)"
    return
  fi
  record cap "$(cat "$dir/cap.json")"
  python3 - "$dir/cap.json" <<'PY' | while IFS='|' read -r name status detail; do check "$name" "$status" "$detail"; done
import json, sys
r = json.load(open(sys.argv[1]))
for mode in ("timesliced", "spatial", "spatial_agent"):
    m = r.get(mode.replace("_", "-"), {})
    if "error" in m:
        print(f"{mode}|fail|{m['error']}")
    acc = m.get("accuracy", [])
    if acc:
        bad = [f"{a['cap']}%/{a['kernel_ms']}ms/{a['procs']}p={a['share']}" for a in acc if not a["ok"]]
        print(f"{mode}_caps_within_3_points|{'pass' if not bad else 'fail'}|{len(acc) - len(bad)}/{len(acc)} ok {' '.join(bad)}")
    t = m.get("tenants")
    if t:
        print(f"{mode}_tenants_30_70|{'pass' if t['ok'] else 'fail'}|ratio {t['ratio']} (3:7 = {t['target']})")
    lat = m.get("latency")
    if lat:
        a = lat["alone"].get("p99_us")
        for row in lat["with_be"]:
            t99 = row["tessera"]["p99_us"]
            print(f"{mode}_hp_p99_beside_{row['be_kernel_ms']}ms|{'pass' if row['ok_latency'] else 'fail'}|"
                  f"p99 {t99} us vs alone {a} us")
            if mode.startswith("spatial"):
                print(f"{mode}_be_throughput_beside_{row['be_kernel_ms']}ms|"
                      f"{'pass' if row['ok_throughput'] else 'fail'}|{row['tessera']['be_share']} of solo")
PY
}
