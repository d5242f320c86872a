// shim_probe: a CUDA driver-API program for the shim's tests. Linked directly against (fake) libcuda
// and run with LD_PRELOAD=libtessera.so; each mode drives one interception path and prints
// "ok <what>" / "FAIL <what>: <why>" lines; the exit code is the number of failures.
#include <cuda.h>
#include <dlfcn.h>
#include <nvml.h>
#include <fcntl.h>
#include <errno.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cstdint>
#include <initializer_list>

#include "shim/testing/array_v1.h"
#include "slice/config.h"
#include "slice/region.h"

namespace {

constexpr uint64_t kMiB = 1ull << 20;
int g_failures = 0;

void Check(bool ok, const char* what, const char* fmt = "-", ...) __attribute__((format(printf, 3, 4)));
void Check(bool ok, const char* what, const char* fmt, ...) {
  if (ok) {
    printf("ok %s\n", what);
  } else {
    ++g_failures;
    char buf[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    printf("FAIL %s: %s\n", what, buf);
  }
  fflush(stdout);
}

tessera::slice::Region g_region;

// Slice usage on GPU 0 as the region records it (charged + overhead).
uint64_t Charged() {
  if (!g_region.hdr) {
    tessera::slice::SliceConfig cfg;
    char err[256];
    const char* p = getenv("TESSERA_SLICE_CONFIG");
    if (!p || !tessera::slice::LoadSliceConfig(p, false, &cfg, err, sizeof(err))) return 0;
    if (!tessera::slice::OpenRegion(cfg.region, true, &g_region, err, sizeof(err))) return 0;
  }
  return tessera::slice::ReadGpuUsage(g_region.hdr, 0).charged_bytes;
}

void* Sym(const char* name) {
  static void* lib = dlopen("libcuda.so.1", RTLD_NOW);
  return dlsym(lib, name);
}

CUcontext Setup() {
  CUcontext ctx = nullptr;
  CUresult r = cuInit(0);
  if (r != CUDA_SUCCESS) {
    printf("FAIL cuInit: %d\n", r);
    exit(100);
  }
  r = cuDevicePrimaryCtxRetain(&ctx, 0);
  if (r != CUDA_SUCCESS) {
    printf("ctx-result %d\n", r);
    fflush(stdout);
    exit(r == CUDA_ERROR_OUT_OF_MEMORY ? 42 : 101);
  }
  cuCtxSetCurrent(ctx);
  return ctx;
}

// Allocates `small` then frees it (charge visible and returned), then asks for `big` (must be refused).
template <typename Alloc, typename Free>
void AllocPath(const char* what, uint64_t small, uint64_t big, Alloc alloc, Free free_fn) {
  uint64_t before = Charged();
  uint64_t h = 0;
  CUresult r = alloc(small, &h);
  uint64_t during = Charged();
  Check(r == CUDA_SUCCESS && during >= before + small, what, "alloc r=%d charged %llu -> %llu", r,
        (unsigned long long)before, (unsigned long long)during);
  if (r == CUDA_SUCCESS) {
    r = free_fn(h);
    uint64_t after = Charged();
    char w[128];
    snprintf(w, sizeof(w), "%s free", what);
    Check(r == CUDA_SUCCESS && after == before, w, "free r=%d charged %llu", r, (unsigned long long)after);
  }
  uint64_t h2 = 0;
  r = alloc(big, &h2);
  char w[128];
  snprintf(w, sizeof(w), "%s over the wall", what);
  Check(r == CUDA_ERROR_OUT_OF_MEMORY && Charged() == before, w, "r=%d", r);
  if (r == CUDA_SUCCESS) free_fn(h2);
}

// The v1 array ABI (descriptors with unsigned int extents).
using tessera::fake::Array3DDescV1;
using tessera::fake::ArrayDescV1;
using ArrayV1Fn = CUresult (*)(CUarray*, const ArrayDescV1*);
using Array3DV1Fn = CUresult (*)(CUarray*, const Array3DDescV1*);
ArrayV1Fn g_array_v1;
Array3DV1Fn g_array3d_v1;

void ArraysV1(uint64_t small, uint64_t big, void* gpa1_fn) {
  using GPA1 = CUresult (*)(const char*, void**, int, cuuint64_t);
  GPA1 gpa1 = reinterpret_cast<GPA1>(gpa1_fn);
  auto array = [](uint64_t n, uint64_t* h) {
    ArrayDescV1 d{4096, static_cast<unsigned>(n / 4096 / 4), CU_AD_FORMAT_FLOAT, 1};
    CUarray a;
    CUresult r = g_array_v1(&a, &d);
    *h = reinterpret_cast<uint64_t>(a);
    return r;
  };
  auto array3d = [](uint64_t n, uint64_t* h) {
    Array3DDescV1 d{1024, 1024, static_cast<unsigned>(n / (1024 * 1024 * 4)), CU_AD_FORMAT_FLOAT, 1, 0};
    CUarray a;
    CUresult r = g_array3d_v1(&a, &d);
    *h = reinterpret_cast<uint64_t>(a);
    return r;
  };
  auto destroy = [](uint64_t h) { return cuArrayDestroy(reinterpret_cast<CUarray>(h)); };
  g_array_v1 = reinterpret_cast<ArrayV1Fn>(Sym("cuArrayCreate"));
  g_array3d_v1 = reinterpret_cast<Array3DV1Fn>(Sym("cuArray3DCreate"));
  Check(g_array_v1 && g_array3d_v1, "dlsym finds the v1 array entry points");
  if (g_array_v1) AllocPath("dlsym cuArrayCreate (v1 ABI)", small, big, array, destroy);
  if (g_array3d_v1) AllocPath("dlsym cuArray3DCreate (v1 ABI)", small, big, array3d, destroy);
  g_array_v1 = nullptr;
  g_array3d_v1 = nullptr;
  gpa1("cuArrayCreate", reinterpret_cast<void**>(&g_array_v1), 3010, 0);
  gpa1("cuArray3DCreate", reinterpret_cast<void**>(&g_array3d_v1), 3010, 0);
  Check(g_array_v1 && g_array3d_v1, "cuGetProcAddress(3010) finds the v1 array entry points");
  if (g_array_v1) AllocPath("procaddr cuArrayCreate (v1 ABI)", small, big, array, destroy);
  if (g_array3d_v1) AllocPath("procaddr cuArray3DCreate (v1 ABI)", small, big, array3d, destroy);
}

int ModePaths() {
  Setup();
  const uint64_t small = 100 * kMiB, big = 2048 * kMiB;
  // Direct linking: the symbol binds to the preloaded shim.
  AllocPath("direct cuMemAlloc_v2", small, big,
            [](uint64_t n, uint64_t* h) { CUdeviceptr p; CUresult r = cuMemAlloc(&p, n); *h = p; return r; },
            [](uint64_t h) { return cuMemFree(h); });
  AllocPath("direct cuMemAllocManaged", small, big,
            [](uint64_t n, uint64_t* h) { CUdeviceptr p; CUresult r = cuMemAllocManaged(&p, n, CU_MEM_ATTACH_GLOBAL); *h = p; return r; },
            [](uint64_t h) { return cuMemFree(h); });
  AllocPath("direct cuMemAllocPitch_v2", small, big,
            [](uint64_t n, uint64_t* h) { CUdeviceptr p; size_t pitch; CUresult r = cuMemAllocPitch(&p, &pitch, 4096, n / 4096, 4); *h = p; return r; },
            [](uint64_t h) { return cuMemFree(h); });
  AllocPath("direct cuMemAllocAsync", small, big,
            [](uint64_t n, uint64_t* h) { CUdeviceptr p; CUresult r = cuMemAllocAsync(&p, n, nullptr); *h = p; return r; },
            [](uint64_t h) { return cuMemFreeAsync(h, nullptr); });
  AllocPath("direct cuMemAllocFromPoolAsync", small, big,
            [](uint64_t n, uint64_t* h) { CUdeviceptr p; CUresult r = cuMemAllocFromPoolAsync(&p, n, nullptr, nullptr); *h = p; return r; },
            [](uint64_t h) { return cuMemFreeAsync(h, nullptr); });
  AllocPath("direct cuMemCreate", small, big,
            [](uint64_t n, uint64_t* h) {
              CUmemAllocationProp prop{};
              prop.type = CU_MEM_ALLOCATION_TYPE_PINNED;
              prop.location.type = CU_MEM_LOCATION_TYPE_DEVICE;
              prop.location.id = 0;
              CUmemGenericAllocationHandle hh;
              CUresult r = cuMemCreate(&hh, n, &prop, 0);
              *h = hh;
              return r;
            },
            [](uint64_t h) { return cuMemRelease(h); });
  AllocPath("direct cuArrayCreate_v2", small, big,
            [](uint64_t n, uint64_t* h) {
              CUDA_ARRAY_DESCRIPTOR d{};
              d.Width = 4096;
              d.Height = n / 4096 / 4;
              d.Format = CU_AD_FORMAT_FLOAT;
              d.NumChannels = 1;
              CUarray a;
              CUresult r = cuArrayCreate(&a, &d);
              *h = reinterpret_cast<uint64_t>(a);
              return r;
            },
            [](uint64_t h) { return cuArrayDestroy(reinterpret_cast<CUarray>(h)); });
  AllocPath("direct cuArray3DCreate_v2", small, big,
            [](uint64_t n, uint64_t* h) {
              CUDA_ARRAY3D_DESCRIPTOR d{};
              d.Width = 1024;
              d.Height = 1024;
              d.Depth = n / (1024 * 1024 * 4);
              d.Format = CU_AD_FORMAT_FLOAT;
              d.NumChannels = 1;
              CUarray a;
              CUresult r = cuArray3DCreate(&a, &d);
              *h = reinterpret_cast<uint64_t>(a);
              return r;
            },
            [](uint64_t h) { return cuArrayDestroy(reinterpret_cast<CUarray>(h)); });
  AllocPath("direct cuMipmappedArrayCreate", small, big,
            [](uint64_t n, uint64_t* h) {
              CUDA_ARRAY3D_DESCRIPTOR d{};
              d.Width = 4096;
              d.Height = n / 4096 / 4;
              d.Format = CU_AD_FORMAT_FLOAT;
              d.NumChannels = 1;
              CUmipmappedArray a;
              CUresult r = cuMipmappedArrayCreate(&a, &d, 1);
              *h = reinterpret_cast<uint64_t>(a);
              return r;
            },
            [](uint64_t h) { return cuMipmappedArrayDestroy(reinterpret_cast<CUmipmappedArray>(h)); });
  AllocPath("direct cuGraphAddMemAllocNode", small, big,
            [](uint64_t n, uint64_t* h) {
              CUDA_MEM_ALLOC_NODE_PARAMS p{};
              p.poolProps.allocType = CU_MEM_ALLOCATION_TYPE_PINNED;
              p.poolProps.location.type = CU_MEM_LOCATION_TYPE_DEVICE;
              p.poolProps.location.id = 0;
              p.bytesize = n;
              CUgraphNode node;
              CUresult r = cuGraphAddMemAllocNode(&node, nullptr, nullptr, 0, &p);
              *h = p.dptr;
              return r;
            },
            [](uint64_t h) { CUgraphNode node; return cuGraphAddMemFreeNode(&node, nullptr, nullptr, 0, h); });

  // dlsym on the driver's handle and on RTLD_DEFAULT.
  using AllocFn = CUresult (*)(CUdeviceptr*, size_t);
  using FreeFn = CUresult (*)(CUdeviceptr);
  AllocFn a = reinterpret_cast<AllocFn>(Sym("cuMemAlloc_v2"));
  FreeFn f = reinterpret_cast<FreeFn>(Sym("cuMemFree_v2"));
  Check(a && reinterpret_cast<void*>(a) == dlsym(RTLD_DEFAULT, "cuMemAlloc_v2"), "dlsym(libcuda) gives the hook", "%p", (void*)a);
  static AllocFn sa;
  static FreeFn sf;
  sa = a;
  sf = f;
  AllocPath("dlsym cuMemAlloc_v2", small, big,
            [](uint64_t n, uint64_t* h) { CUdeviceptr p; CUresult r = sa(&p, n); *h = p; return r; },
            [](uint64_t h) { return sf(h); });
  Check(dlsym(RTLD_NEXT, "getpid") == reinterpret_cast<void*>(&getpid) || dlsym(RTLD_NEXT, "getpid") != nullptr,
        "dlsym(RTLD_NEXT) of a libc name still works", "-");
  Check(dlsym(RTLD_DEFAULT, "no_such_symbol_tessera") == nullptr, "dlsym of a missing name is null", "-");

  // cuGetProcAddress (both entry points) hands back the hook of the variant the driver chose.
  using GPA2 = CUresult (*)(const char*, void**, int, cuuint64_t, CUdriverProcAddressQueryResult*);
  using GPA1 = CUresult (*)(const char*, void**, int, cuuint64_t);
  GPA2 gpa2 = reinterpret_cast<GPA2>(Sym("cuGetProcAddress_v2"));
  GPA1 gpa1 = reinterpret_cast<GPA1>(Sym("cuGetProcAddress"));
  struct Case {
    const char* symbol;
    int version;
    cuuint64_t flags;
    const char* expect;
  } cases[] = {
      {"cuMemAlloc", 3010, 0, "cuMemAlloc"},
      {"cuMemAlloc", 13000, 0, "cuMemAlloc_v2"},
      {"cuMemFree", 13000, 0, "cuMemFree_v2"},
      {"cuMemGetInfo", 3000, 0, "cuMemGetInfo"},
      {"cuMemGetInfo", 13000, 0, "cuMemGetInfo_v2"},
      {"cuCtxCreate", 3010, 0, "cuCtxCreate"},
      {"cuCtxCreate", 3020, 0, "cuCtxCreate_v2"},
      {"cuCtxCreate", 11040, 0, "cuCtxCreate_v3"},
      {"cuCtxCreate", 13000, 0, "cuCtxCreate_v4"},
      {"cuMemAllocAsync", 13000, 0, "cuMemAllocAsync"},
      {"cuMemAllocAsync", 13000, CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM, "cuMemAllocAsync_ptsz"},
      {"cuMemFreeAsync", 13000, CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM, "cuMemFreeAsync_ptsz"},
      {"cuMemAllocFromPoolAsync", 13000, CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM, "cuMemAllocFromPoolAsync_ptsz"},
      {"cuLaunchKernel", 13000, 0, "cuLaunchKernel"},
      {"cuLaunchKernel", 13000, CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM, "cuLaunchKernel_ptsz"},
      {"cuLaunchKernelEx", 13000, CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM, "cuLaunchKernelEx_ptsz"},
      {"cuGraphLaunch", 13000, CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM, "cuGraphLaunch_ptsz"},
      {"cuLaunchCooperativeKernel", 13000, CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM, "cuLaunchCooperativeKernel_ptsz"},
      {"cuGetProcAddress", 13000, 0, "cuGetProcAddress_v2"},
      {"cuGetProcAddress", 11030, 0, "cuGetProcAddress"},
      {"cuDevicePrimaryCtxRetain", 13000, 0, "cuDevicePrimaryCtxRetain"},
      {"cuArrayCreate", 3010, 0, "cuArrayCreate"},
      {"cuArrayCreate", 13000, 0, "cuArrayCreate_v2"},
      {"cuArray3DCreate", 2000, 0, "cuArray3DCreate"},
      {"cuArray3DCreate", 13000, 0, "cuArray3DCreate_v2"},
  };
  for (const Case& c : cases) {
    for (int entry = 0; entry < 2; ++entry) {
      void* fn = nullptr;
      CUdriverProcAddressQueryResult st = CU_GET_PROC_ADDRESS_SYMBOL_NOT_FOUND;
      CUresult r = entry == 0 ? gpa2(c.symbol, &fn, c.version, c.flags, &st) : gpa1(c.symbol, &fn, c.version, c.flags);
      char what[160];
      snprintf(what, sizeof(what), "%s(%s, %d, %llu) -> %s", entry == 0 ? "cuGetProcAddress_v2" : "cuGetProcAddress",
               c.symbol, c.version, (unsigned long long)c.flags, c.expect);
      Check(r == CUDA_SUCCESS && fn && fn == dlsym(RTLD_DEFAULT, c.expect), what, "r=%d fn=%p hook=%p", r, fn,
            dlsym(RTLD_DEFAULT, c.expect));
    }
  }
  // Not hooked: the driver's own function comes back.
  void* fn = nullptr;
  gpa2("cuStreamQuery", &fn, 13000, 0, nullptr);
  Check(fn == Sym("cuStreamQuery"), "unhooked names come back untouched", "%p", fn);

  // Functions obtained through cuGetProcAddress enforce the wall, in each ABI variant.
  using AllocV1 = CUresult (*)(unsigned int*, unsigned int);
  using AllocAsyncFn = CUresult (*)(CUdeviceptr*, size_t, CUstream);
  using FreeAsyncFn = CUresult (*)(CUdeviceptr, CUstream);
  static AllocV1 v1;
  static AllocAsyncFn aa;
  static FreeAsyncFn fa;
  gpa2("cuMemAlloc", reinterpret_cast<void**>(&v1), 3010, 0, nullptr);
  gpa2("cuMemAllocAsync", reinterpret_cast<void**>(&aa), 13000, CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM, nullptr);
  gpa2("cuMemFreeAsync", reinterpret_cast<void**>(&fa), 13000, CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM, nullptr);
  using FreeV1 = CUresult (*)(unsigned int);
  static FreeV1 v1free;
  gpa2("cuMemFree", reinterpret_cast<void**>(&v1free), 3010, 0, nullptr);
  AllocPath("procaddr cuMemAlloc (v1 ABI)", small, 2000 * kMiB,
            [](uint64_t n, uint64_t* h) { unsigned int p; CUresult r = v1(&p, static_cast<unsigned>(n)); *h = p; return r; },
            [](uint64_t h) { return v1free(static_cast<unsigned>(h)); });
  AllocPath("procaddr cuMemAllocAsync_ptsz", small, big,
            [](uint64_t n, uint64_t* h) { CUdeviceptr p; CUresult r = aa(&p, n, nullptr); *h = p; return r; },
            [](uint64_t h) { return fa(h, nullptr); });

  // The pre-3.2 array entry points (unsigned int descriptors), by dlsym and by cuGetProcAddress below 3020.
  ArraysV1(small, big, reinterpret_cast<void*>(gpa1));

  // What the application sees.
  size_t free_b = 0, total_b = 0;
  cuMemGetInfo(&free_b, &total_b);
  uint64_t limit = strtoull(getenv("PROBE_LIMIT") ? getenv("PROBE_LIMIT") : "0", nullptr, 10);
  Check(total_b == limit && free_b <= limit, "cuMemGetInfo total = limit", "total %zu free %zu limit %llu", total_b,
        free_b, (unsigned long long)limit);
  size_t devtotal = 0;
  cuDeviceTotalMem(&devtotal, 0);
  Check(devtotal == limit, "cuDeviceTotalMem = limit", "%zu", devtotal);
  void* nv = dlopen("libnvidia-ml.so.1", RTLD_NOW);
  using NvInit = nvmlReturn_t (*)();
  using NvHandle = nvmlReturn_t (*)(unsigned, nvmlDevice_t*);
  using NvMem = nvmlReturn_t (*)(nvmlDevice_t, nvmlMemory_t*);
  using NvMem2 = nvmlReturn_t (*)(nvmlDevice_t, nvmlMemory_v2_t*);
  if (nv) {
    reinterpret_cast<NvInit>(dlsym(nv, "nvmlInit_v2"))();
    nvmlDevice_t d0, d1;
    reinterpret_cast<NvHandle>(dlsym(nv, "nvmlDeviceGetHandleByIndex_v2"))(0, &d0);
    reinterpret_cast<NvHandle>(dlsym(nv, "nvmlDeviceGetHandleByIndex_v2"))(1, &d1);
    nvmlMemory_t m{};
    reinterpret_cast<NvMem>(dlsym(nv, "nvmlDeviceGetMemoryInfo"))(d0, &m);
    Check(m.total == limit && m.free + m.used <= limit, "nvmlDeviceGetMemoryInfo total = limit", "total %llu",
          (unsigned long long)m.total);
    nvmlMemory_v2_t m2{};
    m2.version = nvmlMemory_v2;
    reinterpret_cast<NvMem2>(dlsym(nv, "nvmlDeviceGetMemoryInfo_v2"))(d0, &m2);
    Check(m2.total == limit, "nvmlDeviceGetMemoryInfo_v2 total = limit", "total %llu", (unsigned long long)m2.total);
    nvmlMemory_t other{};
    reinterpret_cast<NvMem>(dlsym(nv, "nvmlDeviceGetMemoryInfo"))(d1, &other);
    Check(other.total > limit, "a GPU outside the slice shows its real size", "%llu", (unsigned long long)other.total);
  } else {
    Check(false, "load libnvidia-ml.so.1", "%s", dlerror());
  }
  // A GPU outside the slice: no memory there.
  CUcontext c1;
  CUresult r = cuCtxCreate(&c1, nullptr, 0, 1);
  CUdeviceptr p1;
  CUresult ra = r == CUDA_SUCCESS ? cuMemAlloc(&p1, kMiB) : r;
  Check(ra == CUDA_ERROR_OUT_OF_MEMORY, "GPU outside the slice refuses memory", "ctx %d alloc %d", r, ra);
  return g_failures;
}

// Launch paths reach the driver (the gate is off without a compute cap).
extern "C" unsigned long long fakeCudaLaunchCount();
int ModeLaunch() {
  Setup();
  unsigned long long before = fakeCudaLaunchCount();
  cuLaunchKernel(nullptr, 1, 1, 1, 1, 1, 1, 0, nullptr, nullptr, nullptr);
  CUlaunchConfig cfg{};
  cuLaunchKernelEx(&cfg, nullptr, nullptr, nullptr);
  cuLaunchCooperativeKernel(nullptr, 1, 1, 1, 1, 1, 1, 0, nullptr, nullptr);
  cuGraphLaunch(nullptr, nullptr);
  using L = CUresult (*)(CUgraphExec, CUstream);
  L gl = nullptr;
  cuGetProcAddress("cuGraphLaunch", reinterpret_cast<void**>(&gl), 13000, CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM, nullptr);
  if (gl) gl(nullptr, nullptr);
  Check(fakeCudaLaunchCount() == before + 5, "five launches reached the driver", "%llu", fakeCudaLaunchCount() - before);
  return g_failures;
}

// Alloc/free rounds through cudart-style pointers; the parent watches the device's real usage. With
// PROBE_GO_FD set, the process says "ready" once its context exists and starts racing only when that pipe
// reaches end-of-file (the parent closes it when every racer is ready), so all of them race at once.
int ModeRace(int rounds, unsigned seed, int max_mib, int slots) {
  Setup();
  if (const char* go = getenv("PROBE_GO_FD")) {
    printf("ready\n");
    fflush(stdout);
    char c;
    while (read(atoi(go), &c, 1) > 0) {
    }
  }
  using AllocFn = CUresult (*)(CUdeviceptr*, size_t);
  using FreeFn = CUresult (*)(CUdeviceptr);
  AllocFn a = nullptr;
  FreeFn f = nullptr;
  cuGetProcAddress("cuMemAlloc", reinterpret_cast<void**>(&a), 13000, 0, nullptr);
  cuGetProcAddress("cuMemFree", reinterpret_cast<void**>(&f), 13000, 0, nullptr);
  CUdeviceptr held[16] = {};
  if (slots < 1 || slots > 16) slots = 4;
  int ok = 0, refused = 0;
  for (int i = 0; i < rounds; ++i) {
    int s = i % slots;
    if (held[s]) {
      f(held[s]);
      held[s] = 0;
    }
    size_t n = (1 + rand_r(&seed) % max_mib) * kMiB;
    CUresult r = a(&held[s], n);
    if (r == CUDA_SUCCESS) {
      ++ok;
    } else {
      held[s] = 0;
      if (r != CUDA_ERROR_OUT_OF_MEMORY) return 1;
      ++refused;
    }
  }
  for (CUdeviceptr p : held)
    if (p) f(p);
  printf("race ok=%d refused=%d\n", ok, refused);
  return 0;
}

// fork(): the child is a new process of the slice with its own row; the parent's charges are untouched.
int ModeFork() {
  Setup();
  CUdeviceptr p;
  Check(cuMemAlloc(&p, 100 * kMiB) == CUDA_SUCCESS, "parent alloc");
  uint64_t parent_charged = Charged();
  pid_t kid = fork();
  if (kid == 0) {
    CUdeviceptr q;
    CUresult r = cuMemAlloc(&q, 50 * kMiB);
    int procs = 0;
    tessera::slice::ProcUsage rows[8];
    procs = tessera::slice::ReadProcs(g_region.hdr, rows, 8);
    bool ok = r == CUDA_SUCCESS && Charged() == parent_charged + 50 * kMiB && procs == 2;
    _exit(ok ? 0 : 1);
  }
  int st = 0;
  waitpid(kid, &st, 0);
  Check(WIFEXITED(st) && WEXITSTATUS(st) == 0, "child charged in its own row", "status %d", st);
  tessera::slice::ReclaimDead(g_region.hdr);
  Check(Charged() == parent_charged, "child's charge gone with it, parent's kept", "%llu vs %llu",
        (unsigned long long)Charged(), (unsigned long long)parent_charged);
  Check(cuMemFree(p) == CUDA_SUCCESS && Charged() == 0, "parent free");
  return g_failures;
}

int ModeHold(uint64_t mib) {
  Setup();
  CUdeviceptr p;
  CUresult r = cuMemAlloc(&p, mib * kMiB);
  printf("hold %d\n", r);
  fflush(stdout);
  for (;;) pause();
}

// A context, "ready", then (once `go_path` exists) 64 MiB allocations until one is refused; prints
// "filled <MiB>" and holds.
int ModeLazyFill(const char* go_path) {
  Setup();
  printf("ready\n");
  fflush(stdout);
  while (access(go_path, F_OK) != 0) usleep(5000);
  uint64_t got = 0;
  CUdeviceptr p;
  while (cuMemAlloc(&p, 64 * kMiB) == CUDA_SUCCESS) got += 64;
  printf("filled %llu\n", static_cast<unsigned long long>(got));
  fflush(stdout);
  for (;;) pause();
}

// On every device the process sees: a context, cuMemGetInfo and one allocation of `mib` MiB. One line
// per device ("dev <ordinal> phys <last UUID byte> total <bytes> alloc <result>"), then "ready"; holds.
int ModeDevices(uint64_t mib) {
  if (cuInit(0) != CUDA_SUCCESS) return 100;
  int n = 0;
  cuDeviceGetCount(&n);
  for (int d = 0; d < n; ++d) {
    CUdevice dev;
    CUcontext ctx;
    CUuuid u{};
    cuDeviceGet(&dev, d);
    CUresult r = cuDevicePrimaryCtxRetain(&ctx, dev);
    if (r != CUDA_SUCCESS) {
      printf("dev %d ctx %d\n", d, r);
      continue;
    }
    cuCtxSetCurrent(ctx);
    cuDeviceGetUuid(&u, dev);
    size_t free_b = 0, total_b = 0;
    cuMemGetInfo(&free_b, &total_b);
    CUdeviceptr p;
    r = cuMemAlloc(&p, mib * kMiB);
    printf("dev %d phys %d total %zu alloc %d\n", d, static_cast<unsigned char>(u.bytes[15]), total_b, r);
  }
  printf("ready\n");
  fflush(stdout);
  for (;;) pause();
}


// The doors a hostile process tries first to reach the driver past the wall. Each must hand back the hook
// (the allocation is charged and refused at the wall) or nothing. PROBE_DRIVER_COPY: a copy of the fake
// libcuda.so.1 at another path (a second instance of the driver in the process).
using AllocFn2 = CUresult (*)(CUdeviceptr*, size_t);
using FreeFn2 = CUresult (*)(CUdeviceptr);
AllocFn2 g_door_alloc;
FreeFn2 g_door_free;
void Door(const char* what, void* alloc, void* free_fn) {
  g_door_alloc = reinterpret_cast<AllocFn2>(alloc);
  g_door_free = reinterpret_cast<FreeFn2>(free_fn);
  char w[160];
  snprintf(w, sizeof(w), "%s: found", what);
  Check(alloc != nullptr && free_fn != nullptr, w, "alloc %p free %p", alloc, free_fn);
  if (!alloc || !free_fn) return;
  AllocPath(what, 100 * kMiB, 2048 * kMiB,
            [](uint64_t n, uint64_t* h) { CUdeviceptr p; CUresult r = g_door_alloc(&p, n); *h = p; return r; },
            [](uint64_t h) { return g_door_free(h); });
}

bool InShim(void* fn) {
  Dl_info info;
  return fn && dladdr(fn, &info) && info.dli_fname && strstr(info.dli_fname, "libtessera") != nullptr;
}

int ModeDoors() {
  Setup();
  void* lib = dlopen("libcuda.so.1", RTLD_NOW | RTLD_NOLOAD);
  using DlsymFn = void* (*)(void*, const char*);
  using DlvsymFn = void* (*)(void*, const char*, const char*);
  // The C library's dlsym fetched by version, through RTLD_NEXT and RTLD_DEFAULT.
  const char* versions[] = {"GLIBC_2.34", "GLIBC_2.2.5"};
  for (const char* v : versions) {
    for (void* h : {RTLD_NEXT, RTLD_DEFAULT}) {
      DlsymFn real = reinterpret_cast<DlsymFn>(dlvsym(h, "dlsym", v));
      char what[160];
      snprintf(what, sizeof(what), "dlvsym(%s, \"dlsym\", \"%s\") then cuMemAlloc_v2",
               h == RTLD_NEXT ? "RTLD_NEXT" : "RTLD_DEFAULT", v);
      if (!real) {
        printf("ok %s: no such version here\n", what);
        continue;
      }
      Door(what, real(lib, "cuMemAlloc_v2"), real(lib, "cuMemFree_v2"));
    }
  }
  // dlsym and dlvsym looked up on the C library's own handle.
  void* libc = dlopen("libc.so.6", RTLD_NOW | RTLD_NOLOAD);
  DlsymFn libc_dlsym = reinterpret_cast<DlsymFn>(dlsym(libc, "dlsym"));
  Check(libc_dlsym != nullptr, "dlsym(libc, \"dlsym\") found");
  if (libc_dlsym) Door("dlsym(libc, \"dlsym\") then cuMemAlloc_v2", libc_dlsym(lib, "cuMemAlloc_v2"), libc_dlsym(lib, "cuMemFree_v2"));
  DlvsymFn libc_dlvsym = reinterpret_cast<DlvsymFn>(dlsym(libc, "dlvsym"));
  if (libc_dlvsym) {
    DlsymFn real = reinterpret_cast<DlsymFn>(libc_dlvsym(RTLD_NEXT, "dlsym", "GLIBC_2.34"));
    if (real) Door("dlsym(libc, \"dlvsym\") then dlsym then cuMemAlloc_v2", real(lib, "cuMemAlloc_v2"), real(lib, "cuMemFree_v2"));
  }
  // The driver's names through dlvsym: the hook, or nothing where the C library finds no such version.
  for (const char* v : {"libcuda.so.1", "GLIBC_2.2.5"}) {
    void* a = dlvsym(lib, "cuMemAlloc_v2", v);
    void* d = dlvsym(RTLD_DEFAULT, "cuMemAlloc_v2", v);
    Check((a == nullptr || InShim(a)) && (d == nullptr || InShim(d)), "dlvsym of a driver name is the hook or nothing",
          "version '%s': %p %p", v, a, d);
  }
  // The driver opened by its path, and a second copy of it at another path.
  if (const char* dir = getenv("PROBE_DRIVER_DIR")) {
    char path[512];
    snprintf(path, sizeof(path), "%s/libcuda.so.1", dir);
    void* by_path = dlopen(path, RTLD_NOW);
    Door("dlopen(<path>/libcuda.so.1) then dlsym", dlsym(by_path, "cuMemAlloc_v2"), dlsym(by_path, "cuMemFree_v2"));
  }
  if (const char* copy = getenv("PROBE_DRIVER_COPY")) {
    void* other = dlopen(copy, RTLD_NOW | RTLD_LOCAL);
    Check(other != nullptr && other != lib, "a second copy of the driver loads", "%s", other ? "same handle" : dlerror());
    if (other) {
      Door("dlopen(copy of the driver) then dlsym", dlsym(other, "cuMemAlloc_v2"), dlsym(other, "cuMemFree_v2"));
      using GPA2 = CUresult (*)(const char*, void**, int, cuuint64_t, CUdriverProcAddressQueryResult*);
      GPA2 gpa = reinterpret_cast<GPA2>(dlsym(other, "cuGetProcAddress_v2"));
      void* a = nullptr;
      void* f = nullptr;
      if (gpa) {
        gpa("cuMemAlloc", &a, 13000, 0, nullptr);
        gpa("cuMemFree", &f, 13000, 0, nullptr);
      }
      Door("copy of the driver's cuGetProcAddress_v2(cuMemAlloc)", a, f);
    }
  }
  // cuGetProcAddress of every hooked allocator at every version and flag: a hook or nothing.
  using GPA2 = CUresult (*)(const char*, void**, int, cuuint64_t, CUdriverProcAddressQueryResult*);
  using GPA1 = CUresult (*)(const char*, void**, int, cuuint64_t);
  GPA2 gpa2 = reinterpret_cast<GPA2>(dlsym(lib, "cuGetProcAddress_v2"));
  GPA1 gpa1 = reinterpret_cast<GPA1>(dlsym(lib, "cuGetProcAddress"));
  const char* symbols[] = {"cuMemAlloc", "cuMemAllocPitch", "cuMemAllocManaged", "cuMemAllocAsync",
                           "cuMemAllocFromPoolAsync", "cuMemCreate", "cuArrayCreate", "cuArray3DCreate",
                           "cuMipmappedArrayCreate", "cuGraphAddMemAllocNode", "cuCtxCreate",
                           "cuDevicePrimaryCtxRetain", "cuGetProcAddress"};
  const int vers[] = {1000, 2000, 3000, 3010, 3020, 4000, 11020, 11040, 12000, 12050, 12080, 13000, 13010, 99999};
  const cuuint64_t flagses[] = {0, CU_GET_PROC_ADDRESS_LEGACY_STREAM, CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM};
  int leaks = 0, asked = 0;
  for (const char* sym : symbols)
    for (int v : vers)
      for (cuuint64_t fl : flagses)
        for (int entry = 0; entry < 2; ++entry) {
          void* fn = nullptr;
          CUresult r = entry == 0 ? gpa2(sym, &fn, v, fl, nullptr) : gpa1(sym, &fn, v, fl);
          ++asked;
          if (r == CUDA_SUCCESS && fn && !InShim(fn)) {
            ++leaks;
            printf("FAIL cuGetProcAddress%s(%s, %d, %llu) leaked the driver's %p\n", entry == 0 ? "_v2" : "", sym,
                   v, (unsigned long long)fl, fn);
          }
        }
  Check(leaks == 0, "every cuGetProcAddress answer for a hooked function is a hook", "%d of %d leaked", leaks, asked);
  g_failures += leaks;
  // An entry point the shim does not know (PROBE_EXPECT_ALIAS: the fake hands an internal alias for
  // cuMemAlloc at 13010+) is refused, not passed on.
  if (getenv("PROBE_EXPECT_ALIAS")) {
    void* fn = reinterpret_cast<void*>(1);
    CUdriverProcAddressQueryResult st = CU_GET_PROC_ADDRESS_SUCCESS;
    CUresult r = gpa2("cuMemAlloc", &fn, 13010, 0, &st);
    Check(r == CUDA_ERROR_NOT_FOUND && fn == nullptr && st == CU_GET_PROC_ADDRESS_SYMBOL_NOT_FOUND,
          "an unknown driver entry point for a hooked function is refused", "r=%d fn=%p st=%d", r, fn, st);
    void* ok = nullptr;
    r = gpa2("cuMemAlloc", &ok, 13000, 0, nullptr);
    Check(r == CUDA_SUCCESS && InShim(ok), "the known variant still comes back hooked", "r=%d", r);
  }
  return g_failures;
}

// What a hostile process of the slice tries against the books (agent rows or standalone): write the
// region, the roster, other processes' rows and the live part by path; make its read-only mapping
// writable; zero its own row; rewrite the limit with a valid checksum. Prints "open-rw <what> <errno>"
// (0 = it could), then allocates 64 MiB at a time until refused and prints "got <MiB>".
int ModeTamper() {
  Setup();
  CUdeviceptr first;
  if (cuMemAlloc(&first, 64 * kMiB) != CUDA_SUCCESS) return 3;  // the process holds something
  tessera::slice::SliceConfig cfg;
  char err[256];
  const char* p = getenv("TESSERA_SLICE_CONFIG");
  if (!p || !tessera::slice::LoadSliceConfig(p, false, &cfg, err, sizeof(err))) return 4;
  char dir[512];
  tessera::slice::RegionDir(cfg.region, dir, sizeof(dir));
  auto try_open = [](const char* what, const char* path) {
    int fd = open(path, O_RDWR);
    printf("open-rw %s %d\n", what, fd >= 0 ? 0 : errno);
    return fd;
  };
  int fd = try_open("region", cfg.region);
  if (fd >= 0) {
    // Standalone the slice's processes share the file: rewrite the limit and its checksum.
    void* m = mmap(nullptr, tessera::slice::kRegionFileSize, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (m != MAP_FAILED) {
      auto* h = static_cast<tessera::slice::RegionHeader*>(m);
      h->limits[0].limit_bytes *= 8;
      h->checksum = tessera::slice::RegionChecksum(h);
      for (auto& row : h->rows)
        for (auto& b : row.bytes) b.store(0);
      printf("rewrote limit and zeroed rows\n");
    }
    close(fd);
  }
  char path[600];
  for (int i = 0; i < 4; ++i) {
    snprintf(path, sizeof(path), "%s/rows/%d", dir, i);
    if (access(path, F_OK) != 0) continue;
    char what[32];
    snprintf(what, sizeof(what), "row-%d", i);
    int f = try_open(what, path);
    if (f >= 0) close(f);
  }
  snprintf(path, sizeof(path), "%s/live", dir);
  if (access(path, F_OK) == 0) {
    int f = try_open("live", path);
    if (f >= 0) close(f);
  }
  // Its own mappings: the header made writable, its own row zeroed.
  FILE* maps = fopen("/proc/self/maps", "r");
  char line[1024];
  while (maps && fgets(line, sizeof(line), maps)) {
    unsigned long lo, hi;
    char perms[8];
    if (sscanf(line, "%lx-%lx %7s", &lo, &hi, perms) != 3) continue;
    if (strstr(line, "/slice.region") && perms[1] == '-') {
      int r = mprotect(reinterpret_cast<void*>(lo), hi - lo, PROT_READ | PROT_WRITE);
      printf("mprotect-header %d\n", r == 0 ? 0 : errno);
    }
    if (strstr(line, "/rows/") && perms[1] == 'w') {
      memset(reinterpret_cast<void*>(lo), 0, hi - lo);
      printf("zeroed own row\n");
    }
  }
  if (maps) fclose(maps);
  fflush(stdout);
  uint64_t got = 64;
  CUdeviceptr q;
  while (got < 64 * 1024 && cuMemAlloc(&q, 64 * kMiB) == CUDA_SUCCESS) got += 64;
  printf("got %llu\n", static_cast<unsigned long long>(got));
  fflush(stdout);
  for (;;) pause();
}

// Allocations and frees of random sizes forever, after "ready" (the chaos test kills it anywhere).
int ModeChurn(unsigned seed) {
  Setup();
  printf("ready\n");
  fflush(stdout);
  CUdeviceptr held[8] = {};
  for (unsigned i = 0;; ++i) {
    const unsigned s = i % 8;
    if (held[s]) cuMemFree(held[s]);
    held[s] = 0;
    if (cuMemAlloc(&held[s], (1 + rand_r(&seed) % 128) * kMiB) != CUDA_SUCCESS) held[s] = 0;
  }
}
}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) return 2;
  if (!strcmp(argv[1], "paths")) return ModePaths();
  if (!strcmp(argv[1], "doors")) return ModeDoors();
  if (!strcmp(argv[1], "tamper")) return ModeTamper();
  if (!strcmp(argv[1], "churn")) return ModeChurn(static_cast<unsigned>(atoi(argv[2])));
  if (!strcmp(argv[1], "launch")) return ModeLaunch();
  if (!strcmp(argv[1], "fork")) return ModeFork();
  if (!strcmp(argv[1], "race"))  // race ROUNDS SEED [MAX_MIB] [SLOTS]
    return ModeRace(atoi(argv[2]), static_cast<unsigned>(atoi(argv[3])), argc > 4 ? atoi(argv[4]) : 256,
                    argc > 5 ? atoi(argv[5]) : 4);
  if (!strcmp(argv[1], "hold")) return ModeHold(strtoull(argv[2], nullptr, 10));
  if (!strcmp(argv[1], "lazyfill")) return ModeLazyFill(argv[2]);
  if (!strcmp(argv[1], "devices")) return ModeDevices(strtoull(argv[2], nullptr, 10));
  if (!strcmp(argv[1], "ctx")) {
    Setup();
    printf("ctx-result 0\n");
    return 0;
  }
  if (!strcmp(argv[1], "alloc")) {  // alloc <MiB>: one allocation, prints the result code
    Setup();
    CUdeviceptr p;
    CUresult r = cuMemAlloc(&p, strtoull(argv[2], nullptr, 10) * kMiB);
    printf("alloc-result %d\n", r);
    return 0;
  }
  return 2;
}
