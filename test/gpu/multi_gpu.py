#!/usr/bin/env python3
"""Multi-GPU checks for test/gpu/run's `multi` section; each mode prints one JSON line.

walls [--devices 0,1] [--ready FILE --until FILE]
    On each listed device (default: every device the process sees): torch.cuda.mem_get_info after
    selecting it, then 64 MiB tensors until torch.OutOfMemoryError, all held. Then what NVML says this
    process holds on every GPU of the host (by UUID). With --ready/--until: write FILE once full and
    keep holding until the other FILE exists (max 120 s), so others can look.

ddp --steps N
    One rank of DistributedDataParallel over NCCL (RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT from the
    environment; the rank's GPU is its cuda:0). Trains a small MLP N steps, checks the ranks hold the
    same weights, asks for a tensor past the wall (must raise torch.OutOfMemoryError), trains on.
"""
import argparse
import json
import math
import os
import time

import torch

from torch_common import mlp, train_step, try_tensor

MiB = 1 << 20


def driver_usage():
    """{uuid: bytes} this process holds on each GPU of the host, per NVML (which ignores
    CUDA_VISIBLE_DEVICES)."""
    import pynvml
    pynvml.nvmlInit()
    out, me = {}, os.getpid()
    for i in range(pynvml.nvmlDeviceGetCount()):
        h = pynvml.nvmlDeviceGetHandleByIndex(i)
        uuid = pynvml.nvmlDeviceGetUUID(h)
        uuid = uuid.decode() if isinstance(uuid, bytes) else uuid
        used = 0
        for p in pynvml.nvmlDeviceGetComputeRunningProcesses(h):
            if p.pid == me and p.usedGpuMemory:
                used += p.usedGpuMemory
        out[uuid] = used
    return out


def device_uuid(d):
    try:
        return "GPU-" + str(torch.cuda.get_device_properties(d).uuid)
    except Exception:  # older PyTorch: no uuid property
        return ""


def walls(a):
    devices = [int(x) for x in a.devices.split(",")] if a.devices else list(range(torch.cuda.device_count()))
    held, rows = [], []
    for d in devices:
        torch.cuda.set_device(d)
        free, total = torch.cuda.mem_get_info(d)
        got, raised = 0, None
        while got < (1 << 40):
            try:
                t = torch.empty(64 * MiB, dtype=torch.uint8, device=f"cuda:{d}")
                t.fill_(1)
                held.append(t)
                got += 64 * MiB
            except torch.OutOfMemoryError:
                raised = "OutOfMemoryError"
                break
            except Exception as e:  # anything else is a failure of the wall's error path
                raised = type(e).__name__ + ": " + str(e)[:120]
                break
        torch.cuda.synchronize(d)
        rows.append({"ordinal": d, "uuid": device_uuid(d), "mem_get_info_total": total,
                     "mem_get_info_free": free, "got": got, "raised": raised})
    out = {"pid": os.getpid(), "visible": os.environ.get("CUDA_VISIBLE_DEVICES", ""), "devices": rows,
           "driver": driver_usage()}
    if a.ready:
        open(a.ready, "w").write(json.dumps(out))
        deadline = time.time() + 120
        while a.until and not os.path.exists(a.until) and time.time() < deadline:
            time.sleep(0.05)
    print(json.dumps(out), flush=True)


def ddp(a):
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel as DDP
    rank = int(os.environ["RANK"])
    dev = torch.device("cuda:0")
    torch.cuda.set_device(dev)
    dist.init_process_group("nccl")
    torch.manual_seed(0)  # same initial weights on every rank (DDP also broadcasts rank 0's)
    model = DDP(mlp(dev), device_ids=[0])
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    g = torch.Generator(device=dev)
    g.manual_seed(1 + rank)  # each rank its own data
    x = torch.randn(256, 1024, device=dev, generator=g)
    y = torch.randint(0, 10, (256,), device=dev, generator=g)

    def step():
        return train_step(model, opt, x, y)

    def weights_agree():
        s = torch.stack([p.detach().double().sum() for p in model.parameters()]).sum()
        lo, hi = s.clone(), s.clone()
        dist.all_reduce(lo, op=dist.ReduceOp.MIN)
        dist.all_reduce(hi, op=dist.ReduceOp.MAX)
        return bool(lo.item() == hi.item())

    t0 = time.time()
    losses = [step() for _ in range(a.steps)]
    torch.cuda.synchronize()
    free, total = torch.cuda.mem_get_info()
    out = {"rank": rank, "pid": os.getpid(), "steps": len(losses), "first_loss": losses[0], "last_loss": losses[-1],
           "finite": all(math.isfinite(v) for v in losses), "same_weights": weights_agree(),
           "mem_get_info_total": total, "mem_get_info_free": free,
           "max_reserved": torch.cuda.max_memory_reserved(), "train_seconds": round(time.time() - t0, 2)}
    out["cross"] = try_tensor("free+256MiB", free + 256 * MiB, dev)
    torch.cuda.empty_cache()
    after = [step() for _ in range(20)]
    out["steps_after_oom"] = len(after)
    out["finite_after_oom"] = all(math.isfinite(v) for v in after)
    out["same_weights_after_oom"] = weights_agree()
    out["driver"] = driver_usage()
    dist.barrier()
    dist.destroy_process_group()
    print(json.dumps(out), flush=True)


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="mode", required=True)
    w = sub.add_parser("walls")
    w.add_argument("--devices", default="")
    w.add_argument("--ready", default="")
    w.add_argument("--until", default="")
    d = sub.add_parser("ddp")
    d.add_argument("--steps", type=int, default=100)
    a = ap.parse_args()
    walls(a) if a.mode == "walls" else ddp(a)


if __name__ == "__main__":
    main()
