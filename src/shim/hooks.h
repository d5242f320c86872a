// Declarations of every exported hook (tsr_<symbol>, exported under the driver's own symbol name) and
// the lookup tables used by dlsym and cuGetProcAddress interception.
//
// Internal to libtessera.so. Thread-safe: the tables are constant.
#pragma once

#include "shim/real.h"

#define TSR_EXPORT extern "C" __attribute__((visibility("default")))
#define TSR_HOOK(name, ret, params) TSR_EXPORT ret tsr_##name params __asm__(#name);
#define TSR_REAL(name, ret, params)
#include "shim/cuda_functions.def"

TSR_EXPORT nvmlReturn_t tsr_nvmlDeviceGetMemoryInfo(nvmlDevice_t dev, nvmlMemory_t* mem) __asm__("nvmlDeviceGetMemoryInfo");
TSR_EXPORT nvmlReturn_t tsr_nvmlDeviceGetMemoryInfo_v2(nvmlDevice_t dev, nvmlMemory_v2_t* mem) __asm__("nvmlDeviceGetMemoryInfo_v2");

namespace tessera::shim {

struct HookEntry {
  const char* name;
  void* hook;
  size_t real_offset;  // offset of the real pointer in RealCuda; SIZE_MAX for NVML hooks
};

// Hook by exact symbol name (dlsym); nullptr when the name is not hooked.
const HookEntry* FindHookByName(const char* name);
// Hook whose real function is `real_fn` (cuGetProcAddress: the driver picked the ABI variant, we answer
// with the hook of that same variant); nullptr when the function is not hooked.
void* FindHookByReal(void* real_fn);
// True when some ABI variant of `symbol` (symbol, symbol_v2, symbol_ptsz, ...) is a hooked driver function.
bool HookedFamily(const char* symbol);

}  // namespace tessera::shim
