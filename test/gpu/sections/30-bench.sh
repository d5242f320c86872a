# Shim overhead against the native baseline, same machine, same run: launch submit, launch+sync round
# trip, cudaMalloc/cudaFree, process start-up. Native and shim runs alternate (BENCH_PAIRS pairs, default
# 32, pinned to one core) and each metric compares the medians: single runs on these VMs vary by more
# than the bounds (a process lands in a fast or a slow mode: 33 or 47 us per 4 KiB cudaMalloc, native).
# Each check also reports the same-version spread: the medians of the odd and the even native runs.
# STARTUP_PAIRS (default 80) sets the pairs of the start-up measurement.
# The hook layer is measured with the launch gate off (no compute cap, no node region); if a node
# region directory exists (priority coordination turns the gate on) it is set aside for those runs and
# the gate-on cost is recorded separately.

section_bench() {
  local cfg i n s pin=""
  cfg=$(new_slice bench $((64 * GiB)))
  command -v taskset >/dev/null && pin="taskset -c 2"
  local node_dir=/run/tessera/node moved=""
  if [ -d $node_dir ]; then mv $node_dir $node_dir.bench-off && moved=1; fi
  for i in $(seq 1 "${BENCH_PAIRS:-32}"); do
    n=$($pin "$BENCH" 1 2>>"$LOG"); record "native_$i" "${n:-{\}}"; log "native $i: $n"
    s=$(LD_PRELOAD=$SHIM TESSERA_SLICE_CONFIG=$cfg $pin "$BENCH" 1 2>>"$LOG"); record "shim_$i" "${s:-{\}}"; log "shim $i: $s"
  done
  local st
  st=$(python3 - "$ALLOC" "$SHIM" "$cfg" <<'PY'
import json, os, statistics, subprocess, sys, time
alloc, shim, cfg = sys.argv[1:4]
env_n = dict(os.environ); env_s = dict(os.environ, LD_PRELOAD=shim, TESSERA_SLICE_CONFIG=cfg)
def t(cmd, env):
    t0 = time.perf_counter(); subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, check=False)
    return (time.perf_counter() - t0) * 1000
res = {}
for name, cmd in (("cuda_init", [alloc, "init"]), ("no_cuda", ["/bin/true"])):
    t(cmd, env_n); t(cmd, env_s)
    n, s = [], []
    for _ in range(int(os.environ.get("STARTUP_PAIRS", "80"))):  # ~300 ms each, +- several ms: many pairs
        n.append(t(cmd, env_n)); s.append(t(cmd, env_s))
    res[name] = {"native_ms_median": statistics.median(n), "shim_ms_median": statistics.median(s),
                 "added_ms": statistics.median(s) - statistics.median(n),
                 "same_version_spread_ms": statistics.median(n[1::2]) - statistics.median(n[0::2]), "pairs": len(n)}
print(json.dumps(res))
PY
)
  if [ -n "$moved" ]; then
    mv $node_dir.bench-off $node_dir
    for i in 1 2 3; do
      s=$(LD_PRELOAD=$SHIM TESSERA_SLICE_CONFIG=$cfg $pin "$BENCH" 1 2>>"$LOG"); record "gate_on_$i" "${s:-{\}}"
      log "shim with launch gate on (node region present) $i: $s"
    done
  fi
  record startup "$st"
  log "startup: $st"
  python3 - "$RESULTS" "$st" <<'PY' | while read -r name status detail; do check "$name" "$status" "$detail"; done
import json, statistics, sys
runs = {"native": [], "shim": []}
for line in open(sys.argv[1]):
    r = json.loads(line)
    kind = r["name"].split("_")[0]
    if r["section"] == "bench" and kind in runs and r["data"]:
        runs[kind].append(r["data"])
st = json.loads(sys.argv[2])
med = lambda kind, f: statistics.median(f(d) for d in runs[kind])
spread = lambda kind, f: (min(f(d) for d in runs[kind]), max(f(d) for d in runs[kind]))
def line(name, ok, detail):
    print(name, "pass" if ok else "fail", detail)
def cmp(name, f, bound_pct=None, bound_abs=None, unit="us", fmt="{:.2f}"):
    a, b = med("native", f), med("shim", f)
    (alo, ahi), (blo, bhi) = spread("native", f), spread("shim", f)
    ok = True
    if bound_pct is not None: ok = b <= a * (1 + bound_pct / 100)
    if bound_abs is not None: ok = b <= a + bound_abs
    bound = f"bound +{bound_pct}%" if bound_pct is not None else (f"bound +{bound_abs} {unit}" if bound_abs is not None else "no bound")
    nat = [f(d) for d in runs["native"]]
    same = statistics.median(nat[1::2]) - statistics.median(nat[0::2]) if len(nat) >= 4 else 0
    line(name, ok, f"shim {fmt.format(b)} {unit} vs native {fmt.format(a)} {unit} ({(b / a - 1) * 100:+.1f}%, {b - a:+.3f} {unit}; "
         f"{bound}; medians of {len(runs['native'])} runs, native {fmt.format(alo)}..{fmt.format(ahi)}, shim {fmt.format(blo)}..{fmt.format(bhi)}; "
         f"same-version spread {same:+.3f} {unit})")
cmp("launch_submit", lambda d: d["launch_submit_ns"], bound_pct=2, unit="ns", fmt="{:.0f}")
cmp("roundtrip_p50", lambda d: d["roundtrip_us_p50"], bound_pct=5)
cmp("roundtrip_p99", lambda d: d["roundtrip_us_p99"], bound_pct=10)
cmp("malloc_4KiB", lambda d: d["malloc_us_p50"]["4KiB"], bound_abs=0.3, fmt="{:.2f}")
cmp("malloc_1MiB", lambda d: d["malloc_us_p50"]["1MiB"])
cmp("malloc_64MiB", lambda d: d["malloc_us_p50"]["64MiB"])
cmp("free_4KiB", lambda d: d["free_us_p50"]["4KiB"])
added = st["cuda_init"]["added_ms"]
line("startup", added <= 10, f"+{added:.2f} ms per CUDA process (native {st['cuda_init']['native_ms_median']:.1f} ms, "
     f"medians of {st['cuda_init']['pairs']} pairs, same-version spread {st['cuda_init']['same_version_spread_ms']:+.2f} ms); "
     f"+{st['no_cuda']['added_ms']:.2f} ms for a process that never touches CUDA")
PY
}
