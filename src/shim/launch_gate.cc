// Wires the Gate (launch_gate_core.h) to the real driver, the slice region and the node region.
#include "shim/launch_gate.h"

#include <dlfcn.h>
#include <pthread.h>
#include <sys/stat.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "shim/launch_gate_core.h"
#include "shim/mps.h"
#include "slice/config.h"
#include "slice/node_region.h"
#include "slice/region.h"
#include "shim/real.h"
#include "shim/shim.h"

namespace tessera::shim {

bool g_launch_gate_enabled = false;

namespace {

Gate* g_gate = nullptr;  // leaked on purpose: the harvester may still run while statics are destroyed
int g_mps_sms = 0;  // the GPU's SM count from the slice config (mps_sms), 0 when absent

template <typename T>
bool Bind(void* lib, const char* name, T* out) {
#ifdef TESSERA_GATE_STANDALONE
  *out = reinterpret_cast<T>(dlsym(lib, name));
#else
  *out = reinterpret_cast<T>(RealDlsym(lib, name));
#endif
  return *out != nullptr;
}

// The gate's driver calls go straight to libcuda, never through the shim's hooks: resolved from the
// library handle with the C library's dlsym (RealDlsym inside the shim; the standalone build used by
// bench/cap's capbench-direct has no hooks to avoid).
bool BindRealDriver(GateDriver* d) {
  void* lib = dlopen("libcuda.so.1", RTLD_LAZY | RTLD_LOCAL | RTLD_NOLOAD);
  if (lib == nullptr) lib = dlopen("libcuda.so.1", RTLD_LAZY | RTLD_LOCAL);
  if (lib == nullptr) return false;
  bool ok =
      Bind(lib, "cuCtxGetCurrent", &d->ctx_get_current) &&
      Bind(lib, "cuCtxSetCurrent", &d->ctx_set_current) && Bind(lib, "cuCtxGetDevice", &d->ctx_get_device) &&
      Bind(lib, "cuEventCreate", &d->event_create) && Bind(lib, "cuEventRecord", &d->event_record) &&
      Bind(lib, "cuEventQuery", &d->event_query) &&
      Bind(lib, "cuStreamIsCapturing", &d->stream_is_capturing) &&
      Bind(lib, "cuEventSynchronize", &d->event_synchronize) &&
      Bind(lib, "cuEventDestroy_v2", &d->event_destroy) && Bind(lib, "cuStreamCreate", &d->stream_create) &&
      Bind(lib, "cuStreamDestroy_v2", &d->stream_destroy) &&
      Bind(lib, "cuModuleLoadData", &d->module_load_data) && Bind(lib, "cuModuleUnload", &d->module_unload) &&
      Bind(lib, "cuModuleGetFunction", &d->module_get_function) &&
      Bind(lib, "cuLaunchKernel", &d->launch_kernel);
  ok = ok && (Bind(lib, "cuDeviceGetUuid_v2", &d->device_get_uuid) ||
              Bind(lib, "cuDeviceGetUuid", &d->device_get_uuid));
  ok = ok && (Bind(lib, "cuEventElapsedTime_v2", &d->event_elapsed) ||
              Bind(lib, "cuEventElapsedTime", &d->event_elapsed));
  return ok;
}

// The SMs of this process's MPS partition on the GPU with this UUID, as the driver reports them to an MPS
// client (the multiprocessor count is the partition's); 0 when unknown or not smaller than the GPU.
int GrantedSms(const char* uuid) {
  if (g_mps_sms <= 0) return 0;
  void* lib = dlopen("libcuda.so.1", RTLD_LAZY | RTLD_LOCAL | RTLD_NOLOAD);
  if (lib == nullptr) return 0;
  CUresult (*count)(int*) = nullptr;
  CUresult (*get)(CUdevice*, int) = nullptr;
  CUresult (*attr)(int*, CUdevice_attribute, CUdevice) = nullptr;
  CUresult (*get_uuid)(CUuuid*, CUdevice) = nullptr;
  int n = 0, sms = 0;
  if (Bind(lib, "cuDeviceGetCount", &count) && Bind(lib, "cuDeviceGet", &get) &&
      Bind(lib, "cuDeviceGetAttribute", &attr) &&
      (Bind(lib, "cuDeviceGetUuid_v2", &get_uuid) || Bind(lib, "cuDeviceGetUuid", &get_uuid)) &&
      count(&n) == CUDA_SUCCESS) {
    for (int i = 0; i < n && sms == 0; ++i) {
      CUdevice d = 0;
      CUuuid u{};
      char text[48];
      if (get(&d, i) != CUDA_SUCCESS || get_uuid(&u, d) != CUDA_SUCCESS) continue;
      FormatUuid(u, text);
      if (std::strcmp(text, uuid) != 0) continue;
      if (attr(&sms, CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT, d) != CUDA_SUCCESS) sms = 0;
    }
  }
  dlclose(lib);
  return sms > 0 && sms < g_mps_sms ? sms : 0;
}

void Note(const char* fmt, const char* a, const char* b = "") {
  std::fprintf(stderr, "tessera: ");
  std::fprintf(stderr, fmt, a, b);
  std::fprintf(stderr, "\n");
}

// At exit, before libcuda's own teardown (registered earlier, so run later): stop the harvester so
// it never touches a context being destroyed, and leave the node rows so a departing high-priority
// process stops holding best effort back at once instead of after the 200 ms staleness.
void AtExit() {
  if (g_gate == nullptr) return;
  g_launch_gate_enabled = false;
  g_gate->Shutdown();
}

void AtForkChild() {
  if (g_gate) g_gate->ResetAfterFork();
}

int g_spatial_pct = 0;  // the partition chosen at load (0: not yet)

// The MPS partition of this process (MpsPartitionPercent), decided once: at load, where the node region
// says whether a high-priority participant is alive, and reused by LaunchGateInit.
int ChooseSpatialPercent(const slice::SliceConfig& cfg) {
  if (g_spatial_pct > 0) return g_spatial_pct;
  g_mps_sms = cfg.mps_sms;
  bool high_present = false;
  struct stat st;
  if (cfg.priority != 0 && cfg.mps_percentage == 0 && stat(slice::kNodeRegionDir, &st) == 0) {
    std::string nerr;
    auto node = slice::NodeRegion::Open(slice::NodeRegion::PathFor(cfg.gpus[0].uuid), &nerr);
    high_present = node && node->HighPriorityPresent(slice::MonotonicNs(), 200'000'000);
  }
  g_spatial_pct = MpsPartitionPercent(cfg.gpus[0].cores, cfg.priority, cfg.mps_percentage, high_present, g_mps_sms);
  return g_spatial_pct;
}

// Spatial mode must be in the environment before the driver initialises, which is earlier than
// LaunchGateInit (that runs after the real cuInit). So at library load the slice config is loaded (the
// shim's one load, LoadConfigOnce) and, if it names an MPS pipe, the client settings are written then.
// Costs one stat() and one read in processes of a slice; nothing is allocated unless mps_pipe is set.
// The standalone build (capbench-direct) has no shim config loader: it calls LaunchGateInit before its
// first CUDA call, which sets the same environment.
#ifndef TESSERA_GATE_STANDALONE
__attribute__((constructor)) void ApplySpatialAtLoad() {
  const slice::SliceConfig* cfg = nullptr;
  if (LoadConfigOnce(&cfg) != ConfigLoad::kOk || cfg->mps_pipe[0] == '\0' || cfg->gpu_count <= 0) return;
  MpsApplyClientEnv(cfg->mps_pipe, ChooseSpatialPercent(*cfg), cfg->priority);
}
#endif

}  // namespace

void LaunchGateInit(const slice::SliceConfig& cfg, slice::RegionHeader* region) {
  if (g_gate != nullptr || cfg.gpu_count <= 0) return;
  const bool spatial = cfg.mps_pipe[0] != '\0';
  if (spatial) {
    MpsApplyClientEnv(cfg.mps_pipe, ChooseSpatialPercent(cfg), cfg.priority);
  } else {
    // An inherited pipe directory would put the process under somebody else's MPS server.
    unsetenv("CUDA_MPS_PIPE_DIRECTORY");
    unsetenv("CUDA_MPS_ACTIVE_THREAD_PERCENTAGE");
  }

  bool any_cap = false;
  for (int i = 0; i < cfg.gpu_count; ++i) any_cap |= cfg.gpus[i].cores < 100;

  GateOptions opts;
  opts.priority = cfg.priority;
  opts.slice = cfg.name;
  opts.spatial = spatial;
  // MPS applies one thread percentage per process (the first GPU's, see MpsApplyClientEnv): a bracket
  // costs its time × the partition this process really asked for, which may differ from cores (the
  // best-effort guard, mps_percentage).
  if (spatial) opts.spatial_ppm = SpatialChargePpm(GrantedSms(cfg.gpus[0].uuid), g_mps_sms, g_spatial_pct);
  std::vector<GateGpu> gpus;
  // The memory wall's region (the shim opened it once): its live part carries the slice-wide cap state.
  const bool have_region = region != nullptr;
  if (!have_region && any_cap) {
    Note("compute cap of slice %s is per process only: %s", cfg.name, "no accounting region");
  }
  bool any_node = false;
  for (int i = 0; i < cfg.gpu_count; ++i) {
    GateGpu g;
    g.uuid = cfg.gpus[i].uuid;
    g.cap.share_ppm = static_cast<int64_t>(cfg.gpus[i].cores) * 10'000;
    g.cap.burst = cfg.cap_mode == slice::CapMode::kBurst;
    if (have_region) {
      const int rg = slice::FindRegionGpu(region, cfg.gpus[i].uuid);
      if (rg >= 0) {
        slice::RegionGpu& r = region->gpus[rg];
        static_assert(sizeof(std::atomic<int64_t>) == sizeof(std::atomic<uint64_t>));
        g.tat = reinterpret_cast<std::atomic<int64_t>*>(&r.limiter_spare[0]);
        g.turn_owner = &r.limiter_spare[1];
        g.turn_until = reinterpret_cast<std::atomic<int64_t>*>(&r.limiter_spare[2]);
        g.busy_ns = &r.busy_ns;
        g.throttled_ns = &r.throttled_ns;
        g.priority_waits = &r.priority_waits;
        r.cap_percent.store(static_cast<uint32_t>(cfg.gpus[i].cores), std::memory_order_relaxed);
      }
    }
    std::string nerr;
    struct stat st;
    if (stat(slice::kNodeRegionDir, &st) == 0) {
      g.node = slice::NodeRegion::Open(slice::NodeRegion::PathFor(g.uuid), &nerr);
      if (!g.node) Note("priority coordination off for %s: %s", g.uuid.c_str(), nerr.c_str());
    }
    any_node |= g.node != nullptr;
    gpus.push_back(std::move(g));
  }
  // Nothing to enforce: hooks stay direct. In spatial mode only a cap needs the gate (the SM
  // partition is per process, so processes of one slice share the slice's budget through it).
  if (!any_cap && (spatial || (!any_node && cfg.priority != 0))) return;

  GateDriver drv{};
  if (!BindRealDriver(&drv)) {
    Note("compute cap and priority off: %s%s", "cannot resolve driver entry points", "");
    return;
  }
  g_gate = new Gate(drv, SystemClock(), opts, std::move(gpus));
  pthread_atfork(nullptr, nullptr, &AtForkChild);
  std::atexit(&AtExit);
  g_launch_gate_enabled = true;
}

void LaunchGateBefore(CUstream stream) {
  if (g_gate) g_gate->Before(stream);
}

void LaunchGateAfter(CUstream stream, CUresult result) {
  if (g_gate) g_gate->After(stream, result);
}

int LaunchGateDescribe(char* buf, int len) {
  if (g_gate == nullptr) return std::snprintf(buf, len, "{}");
  const GateStats st = g_gate->Stats();
  return std::snprintf(
      buf, len,
      "{\"tracked\":%llu,\"completed\":%llu,\"cap_waits\":%llu,\"priority_waits\":%llu,"
      "\"measured_ms\":%.3f,\"floor_us\":%.2f,\"placed\":%llu,\"credited_ms\":%.3f,"
      "\"switch_billed_ms\":%.3f,\"switch_charged_ms\":%.3f}",
      static_cast<unsigned long long>(st.tracked), static_cast<unsigned long long>(st.completed),
      static_cast<unsigned long long>(st.cap_waits), static_cast<unsigned long long>(st.priority_waits),
      st.measured_ns / 1e6, g_gate->LaunchFloorNs() / 1e3, static_cast<unsigned long long>(st.placed),
      st.credited_ns / 1e6, st.switch_billed_ns / 1e6, st.switch_charged_ns / 1e6);
}

}  // namespace tessera::shim
