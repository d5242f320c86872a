// Symbol-lookup interception: dlsym, dlvsym and cuGetProcAddress(_v2) hand back the shim's hooks.
//
// The doors an application could use to reach the driver without the wall: a by-name lookup (dlsym,
// dlvsym, on any handle: the driver loaded by soname, by path, or a second copy of it), fetching the C
// library's own dlsym/dlvsym to look past the shim (dlvsym(RTLD_NEXT, "dlsym", "GLIBC_2.34") or dlsym on
// libc's handle), and cuGetProcAddress of any version or ABI variant. Each hands back the hook; a
// cuGetProcAddress answer the shim cannot match to a hook of a hooked function is refused, not passed on.
// What stays open (parsing libc or the driver by hand, raw ioctls, a static binary) is in docs/security.md.
#include <dlfcn.h>
#include <elf.h>
#include <link.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <atomic>

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

// True when `hooked` is `symbol` itself or one of its ABI variants (symbol_v2, symbol_ptsz, ...): the
// names cuGetProcAddress("symbol", version, flags) may answer with.
bool VariantOf(const char* hooked, const char* symbol) {
  const size_t n = strlen(symbol);
  if (strncmp(hooked, symbol, n) != 0) return false;
  const char* rest = hooked + n;
  if (*rest == '\0') return true;
  if (rest[0] == '_' && rest[1] == 'v' && rest[2] >= '0' && rest[2] <= '9') {
    rest += 3;
    while (*rest >= '0' && *rest <= '9') ++rest;
    if (*rest == '\0') return true;
  }
  return strcmp(rest, "_ptsz") == 0 || strcmp(rest, "_ptds") == 0;
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

bool HookedFamily(const char* symbol) {
  if (!symbol || symbol[0] != 'c' || symbol[1] != 'u') return false;
  for (const HookEntry& e : kHooks)
    if (e.real_offset != kNoReal && VariantOf(e.name, symbol)) return true;
  return false;
}

}  // namespace tessera::shim

using namespace tessera::shim;

namespace {

// What cuGetProcAddress hands the caller: the hook of exactly the variant the driver chose (recognised by
// its address), the driver's function for what the shim does not hook, and nothing at all for a hooked
// function the driver answered with an entry point the shim does not know (a newer ABI variant, an
// internal alias, another copy of the driver): passing that on would be a way around the wall.
CUresult FilterProcAddress(CUresult r, const char* symbol, void** pfn, int version,
                           CUdriverProcAddressQueryResult* status) {
  if (r != CUDA_SUCCESS || !pfn || !*pfn) return r;
  if (void* hook = FindHookByReal(*pfn)) {
    *pfn = hook;
    return r;
  }
  if (!HookedFamily(symbol)) return r;
  *pfn = nullptr;
  if (status) *status = CU_GET_PROC_ADDRESS_SYMBOL_NOT_FOUND;
  static std::atomic<int> said{0};
  if (said.fetch_add(1) < 8)
    Notice("cuGetProcAddress(\"%.64s\", version %d): the driver's entry point is not one the shim knows; refused "
         "(CUDA_ERROR_NOT_FOUND) so that it cannot bypass the memory wall",
         symbol, version);
  return CUDA_ERROR_NOT_FOUND;
}

}  // namespace

// cuGetProcAddress: the driver picks the ABI variant from the requested version and flags (cuMemAlloc
// at 3020+ is cuMemAlloc_v2, the per-thread flag selects _ptsz...). We let it choose, then swap in the hook
// of exactly the variant it chose. Both entry points call the driver the shim resolved, whichever copy of
// the driver the caller found this hook through.
extern "C" CUresult tsr_cuGetProcAddress_v2(const char* symbol, void** pfn, int version, cuuint64_t flags,
                                            CUdriverProcAddressQueryResult* status) {
  if (!ResolveReal() || !g_real.cuGetProcAddress_v2) return CUDA_ERROR_NOT_FOUND;
  CUresult r = g_real.cuGetProcAddress_v2(symbol, pfn, version, flags, status);
  return FilterProcAddress(r, symbol, pfn, version, status);
}

extern "C" CUresult tsr_cuGetProcAddress(const char* symbol, void** pfn, int version, cuuint64_t flags) {
  if (!ResolveReal() || !g_real.cuGetProcAddress) return CUDA_ERROR_NOT_FOUND;
  CUresult r = g_real.cuGetProcAddress(symbol, pfn, version, flags);
  return FilterProcAddress(r, symbol, pfn, version, nullptr);
}

// dlsym / dlvsym: applications and runtimes that look the driver up by name (cudart, PyTorch, NVML users)
// get the hook for hooked names, on any handle that has the name. Asking for dlsym or dlvsym themselves
// (the usual way past a preloaded dlsym) gets these hooks back. Everything else is the C library's answer.
// The final calls are tail calls so that RTLD_NEXT lookups stay relative to the real caller.
extern "C" __attribute__((visibility("default"))) void* dlsym(void* handle, const char* name);
extern "C" __attribute__((visibility("default"))) void* dlvsym(void* handle, const char* name, const char* version);

namespace {
using DlsymFn = void* (*)(void*, const char*);
using DlvsymFn = void* (*)(void*, const char*, const char*);

// True when `addr` lies in libtessera.so itself: lookups made by the shim or the limiter must get the
// driver's function, never a hook (that would recurse through the launch gate).
bool InsideShim(void* addr) {
  static void* self_base = nullptr;
  Dl_info me, caller;
  if (!self_base && dladdr(reinterpret_cast<void*>(&FindHookByName), &me)) self_base = me.dli_fbase;
  return self_base && dladdr(addr, &caller) && caller.dli_fbase == self_base;
}

bool IsLookupName(const char* name) {
  return name[0] == 'd' && (strcmp(name, "dlsym") == 0 || strcmp(name, "dlvsym") == 0);
}

void* LookupHook(const char* name) {
  return strcmp(name, "dlsym") == 0 ? reinterpret_cast<void*>(&dlsym) : reinterpret_cast<void*>(&dlvsym);
}

template <typename HasName>
void* HookFor(void* handle, const char* name, void* caller, HasName has_name) {
  const HookEntry* e = FindHookByName(name);
  if (!e || InsideShim(caller)) return nullptr;
  const bool named_handle = handle != RTLD_DEFAULT && handle != RTLD_NEXT;
  if (e->real_offset == SIZE_MAX) {  // NVML: only where the library really provides it
    if (named_handle && !has_name()) return nullptr;
    ResolveRealNvml();
    return e->hook;
  }
  if (!ResolveReal()) return nullptr;
  if (named_handle && !has_name()) return nullptr;
  return e->hook;
}
}  // namespace

extern "C" __attribute__((visibility("default"))) void* dlsym(void* handle, const char* name) {
  DlsymFn libc_dlsym = reinterpret_cast<DlsymFn>(LibcDlsym());
  if (name && (name[0] == 'c' || name[0] == 'n')) {
    void* caller = __builtin_return_address(0);
    if (void* hook = HookFor(handle, name, caller, [&] { return libc_dlsym(handle, name) != nullptr; })) return hook;
  } else if (name && IsLookupName(name) && !InsideShim(__builtin_return_address(0))) {
    return LookupHook(name);
  }
  return libc_dlsym(handle, name);
}

extern "C" __attribute__((visibility("default"))) void* dlvsym(void* handle, const char* name, const char* version) {
  DlvsymFn libc_dlvsym = reinterpret_cast<DlvsymFn>(LibcDlvsym());
  if (name && (name[0] == 'c' || name[0] == 'n')) {
    void* caller = __builtin_return_address(0);
    if (void* hook =
            HookFor(handle, name, caller, [&] { return libc_dlvsym(handle, name, version) != nullptr; }))
      return hook;
  } else if (name && IsLookupName(name) && !InsideShim(__builtin_return_address(0))) {
    return LookupHook(name);
  }
  return libc_dlvsym(handle, name, version);
}
