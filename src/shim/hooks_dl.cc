// Symbol-lookup interception: dlsym and cuGetProcAddress(_v2) hand back the shim's hooks.
#include <dlfcn.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "shim/hooks.h"
#include "shim/shim.h"

namespace tessera::shim {
namespace {

constexpr size_t kNoReal = SIZE_MAX;

const HookEntry kHooks[] = {
#define TSR_HOOK(name, ret, params) {#name, reinterpret_cast<void*>(&tsr_##name), offsetof(RealCuda, name)},
#define TSR_REAL(name, ret, params)
#include "shim/cuda_functions.def"
    {"nvmlDeviceGetMemoryInfo", reinterpret_cast<void*>(&tsr_nvmlDeviceGetMemoryInfo), kNoReal},
    {"nvmlDeviceGetMemoryInfo_v2", reinterpret_cast<void*>(&tsr_nvmlDeviceGetMemoryInfo_v2), kNoReal},
};

void* RealSlot(const HookEntry& e) {
  return *reinterpret_cast<void* const*>(reinterpret_cast<const char*>(&g_real) + e.real_offset);
}

}  // namespace

const HookEntry* FindHookByName(const char* name) {
  if (!name || !((name[0] == 'c' && name[1] == 'u') || (name[0] == 'n' && name[1] == 'v'))) return nullptr;
  for (const HookEntry& e : kHooks)
    if (strcmp(e.name, name) == 0) return &e;
  return nullptr;
}

void* FindHookByReal(void* real_fn) {
  if (!real_fn) return nullptr;
  for (const HookEntry& e : kHooks)
    if (e.real_offset != kNoReal && RealSlot(e) == real_fn) return e.hook;
  return nullptr;
}

}  // namespace tessera::shim

using namespace tessera::shim;

// cuGetProcAddress: the driver picks the ABI variant from the requested version and flags (cuMemAlloc
// at 3020+ is cuMemAlloc_v2, the per-thread flag selects _ptsz...). We let it choose, then swap in the hook
// of exactly the variant it chose, recognised by its address. Anything not hooked stays the driver's.
extern "C" CUresult tsr_cuGetProcAddress_v2(const char* symbol, void** pfn, int version, cuuint64_t flags,
                                            CUdriverProcAddressQueryResult* status) {
  if (!ResolveReal() || !g_real.cuGetProcAddress_v2) return CUDA_ERROR_NOT_FOUND;
  CUresult r = g_real.cuGetProcAddress_v2(symbol, pfn, version, flags, status);
  if (r == CUDA_SUCCESS && pfn && *pfn) {
    if (void* hook = FindHookByReal(*pfn)) *pfn = hook;
  }
  return r;
}

extern "C" CUresult tsr_cuGetProcAddress(const char* symbol, void** pfn, int version, cuuint64_t flags) {
  if (!ResolveReal() || !g_real.cuGetProcAddress) return CUDA_ERROR_NOT_FOUND;
  CUresult r = g_real.cuGetProcAddress(symbol, pfn, version, flags);
  if (r == CUDA_SUCCESS && pfn && *pfn) {
    if (void* hook = FindHookByReal(*pfn)) *pfn = hook;
  }
  return r;
}

// dlsym: applications and runtimes that look the driver up by name (cudart, PyTorch, NVML users) get the
// hook for hooked names. Everything else is the C library's answer. The final call is a tail call so
// that RTLD_NEXT lookups stay relative to the real caller, not to this library.
namespace {
using DlsymFn = void* (*)(void*, const char*);
DlsymFn g_libc_dlsym;

// True when `addr` lies in libtessera.so itself: lookups made by the shim or the limiter must get the
// driver's function, never a hook (that would recurse through the launch gate).
bool InsideShim(void* addr) {
  static void* self_base = nullptr;
  Dl_info me, caller;
  if (!self_base && dladdr(reinterpret_cast<void*>(&FindHookByName), &me)) self_base = me.dli_fbase;
  return self_base && dladdr(addr, &caller) && caller.dli_fbase == self_base;
}

void* HookForDlsym(void* handle, const char* name, void* caller) {
  const HookEntry* e = FindHookByName(name);
  if (!e || InsideShim(caller)) return nullptr;
  if (e->real_offset == SIZE_MAX) {  // NVML: only where the library really provides it
    if (handle != RTLD_DEFAULT && handle != RTLD_NEXT && !g_libc_dlsym(handle, name)) return nullptr;
    ResolveRealNvml();
    return e->hook;
  }
  if (!ResolveReal()) return nullptr;
  if (handle != RTLD_DEFAULT && handle != RTLD_NEXT && !g_libc_dlsym(handle, name)) return nullptr;
  return e->hook;
}
}  // namespace

extern "C" __attribute__((visibility("default"))) void* dlsym(void* handle, const char* name) {
  if (!g_libc_dlsym) g_libc_dlsym = reinterpret_cast<DlsymFn>(dlvsym(RTLD_NEXT, "dlsym", "GLIBC_2.34"));
  if (!g_libc_dlsym) g_libc_dlsym = reinterpret_cast<DlsymFn>(dlvsym(RTLD_NEXT, "dlsym", "GLIBC_2.2.5"));
  if (name[0] == 'c' || name[0] == 'n') {
    if (void* hook = HookForDlsym(handle, name, __builtin_return_address(0))) return hook;
  }
  return g_libc_dlsym(handle, name);
}
