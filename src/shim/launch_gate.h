// Launch gate: where the shim's kernel-submission hooks hand control to the compute limiter.
//
// Contract with the hook layer (src/shim hooks, owned by the memory-wall work): the hooks for
// cuLaunchKernel(_ptsz), cuLaunchKernelEx(_ptsz), cuLaunchCooperativeKernel(_ptsz) and
// cuGraphLaunch(_ptsz) test the plain global g_launch_gate_enabled, which is written once by
// LaunchGateInit and never again. False: call the real driver function directly (no lock, no system
// call, no extra work). True: LaunchGateBefore(stream) before the real call and
// LaunchGateAfter(stream, result) after it, on the same thread. For the _ptsz variants the hook passes
// CU_STREAM_PER_THREAD when the application passed stream 0, so the gate's timing events land on the
// stream the kernel really runs on.
//
// LaunchGateInit is called once at shim initialisation with the shim's one copy of the slice config
// (mps_pipe/mps_percentage/mps_sms included: there is no second parser) and its region, before
// the application's first cuInit returns. In spatial mode it also sets the MPS client environment
// (CUDA_MPS_PIPE_DIRECTORY, CUDA_MPS_ACTIVE_THREAD_PERCENTAGE) from the config, so the application
// cannot choose its own SM share. What the gate does is described in launch_gate_core.h and
// docs/compute.md.
//
// Thread-safety: LaunchGateInit must run before any other thread calls into the driver;
// Before/After are safe from any thread.
#pragma once

#include <cuda.h>

namespace tessera::slice {
struct SliceConfig;
struct RegionHeader;
}

namespace tessera::shim {

extern bool g_launch_gate_enabled;

// `region`: the slice's accounting region as the shim mapped it (its live part holds the slice-wide cap
// state), or nullptr (caps are then per process).
void LaunchGateInit(const tessera::slice::SliceConfig& cfg, tessera::slice::RegionHeader* region);
void LaunchGateBefore(CUstream stream);
void LaunchGateAfter(CUstream stream, CUresult result);
// One line of JSON with this process's gate counters (tracked, completed, waits, measured GPU ns, launch
// floor) for tools and benchmarks; "{}" when the gate is off. Returns the length written.
int LaunchGateDescribe(char* buf, int len);

}  // namespace tessera::shim
