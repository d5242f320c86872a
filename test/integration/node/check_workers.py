#!/usr/bin/env python3
"""Checks the seed's two workers on the real node from inside their containers (node_test.sh in_container
and agent_restart). For each worker: the slice the scheduler chose (the pod's tessera.dev/devices
annotation) has the manifest's cores and memory percentage of its GPU; inside the container
(kubectl exec) tessera-gpu-check sees that GPU, that memory as cudaMemGetInfo's total, that compute
share in its slice config, allocates up to the wall and gets CUDA_ERROR_OUT_OF_MEMORY past it;
nvidia-smi shows the one GPU with the slice's memory as its total; the agent's metrics on NodePort 31992
name the container with the slice's limit. With --dra (the chart in mode dra): the slice is the pod's
ResourceClaim's allocation (device and consumed capacity, no tessera.dev/devices annotation) and the
agent's metrics count the prepared claims. Prints one line per fact checked; exits 1 on the first
mismatch."""
import argparse
import json
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request

# The seed's manifests (deploy/examples): worker -> (cores, memory percentage).
SEED = {"worker-a": (25, 20), "worker-b": (40, 30)}
GPU_TOTAL_MIB = 16384  # the fake driver's GPUs (FAKE_CUDA_TOTAL_MIB default)
STEP_MIB = 64  # tessera-gpu-check's default step


def kubectl(*args):
    return subprocess.run(["kubectl", *args], check=True, capture_output=True, text=True).stdout


def fail(msg):
    print(f"check_workers: FAIL: {msg}", file=sys.stderr)
    sys.exit(1)


def running_pod(instance):
    pods = json.loads(kubectl("get", "pods", "-l", f"app=gpu-worker,instance={instance}", "-o", "json"))["items"]
    pods = [p for p in pods if p["status"].get("phase") == "Running" and not p["metadata"].get("deletionTimestamp")]
    if len(pods) != 1:
        fail(f"{instance}: want one Running pod, have {len(pods)}")
    return pods[0]


def mib_of(quantity):
    """A memory quantity as the API server writes it ("3276Mi", "4Gi", "3435134976") in MiB."""
    m = re.fullmatch(r"(\d+)(Ki|Mi|Gi|Ti)?", str(quantity))
    if not m:
        fail(f"unexpected memory quantity {quantity!r}")
    scale = {None: 1, "Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30, "Ti": 1 << 40}[m.group(2)]
    return int(m.group(1)) * scale / (1 << 20)


def claim_slice(pod):
    """(uuid, MiB, cores) of the pod's one GPU claim, from its allocation and the node's ResourceSlice."""
    name = pod["metadata"]["name"]
    if "tessera.dev/devices" in pod["metadata"].get("annotations", {}):
        fail(f"{name}: has tessera.dev/devices: placed by the extender, not through a claim")
    statuses = pod.get("status", {}).get("resourceClaimStatuses", [])
    if len(statuses) != 1 or not statuses[0].get("resourceClaimName"):
        fail(f"{name}: want one generated ResourceClaim, pod status has {statuses}")
    claim = json.loads(kubectl("get", "resourceclaim", statuses[0]["resourceClaimName"], "-o", "json"))
    results = claim.get("status", {}).get("allocation", {}).get("devices", {}).get("results", [])
    if len(results) != 1 or results[0].get("driver") != "gpu.tessera.io":
        fail(f"{name}: claim {claim['metadata']['name']} allocation is {results}, want one device of gpu.tessera.io")
    r = results[0]
    used = r.get("consumedCapacity", {})
    slices = json.loads(kubectl("get", "resourceslices", "-o", "json"))["items"]
    uuid = None
    for s in slices:
        for d in s["spec"].get("devices", []):
            if s["spec"].get("driver") == "gpu.tessera.io" and s["spec"]["pool"]["name"] == r["pool"] and d["name"] == r["device"]:
                uuid = d["attributes"]["uuid"]["string"]
    if uuid is None:
        fail(f"{name}: device {r['pool']}/{r['device']} is in no ResourceSlice")
    mib = mib_of(used.get("memory", "0"))
    if mib != int(mib):
        fail(f"{name}: consumed memory {used.get('memory')} is not whole MiB")
    return uuid, int(mib), int(str(used.get("cores", "-1")))


def facts(text):
    out = {}
    for line in text.splitlines():
        if ": " in line:
            k, v = line.split(": ", 1)
            out.setdefault(k, v)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--node-ip", required=True)
    ap.add_argument("--dra", action="store_true", help="the chart runs in mode dra: slices come from claims")
    args = ap.parse_args()
    # A new agent pod is Ready before its endpoint reaches kube-proxy's NodePort rules: poll the port
    # until it answers (60 s), then check its content once.
    deadline = time.monotonic() + 60
    while True:
        try:
            with urllib.request.urlopen(f"http://{args.node_ip}:31992/metrics", timeout=10) as r:
                metrics = r.read().decode()
            break
        except (urllib.error.URLError, ConnectionError) as e:
            if time.monotonic() > deadline:
                fail(f"NodePort 31992 on {args.node_ip} did not answer within 60 s: {e}")
            time.sleep(0.5)
    for worker, (cores, pct) in SEED.items():
        pod = running_pod(worker)
        name = pod["metadata"]["name"]
        if args.dra:
            uuid, mib, got_cores = claim_slice(pod)
            chosen = {"uuid": uuid, "memory_mib": mib, "cores": got_cores}
        else:
            devices = json.loads(pod["metadata"].get("annotations", {}).get("tessera.dev/devices", "null") or "null")
            if not devices or len(devices[0]) != 1:
                fail(f"{name}: tessera.dev/devices should give its one container one GPU, is {devices}")
            chosen = devices[0][0]
        want_mib = GPU_TOTAL_MIB * pct // 100
        if chosen["cores"] != cores or abs(chosen["memory_mib"] - want_mib) > 1:
            fail(f"{name}: scheduler chose {chosen}, the manifest asks {cores} cores and {pct}% of {GPU_TOTAL_MIB} MiB")
        uuid, mib = chosen["uuid"], chosen["memory_mib"]
        print(f"{worker}: {name} {'its claim got' if args.dra else 'scheduler chose'} {uuid} {mib} MiB ({pct}%) {cores} cores")

        out = kubectl("exec", name, "-c", "gpu-worker", "--", "tessera-gpu-check")
        f = facts(out)
        slice_line = f.get("slice", "")
        m = re.search(r"gpu (\S+) memory_mib (\d+) cores (\d+)", slice_line)
        if not m or (m.group(1), int(m.group(2)), int(m.group(3))) != (uuid, mib, cores):
            fail(f"{name}: slice config in the container is '{slice_line}', want {uuid} {mib} MiB {cores} cores\n{out}")
        if f.get("device 0 uuid") != uuid or f.get("devices") != "1":
            fail(f"{name}: the container sees devices={f.get('devices')} first {f.get('device 0 uuid')}, want 1: {uuid}\n{out}")
        m = re.fullmatch(r"free_mib (\d+) total_mib (\d+)", f.get("cudaMemGetInfo", ""))
        if not m or int(m.group(2)) != mib:
            fail(f"{name}: cudaMemGetInfo says '{f.get('cudaMemGetInfo')}', want total_mib {mib}\n{out}")
        free = int(m.group(1))
        m = re.match(r"(\d+) in", f.get("allocated_mib", ""))
        allocated = int(m.group(1)) if m else -1
        if not (free - STEP_MIB < allocated <= free):
            fail(f"{name}: allocated {allocated} MiB before the wall, free was {free} MiB\n{out}")
        if "CUDA_ERROR_OUT_OF_MEMORY" not in f.get("past the wall", ""):
            fail(f"{name}: past the wall: '{f.get('past the wall')}', want CUDA_ERROR_OUT_OF_MEMORY\n{out}")
        print(f"{worker}: in the container cudaMemGetInfo total {mib} MiB, free {free}; {allocated} MiB allocated, "
              f"then {f['past the wall'].split('-> ')[-1]}; slice cores {cores}")

        smi = kubectl("exec", name, "-c", "gpu-worker", "--", "nvidia-smi",
                      "--query-gpu=uuid,name,memory.total,memory.used", "--format=csv,noheader,nounits").strip().splitlines()
        if len(smi) != 1 or [s.strip() for s in smi[0].split(",")][0] != uuid or int(smi[0].split(",")[2]) != mib:
            fail(f"{name}: nvidia-smi shows {smi}, want one GPU {uuid} with {mib} MiB total")
        print(f"{worker}: nvidia-smi: {smi[0]}")

        if args.dra:
            continue
        limit = None
        for line in metrics.splitlines():
            if line.startswith("vGPU_device_memory_limit_in_bytes{") and f'podname="{name}"' in line \
                    and 'ctrname="gpu-worker"' in line:
                limit = float(line.rsplit(" ", 1)[1])
        if limit is None or int(limit) != mib << 20:
            fail(f"{name}: :31992 metrics have vGPU_device_memory_limit_in_bytes for ctrname gpu-worker = {limit}, "
                 f"want {mib << 20}")
        print(f"{worker}: :31992 vGPU_device_memory_limit_in_bytes{{podname={name},ctrname=gpu-worker}} {int(limit)}")
    if args.dra:
        prepared = [l for l in metrics.splitlines() if l.startswith("tessera_dra_prepared_claims ")]
        if not prepared or float(prepared[0].split()[1]) < len(SEED):
            fail(f"the agent's :31992 metrics show {prepared}, want tessera_dra_prepared_claims >= {len(SEED)}")
        print(f"agent :31992 {prepared[0]}")
    print("check_workers: all facts hold")


if __name__ == "__main__":
    main()
