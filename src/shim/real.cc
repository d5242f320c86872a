// Resolution of the real driver / NVML entry points (see real.h).
#include "shim/real.h"

#include <dlfcn.h>
#include <elf.h>
#include <link.h>
#include <sched.h>
#include <string.h>

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

// The C library's dlsym and dlvsym, found in its dynamic symbol table rather than through dlsym/dlvsym:
// libtessera.so exports both names itself (hooks_dl.cc), so asking the loader for them would answer with
// the hooks. Walks the loaded objects once (dl_iterate_phdr) for libc.so.6 (glibc 2.34+) or libdl.so.2.
struct LibcLookup {
  void* dlsym_fn = nullptr;
  void* dlvsym_fn = nullptr;
};

uint32_t GnuHash(const char* s) {
  uint32_t h = 5381;
  for (const unsigned char* p = reinterpret_cast<const unsigned char*>(s); *p; ++p) h = h * 33 + *p;
  return h;
}

// Address of the defined symbol `name` in the object at `base` with dynamic section `dyn`, or nullptr.
void* FindDynamicSymbol(ElfW(Addr) base, const ElfW(Dyn)* dyn, const char* name) {
  const ElfW(Sym)* symtab = nullptr;
  const char* strtab = nullptr;
  const uint32_t* gnu = nullptr;
  // The loader relocates these entries in place on most targets; where it does not they are offsets.
  auto addr = [base](ElfW(Addr) p) { return p < base ? p + base : p; };
  for (const ElfW(Dyn)* d = dyn; d->d_tag != DT_NULL; ++d) {
    if (d->d_tag == DT_SYMTAB) symtab = reinterpret_cast<const ElfW(Sym)*>(addr(d->d_un.d_ptr));
    if (d->d_tag == DT_STRTAB) strtab = reinterpret_cast<const char*>(addr(d->d_un.d_ptr));
    if (d->d_tag == DT_GNU_HASH) gnu = reinterpret_cast<const uint32_t*>(addr(d->d_un.d_ptr));
  }
  if (!symtab || !strtab || !gnu) return nullptr;
  const uint32_t nbuckets = gnu[0], symoffset = gnu[1], bloom_size = gnu[2];
  if (nbuckets == 0) return nullptr;
  const uint32_t* buckets = gnu + 4 + bloom_size * (sizeof(ElfW(Addr)) / 4);
  const uint32_t* chain = buckets + nbuckets;
  const uint32_t h = GnuHash(name);
  uint32_t i = buckets[h % nbuckets];
  if (i < symoffset) return nullptr;
  for (;; ++i) {
    const uint32_t c = chain[i - symoffset];
    const ElfW(Sym)& s = symtab[i];
    if ((c | 1) == (h | 1) && s.st_shndx != SHN_UNDEF && strcmp(strtab + s.st_name, name) == 0)
      return reinterpret_cast<void*>(base + s.st_value);
    if (c & 1) return nullptr;
  }
}

int FindInLibc(struct dl_phdr_info* info, size_t, void* data) {
  auto* out = static_cast<LibcLookup*>(data);
  const char* name = info->dlpi_name ? info->dlpi_name : "";
  const char* slash = strrchr(name, '/');
  const char* base = slash ? slash + 1 : name;
  if (strncmp(base, "libc.so", 7) != 0 && strncmp(base, "libdl.so", 8) != 0) return 0;
  for (int i = 0; i < info->dlpi_phnum; ++i) {
    if (info->dlpi_phdr[i].p_type != PT_DYNAMIC) continue;
    const auto* dyn = reinterpret_cast<const ElfW(Dyn)*>(info->dlpi_addr + info->dlpi_phdr[i].p_vaddr);
    if (!out->dlsym_fn) out->dlsym_fn = FindDynamicSymbol(info->dlpi_addr, dyn, "dlsym");
    if (!out->dlvsym_fn) out->dlvsym_fn = FindDynamicSymbol(info->dlpi_addr, dyn, "dlvsym");
  }
  return out->dlsym_fn && out->dlvsym_fn ? 1 : 0;
}

std::atomic<void*> g_libc_dlvsym{nullptr};

DlsymFn LoadDlsym() {
  DlsymFn f = g_dlsym.load(std::memory_order_acquire);
  if (f) return f;
  LibcLookup found;
  dl_iterate_phdr(&FindInLibc, &found);
  g_libc_dlvsym.store(found.dlvsym_fn, std::memory_order_release);
  f = reinterpret_cast<DlsymFn>(found.dlsym_fn);
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

void* LibcDlsym() { return reinterpret_cast<void*>(LoadDlsym()); }

void* LibcDlvsym() {
  LoadDlsym();
  return g_libc_dlvsym.load(std::memory_order_acquire);
}

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
