# A slice process in its own pid namespace, as every container of a pod is. The driver (NVML) lists it by
# its host pid, which the process itself cannot know, so the shim's reconciliation finds nothing and the
# context stays counted at its estimate however much it grows. The node agent's host-pid pass (here
# `slicectl hostpids ... publish`, the same src/slice/host_pid.cc) names the host pid in the process's row.
# Each mode runs test/gpu/ctx_growth.py (cuBLAS, cuDNN, cuFFT loaded into the context with
# CUDA_MODULE_LOADING=EAGER, so the context grows well past the shim's 640 MiB estimate; 3 s later 64 MiB
# tensors until the wall) in a 4 GiB slice: `observe` without the pass (the gap), `publish` with it.

section_container() {
  local limit=$((4 * GiB)) mode cfg upid hpid out rows w verdict ns_flags="-pfm --mount-proc --kill-child"
  [ "$(id -u)" = 0 ] || ns_flags="-Urpfm --mount-proc --kill-child"
  for mode in observe publish; do
    cfg=$(new_slice ctr-$mode $limit)
    rm -f "$WORK/ctr.stop"
    "$SLICECTL" hostpids "$cfg" "$WORK/ctr.stop" $mode > "$WORK/ctr_rows.json" &
    local rpid=$!
    watch_start ctr_$mode
    # shellcheck disable=SC2086
    unshare $ns_flags env LD_PRELOAD="$SHIM" TESSERA_SLICE_CONFIG="$cfg" CUDA_MODULE_LOADING=EAGER \
      python3 "$ROOT/test/gpu/ctx_growth.py" > "$WORK/ctr_out.json" 2>>"$LOG" &
    upid=$!
    hpid=""
    for _ in $(seq 1 500); do  # the namespace's first process, as the host sees it
      hpid=$(pgrep -P "$upid" | head -1)
      [ -n "$hpid" ] && break
      sleep 0.01
    done
    echo "$hpid" >> "$WATCH_PIDS"
    wait "$upid"
    watch_stop
    touch "$WORK/ctr.stop"; wait "$rpid"
    out=$(tail -1 "$WORK/ctr_out.json"); rows=$(cat "$WORK/ctr_rows.json"); w=$(cat "$WATCH_OUT")
    log "container $mode: host pid $hpid; $out"
    log "container $mode rows: $rows"
    record "run_$mode" "{\"host_pid\":${hpid:-0},\"out\":${out:-{\}},\"rows\":${rows:-{\}},\"watch\":${w:-{\}}}"
    verdict=$(python3 - "$mode" "${hpid:-0}" "${out:-{\}}" "${rows:-{\}}" "${w:-{\}}" $limit <<'PY'
import json, sys
mode, hpid = sys.argv[1], int(sys.argv[2])
out, rows, w = (json.loads(s) for s in sys.argv[3:6])
limit = int(sys.argv[6])
MiB = 2**20
peak = w.get("per_pid_peak", {}).get(str(hpid), 0)
row = next((r for r in rows.get("rows", []) if r["pid"] == out.get("pid")), {})
facts = (f"inner pid {out.get('pid')} host pid {hpid}; driver peak {peak / MiB:.0f} MiB of {limit / MiB:.0f}; "
         f"row overhead {row.get('first_overhead', 0) / MiB:.0f} -> {row.get('last_overhead', 0) / MiB:.0f} MiB "
         f"(max {row.get('max_overhead', 0) / MiB:.0f}); published host pid {row.get('host_pid')}; "
         f"stopped by {out.get('stopped_by')} after {out.get('tensor_bytes', 0) / MiB:.0f} MiB of tensors")
bad = []
inside = out.get("nvml_inside")
translates = isinstance(inside, list) and any(p[0] == out.get("pid") for p in inside)
facts += f"; NVML inside the namespace shows {'its own pid' if translates else 'no pid of its namespace'}: {inside}"
if out.get("pid") == hpid: bad.append("not in its own pid namespace")
if out.get("stopped_by") != "OutOfMemoryError": bad.append("the wall did not stop it cleanly")
measured = row.get("last_overhead") not in (None, 0, 640 * MiB)
if mode == "publish":
    if row.get("host_pid") != hpid: bad.append("host pid not published")
    if peak > limit: bad.append("driver peak over the limit")
    if not measured: bad.append("overhead never measured (still the estimate)")
    print("fail" if bad else "pass", "; ".join(bad + [facts]))
else:
    # Without the agent's pass the shim depends on the driver: one that shows namespaced pids must be
    # matched (and the wall hold); with one that does not, this records the gap the pass closes.
    if translates and (peak > limit or not measured): bad.append("own pid shown but not reconciled")
    print("fail" if bad else "pass", "; ".join(bad + ["without host pid: " + facts]))
PY
)
    check "container_$mode" "${verdict%% *}" "${verdict#* }"
  done
}
