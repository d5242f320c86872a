#!/usr/bin/env python3
"""Trains a small MLP on random data inside a slice and reports what happened as one JSON line.

--steps N          train N steps (A), or
--until FILE       train until FILE exists (B: the neighbour that must keep running), max 300 s
--ready FILE       create FILE once the first step is done (B: it is training from then on)
--after FILE       wait (at most 120 s) for FILE before training (A: so B trains the whole time A does)
--cross            after training, allocate tensors that would cross the wall and expect OutOfMemoryError,
                   then train a few more steps (the process must survive its OOM)
"""
import argparse
import json
import math
import os
import time

import torch

from torch_common import mlp, train_step, try_tensor


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=0)
    ap.add_argument("--until", default="")
    ap.add_argument("--cross", action="store_true")
    ap.add_argument("--tag", default="")
    ap.add_argument("--ready", default="")
    ap.add_argument("--after", default="")
    a = ap.parse_args()
    t_start = time.time()
    dev = torch.device("cuda")
    torch.manual_seed(0)
    model = mlp(dev)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x = torch.randn(512, 1024, device=dev)
    y = torch.randint(0, 10, (512,), device=dev)

    def step():
        return train_step(model, opt, x, y)

    out = {"tag": a.tag, "pid": os.getpid(), "alloc_conf": os.environ.get("PYTORCH_CUDA_ALLOC_CONF", "")}
    losses, n = [], 0
    if a.after:
        waited = time.time()
        while not os.path.exists(a.after) and time.time() - waited < 120:
            time.sleep(0.05)
        out["neighbour_ready"] = os.path.exists(a.after)
    deadline = time.time() + 300
    while (a.steps and n < a.steps) or (a.until and not os.path.exists(a.until) and time.time() < deadline):
        losses.append(step())
        n += 1
        if n == 1 and a.ready:
            torch.cuda.synchronize()
            open(a.ready, "w").close()
    torch.cuda.synchronize()
    free, total = torch.cuda.mem_get_info()
    out.update(steps=n, first_loss=losses[0] if losses else None, last_loss=losses[-1] if losses else None,
               finite=all(math.isfinite(v) for v in losses), mem_get_info_total=total, mem_get_info_free=free,
               max_reserved=torch.cuda.max_memory_reserved())
    if a.cross:
        out["cross"] = [try_tensor(label, nbytes, dev) for label, nbytes in
                        (("free+256MiB", free + (256 << 20)), ("limit", total), ("one_over_wall", total - (64 << 20)))]
        torch.cuda.empty_cache()
        after = [step() for _ in range(20)]
        out["steps_after_oom"] = len(after)
        out["finite_after_oom"] = all(math.isfinite(v) for v in after)
    out["seconds"] = round(time.time() - t_start, 2)
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
