// Resolution of the real driver / NVML entry points (see real.h).
#include "shim/real.h"

#include <dlfcn.h>
#include <sched.h>

#include <atomic>

namespace tessera::shim {

RealCuda g_real;
RealNvml g_real_nvml;

namespace {

using DlsymFn = void* (*)(void*, const char*);
std::atomic<DlsymFn> g_dlsym{nullptr};
std::atomic<int> g_cuda_state{0};  // 0 not loaded, 1 loading, 2 loaded
std::atomic<int> g_nvml_state{0};
__thread int t_resolving;

DlsymFn LoadDlsym() {
  DlsymFn f = g_dlsym.load(std::memory_order_acquire);
  if (f) return f;
  // dlvsym is not hooked; ask for the C library's dlsym by version (2.34 moved it into libc).
  f = reinterpret_cast<DlsymFn>(dlvsym(RTLD_NEXT, "dlsym", "GLIBC_2.34"));
  if (!f) f = reinterpret_cast<DlsymFn>(dlvsym(RTLD_NEXT, "dlsym", "GLIBC_2.2.5"));
  g_dlsym.store(f, std::memory_order_release);
  return f;
}

template <typename T>
void Bind(void* lib, const char* name, T* out) {
  *out = reinterpret_cast<T>(RealDlsym(lib, name));
}

// One-time resolution guarded by a tiny state machine rather than a mutex: the loser waits, and a
// re-entrant call from the loading thread (a constructor in libcuda calling back) sees "not yet".
template <typename Fill>
bool Once(std::atomic<int>& state, Fill fill) {
  int s = state.load(std::memory_order_acquire);
  if (s == 2) return true;
  if (t_resolving) return false;
  int expect = 0;
  if (state.compare_exchange_strong(expect, 1)) {
    t_resolving = 1;
    bool ok = fill();
    t_resolving = 0;
    state.store(ok ? 2 : 0, std::memory_order_release);
    return ok;
  }
  while ((s = state.load(std::memory_order_acquire)) == 1) sched_yield();
  return s == 2;
}

}  // namespace

void* RealDlsym(void* handle, const char* name) {
  DlsymFn f = LoadDlsym();
  return f ? f(handle, name) : nullptr;
}

bool ResolveReal() {
  return Once(g_cuda_state, [] {
    // Usually the application (or cudart) has loaded the driver already; taking that handle lazily
    // avoids forcing every relocation of libcuda at start-up.
    void* lib = dlopen("libcuda.so.1", RTLD_LAZY | RTLD_NOLOAD);
    if (!lib) lib = dlopen("libcuda.so.1", RTLD_LAZY | RTLD_GLOBAL);
    if (!lib) return false;
    RealCuda r{};
#define TSR_HOOK(name, ret, params) Bind(lib, #name, &r.name);
#define TSR_REAL(name, ret, params) Bind(lib, #name, &r.name);
#include "shim/cuda_functions.def"
    g_real = r;
    return true;
  });
}

bool ResolveRealNvml() {
  return Once(g_nvml_state, [] {
    void* lib = dlopen("libnvidia-ml.so.1", RTLD_LAZY | RTLD_NOLOAD);
    if (!lib) lib = dlopen("libnvidia-ml.so.1", RTLD_LAZY | RTLD_GLOBAL);
    if (!lib) return false;
    RealNvml r{};
    Bind(lib, "nvmlInit_v2", &r.nvmlInit_v2);
    Bind(lib, "nvmlDeviceGetHandleByUUID", &r.nvmlDeviceGetHandleByUUID);
    Bind(lib, "nvmlDeviceGetUUID", &r.nvmlDeviceGetUUID);
    Bind(lib, "nvmlDeviceGetComputeRunningProcesses_v3", &r.nvmlDeviceGetComputeRunningProcesses_v3);
    Bind(lib, "nvmlDeviceGetMemoryInfo", &r.nvmlDeviceGetMemoryInfo);
    Bind(lib, "nvmlDeviceGetMemoryInfo_v2", &r.nvmlDeviceGetMemoryInfo_v2);
    g_real_nvml = r;
    return true;
  });
}

}  // namespace tessera::shim
