# PyTorch inside slices: slice A (2 GiB) trains a small model, then asks for tensors that cross the wall
# and must get torch.OutOfMemoryError and keep training; slice B (4 GiB) on the same GPU trains the whole
# time and must not notice. Once with the default caching allocator, once with expandable segments (VMM).

section_torch() {
  local mode conf cfga cfgb pida pidb w va vb
  for mode in default expandable; do
    conf=""; [ $mode = expandable ] && conf="expandable_segments:True"
    cfga=$(new_slice torch-a-$mode $((2 * GiB)))
    cfgb=$(new_slice torch-b-$mode $((4 * GiB)))
    watch_start torch_$mode
    rm -f "$WORK/a.done" "$WORK/b.ready"
    # B is training before A starts its steps (A waits for b.ready), so B runs beside all of A's work.
    PYTORCH_CUDA_ALLOC_CONF=$conf LD_PRELOAD=$SHIM TESSERA_SLICE_CONFIG=$cfgb \
      python3 "$ROOT/test/gpu/torch_train.py" --until "$WORK/a.done" --ready "$WORK/b.ready" --tag B \
      > "$WORK/torch_b.json" 2>>"$LOG" &
    pidb=$!; echo $pidb >> "$WATCH_PIDS"
    PYTORCH_CUDA_ALLOC_CONF=$conf LD_PRELOAD=$SHIM TESSERA_SLICE_CONFIG=$cfga \
      python3 "$ROOT/test/gpu/torch_train.py" --steps 200 --cross --after "$WORK/b.ready" --tag A \
      > "$WORK/torch_a.json" 2>>"$LOG" &
    pida=$!; echo $pida >> "$WATCH_PIDS"
    wait $pida
    touch "$WORK/a.done"
    wait $pidb
    watch_stop
    w=$(cat "$WATCH_OUT")
    va=$(tail -1 "$WORK/torch_a.json"); vb=$(tail -1 "$WORK/torch_b.json")
    log "torch $mode A: $va"
    log "torch $mode B: $vb"
    record "a_$mode" "${va:-{\}}"
    record "b_$mode" "${vb:-{\}}"
    record "watch_$mode" "$w"
    local verdict
    verdict=$(python3 - "${va:-{\}}" "${vb:-{\}}" "$w" <<'PY'
import json, sys
a, b, w = (json.loads(s) for s in sys.argv[1:4])
GiB = 2**30
pa, pb = w["per_pid_peak"].get(str(a.get("pid")), 0), w["per_pid_peak"].get(str(b.get("pid")), 0)
bad = []
if a.get("steps") != 200 or not a.get("finite"): bad.append("A did not train")
if not a.get("neighbour_ready"): bad.append("B never started training")
if a.get("mem_get_info_total") != 2 * GiB: bad.append(f"A sees total {a.get('mem_get_info_total')}")
cross = a.get("cross", [])
if not cross or any(c["raised"] != "OutOfMemoryError" for c in cross[:2]): bad.append(f"crossing tensors: {cross}")
if not a.get("finite_after_oom"): bad.append("A did not keep training after OOM")
if pa > 2 * GiB: bad.append(f"A's driver peak {pa} > 2 GiB")
if pb > 4 * GiB: bad.append(f"B's driver peak {pb} > 4 GiB")
if not b.get("finite") or b.get("steps", 0) < 50: bad.append(f"B: {b.get('steps')} steps, finite={b.get('finite')}")
print("fail" if bad else "pass",
      "; ".join(bad) if bad else f"A trained 200 steps, crossing tensors raised OutOfMemoryError, trained on; "
      f"A peak {pa / GiB:.2f} GiB <= 2, B ran {b['steps']} steps alongside (peak {pb / GiB:.2f} GiB <= 4)")
PY
)
    check "torch_$mode" "${verdict%% *}" "${verdict#* }"
  done
}
