#!/usr/bin/env python3
"""Compute-cap and priority benchmarks on a real GPU (issue 3). Driven by test/gpu/run; standalone:

    python3 bench/cap/run.py OUTDIR [--lib path/libtessera.so] [--only cap,tenants,latency,launch,fault,variants]
                             [--modes timesliced,spatial] [--seconds S]

Builds bench/cap/capbench.cu with nvcc, creates slices under /run/tessera/slices/ (config + region),
runs each experiment with the uncapped baseline from the same run, and writes OUTDIR/cap.json (the
`cap` section of gpu-results.json) plus a table on stdout. Without --lib (or with a libtessera.so
that does not exist) the workloads call the launch gate directly (capbench-direct), which exercises the
same gate code without the shim's hooks; the result file says which was used.
"""
import argparse
import datetime
import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SLICES = "/run/tessera/slices"
NODE_DIR = "/run/tessera/node"
MPS_BASE = "/run/tessera/mps"


def sh(cmd, **kw):
    r = subprocess.run(cmd, shell=True, capture_output=True, text=True, **kw)
    if r.returncode != 0:
        sys.stderr.write(f"command failed (exit {r.returncode}): {cmd}\n{r.stdout}{r.stderr}")
        raise subprocess.CalledProcessError(r.returncode, cmd, r.stdout, r.stderr)
    return r.stdout


def log(msg):
    print(msg, flush=True)


class Bench:
    def __init__(self, args):
        self.args = args
        self.build = args.build
        self.lib = args.lib if args.lib and os.path.exists(args.lib) else None
        self.uuid = sh("nvidia-smi --query-gpu=uuid --format=csv,noheader -i 0").strip()
        self.card = sh("nvidia-smi --query-gpu=name --format=csv,noheader -i 0").strip()
        self.driver = sh("nvidia-smi --query-gpu=driver_version --format=csv,noheader -i 0").strip()
        self.seq = 0
        self.calib = {}
        self.mps_pipe = None
        self.mps_sms = 0
        self.be_solo = {}

    # ---- build ---------------------------------------------------------------------------------------
    def compile(self):
        os.makedirs(self.build, exist_ok=True)
        cuda_inc = "/usr/local/cuda/include"
        src = os.path.join(ROOT, "src")
        objs = []
        # The limiter's sources as src/shim/CMakeLists.txt gathers them, plus the slice sources the shim
        # compiles in (src/slice/CMakeLists.txt), so a new file there cannot leave this build behind.
        pats = ["shim/launch_gate*.cc", "shim/limiter*.cc", "shim/mps*.cc", "slice/node_region*.cc"]
        files = sorted({os.path.relpath(p, src) for pat in pats for p in glob.glob(os.path.join(src, pat))})
        files = [f for f in files if not f.endswith("_test.cc") and f != "shim/mps_main.cc"]
        files += ["slice/config.cc", "slice/region.cc", "slice/agent_rows.cc", "slice/fs.cc"]
        for f in files:
            o = os.path.join(self.build, f.replace("/", "_") + ".o")
            sh(f"g++ -std=c++20 -O2 -fPIC -Wall -DTESSERA_GATE_STANDALONE -I{src} -I{cuda_inc} -c {src}/{f} -o {o}")
            objs.append(o)
        cu = os.path.join(ROOT, "bench/cap/capbench.cu")
        sh(f"nvcc -O2 -arch=sm_90 -std=c++20 -o {self.build}/capbench {cu}")
        sh(f"nvcc -O2 -arch=sm_90 -std=c++20 -DCAPBENCH_DIRECT -I{src} -DTESSERA_GATE_STANDALONE -o {self.build}/capbench-direct "
           f"{cu} {' '.join(objs)} -lcuda -lpthread -ldl")
        mps_o = [o for o in objs if "mps" in o]
        sh(f"g++ -std=c++20 -O2 -DTESSERA_MPS_TOOL -I{src} -o {self.build}/tessera-mps {src}/shim/mps_main.cc {' '.join(mps_o)}")

    # ---- slices --------------------------------------------------------------------------------------
    def slice(self, cores, priority=1, mode="hard", spatial=False, tag="s", mps_pct=None):
        self.seq += 1
        name = f"cap{self.seq}-{tag}"
        d = os.path.join(SLICES, name)
        shutil.rmtree(d, ignore_errors=True)
        os.makedirs(d, mode=0o755)
        lines = ["version=1", f"slice={name}", f"region={d}/region", f"priority={priority}",
                 f"cap_mode={mode}", f"gpu={self.uuid} memory=60000000000 cores={cores}"]
        if spatial:
            lines.append(f"mps_pipe={self.mps_pipe}")
            if getattr(self, "mps_sms", 0) and not os.environ.get("CAP_NO_MPS_SMS"):
                lines.append(f"mps_sms={self.mps_sms}")  # the GPU's SMs (tessera-mps sms)
            if mps_pct:
                lines.append(f"mps_percentage={mps_pct}")
        conf = os.path.join(d, "slice.conf")
        with open(conf, "w") as f:
            f.write("\n".join(lines) + "\n")
        os.chmod(conf, 0o644)
        return conf

    def cmd(self, conf, argv):
        env = dict(os.environ)
        for k in ["CUDA_MPS_PIPE_DIRECTORY", "CUDA_MPS_ACTIVE_THREAD_PERCENTAGE", "CUDA_MPS_CLIENT_PRIORITY",
                  "LD_PRELOAD", "TESSERA_SLICE_CONFIG"]:
            env.pop(k, None)
        exe = os.path.join(self.build, "capbench")
        if isinstance(conf, dict):
            # A slice the agent wrote (agentslices): the process runs as in the pod's container, in a mount
            # namespace holding the agent's mounts at their container paths, with the agent's envs.
            env.update(conf["envs"])
            env["LD_PRELOAD"] = self.lib
            script = ["set -e", "mkdir -p /run/tessera", "mount -t tmpfs tessera /run/tessera"]
            for m in conf["mounts"]:
                c, h = m["container_path"], m["host_path"]
                if c in ("/usr/local/lib/tessera/libtessera.so", "/etc/ld.so.preload"):
                    continue  # LD_PRELOAD names the same library
                if os.path.isdir(h):
                    script.append(f"mkdir -p '{c}'")
                else:
                    script.append(f"mkdir -p '{os.path.dirname(c)}' && touch '{c}'")
                script.append(f"mount --bind '{h}' '{c}'")
                if m["read_only"]:
                    script.append(f"mount -o remount,bind,ro '{c}'")
            script.append('exec "$@"')
            return ["unshare", "-m", "--propagation", "private", "sh", "-c", "\n".join(script), "sh", exe] + argv, env
        if conf:
            env["TESSERA_SLICE_CONFIG"] = conf
            if self.lib:
                env["LD_PRELOAD"] = self.lib
            else:
                exe = os.path.join(self.build, "capbench-direct")
                argv = argv + ["--direct"]
        return [exe] + argv, env

    def group(self, specs, sync=True, stagger=0.0):
        """specs: list of (conf or None, argv). Runs together, returns parsed JSON outputs. With
        `stagger`, each process starts that many seconds after the previous one (a running service
        that a job joins), all measuring over the same window."""
        start = (time.time() + 1.5 + stagger * (len(specs) - 1)) * 1000 if (sync and len(specs) > 1) else 0
        procs = []
        for i, (conf, argv) in enumerate(specs):
            if i and stagger:
                time.sleep(stagger)
            a = list(argv) + (["--start-at", f"{start:.0f}"] if start else [])
            c, env = self.cmd(conf, a)
            procs.append(subprocess.Popen(c, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
        outs = []
        for p in procs:
            o, e = p.communicate(timeout=120)
            res = None
            for line in o.strip().splitlines()[::-1]:
                if line.startswith("{"):
                    res = json.loads(line)
                    break
            if res is None:
                res = {"error": (e or "").strip()[-400:], "rc": p.returncode}
            res["rc"] = p.returncode
            if p.returncode != 0:
                res["stderr"] = (e or "").strip()[-400:]
            outs.append(res)
        return outs

    def calibrate(self, us, blocks=0):
        # The same grid everywhere (full GPU, several waves): under MPS the device reports only the
        # client's SMs, and a grid sized from that would shrink the work instead of slowing it.
        blocks = blocks or self.blocks
        key = (us, blocks)
        if key not in self.calib:
            argv = ["calibrate", "--us", str(us)] + (["--blocks", str(blocks)] if blocks else [])
            self.calib[key] = self.group([(None, argv)])[0]["iters"]
        return self.calib[key]

    # ---- experiments ---------------------------------------------------------------------------------
    def work(self, iters, seconds, extra=()):
        grid = [] if "coop" in extra else ["--blocks", str(self.blocks)]
        return ["work", "--iters", str(iters), "--seconds", str(seconds)] + grid + list(extra)

    def cap_accuracy(self, spatial, baselines):
        S = self.args.seconds
        rows = []
        for ms in self.args.lens:
            iters = self.calibrate(int(ms * 1000))
            base = baselines.setdefault(ms, self.group([(None, self.work(iters, S))])[0]["rate"])
            for cap in self.args.caps:
                for procs in [1, 2]:
                    conf = self.slice(cap, spatial=spatial, tag=f"c{cap}")
                    outs = self.group([(conf, self.work(iters, S))] * procs)
                    rate = sum(o.get("rate", 0) for o in outs)
                    share = 100.0 * rate / base
                    row = {"cap": cap, "kernel_ms": ms, "procs": procs, "share": round(share, 2),
                           "error_points": round(share - cap, 2), "ok": abs(share - cap) <= 3.0,
                           "baseline_rate": base, "rate": rate}
                    if any(o.get("rc") for o in outs):
                        row["errors"] = [o.get("stderr") for o in outs]
                    rows.append(row)
                    log(f"  cap {cap:3d}% kernel {ms:5.1f} ms procs {procs}: share {share:6.2f}% "
                        f"({share - cap:+.2f})")
        return rows

    def launch_kinds(self, spatial):
        S = self.args.seconds
        rows = []
        iters = self.calibrate(2000)
        for kind, extra in [("streams4", ["--streams", "4"]), ("graph", ["--launch", "graph"]),
                            ("coop", ["--launch", "coop"]), ("ex", ["--launch", "ex"])]:
            base = self.group([(None, self.work(iters, S, extra))])[0]["rate"]
            conf = self.slice(25, spatial=spatial, tag=kind)
            out = self.group([(conf, self.work(iters, S, extra))])[0]
            share = 100.0 * out.get("rate", 0) / base
            rows.append({"kind": kind, "cap": 25, "share": round(share, 2), "ok": abs(share - 25) <= 3.0})
            log(f"  launch {kind:8s} cap 25%: share {share:6.2f}%")
        return rows

    def tenants(self, spatial, baselines):
        S = self.args.seconds + 1
        iters = self.calibrate(2000)
        base = baselines.get(2) or self.group([(None, self.work(iters, S))])[0]["rate"]
        a = self.slice(30, spatial=spatial, tag="t30")
        b = self.slice(70, spatial=spatial, tag="t70")
        oa, ob = self.group([(a, self.work(iters, S)), (b, self.work(iters, S))])
        ra, rb = oa.get("rate", 0), ob.get("rate", 0)
        ratio = ra / rb if rb else 0
        res = {"raw": [oa, ob], "rate_30": ra, "rate_70": rb, "share_30": round(100 * ra / base, 2),
               "share_70": round(100 * rb / base, 2), "ratio": round(ratio, 4), "target": round(3 / 7, 4),
               "ok": abs(ratio / (3 / 7) - 1) <= 0.10}
        log(f"  tenants 30/70: shares {res['share_30']}% / {res['share_70']}%, ratio {ratio:.3f} (3:7 = 0.429)")
        return res

    def latency(self, spatial, hp_cores=None, be_cores=None):
        S = self.args.seconds + 1
        hp_blocks = max(1, self.sms // 10)
        hp_iters = self.calibrate(50, hp_blocks)
        lat = ["latency", "--iters", str(hp_iters), "--period-us", "1000", "--seconds", str(S),
               "--blocks", str(hp_blocks)]
        if hp_cores is None:
            hp_cores, be_cores = (10, 90) if spatial else (100, 100)
        hp_conf = self.slice(hp_cores, priority=0, spatial=spatial, tag="hp")
        alone = self.group([(hp_conf, lat)])[0]
        res = {"hp_kernel_us": 50, "hp_blocks": hp_blocks, "hp_cores": hp_cores, "be_cores": be_cores,
               "alone": alone, "with_be": []}
        log(f"  latency (cores {hp_cores}/{be_cores}) alone: p50 {alone.get('p50_us')} us p99 {alone.get('p99_us')} us")
        for be_ms in self.args.be_lens:
            iters = self.calibrate(int(be_ms * 1000))
            if be_ms not in self.be_solo:
                self.be_solo[be_ms] = self.group([(None, self.work(iters, S))])[0]["rate"]
            be_solo = self.be_solo[be_ms]
            row = {"be_kernel_ms": be_ms, "be_solo_rate": be_solo}
            if not spatial:
                # The problem being solved: plain sharing, no Tessera at all.
                h, b = self.group([(None, lat), (None, self.work(iters, S))])
                row["plain"] = {"p50_us": h.get("p50_us"), "p99_us": h.get("p99_us"),
                                "be_share": round(b.get("rate", 0) / be_solo, 3)}
            be_conf = self.slice(be_cores, priority=1, spatial=spatial, tag="be")
            hp_conf = self.slice(hp_cores, priority=0, spatial=spatial, tag="hp")
            # The high-priority service runs first; the best-effort job joins it (as in production, and
            # so the job's shim sees the service when it picks its MPS partition).
            h, b = self.group([(hp_conf, lat), (be_conf, self.work(iters, S))], stagger=1.2)
            row["raw"] = [h, b]
            row["be_mps_pct"] = b.get("mps_pct")
            row["tessera"] = {"p50_us": h.get("p50_us"), "p99_us": h.get("p99_us"), "max_us": h.get("max_us"),
                              "be_share": round(b.get("rate", 0) / be_solo, 3)}
            if h.get("rc") or b.get("rc"):
                row["errors"] = [h.get("stderr"), b.get("stderr")]
            a99 = alone.get("p99_us") or 0
            t99 = h.get("p99_us") or 1e9
            if spatial:
                hp_busy = 0.05  # 50 us per 1 ms, counted as if it held the whole GPU
                row["ok_latency"] = t99 <= 1.5 * a99
                row["ok_throughput"] = row["tessera"]["be_share"] >= 0.8 * (1 - hp_busy)
            else:
                row["ok_latency"] = t99 <= a99 + be_ms * 1000
            res["with_be"].append(row)
            plain = row.get("plain", {})
            log(f"  latency beside {be_ms} ms: plain p50/p99 {plain.get('p50_us')}/{plain.get('p99_us')} us; "
                f"tessera p50/p99 {h.get('p50_us')}/{h.get('p99_us')} us, best effort at "
                f"{row['tessera']['be_share']:.2f} of solo")
        return res

    def mps_pct_for(self, rule, cores):
        """A partition rule of the partition_rules experiment: `cores`, `cores+N`, `even` (the smallest
        percentage for which MPS grants at least cores % of the SMs; it rounds down to even counts) or N."""
        if rule == "cores":
            return cores
        if rule.startswith("cores+"):
            return min(100, cores + int(rule[6:]))
        if rule == "even":
            want = -(-cores * self.sms // 100)
            want += want % 2
            pct = cores
            while pct < 100 and (pct * self.sms // 100) // 2 * 2 < want:
                pct += 1
            return pct
        return int(rule)

    def partition_rules(self, baselines):
        """Spatial caps with the partition set by rule (mps_percentage) and charged at the partition."""
        S = self.args.seconds
        out = []
        for rule in os.environ.get("CAP_MPS_RULES", "cores,even,cores+8,100").split(","):
            rows = []
            for ms in [float(x) for x in os.environ.get("CAP_RULE_LENS", "0.1,2").split(",")]:
                iters = self.calibrate(int(ms * 1000))
                base = baselines.setdefault(ms, self.group([(None, self.work(iters, S))])[0]["rate"])
                for cap in self.args.caps:
                    pct = self.mps_pct_for(rule, cap)
                    conf = self.slice(cap, spatial=True, tag=f"r{cap}", mps_pct=pct)
                    o = self.group([(conf, self.work(iters, S))])[0]
                    share = 100.0 * o.get("rate", 0) / base
                    rows.append({"cap": cap, "kernel_ms": ms, "mps_pct": pct, "share": round(share, 2),
                                 "ok": abs(share - cap) <= 3.0, "rc": o.get("rc")})
                    log(f"  rule {rule:8s} cap {cap:3d}% ({pct}%) kernel {ms:5.1f} ms: share {share:6.2f}%")
            iters = self.calibrate(2000)
            base = baselines.get(2) or self.group([(None, self.work(iters, S + 1))])[0]["rate"]
            a = self.slice(30, spatial=True, tag="t30", mps_pct=self.mps_pct_for(rule, 30))
            b = self.slice(70, spatial=True, tag="t70", mps_pct=self.mps_pct_for(rule, 70))
            oa, ob = self.group([(a, self.work(iters, S + 1)), (b, self.work(iters, S + 1))])
            ra, rb = oa.get("rate", 0), ob.get("rate", 0)
            ten = {"share_30": round(100 * ra / base, 2), "share_70": round(100 * rb / base, 2),
                   "ratio": round(ra / rb, 4) if rb else 0}
            log(f"  rule {rule:8s} tenants 30/70: {ten}")
            out.append({"rule": rule, "cells": rows, "tenants": ten})
        return out

    def partitions(self):
        """Spatial mode: how many SMs the MPS server grants a client for a given cores (percentage)."""
        out = {}
        for cores in [int(x) for x in os.environ.get("CAP_PROBE_PCTS", "9,10,11,12,75,76,86,88,89,90").split(",")]:
            conf = self.slice(cores, spatial=True, tag="probe", mps_pct=cores)  # MPS's own rounding
            r = self.group([(conf, ["calibrate", "--us", "50", "--blocks", "1"])])[0]
            out[str(cores)] = {"sms": r.get("sms"), "mps_pct": r.get("mps_pct")}
        log(f"  partitions (cores -> SMs): {json.dumps({k: v['sms'] for k, v in out.items()})}")
        return out

    def fault(self):
        """Spatial mode: what a faulting or killed client does to its neighbours."""
        S = 4
        iters = self.calibrate(2000)
        res = {}
        a = self.slice(50, spatial=True, tag="fa")
        b = self.slice(50, spatial=True, tag="fb")
        c1, e1 = self.cmd(a, self.work(iters, S))
        victim = subprocess.Popen(c1, env=e1, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(1.5)
        f = self.group([(b, ["fault"])])[0]
        o, e = victim.communicate(timeout=60)
        res["fault"] = {"faulting_client": f.get("error"), "neighbour_rc": victim.returncode,
                        "neighbour_stderr": e.strip()[-300:], "neighbour_out": o.strip()[-300:]}
        after = self.group([(a, self.work(iters, 1))])[0]
        res["fault"]["new_client_after_rc"] = after.get("rc")
        # A client killed with SIGKILL mid-run.
        c1, e1 = self.cmd(a, self.work(iters, S))
        victim = subprocess.Popen(c1, env=e1, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        c2, e2 = self.cmd(b, self.work(iters, S))
        killed = subprocess.Popen(c2, env=e2, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(2.0)
        killed.send_signal(signal.SIGKILL)
        killed.wait()
        o, e = victim.communicate(timeout=60)
        res["kill"] = {"neighbour_rc": victim.returncode, "neighbour_stderr": e.strip()[-300:],
                       "neighbour_out": o.strip()[-300:]}
        log(f"  fault: {json.dumps(res)}")
        return res

    def agent_latency(self, hp_cores=10, be_cores=90):
        """The latency experiment on slices the node agent wrote (test/gpu/agentslices.cc: SliceWriter with
        the MpsSupervisor, as for two pods' containers), each process in a mount namespace with the agent's
        mounts. No hand-written config: the MPS daemon, mps_pipe and mps_sms are the agent's."""
        tool = os.environ.get("CAP_AGENTSLICES", "")
        if not tool or not os.path.exists(tool) or not self.lib:
            raise RuntimeError(f"spatial-agent needs CAP_AGENTSLICES (got '{tool}') and --lib")
        base = os.path.join(self.build, "agent")
        shutil.rmtree(base, ignore_errors=True)
        os.makedirs(base)
        agent = subprocess.Popen([tool, "--state", f"{base}/state", "--mps-base", f"{base}/mps", "--node-dir",
                                  f"{base}/node", "--shim", self.lib, "--slice", f"hp:{hp_cores}:0",
                                  "--slice", f"be:{be_cores}:1"],
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            line = agent.stdout.readline()
            if not line.startswith("{"):
                raise RuntimeError("agentslices: " + (agent.stderr.read() if agent.poll() is not None else line)[-400:])
            written = json.loads(line)
            hp, be = written["slices"]
            log(f"  agent slices: hp {hp['name']}, be {be['name']}, sms {written['sms']}")
            S = self.args.seconds + 1
            hp_blocks = max(1, self.sms // 10)
            hp_iters = self.calibrate(50, hp_blocks)
            lat = ["latency", "--iters", str(hp_iters), "--period-us", "1000", "--seconds", str(S),
                   "--blocks", str(hp_blocks)]
            alone = self.group([(hp, lat)])[0]
            res = {"hp_cores": hp_cores, "be_cores": be_cores, "configs": [hp["config"], be["config"]],
                   "mounts": [hp["mounts"], be["mounts"]], "alone": alone, "with_be": []}
            log(f"  agent latency alone: p50 {alone.get('p50_us')} us p99 {alone.get('p99_us')} us")
            for be_ms in self.args.be_lens:
                iters = self.calibrate(int(be_ms * 1000))
                if be_ms not in self.be_solo:
                    self.be_solo[be_ms] = self.group([(None, self.work(iters, S))])[0]["rate"]
                h, b = self.group([(hp, lat), (be, self.work(iters, S))], stagger=1.2)
                a99 = alone.get("p99_us") or 0
                t99 = h.get("p99_us") or 1e9
                row = {"be_kernel_ms": be_ms, "raw": [h, b], "be_mps_pct": b.get("mps_pct"),
                       "tessera": {"p50_us": h.get("p50_us"), "p99_us": h.get("p99_us"),
                                   "be_share": round(b.get("rate", 0) / self.be_solo[be_ms], 3)},
                       "ok_latency": t99 <= 1.5 * a99}
                row["ok_throughput"] = row["tessera"]["be_share"] >= 0.8 * (1 - 0.05)  # as in latency()
                if h.get("rc") or b.get("rc"):
                    row["errors"] = [h.get("stderr"), b.get("stderr")]
                res["with_be"].append(row)
                log(f"  agent latency beside {be_ms} ms: p50/p99 {h.get('p50_us')}/{h.get('p99_us')} us, "
                    f"best effort at {row['tessera']['be_share']:.2f} of solo")
            return res
        finally:
            agent.stdin.close()
            try:
                agent.wait(timeout=30)
            except subprocess.TimeoutExpired:
                agent.kill()

    # ---- MPS -----------------------------------------------------------------------------------------
    def mps_start(self):
        out = sh(f"{self.build}/tessera-mps start --gpu {self.uuid} --base {MPS_BASE}")
        self.mps_pipe = out.strip()
        # What an operator writes as mps_sms: the tool's answer (checked against the benchmark's own count).
        self.mps_sms = int(sh(f"{self.build}/tessera-mps sms --gpu {self.uuid}").strip())
        log(f"  tessera-mps sms: {self.mps_sms} (capbench outside MPS: {self.sms})")

    def mps_stop(self):
        subprocess.run([f"{self.build}/tessera-mps", "stop", "--gpu", self.uuid, "--base", MPS_BASE],
                       capture_output=True, text=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--lib", default=os.environ.get("TESSERA_LIB", ""))
    ap.add_argument("--build", default="/tmp/tessera-capbench")
    ap.add_argument("--only", default="cap,launch,tenants,latency,fault,variants")
    ap.add_argument("--modes", default="timesliced,spatial")
    ap.add_argument("--seconds", type=float, default=2.5)
    ap.add_argument("--lens", default="0.1,2,10", help="kernel lengths (ms) of the cap table")
    args = ap.parse_args()
    ap_caps = os.environ.get("CAP_CAPS", "10,25,50,75")
    args.lens = [float(x) for x in args.lens.split(",")]
    args.caps = [int(x) for x in ap_caps.split(",")]
    args.be_lens = [float(x) for x in os.environ.get("CAP_BE_LENS", "0.1,1,5").split(",")]
    only = set(args.only.split(","))
    modes = args.modes.split(",")
    os.makedirs(args.out, exist_ok=True)
    # The host directories the shim reads by default: removed again at exit if this run made them (a
    # leftover /run/tessera would make the machine look like a node with an agent on it).
    made = [d for d in ("/run/tessera", SLICES, NODE_DIR, MPS_BASE) if not os.path.exists(d)]
    os.makedirs(SLICES, exist_ok=True)
    os.makedirs(NODE_DIR, exist_ok=True)
    try:
        run_modes(args, only, modes)
    finally:
        for d in made:
            shutil.rmtree(d, ignore_errors=True)


def run_modes(args, only, modes):
    b = Bench(args)
    t0 = time.time()
    b.compile()
    log(f"built in {time.time() - t0:.1f} s")
    info = b.group([(None, ["calibrate", "--us", "2000"])])[0]
    b.blocks = info["blocks"]
    b.calib[(2000, b.blocks)] = info["iters"]
    b.sms = info["sms"]
    result = {"card": b.card, "driver": b.driver, "gpu_uuid": b.uuid,
              "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "command": "python3 bench/cap/run.py " + " ".join(sys.argv[1:]),
              "gate": "shim (LD_PRELOAD libtessera.so)" if b.lib else "direct (capbench-direct calls the gate)",
              "seconds_per_run": args.seconds}
    baselines = {}
    for mode in modes:
        spatial = mode == "spatial"
        r = {}
        log(f"== {mode}")
        if mode == "spatial-agent":
            try:
                r["latency"] = b.agent_latency()
            except Exception as e:
                r["error"] = repr(e)
                log(f"  error: {e!r}")
            result[mode] = r
            continue
        try:
            if spatial:
                b.mps_start()
                r["mps_pipe"] = b.mps_pipe
                r["partitions"] = b.partitions()
            if "cap" in only:
                r["accuracy"] = b.cap_accuracy(spatial, baselines)
            if spatial and "rules" in only:
                r["partition_rules"] = b.partition_rules(baselines)
            if "launch" in only and not spatial:  # the SM partition does not depend on the launch API
                r["launch_kinds"] = b.launch_kinds(spatial)
            if "tenants" in only:
                r["tenants"] = b.tenants(spatial, baselines)
            if "latency" in only:
                r["latency"] = b.latency(spatial)
            if spatial and "variants" in only:
                # Other splits of the GPU between the two tenants (hp_cores:be_cores), same experiment.
                r["latency_variants"] = [
                    b.latency(spatial, *map(int, v.split(":")))
                    for v in os.environ.get("CAP_SPATIAL_VARIANTS", "11:89,10:86,12:86").split(",") if v]
            if spatial and "fault" in only:
                r["fault"] = b.fault()
        except Exception as e:  # keep what was measured
            r["error"] = repr(e)
            log(f"  error: {e!r}")
        finally:
            if spatial:
                b.mps_stop()
        result[mode] = r
    result["wall_s"] = round(time.time() - t0, 1)
    with open(os.path.join(args.out, "cap.json"), "w") as f:
        json.dump(result, f, indent=1)
    acc = [x for m in modes for x in result[m].get("accuracy", [])]
    log(f"cap: {sum(1 for x in acc if x['ok'])}/{len(acc)} caps within 3 points; wall {result['wall_s']} s")


if __name__ == "__main__":
    main()
