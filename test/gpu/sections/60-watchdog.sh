# The watchdog (src/agent/watchdog.h, here gpu_watchdogctl: the agent's code on the real driver) against a
# slice process with the shim removed. Slice wd-attacker (1 GiB) runs alloc_paths without LD_PRELOAD, so
# nothing stops it at the wall; slice wd-neighbour (2 GiB) fills to its wall through the shim and holds
# it 8 s. Both are rooted like `tessera run` does (watchdogctl root). Checks: the attacker is SIGKILLed
# within 1 s of the driver first showing it past its wall (NVML sampled every 5 ms); the neighbour is
# never signalled, exits normally and its memory is intact; no kill hit the neighbour.

section_watchdog() {
  local a_cfg n_cfg a_dir n_dir wpid apid npid a_rc n_rc out nout verdict limit=$((1 * GiB))
  a_cfg=$(new_slice wd-attacker $limit)
  n_cfg=$(new_slice wd-neighbour $((2 * GiB)))
  a_dir=$(dirname "$a_cfg"); n_dir=$(dirname "$n_cfg")
  rm -f "$WORK/wd.stop"
  "$WATCHDOGCTL" watch "$SLICES" "$WORK/wd.stop" $limit > "$WORK/wd_out.json" 2>>"$LOG" &
  wpid=$!
  "$WATCHDOGCTL" root "$n_dir" -- env LD_PRELOAD="$SHIM" TESSERA_SLICE_CONFIG="$n_cfg" \
    "$ALLOC" fill malloc 256 8 > "$WORK/wd_neighbour.json" 2>>"$LOG" &
  npid=$!
  sleep 2  # the neighbour holds its wall before the attacker starts
  "$WATCHDOGCTL" root "$a_dir" -- env -u LD_PRELOAD TESSERA_SLICE_CONFIG="$a_cfg" \
    "$ALLOC" fill malloc 256 8 > "$WORK/wd_attacker.json" 2>>"$LOG" &
  apid=$!
  wait "$apid"; a_rc=$?
  wait "$npid"; n_rc=$?
  touch "$WORK/wd.stop"; wait "$wpid"
  out=$(tail -1 "$WORK/wd_out.json"); nout=$(tail -1 "$WORK/wd_neighbour.json")
  log "watchdog: attacker pid $apid rc $a_rc, neighbour pid $npid rc $n_rc; $out; neighbour $nout"
  record run "{\"attacker_pid\":$apid,\"attacker_rc\":$a_rc,\"neighbour_pid\":$npid,\"neighbour_rc\":$n_rc,\"watchdog\":${out:-{\}},\"neighbour\":${nout:-{\}}}"
  verdict=$(python3 - "$apid" "$a_rc" "$npid" "$n_rc" "${out:-{\}}" "${nout:-{\}}" <<'PY'
import json, sys
apid, arc, npid, nrc = (int(x) for x in sys.argv[1:5])
w, n = json.loads(sys.argv[5]), json.loads(sys.argv[6])
bad = []
kills = w.get("kills", [])
mine = [k for k in kills if k["pid"] == apid and k.get("ok")]
over = w.get("first_over", {}).get(str(apid))
if arc != 137: bad.append(f"attacker exit {arc}, not SIGKILL (137)")
if not mine: bad.append("no kill of the attacker")
if any(k["pid"] == npid for k in kills): bad.append("the neighbour was signalled")
if nrc != 0: bad.append(f"neighbour exit {nrc}")
if not n: bad.append("neighbour printed no result")
lat = (mine[0]["ms"] - over) if (mine and over is not None) else None
if lat is None or lat > 1000: bad.append(f"kill {lat} ms after the driver showed it past the wall")
facts = f"kill {lat} ms after the driver first showed the attacker past its 1 GiB wall; polls {w.get('polls')}; neighbour {n}"
print("fail" if bad else "pass", "; ".join(bad + [facts]))
PY
)
  check "shim_removed_killed" "${verdict%% *}" "${verdict#* }"
}
