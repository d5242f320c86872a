# Memory wall on the real GPU: every allocation path in a 2 GiB slice (1 process), a slice too small
# for a context, nvidia-smi inside a slice, 8 processes allocating at once in an 8 GiB slice, and
# processes SIGKILLed mid-allocation.

watch_start() {  # NAME: sample the driver's per-process usage of the pids listed in $WATCH_PIDS
  WATCH_PIDS=$WORK/$1.pids; WATCH_STOP=$WORK/$1.stop; WATCH_OUT=$WORK/$1.watch
  : > "$WATCH_PIDS"; rm -f "$WATCH_STOP"
  python3 "$ROOT/test/gpu/nvml_watch.py" "$(gpu_uuid 0)" "$WATCH_PIDS" "$WATCH_STOP" > "$WATCH_OUT" &
  WATCH_PID=$!
}
# Call as a plain command (not inside $(...): a subshell cannot wait for the sampler), then read $WATCH_OUT.
watch_stop() { touch "$WATCH_STOP"; wait "$WATCH_PID"; }

section_mem() {
  local limit=$((2 * GiB)) cfg out p verdict
  cfg=$(new_slice paths $limit)
  for p in malloc pitch managed async pool array array_v1 mipmap vmm graph driver dlsym; do
    out=$(in_slice "$cfg" "$ALLOC" fill $p 64 2>>"$LOG" | tail -1)
    log "path $p: $out"
    record "path_$p" "${out:-{\}}"
    verdict=$(python3 - "$out" $limit <<'PY'
import json, sys
try:
    r = json.loads(sys.argv[1]); limit = int(sys.argv[2])
except Exception as e:
    print("fail", "no result:", sys.argv[1][:200]); sys.exit()
bad = []
if r.get("error") != "cudaErrorMemoryAllocation": bad.append(f"refusal surfaced as {r.get('error')}")
if r.get("driver_used_peak", 0) > limit: bad.append(f"driver saw {r['driver_used_peak']} > limit {limit}")
if r.get("meminfo_total") != limit: bad.append(f"cudaMemGetInfo total {r.get('meminfo_total')}")
if r.get("realloc_after_free") != "cudaSuccess": bad.append(f"realloc after free {r.get('realloc_after_free')}")
if r.get("bytes", 0) < limit // 2: bad.append(f"only {r.get('bytes')} bytes fit")
mib = lambda b: f"{b / 2**20:.0f} MiB"
detail = (f"got {mib(r.get('bytes', 0))} in {r.get('chunks')} chunks, driver peak {mib(r.get('driver_used_peak', 0))} "
          f"<= {mib(limit)}, refusal {r.get('error')}")
print("fail" if bad else "pass", "; ".join(bad) if bad else detail)
PY
)
    check "path_$p" "${verdict%% *}" "${verdict#* }"
  done
  record paths_slice "$("$SLICECTL" usage "$cfg")"

  # nvidia-smi inside the slice.
  out=$(in_slice "$cfg" nvidia-smi --query-gpu=memory.total,memory.used --format=csv,noheader,nounits -i 0 2>&1)
  log "nvidia-smi in slice: $out"
  record nvidia_smi "$(python3 -c 'import json,sys; print(json.dumps({"output": sys.argv[1]}))' "$out")"
  if [ "$(echo "$out" | cut -d, -f1 | tr -d ' ')" = "2048" ]; then
    check nvidia_smi pass "memory.total = 2048 MiB inside the slice"
  else
    check nvidia_smi fail "nvidia-smi shows '$out' (its NVML calls bypass the exported hooks)"
  fi

  # A slice too small for a CUDA context: a clean error, not a crash.
  cfg=$(new_slice tiny $((256 * MiB)))
  out=$(in_slice "$cfg" "$ALLOC" init 2>>"$LOG"); local rc=$?
  log "tiny slice: rc=$rc $out"
  record tiny_slice "$(python3 -c 'import json,sys; print(json.dumps({"rc": int(sys.argv[1]), "output": sys.argv[2]}))' $rc "$out")"
  if [ $rc -gt 0 ] && [ $rc -lt 128 ]; then check context_too_big pass "exit $rc: $out"; else check context_too_big fail "exit $rc: $out"; fi

  # 8 processes, one 8 GiB slice, allocating at the same time (each context counts).
  limit=$((8 * GiB))
  cfg=$(new_slice multi8 $limit)
  watch_start multi8
  local pids=() i
  for i in 1 2 3 4 5 6 7 8; do
    LD_PRELOAD=$SHIM TESSERA_SLICE_CONFIG=$cfg "$ALLOC" fill malloc 64 3 > "$WORK/multi8.$i" 2>>"$LOG" &
    pids+=($!); echo $! >> "$WATCH_PIDS"
  done
  wait "${pids[@]}"
  watch_stop
  local w; w=$(cat "$WATCH_OUT")
  local usage; usage=$("$SLICECTL" usage "$cfg")
  record multi8_watch "$w"
  record multi8_slice "$usage"
  verdict=$(python3 - "$w" $limit "$usage" "$WORK"/multi8.[0-9]* <<'PY'
import json, sys
w = json.loads(sys.argv[1]); limit = int(sys.argv[2]); usage = json.loads(sys.argv[3])
got = []
for f in sys.argv[4:]:
    try: got.append(json.loads(open(f).read().strip().splitlines()[-1]).get("bytes", 0))
    except Exception: got.append(-1)
mib = lambda b: f"{b / 2**20:.0f} MiB"
ok = w["peak_sum"] <= limit and w["samples"] > 10 and all(g >= 0 for g in got)
print("pass" if ok else "fail",
      f"driver peak sum {mib(w['peak_sum'])} <= {mib(limit)} over {w['samples']} samples; per process got "
      f"{[mib(g) for g in got]}; context ~{mib(usage.get('ctx_hint', 0))}")
PY
)
  check multi8_never_over "${verdict%% *}" "${verdict#* }"

  # SIGKILL mid-allocation: the survivors reclaim within a second; the memory is usable again.
  limit=$((4 * GiB))
  cfg=$(new_slice killed $limit)
  pids=()
  for i in 1 2 3 4; do
    LD_PRELOAD=$SHIM TESSERA_SLICE_CONFIG=$cfg "$ALLOC" churn 30 256 > /dev/null 2>>"$LOG" &
    pids+=($!)
  done
  sleep 3
  local before; before=$("$SLICECTL" peek "$cfg")
  kill -9 "${pids[0]}" "${pids[1]}"
  local t0 t1 n=4
  t0=$(date +%s%N)
  while true; do
    n=$("$SLICECTL" peek "$cfg" | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["procs"]))')
    t1=$(date +%s%N)
    if [ "$n" -le 2 ] || [ $(( (t1 - t0) / 1000000 )) -gt 3000 ]; then break; fi
    sleep 0.01
  done
  local ms=$(( (t1 - t0) / 1000000 ))
  local after; after=$("$SLICECTL" peek "$cfg")
  kill -9 "${pids[2]}" "${pids[3]}"; wait "${pids[@]}" 2>/dev/null
  out=$(in_slice "$cfg" "$ALLOC" fill malloc 256 2>>"$LOG" | tail -1)
  record kill_reclaim "$(python3 -c 'import json,sys; print(json.dumps({"reclaim_ms": int(sys.argv[1]), "before": json.loads(sys.argv[2]), "after": json.loads(sys.argv[3]), "refill": json.loads(sys.argv[4] or "{}")}))' $ms "$before" "$after" "$out")"
  if [ "$n" -le 2 ] && [ $ms -le 1000 ]; then check sigkill_reclaim pass "dead rows reclaimed by survivors in $ms ms"; else check sigkill_reclaim fail "$n rows left after $ms ms"; fi
  verdict=$(python3 - "$out" $limit <<'PY'
import json, sys
r = json.loads(sys.argv[1] or "{}"); limit = int(sys.argv[2])
ok = r.get("bytes", 0) >= limit - 1536 * 2**20 and r.get("driver_used_peak", 1 << 62) <= limit
print("pass" if ok else "fail", f"after the kills a new process got {r.get('bytes', 0) / 2**20:.0f} MiB of {limit / 2**20:.0f}")
PY
)
  check sigkill_memory_back "${verdict%% *}" "${verdict#* }"
}
