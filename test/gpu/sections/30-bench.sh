# Shim overhead against the native baseline, same machine, same run, interleaved: launch submit,
# launch+sync round trip, cudaMalloc/cudaFree, process start-up.

section_bench() {
  local cfg i n s
  cfg=$(new_slice bench $((64 * GiB)))
  for i in 1 2 3; do
    n=$("$BENCH" 1 2>>"$LOG"); record "native_$i" "${n:-{\}}"; log "native $i: $n"
    s=$(in_slice "$cfg" "$BENCH" 1 2>>"$LOG"); record "shim_$i" "${s:-{\}}"; log "shim $i: $s"
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
    for _ in range(15):
        n.append(t(cmd, env_n)); s.append(t(cmd, env_s))
    res[name] = {"native_ms_median": statistics.median(n), "shim_ms_median": statistics.median(s),
                 "added_ms": statistics.median(s) - statistics.median(n)}
print(json.dumps(res))
PY
)
  record startup "$st"
  log "startup: $st"
  python3 - "$RESULTS" "$st" <<'PY' | while read -r name status detail; do check "$name" "$status" "$detail"; done
import json, statistics, sys
runs = {}
for line in open(sys.argv[1]):
    r = json.loads(line)
    if r["section"] == "bench" and r["name"][:6] in ("native", "shim_1", "shim_2", "shim_3"):
        runs.setdefault(r["name"].split("_")[0], []).append(r["data"])
st = json.loads(sys.argv[2])
def med(kind, f):
    return statistics.median(f(d) for d in runs[kind])
def line(name, ok, detail):
    print(name, "pass" if ok else "fail", detail)
n = lambda f: med("native", f); s = lambda f: med("shim", f)
a, b = n(lambda d: d["launch_submit_ns"]), s(lambda d: d["launch_submit_ns"])
line("launch_submit", b <= a * 1.02, f"shim {b:.1f} ns vs native {a:.1f} ns ({(b / a - 1) * 100:+.1f}%, bound +2%)")
a, b = n(lambda d: d["roundtrip_us_p50"]), s(lambda d: d["roundtrip_us_p50"])
line("roundtrip_p50", b <= a * 1.05, f"shim {b:.2f} us vs native {a:.2f} us ({(b / a - 1) * 100:+.1f}%, bound +5%)")
a, b = n(lambda d: d["roundtrip_us_p99"]), s(lambda d: d["roundtrip_us_p99"])
line("roundtrip_p99", b <= a * 1.10, f"shim {b:.2f} us vs native {a:.2f} us ({(b / a - 1) * 100:+.1f}%, bound +10%)")
a, b = n(lambda d: d["malloc_us_p50"]["4KiB"]), s(lambda d: d["malloc_us_p50"]["4KiB"])
line("malloc_4KiB", b <= a + 0.3, f"shim {b:.3f} us vs native {a:.3f} us ({b - a:+.3f} us, bound +0.3 us)")
for size in ("1MiB", "64MiB"):
    a, b = n(lambda d: d["malloc_us_p50"][size]), s(lambda d: d["malloc_us_p50"][size])
    line(f"malloc_{size}", True, f"shim {b:.3f} us vs native {a:.3f} us ({b - a:+.3f} us; recorded, no bound)")
added = st["cuda_init"]["added_ms"]
line("startup", added <= 10, f"+{added:.2f} ms per CUDA process (native {st['cuda_init']['native_ms_median']:.1f} ms); "
     f"+{st['no_cuda']['added_ms']:.2f} ms for a process that never touches CUDA")
PY
}
