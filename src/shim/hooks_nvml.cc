// NVML hooks: inside a slice, nvmlDeviceGetMemoryInfo(_v2) report total = the slice's limit and
// free = limit - used, so nvidia-smi and NVML-based tools show the slice, not the whole card.
#include <string.h>

#include "shim/hooks.h"
#include "shim/shim.h"

namespace tessera::shim {
namespace {

// Handle -> slice GPU index, cached (handles are stable for the life of the NVML library).
struct HandleSlot {
  std::atomic<nvmlDevice_t> handle;
  std::atomic<int> gpu;  // gpu+1, or 1000 = not in slice
};
HandleSlot g_handles[32];

int GpuOfHandle(nvmlDevice_t dev) {
  for (HandleSlot& s : g_handles) {
    nvmlDevice_t h = s.handle.load(std::memory_order_acquire);
    if (h == dev) {
      int v = s.gpu.load(std::memory_order_acquire);
      if (v) return v == 1000 ? kGpuNotInSlice : v - 1;
    }
    if (!h) break;
  }
  if (!g_real_nvml.nvmlDeviceGetUUID) return kGpuUnknown;
  char uuid[96];
  if (g_real_nvml.nvmlDeviceGetUUID(dev, uuid, sizeof(uuid)) != NVML_SUCCESS) return kGpuUnknown;
  int g = slice::FindGpu(Config(), uuid);
  for (HandleSlot& s : g_handles) {
    nvmlDevice_t expect = nullptr;
    if (s.handle.compare_exchange_strong(expect, dev) || expect == dev) {
      s.gpu.store(g < 0 ? 1000 : g + 1, std::memory_order_release);
      break;
    }
  }
  return g < 0 ? kGpuNotInSlice : g;
}

bool SliceView(nvmlDevice_t dev, unsigned long long* total, unsigned long long* free_b, unsigned long long* used) {
  if (!Enforcing() || CurrentMode() != Mode::kActive) return false;
  int g = GpuOfHandle(dev);
  if (g < 0) return false;
  uint64_t limit = 0, u = 0;
  SliceMemInfo(g, &limit, &u);
  *total = limit;
  *used = u < limit ? u : limit;
  uint64_t room = limit - *used;
  if (*free_b > room) *free_b = room;
  return true;
}

}  // namespace
}  // namespace tessera::shim

using namespace tessera::shim;

extern "C" nvmlReturn_t tsr_nvmlDeviceGetMemoryInfo(nvmlDevice_t dev, nvmlMemory_t* mem) {
  if (!ResolveRealNvml() || !g_real_nvml.nvmlDeviceGetMemoryInfo) return NVML_ERROR_FUNCTION_NOT_FOUND;
  nvmlReturn_t r = g_real_nvml.nvmlDeviceGetMemoryInfo(dev, mem);
  if (r == NVML_SUCCESS && mem) SliceView(dev, &mem->total, &mem->free, &mem->used);
  return r;
}

extern "C" nvmlReturn_t tsr_nvmlDeviceGetMemoryInfo_v2(nvmlDevice_t dev, nvmlMemory_v2_t* mem) {
  if (!ResolveRealNvml() || !g_real_nvml.nvmlDeviceGetMemoryInfo_v2) return NVML_ERROR_FUNCTION_NOT_FOUND;
  nvmlReturn_t r = g_real_nvml.nvmlDeviceGetMemoryInfo_v2(dev, mem);
  if (r == NVML_SUCCESS && mem) {
    unsigned long long used = mem->used;
    if (SliceView(dev, &mem->total, &mem->free, &used)) {
      mem->used = used;
      mem->reserved = 0;
    }
  }
  return r;
}
