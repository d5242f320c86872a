#!/usr/bin/env python3
"""A process whose context grows after it starts: cuBLAS, cuDNN and cuFFT load their kernels into the
context (memory no allocation call asked for), then it fills its slice with 64 MiB tensors until the
wall says no. Prints one JSON line: pid, what it loaded, bytes of tensors held, the error that stopped it.

usage: ctx_growth.py [SETTLE_SECONDS]   (default 3: the libraries are loaded, the process serves a while
                                        before it grows its tensors, as a model server does)"""
import json
import os
import sys
import time

import torch


def main():
    dev = torch.device("cuda", 0)
    out = {"pid": os.getpid()}
    x = torch.randn(1024, 1024, device=dev)
    (x @ x).sum().item()                                          # cuBLAS
    conv = torch.nn.Conv2d(16, 32, 3).to(dev)
    conv(torch.randn(8, 16, 64, 64, device=dev)).sum().item()    # cuDNN
    torch.fft.rfft(torch.randn(1 << 16, device=dev)).abs().sum().item()  # cuFFT
    torch.cuda.synchronize()
    out["loaded"] = ["cublas", "cudnn", "cufft"]
    time.sleep(float(sys.argv[1]) if len(sys.argv) > 1 else 3.0)
    try:  # what NVML shows from inside the pid namespace
        import pynvml
        pynvml.nvmlInit()
        h = pynvml.nvmlDeviceGetHandleByIndex(0)
        out["nvml_inside"] = [[p.pid, p.usedGpuMemory] for p in pynvml.nvmlDeviceGetComputeRunningProcesses(h)]
    except Exception as e:  # noqa: BLE001 - informative only
        out["nvml_inside"] = repr(e)[:200]
    held, n = [], 0
    try:
        while True:
            held.append(torch.empty(64 << 20, dtype=torch.uint8, device=dev))
            n += 1
    except torch.OutOfMemoryError as e:
        out["stopped_by"] = "OutOfMemoryError"
        out["message"] = str(e).splitlines()[0][:200]
    except Exception as e:  # noqa: BLE001 - reported, the test judges it
        out["stopped_by"] = type(e).__name__
        out["message"] = str(e)[:200]
    out["tensor_bytes"] = n * (64 << 20)
    free, total = torch.cuda.mem_get_info()
    out["mem_get_info"] = [free, total]
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
