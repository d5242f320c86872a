#!/usr/bin/env python3
"""Samples what the driver says each watched process holds on a GPU (NVML per-process usage) until a
stop file appears; prints the peak of the sum and each process's peak as JSON.

usage: nvml_watch.py GPU_UUID PIDS_FILE STOP_FILE
PIDS_FILE is re-read every sample (one pid per line), so processes can be added while it runs."""
import json
import os
import sys
import time

import pynvml


def main():
    uuid, pids_file, stop_file = sys.argv[1:4]
    pynvml.nvmlInit()
    h = pynvml.nvmlDeviceGetHandleByUUID(uuid)
    peak_sum, per_pid, samples = 0, {}, 0
    while not os.path.exists(stop_file):
        try:
            pids = {int(x) for x in open(pids_file).read().split()}
        except (OSError, ValueError):
            pids = set()
        total = 0
        try:
            procs = pynvml.nvmlDeviceGetComputeRunningProcesses(h)
        except pynvml.NVMLError:  # the list changed size under us: take the next sample
            time.sleep(0.002)
            continue
        for p in procs:
            if p.pid in pids and p.usedGpuMemory is not None:
                total += p.usedGpuMemory
                per_pid[p.pid] = max(per_pid.get(p.pid, 0), p.usedGpuMemory)
        peak_sum = max(peak_sum, total)
        samples += 1
        time.sleep(0.002)
    print(json.dumps({"peak_sum": peak_sum, "per_pid_peak": {str(k): v for k, v in per_pid.items()},
                      "samples": samples}))


if __name__ == "__main__":
    main()
