# Two GPUs (issue 7). Runs only with `--multi` or `--only multi`, on a machine with at least 2 GPUs:
#  1. one process in one slice of both GPUs, 2 GiB on GPU 0 and 6 GiB on GPU 1: each wall holds on its
#     own GPU, cudaMemGetInfo reports each after cudaSetDevice;
#  2. a slice of only GPU 1 (as the agent sets it up: CUDA_VISIBLE_DEVICES=<its UUID>; and without it,
#     using device 1): accounted on GPU 1, NVML shows the process nowhere on GPU 0;
#  3. two PyTorch ranks in DistributedDataParallel over NCCL, each in its own slice on its own GPU:
#     they train in step, per-process driver peak (NCCL buffers included) stays under each wall, a tensor
#     past the wall raises torch.OutOfMemoryError and training goes on;
#  4. the agent's NVML backend (test/gpu/nodeinfo) finds both GPUs with NUMA node and health and reports
#     each slice on its GPU, its processes' memory there and nothing elsewhere.

MULTI_PY=$ROOT/test/gpu/multi_gpu.py
NODEINFO=$BUILD/test/gpu/gpu_nodeinfo

# Samples NVML per-process usage on both GPUs for the pids in $MW_PIDS (one watcher per GPU).
multi_watch_start() {  # NAME UUID0 UUID1
  MW_PIDS=$WORK/$1.pids; MW_STOP=$WORK/$1.stop; MW_OUT0=$WORK/$1.watch0; MW_OUT1=$WORK/$1.watch1
  : > "$MW_PIDS"; rm -f "$MW_STOP"
  python3 "$ROOT/test/gpu/nvml_watch.py" "$2" "$MW_PIDS" "$MW_STOP" > "$MW_OUT0" &
  MW_W0=$!
  python3 "$ROOT/test/gpu/nvml_watch.py" "$3" "$MW_PIDS" "$MW_STOP" > "$MW_OUT1" &
  MW_W1=$!
}
multi_watch_stop() { touch "$MW_STOP"; wait "$MW_W0" "$MW_W1"; }

# Prints "pass|fail DETAIL" for a `walls` result: EXPECT is ordinal=limit,... ; ON/OFF are UUIDs the
# process must (with at most the limit) and must not hold memory on.
walls_verdict() {  # RESULT_JSON EXPECT ON_UUID:LIMIT[,...] OFF_UUID
  python3 - "$@" <<'PY'
import json, sys
try:
    r = json.loads(sys.argv[1])
except Exception:
    print("fail no result:", sys.argv[1][:200]); sys.exit()
expect = {int(k): int(v) for k, v in (x.split("=") for x in sys.argv[2].split(","))}
on = {u: int(l) for u, l in (x.rsplit(":", 1) for x in sys.argv[3].split(","))}
off = sys.argv[4]
GiB, bad, parts = 2**30, [], []
devs = {d["ordinal"]: d for d in r.get("devices", [])}
for o, lim in expect.items():
    d = devs.get(o)
    if not d:
        bad.append(f"no result for device {o}"); continue
    if d["mem_get_info_total"] != lim: bad.append(f"device {o}: cudaMemGetInfo total {d['mem_get_info_total']} != {lim}")
    if d["raised"] != "OutOfMemoryError": bad.append(f"device {o}: past the wall got {d['raised']}")
    if not lim - 1.5 * GiB <= d["got"] <= lim: bad.append(f"device {o}: {d['got']} bytes fit of {lim}")
    parts.append(f"device {o} ({d.get('uuid') or '?'}): total {lim / GiB:.0f} GiB, {d['got'] / GiB:.2f} GiB fit, then OOM")
drv = r.get("driver", {})
for u, lim in on.items():
    if not 0 < drv.get(u, 0) <= lim: bad.append(f"driver: {drv.get(u, 0)} bytes on {u} (limit {lim})")
    parts.append(f"driver {drv.get(u, 0) / GiB:.2f} GiB on {u[:12]} <= {lim / GiB:.0f}")
if off and drv.get(off, 0) != 0: bad.append(f"phantom: driver shows {drv[off]} bytes on {off}")
if off: parts.append(f"0 on {off[:12]}")
print("fail" if bad else "pass", "; ".join(bad) if bad else "; ".join(parts))
PY
}

section_multi() {
  local n u0 u1 cfg out verdict
  n=$(nvidia-smi --query-gpu=uuid --format=csv,noheader | grep -c GPU-)
  if [ "$n" -lt 2 ]; then check gpus fail "needs 2 GPUs, this machine has $n"; return; fi
  u0=$(gpu_uuid 0); u1=$(gpu_uuid 1)
  record gpus "$(python3 -c '
import json, subprocess
rows = subprocess.run(["nvidia-smi", "--query-gpu=index,name,uuid,memory.total,pci.bus_id", "--format=csv,noheader"],
                      capture_output=True, text=True).stdout.strip().splitlines()
print(json.dumps([dict(zip(["index", "name", "uuid", "memory_total", "pci_bus_id"], r.split(", "))) for r in rows]))')"

  # 1. One slice of both GPUs, different walls; the process sees them in the slice's order.
  cfg=$(new_slice_on both 0 $((2 * GiB)) 1 $((6 * GiB)))
  out=$(CUDA_VISIBLE_DEVICES=$u0,$u1 in_slice "$cfg" python3 "$MULTI_PY" walls 2>>"$LOG" | tail -1)
  log "both GPUs: $out"
  record walls_both "${out:-{\}}"
  record walls_both_slice "$("$SLICECTL" usage "$cfg")"
  verdict=$(walls_verdict "${out:-{\}}" "0=$((2 * GiB)),1=$((6 * GiB))" "$u0:$((2 * GiB)),$u1:$((6 * GiB))" "")
  check walls_per_gpu "${verdict%% *}" "${verdict#* }"

  # 2. A slice of only GPU 1: as the agent and `tessera run` start it, then addressed as device 1.
  cfg=$(new_slice_on second 1 $((3 * GiB)))
  out=$(CUDA_VISIBLE_DEVICES=$u1 in_slice "$cfg" python3 "$MULTI_PY" walls 2>>"$LOG" | tail -1)
  log "second GPU only (visible): $out"
  record second_visible "${out:-{\}}"
  verdict=$(walls_verdict "${out:-{\}}" "0=$((3 * GiB))" "$u1:$((3 * GiB))" "$u0")
  check second_gpu_only "${verdict%% *}" "${verdict#* }"
  cfg=$(new_slice_on second-all 1 $((3 * GiB)))
  out=$(CUDA_DEVICE_ORDER=PCI_BUS_ID in_slice "$cfg" python3 "$MULTI_PY" walls --devices 1 2>>"$LOG" | tail -1)
  log "second GPU only (device 1): $out"
  record second_device1 "${out:-{\}}"
  verdict=$(walls_verdict "${out:-{\}}" "1=$((3 * GiB))" "$u1:$((3 * GiB))" "$u0")
  check second_gpu_as_device_1 "${verdict%% *}" "${verdict#* }"

  # 3. DDP over NCCL, rank r in its own slice on GPU r (4 GiB and 6 GiB: a context, NCCL's buffers
  #    (~1 GiB with NVLink peers) and the model's ~0.4 GiB take more than 2 GiB, which the first run
  #    showed as a clean OutOfMemoryError in a 2 GiB slice).
  local ca cb port r pids=() ended=0
  ca=$(new_slice_on ddp-0 0 $((4 * GiB)))
  cb=$(new_slice_on ddp-1 1 $((6 * GiB)))
  port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  multi_watch_start ddp "$u0" "$u1"
  for r in 0 1; do
    local c=$ca u=$u0
    if [ $r = 1 ]; then c=$cb; u=$u1; fi
    CUDA_VISIBLE_DEVICES=$u RANK=$r WORLD_SIZE=2 LOCAL_RANK=0 MASTER_ADDR=127.0.0.1 MASTER_PORT=$port \
      NCCL_NVLS_ENABLE=0 LD_PRELOAD=$SHIM TESSERA_SLICE_CONFIG=$c \
      python3 "$MULTI_PY" ddp --steps 200 > "$WORK/ddp.$r" 2>>"$LOG" &
    pids+=($!); echo $! >> "$MW_PIDS"
  done
  # A rank stuck in NCCL must not hang the whole run (polled: a background timer would outlive the
  # section holding its pipes); once one rank has ended, its peer gets 30 s to follow.
  local t0=$SECONDS
  while kill -0 "${pids[0]}" 2> /dev/null || kill -0 "${pids[1]}" 2> /dev/null; do
    if [ "$ended" = 0 ] && ! { kill -0 "${pids[0]}" 2> /dev/null && kill -0 "${pids[1]}" 2> /dev/null; }; then
      ended=$SECONDS
    fi
    if [ $((SECONDS - t0)) -gt 240 ] || { [ "$ended" != 0 ] && [ $((SECONDS - ended)) -gt 30 ]; }; then
      log "ddp: a rank still running after $((SECONDS - t0)) s, killed"
      kill -9 "${pids[@]}" 2> /dev/null
      break
    fi
    sleep 0.2
  done
  wait "${pids[@]}"
  multi_watch_stop
  local d0 d1 w0 w1
  d0=$(tail -1 "$WORK/ddp.0"); d1=$(tail -1 "$WORK/ddp.1"); w0=$(cat "$MW_OUT0"); w1=$(cat "$MW_OUT1")
  log "ddp rank 0: $d0"
  log "ddp rank 1: $d1"
  record ddp_rank0 "${d0:-{\}}"
  record ddp_rank1 "${d1:-{\}}"
  record ddp_watch_gpu0 "${w0:-{\}}"
  record ddp_watch_gpu1 "${w1:-{\}}"
  record ddp_slices "$(printf '[%s,%s]' "$("$SLICECTL" usage "$ca")" "$("$SLICECTL" usage "$cb")")"
  verdict=$(python3 - "${d0:-{\}}" "${d1:-{\}}" "${w0:-{\}}" "${w1:-{\}}" $((4 * GiB)) $((6 * GiB)) <<'PY'
import json, sys
ranks = [json.loads(sys.argv[1]), json.loads(sys.argv[2])]
watch = [json.loads(sys.argv[3]), json.loads(sys.argv[4])]
limits = [int(sys.argv[5]), int(sys.argv[6])]
GiB, bad, parts = 2**30, [], []
for r, (res, lim) in enumerate(zip(ranks, limits)):
    if res.get("steps") != 200 or not res.get("finite"): bad.append(f"rank {r} did not train: {res}"[:200]); continue
    if not (res.get("same_weights") and res.get("same_weights_after_oom")): bad.append(f"rank {r}: weights differ across ranks")
    if res.get("mem_get_info_total") != lim: bad.append(f"rank {r}: cudaMemGetInfo total {res.get('mem_get_info_total')} != {lim}")
    if res.get("cross", {}).get("raised") != "OutOfMemoryError": bad.append(f"rank {r}: past the wall: {res.get('cross')}")
    if res.get("steps_after_oom") != 20 or not res.get("finite_after_oom"): bad.append(f"rank {r}: did not train on after OOM")
    pid = str(res.get("pid"))
    own, other = watch[r].get("per_pid_peak", {}).get(pid, 0), watch[1 - r].get("per_pid_peak", {}).get(pid, 0)
    if not 0 < own <= lim: bad.append(f"rank {r}: driver peak {own} on its GPU (limit {lim})")
    if other: bad.append(f"rank {r}: holds {other} bytes on the other GPU")
    parts.append(f"rank {r}: 200+20 steps, peak {own / GiB:.2f} GiB <= {lim / GiB:.0f} over "
                 f"{watch[r].get('samples')} samples, OOM past the wall")
print("fail" if bad else "pass", "; ".join(bad) if bad else "; ".join(parts) + "; weights equal on both ranks")
PY
)
  check ddp_nccl "${verdict%% *}" "${verdict#* }"

  # 4. The agent's NVML backend while a process holds memory in a slice on each GPU.
  local na nb ha hb t
  na=$(new_slice_on node-0 0 $((1 * GiB)))
  nb=$(new_slice_on node-1 1 $((2 * GiB)))
  rm -f "$WORK"/node.*
  CUDA_VISIBLE_DEVICES=$u0 LD_PRELOAD=$SHIM TESSERA_SLICE_CONFIG=$na \
    python3 "$MULTI_PY" walls --ready "$WORK/node.0" --until "$WORK/node.stop" > /dev/null 2>>"$LOG" &
  ha=$!
  CUDA_VISIBLE_DEVICES=$u1 LD_PRELOAD=$SHIM TESSERA_SLICE_CONFIG=$nb \
    python3 "$MULTI_PY" walls --ready "$WORK/node.1" --until "$WORK/node.stop" > /dev/null 2>>"$LOG" &
  hb=$!
  for t in $(seq 600); do
    [ -e "$WORK/node.0" ] && [ -e "$WORK/node.1" ] && break
    sleep 0.1
  done
  out=$("$NODEINFO" "$na" "$nb" 2>>"$LOG")
  touch "$WORK/node.stop"
  wait "$ha" "$hb"
  log "nodeinfo: $out"
  record nodeinfo "${out:-{\}}"
  local topo
  topo=$(nvidia-smi topo -m 2>/dev/null | sed 's/\x1b\[[0-9;]*m//g')
  verdict=$(python3 - "${out:-{\}}" "$u0" "$u1" "$topo" <<'PY'
import json, sys
r, uuids, topo = json.loads(sys.argv[1]), sys.argv[2:4], sys.argv[4].splitlines()
# nvidia-smi's own answer: the "NUMA Affinity" column of `nvidia-smi topo -m`, row GPU<i>.
head = next((l.split("\t") for l in topo if "NUMA Affinity" in l), [])
col = next((i for i, h in enumerate(head) if h.strip() == "NUMA Affinity"), None)
smi_numa = {}
for l in topo:
    f = l.split("\t")
    if col is not None and f and f[0].strip().startswith("GPU") and len(f) > col:
        try: smi_numa[int(f[0].strip()[3:])] = int(f[col].strip())
        except ValueError: pass
GiB, bad, parts = 2**30, [], []
if "error" in r: bad.append(r["error"])
gpus = {g["uuid"]: g for g in r.get("gpus", [])}
for i, u in enumerate(uuids):
    g = gpus.get(u)
    if not g:
        bad.append(f"GPU {u} not discovered"); continue
    if g["index"] != i: bad.append(f"{u} discovered as index {g['index']}")
    if not g["healthy"]: bad.append(f"{u} unhealthy: {g['health_reason']}")
    if i in smi_numa and g["numa_node"] != smi_numa[i]:
        bad.append(f"GPU {i}: NUMA node {g['numa_node']}, nvidia-smi topo says {smi_numa[i]}")
    parts.append(f"GPU {i}: {g['model']}, NUMA {g['numa_node']} (nvidia-smi topo: {smi_numa.get(i, '?')}), "
                 f"PCI {g['pci_bus_id']}, healthy")
for k, s in enumerate(r.get("slices", [])):
    sg = s["gpus"][0]
    if sg["host_index"] != k: bad.append(f"slice {s['name']} on host GPU {sg['host_index']}, expected {k}")
    if not s["pids"]: bad.append(f"slice {s['name']}: no process rows")
    if not 0 < sg["driver_bytes"] <= sg["limit_bytes"]:
        bad.append(f"slice {s['name']}: its processes hold {sg['driver_bytes']} on its GPU (limit {sg['limit_bytes']})")
    if s["elsewhere_bytes"]: bad.append(f"slice {s['name']}: {s['elsewhere_bytes']} bytes on other GPUs")
    parts.append(f"slice {s['name']} on GPU {sg['host_index']}: {sg['driver_bytes'] / GiB:.2f} GiB there, 0 elsewhere")
if len(r.get("slices", [])) != 2: bad.append("expected 2 slices")
print("fail" if bad else "pass", "; ".join(bad) if bad else "; ".join(parts))
PY
)
  check nodeinfo "${verdict%% *}" "${verdict#* }"
}
