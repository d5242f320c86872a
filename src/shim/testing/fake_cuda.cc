// Fake libcuda.so.1: the CUDA driver API entry points the shim hooks, backed by host memory, so the
// shim's interception and accounting can be tested without a GPU. Device memory is address space
// reserved with mmap (never touched), usage is tracked per device and published for the fake NVML.
// CUDA_VISIBLE_DEVICES (indices or UUIDs) renumbers the devices the process sees, like the real driver.
// cuGetProcAddress(_v2) picks ABI variants by version and per-thread flag like the real driver.
#include <cuda.h>
#include <dirent.h>
#include <dlfcn.h>
#include <fcntl.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <atomic>
#include <cstdint>
#include <mutex>
#include <unordered_map>

#include "shim/testing/array_v1.h"
#include "shim/testing/fake_gpu_state.h"

// cuda.h renames many entry points with macros; the fake defines each ABI variant by its real name.
#undef cuMemAlloc
#undef cuMemAllocPitch
#undef cuMemFree
#undef cuMemGetInfo
#undef cuDeviceTotalMem
#undef cuGetProcAddress
#undef cuDeviceGetUuid
#undef cuCtxCreate
#undef cuCtxDestroy
#undef cuDevicePrimaryCtxRelease
#undef cuArrayCreate
#undef cuArray3DCreate
#undef cuEventDestroy
#undef cuEventElapsedTime
#undef cuStreamDestroy

using namespace tessera::fake;
using devptr_v1 = unsigned int;

namespace {

struct Ctx {
  int dev;   // the ordinal the process sees
  int phys;  // the fake GPU it is (usage, UUID)
};
Ctx g_primary[8];
thread_local CUcontext t_ctx = nullptr;
std::atomic<bool> g_inited{false};
std::atomic<uint64_t> g_used[8];
std::atomic<uint64_t> g_launches{0};
std::mutex g_mu;
std::unordered_map<uint64_t, std::pair<uint64_t, int>>* g_allocs;  // addr -> (bytes counted, dev)
std::atomic<uint64_t> g_next_handle{0x1000};
int g_ctx_count[8];
uint64_t g_ctx_lazy[8];  // context overhead still to show at the next allocation (FAKE_CUDA_CTX_EARLY_MIB)

// The "device": usage of all processes together, shared through FAKE_GPU_STATE_DIR/device, with its
// peak kept exactly (a sum of per-process snapshots taken at different instants could overstate it).
struct SharedDevice {
  std::atomic<uint64_t> used[8];
  std::atomic<uint64_t> peak[8];
};
SharedDevice* Dev() {
  static SharedDevice* dev = [] () -> SharedDevice* {
    const char* dir = getenv("FAKE_GPU_STATE_DIR");
    if (!dir) return nullptr;
    char path[512];
    snprintf(path, sizeof(path), "%s/device", dir);
    int fd = open(path, O_RDWR | O_CREAT, 0644);
    if (fd < 0) return nullptr;
    if (ftruncate(fd, 4096) != 0) return nullptr;
    void* p = mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    close(fd);
    return p == MAP_FAILED ? nullptr : static_cast<SharedDevice*>(p);
  }();
  return dev;
}
void DeviceAdd(int dev, uint64_t n) {
  SharedDevice* d = Dev();
  if (!d) return;
  uint64_t now = d->used[dev].fetch_add(n) + n;
  uint64_t peak = d->peak[dev].load();
  while (now > peak && !d->peak[dev].compare_exchange_weak(peak, now)) {
  }
}
void DeviceSub(int dev, uint64_t n) {
  if (SharedDevice* d = Dev()) d->used[dev].fetch_sub(n);
}

uint64_t Counted(uint64_t bytes) {
  constexpr uint64_t kPage = 2ull << 20;
  return bytes <= (1ull << 20) ? bytes : (bytes + kPage - 1) / kPage * kPage;
}

void Publish() {
  const char* dir = getenv("FAKE_GPU_STATE_DIR");
  if (!dir) return;
  char path[512], tmp[520], line[256];
  snprintf(path, sizeof(path), "%s/%d", dir, DriverPid());
  snprintf(tmp, sizeof(tmp), "%s.tmp", path);
  int n = 0;
  for (int d = 0; d < DeviceCount(); ++d)
    n += snprintf(line + n, sizeof(line) - n, "%llu ", static_cast<unsigned long long>(g_used[d].load()));
  line[n++] = '\n';
  int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (fd < 0) return;
  ssize_t w = write(fd, line, n);
  (void)w;
  close(fd);
  rename(tmp, path);
}

// CUDA_VISIBLE_DEVICES, like the real driver: indices or UUIDs; ordinal i of the process is the i-th
// entry; the list ends at the first entry that names no device. Unset: all.
const VisibleList& VisibleDevices() {
  static const VisibleList v = ParseVisible(getenv("CUDA_VISIBLE_DEVICES"), false);
  return v;
}
// The fake GPU behind a process ordinal; -1 when the process cannot see that many.
int Phys(int ordinal) {
  const VisibleList& v = VisibleDevices();
  return ordinal >= 0 && ordinal < v.count ? v.phys[ordinal] : -1;
}

// The fake GPU of the current context (what its allocations count against).
int CurDev() {
  Ctx* c = reinterpret_cast<Ctx*>(t_ctx);
  return c ? c->phys : -1;
}

CUresult Take(int dev, uint64_t bytes, uint64_t key) {
  uint64_t c = Counted(bytes);
  uint64_t cur = g_used[dev].load();
  do {
    if (cur + c > TotalBytes()) return CUDA_ERROR_OUT_OF_MEMORY;
  } while (!g_used[dev].compare_exchange_weak(cur, cur + c));
  DeviceAdd(dev, c);
  {
    std::lock_guard<std::mutex> l(g_mu);
    if (!g_allocs) g_allocs = new std::unordered_map<uint64_t, std::pair<uint64_t, int>>();
    (*g_allocs)[key] = {c, dev};
  }
  Publish();
  return CUDA_SUCCESS;
}

CUresult Give(uint64_t key) {
  std::pair<uint64_t, int> v;
  {
    std::lock_guard<std::mutex> l(g_mu);
    if (!g_allocs) return CUDA_ERROR_INVALID_VALUE;
    auto it = g_allocs->find(key);
    if (it == g_allocs->end()) return CUDA_ERROR_INVALID_VALUE;
    v = it->second;
    g_allocs->erase(it);
  }
  g_used[v.second].fetch_sub(v.first);
  DeviceSub(v.second, v.first);
  Publish();
  return CUDA_SUCCESS;
}

uint64_t Reserve(uint64_t bytes) {
  void* p = mmap(nullptr, bytes ? bytes : 1, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  return p == MAP_FAILED ? 0 : reinterpret_cast<uint64_t>(p);
}

CUresult AllocOn(int dev, CUdeviceptr* dptr, uint64_t bytes) {
  if (!g_inited) return CUDA_ERROR_NOT_INITIALIZED;
  if (dev < 0) return CUDA_ERROR_INVALID_CONTEXT;
  if (!dptr || bytes == 0) return CUDA_ERROR_INVALID_VALUE;
  uint64_t p = Reserve(bytes);
  if (!p) return CUDA_ERROR_OUT_OF_MEMORY;
  {
    // The rest of a lazily initialised context appears with its first allocation.
    std::lock_guard<std::mutex> l(g_mu);
    if (uint64_t lazy = g_ctx_lazy[dev]) {
      g_ctx_lazy[dev] = 0;
      g_used[dev].fetch_add(lazy);
      DeviceAdd(dev, lazy);
      Publish();
    }
  }
  CUresult r = Take(dev, bytes, p);
  if (r != CUDA_SUCCESS) {
    munmap(reinterpret_cast<void*>(p), bytes);
    return r;
  }
  *dptr = p;
  return CUDA_SUCCESS;
}

CUresult CtxCreateOn(CUcontext* pctx, CUdevice dev, bool primary) {
  if (!g_inited) return CUDA_ERROR_NOT_INITIALIZED;
  int phys = Phys(dev);
  if (phys < 0) return CUDA_ERROR_INVALID_DEVICE;
  std::lock_guard<std::mutex> l(g_mu);
  if (!primary || g_ctx_count[phys]++ == 0) {
    uint64_t c = CtxBytes();
    if (g_used[phys].load() + c > TotalBytes()) {
      if (primary) --g_ctx_count[phys];
      return CUDA_ERROR_OUT_OF_MEMORY;
    }
    const uint64_t early = CtxEarlyBytes();
    if (early > 0) {
      g_ctx_lazy[phys] += c - early;
      c = early;
    }
    g_used[phys].fetch_add(c);
    DeviceAdd(phys, c);
  }
  Ctx* ctx = primary ? &g_primary[dev] : new Ctx{dev, phys};
  g_primary[dev] = Ctx{dev, phys};
  *pctx = reinterpret_cast<CUcontext>(ctx);
  t_ctx = *pctx;
  Publish();
  return CUDA_SUCCESS;
}

}  // namespace

// Process exit: like the real driver, everything this process held goes back.
__attribute__((destructor)) static void FakeTeardown() {
  for (int d = 0; d < 8; ++d) {
    uint64_t u = g_used[d].exchange(0);
    if (u) DeviceSub(d, u);
  }
}

#define FAKE extern "C" __attribute__((visibility("default")))

FAKE CUresult cuInit(unsigned int) {
  g_inited = true;
  return CUDA_SUCCESS;
}
FAKE CUresult cuDriverGetVersion(int* v) {
  *v = 13000;
  return CUDA_SUCCESS;
}
FAKE CUresult cuDeviceGetCount(int* n) {
  if (!g_inited) return CUDA_ERROR_NOT_INITIALIZED;
  *n = VisibleDevices().count;
  return CUDA_SUCCESS;
}
FAKE CUresult cuDeviceGet(CUdevice* d, int ordinal) {
  if (!g_inited) return CUDA_ERROR_NOT_INITIALIZED;
  if (Phys(ordinal) < 0) return CUDA_ERROR_INVALID_DEVICE;
  *d = ordinal;
  return CUDA_SUCCESS;
}
FAKE CUresult cuDeviceGetUuid(CUuuid* u, CUdevice d) {
  if (Phys(d) < 0) return CUDA_ERROR_INVALID_DEVICE;
  UuidBytes(Phys(d), reinterpret_cast<unsigned char*>(u->bytes));
  return CUDA_SUCCESS;
}
FAKE CUresult cuDeviceGetUuid_v2(CUuuid* u, CUdevice d) { return cuDeviceGetUuid(u, d); }
FAKE CUresult cuDeviceTotalMem_v2(size_t* b, CUdevice) {
  *b = TotalBytes();
  return CUDA_SUCCESS;
}
FAKE CUresult cuDeviceTotalMem(unsigned int* b, CUdevice) {
  *b = static_cast<unsigned int>(TotalBytes() > 0xffffffffu ? 0xffffffffu : TotalBytes());
  return CUDA_SUCCESS;
}
FAKE CUresult cuDevicePrimaryCtxRetain(CUcontext* pctx, CUdevice dev) { return CtxCreateOn(pctx, dev, true); }
FAKE CUresult cuDevicePrimaryCtxRelease_v2(CUdevice) { return CUDA_SUCCESS; }
FAKE CUresult cuCtxCreate(CUcontext* pctx, unsigned int, CUdevice dev) { return CtxCreateOn(pctx, dev, false); }
FAKE CUresult cuCtxCreate_v2(CUcontext* pctx, unsigned int, CUdevice dev) { return CtxCreateOn(pctx, dev, false); }
FAKE CUresult cuCtxCreate_v3(CUcontext* pctx, CUexecAffinityParam*, int, unsigned int, CUdevice dev) {
  return CtxCreateOn(pctx, dev, false);
}
FAKE CUresult cuCtxCreate_v4(CUcontext* pctx, CUctxCreateParams*, unsigned int, CUdevice dev) {
  return CtxCreateOn(pctx, dev, false);
}
FAKE CUresult cuCtxDestroy_v2(CUcontext) { return CUDA_SUCCESS; }
FAKE CUresult cuCtxSetCurrent(CUcontext c) {
  t_ctx = c;
  return CUDA_SUCCESS;
}
FAKE CUresult cuCtxGetCurrent(CUcontext* c) {
  *c = t_ctx;
  return CUDA_SUCCESS;
}
FAKE CUresult cuCtxGetDevice(CUdevice* d) {
  if (!t_ctx) return CUDA_ERROR_INVALID_CONTEXT;
  *d = reinterpret_cast<Ctx*>(t_ctx)->dev;
  return CUDA_SUCCESS;
}

FAKE CUresult cuMemAlloc_v2(CUdeviceptr* dptr, size_t bytes) { return AllocOn(CurDev(), dptr, bytes); }
FAKE CUresult cuMemAlloc(devptr_v1* dptr, unsigned int bytes) {
  CUdeviceptr p;
  CUresult r = AllocOn(CurDev(), &p, bytes);
  if (r == CUDA_SUCCESS) *dptr = static_cast<devptr_v1>(p);  // the test only compares what it gets back
  if (r == CUDA_SUCCESS) {
    std::lock_guard<std::mutex> l(g_mu);
    auto v = (*g_allocs)[p];
    g_allocs->erase(p);
    (*g_allocs)[static_cast<devptr_v1>(p)] = v;
  }
  return r;
}
FAKE CUresult cuMemAllocManaged(CUdeviceptr* dptr, size_t bytes, unsigned int) { return AllocOn(CurDev(), dptr, bytes); }
FAKE CUresult cuMemAllocPitch_v2(CUdeviceptr* dptr, size_t* pitch, size_t w, size_t h, unsigned int) {
  size_t p = (w + 511) / 512 * 512;
  CUresult r = AllocOn(CurDev(), dptr, p * (h ? h : 1));
  if (r == CUDA_SUCCESS) *pitch = p;
  return r;
}
FAKE CUresult cuMemAllocPitch(devptr_v1* dptr, unsigned int* pitch, unsigned int w, unsigned int h, unsigned int e) {
  CUdeviceptr p;
  size_t pp;
  CUresult r = cuMemAllocPitch_v2(&p, &pp, w, h, e);
  if (r == CUDA_SUCCESS) {
    *pitch = static_cast<unsigned int>(pp);
    std::lock_guard<std::mutex> l(g_mu);
    auto v = (*g_allocs)[p];
    g_allocs->erase(p);
    (*g_allocs)[static_cast<devptr_v1>(p)] = v;
    *dptr = static_cast<devptr_v1>(p);
  }
  return r;
}
FAKE CUresult cuMemFree_v2(CUdeviceptr p) { return Give(p); }
FAKE CUresult cuMemFree(devptr_v1 p) { return Give(p); }
FAKE CUresult cuMemAllocAsync(CUdeviceptr* dptr, size_t bytes, CUstream) { return AllocOn(CurDev(), dptr, bytes); }
FAKE CUresult cuMemAllocAsync_ptsz(CUdeviceptr* dptr, size_t bytes, CUstream) { return AllocOn(CurDev(), dptr, bytes); }
FAKE CUresult cuMemAllocFromPoolAsync(CUdeviceptr* dptr, size_t bytes, CUmemoryPool, CUstream) {
  return AllocOn(CurDev(), dptr, bytes);
}
FAKE CUresult cuMemAllocFromPoolAsync_ptsz(CUdeviceptr* dptr, size_t bytes, CUmemoryPool, CUstream) {
  return AllocOn(CurDev(), dptr, bytes);
}
FAKE CUresult cuMemFreeAsync(CUdeviceptr p, CUstream) { return Give(p); }
FAKE CUresult cuMemFreeAsync_ptsz(CUdeviceptr p, CUstream) { return Give(p); }
FAKE CUresult cuMemPoolTrimTo(CUmemoryPool, size_t) { return CUDA_SUCCESS; }
FAKE CUresult cuMemCreate(CUmemGenericAllocationHandle* h, size_t size, const CUmemAllocationProp* prop,
                          unsigned long long) {
  if (!prop || Phys(prop->location.id) < 0) return CUDA_ERROR_INVALID_DEVICE;
  uint64_t key = g_next_handle.fetch_add(1);
  CUresult r = Take(Phys(prop->location.id), size, key);
  if (r == CUDA_SUCCESS) *h = key;
  return r;
}
FAKE CUresult cuMemRelease(CUmemGenericAllocationHandle h) { return Give(h); }

namespace {
uint64_t Fmt(CUarray_format f) {
  switch (f) {
    case CU_AD_FORMAT_UNSIGNED_INT8: return 1;
    case CU_AD_FORMAT_HALF: return 2;
    default: return 4;
  }
}
}  // namespace
FAKE CUresult cuArrayCreate_v2(CUarray* a, const CUDA_ARRAY_DESCRIPTOR* d) {
  uint64_t bytes = d->Width * (d->Height ? d->Height : 1) * d->NumChannels * Fmt(d->Format);
  uint64_t key = g_next_handle.fetch_add(1) << 4;
  CUresult r = Take(CurDev(), bytes, key);
  if (r == CUDA_SUCCESS) *a = reinterpret_cast<CUarray>(key);
  return r;
}
FAKE CUresult cuArray3DCreate_v2(CUarray* a, const CUDA_ARRAY3D_DESCRIPTOR* d) {
  uint64_t bytes = d->Width * (d->Height ? d->Height : 1) * (d->Depth ? d->Depth : 1) * d->NumChannels * Fmt(d->Format);
  uint64_t key = g_next_handle.fetch_add(1) << 4;
  CUresult r = Take(CurDev(), bytes, key);
  if (r == CUDA_SUCCESS) *a = reinterpret_cast<CUarray>(key);
  return r;
}
// The pre-3.2 ABI: the same arrays described with unsigned int extents.
FAKE CUresult cuArrayCreate(CUarray* a, const ArrayDescV1* d) {
  CUDA_ARRAY_DESCRIPTOR v2{d->Width, d->Height, d->Format, d->NumChannels};
  return cuArrayCreate_v2(a, &v2);
}
FAKE CUresult cuArray3DCreate(CUarray* a, const Array3DDescV1* d) {
  CUDA_ARRAY3D_DESCRIPTOR v2{d->Width, d->Height, d->Depth, d->Format, d->NumChannels, d->Flags};
  return cuArray3DCreate_v2(a, &v2);
}
FAKE CUresult cuArrayDestroy(CUarray a) { return Give(reinterpret_cast<uint64_t>(a)); }
FAKE CUresult cuArrayGetMemoryRequirements(CUDA_ARRAY_MEMORY_REQUIREMENTS* req, CUarray a, CUdevice) {
  std::lock_guard<std::mutex> l(g_mu);
  auto it = g_allocs->find(reinterpret_cast<uint64_t>(a));
  if (it == g_allocs->end()) return CUDA_ERROR_INVALID_HANDLE;
  req->size = it->second.first;
  req->alignment = 512;
  return CUDA_SUCCESS;
}
FAKE CUresult cuMipmappedArrayCreate(CUmipmappedArray* a, const CUDA_ARRAY3D_DESCRIPTOR* d, unsigned int levels) {
  uint64_t bytes = 0, w = d->Width, h = d->Height ? d->Height : 1;
  for (unsigned l = 0; l < levels; ++l) {
    bytes += w * h * d->NumChannels * Fmt(d->Format);
    w = w > 1 ? w / 2 : 1;
    h = h > 1 ? h / 2 : 1;
  }
  uint64_t key = g_next_handle.fetch_add(1) << 4;
  CUresult r = Take(CurDev(), bytes, key);
  if (r == CUDA_SUCCESS) *a = reinterpret_cast<CUmipmappedArray>(key);
  return r;
}
FAKE CUresult cuMipmappedArrayDestroy(CUmipmappedArray a) { return Give(reinterpret_cast<uint64_t>(a)); }
FAKE CUresult cuGraphAddMemAllocNode(CUgraphNode* node, CUgraph, const CUgraphNode*, size_t,
                                     CUDA_MEM_ALLOC_NODE_PARAMS* p) {
  // Like the real driver, the address is fixed at node creation; the memory is backed when the graph
  // runs. The fake backs it at once, which is what a launched graph holds.
  CUdeviceptr d;
  CUresult r = AllocOn(Phys(p->poolProps.location.id), &d, p->bytesize);
  if (r == CUDA_SUCCESS) {
    p->dptr = d;
    *node = reinterpret_cast<CUgraphNode>(d);
  }
  return r;
}
FAKE CUresult cuGraphAddMemFreeNode(CUgraphNode* node, CUgraph, const CUgraphNode*, size_t, CUdeviceptr d) {
  *node = reinterpret_cast<CUgraphNode>(d);
  return Give(d);
}
FAKE CUresult cuMemGetInfo_v2(size_t* free_b, size_t* total_b) {
  int d = CurDev();
  if (d < 0) return CUDA_ERROR_INVALID_CONTEXT;
  *total_b = TotalBytes();
  *free_b = TotalBytes() - g_used[d].load();
  return CUDA_SUCCESS;
}
FAKE CUresult cuMemGetInfo(unsigned int* free_b, unsigned int* total_b) {
  size_t f, t;
  CUresult r = cuMemGetInfo_v2(&f, &t);
  if (r == CUDA_SUCCESS) {
    *free_b = static_cast<unsigned int>(f > 0xffffffffu ? 0xffffffffu : f);
    *total_b = static_cast<unsigned int>(t > 0xffffffffu ? 0xffffffffu : t);
  }
  return r;
}

FAKE CUresult cuLaunchKernel(CUfunction, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned, CUstream,
                             void**, void**) {
  g_launches.fetch_add(1);
  return CUDA_SUCCESS;
}
FAKE CUresult cuLaunchKernel_ptsz(CUfunction, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned,
                                  CUstream, void**, void**) {
  g_launches.fetch_add(1);
  return CUDA_SUCCESS;
}
FAKE CUresult cuLaunchKernelEx(const CUlaunchConfig*, CUfunction, void**, void**) {
  g_launches.fetch_add(1);
  return CUDA_SUCCESS;
}
FAKE CUresult cuLaunchKernelEx_ptsz(const CUlaunchConfig*, CUfunction, void**, void**) {
  g_launches.fetch_add(1);
  return CUDA_SUCCESS;
}
FAKE CUresult cuLaunchCooperativeKernel(CUfunction, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned,
                                        unsigned, CUstream, void**) {
  g_launches.fetch_add(1);
  return CUDA_SUCCESS;
}
FAKE CUresult cuLaunchCooperativeKernel_ptsz(CUfunction, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned,
                                             unsigned, CUstream, void**) {
  g_launches.fetch_add(1);
  return CUDA_SUCCESS;
}
FAKE CUresult cuGraphLaunch(CUgraphExec, CUstream) {
  g_launches.fetch_add(1);
  return CUDA_SUCCESS;
}
FAKE CUresult cuGraphLaunch_ptsz(CUgraphExec, CUstream) {
  g_launches.fetch_add(1);
  return CUDA_SUCCESS;
}
// Test hook: how many launches reached the "driver".
FAKE unsigned long long fakeCudaLaunchCount() { return g_launches.load(); }

FAKE CUresult cuEventCreate(CUevent* e, unsigned int) {
  *e = reinterpret_cast<CUevent>(g_next_handle.fetch_add(1));
  return CUDA_SUCCESS;
}
FAKE CUresult cuEventDestroy_v2(CUevent) { return CUDA_SUCCESS; }
FAKE CUresult cuEventRecord(CUevent, CUstream) { return CUDA_SUCCESS; }
FAKE CUresult cuEventRecord_ptsz(CUevent, CUstream) { return CUDA_SUCCESS; }
FAKE CUresult cuEventQuery(CUevent) { return CUDA_SUCCESS; }
FAKE CUresult cuEventSynchronize(CUevent) { return CUDA_SUCCESS; }
FAKE CUresult cuEventElapsedTime(float* ms, CUevent, CUevent) {
  *ms = 0.01f;
  return CUDA_SUCCESS;
}
FAKE CUresult cuEventElapsedTime_v2(float* ms, CUevent a, CUevent b) { return cuEventElapsedTime(ms, a, b); }
FAKE CUresult cuStreamQuery(CUstream) { return CUDA_SUCCESS; }
FAKE CUresult cuStreamQuery_ptsz(CUstream) { return CUDA_SUCCESS; }
FAKE CUresult cuStreamSynchronize(CUstream) { return CUDA_SUCCESS; }
FAKE CUresult cuStreamIsCapturing(CUstream, CUstreamCaptureStatus* s) {
  *s = CU_STREAM_CAPTURE_STATUS_NONE;
  return CUDA_SUCCESS;
}
FAKE CUresult cuStreamIsCapturing_ptsz(CUstream s, CUstreamCaptureStatus* st) { return cuStreamIsCapturing(s, st); }
FAKE CUresult cuStreamGetCtx(CUstream, CUcontext* c) {
  *c = t_ctx;
  return CUDA_SUCCESS;
}
FAKE CUresult cuStreamCreate(CUstream* s, unsigned int) {
  *s = reinterpret_cast<CUstream>(g_next_handle.fetch_add(1));
  return CUDA_SUCCESS;
}
FAKE CUresult cuStreamDestroy_v2(CUstream) { return CUDA_SUCCESS; }
FAKE CUresult cuModuleLoadData(CUmodule* m, const void*) {
  *m = reinterpret_cast<CUmodule>(g_next_handle.fetch_add(1));
  return CUDA_SUCCESS;
}
FAKE CUresult cuModuleUnload(CUmodule) { return CUDA_SUCCESS; }
FAKE CUresult cuModuleGetFunction(CUfunction* f, CUmodule, const char*) {
  *f = reinterpret_cast<CUfunction>(g_next_handle.fetch_add(1));
  return CUDA_SUCCESS;
}
FAKE CUresult cuGetErrorString(CUresult, const char** s) {
  *s = "fake error";
  return CUDA_SUCCESS;
}

namespace {
struct Sym {
  const char* name;
  void* fn;
};
// Addresses bind inside this library (-Bsymbolic), so they are the fake's own functions even when a
// preloaded shim exports the same names.
const Sym kSyms[] = {
    {"cuInit", reinterpret_cast<void*>(&cuInit)},
    {"cuDriverGetVersion", reinterpret_cast<void*>(&cuDriverGetVersion)},
    {"cuDeviceGetCount", reinterpret_cast<void*>(&cuDeviceGetCount)},
    {"cuDeviceGet", reinterpret_cast<void*>(&cuDeviceGet)},
    {"cuDeviceGetUuid", reinterpret_cast<void*>(&cuDeviceGetUuid)},
    {"cuDeviceGetUuid_v2", reinterpret_cast<void*>(&cuDeviceGetUuid_v2)},
    {"cuDeviceTotalMem_v2", reinterpret_cast<void*>(&cuDeviceTotalMem_v2)},
    {"cuDeviceTotalMem", reinterpret_cast<void*>(&cuDeviceTotalMem)},
    {"cuDevicePrimaryCtxRetain", reinterpret_cast<void*>(&cuDevicePrimaryCtxRetain)},
    {"cuDevicePrimaryCtxRelease_v2", reinterpret_cast<void*>(&cuDevicePrimaryCtxRelease_v2)},
    {"cuCtxCreate", reinterpret_cast<void*>(&cuCtxCreate)},
    {"cuCtxCreate_v2", reinterpret_cast<void*>(&cuCtxCreate_v2)},
    {"cuCtxCreate_v3", reinterpret_cast<void*>(&cuCtxCreate_v3)},
    {"cuCtxCreate_v4", reinterpret_cast<void*>(&cuCtxCreate_v4)},
    {"cuCtxDestroy_v2", reinterpret_cast<void*>(&cuCtxDestroy_v2)},
    {"cuCtxSetCurrent", reinterpret_cast<void*>(&cuCtxSetCurrent)},
    {"cuCtxGetCurrent", reinterpret_cast<void*>(&cuCtxGetCurrent)},
    {"cuCtxGetDevice", reinterpret_cast<void*>(&cuCtxGetDevice)},
    {"cuMemAlloc_v2", reinterpret_cast<void*>(&cuMemAlloc_v2)},
    {"cuMemAlloc", reinterpret_cast<void*>(&cuMemAlloc)},
    {"cuMemAllocManaged", reinterpret_cast<void*>(&cuMemAllocManaged)},
    {"cuMemAllocPitch_v2", reinterpret_cast<void*>(&cuMemAllocPitch_v2)},
    {"cuMemAllocPitch", reinterpret_cast<void*>(&cuMemAllocPitch)},
    {"cuMemFree_v2", reinterpret_cast<void*>(&cuMemFree_v2)},
    {"cuMemFree", reinterpret_cast<void*>(&cuMemFree)},
    {"cuMemAllocAsync", reinterpret_cast<void*>(&cuMemAllocAsync)},
    {"cuMemAllocAsync_ptsz", reinterpret_cast<void*>(&cuMemAllocAsync_ptsz)},
    {"cuMemAllocFromPoolAsync", reinterpret_cast<void*>(&cuMemAllocFromPoolAsync)},
    {"cuMemAllocFromPoolAsync_ptsz", reinterpret_cast<void*>(&cuMemAllocFromPoolAsync_ptsz)},
    {"cuMemFreeAsync", reinterpret_cast<void*>(&cuMemFreeAsync)},
    {"cuMemFreeAsync_ptsz", reinterpret_cast<void*>(&cuMemFreeAsync_ptsz)},
    {"cuMemPoolTrimTo", reinterpret_cast<void*>(&cuMemPoolTrimTo)},
    {"cuMemCreate", reinterpret_cast<void*>(&cuMemCreate)},
    {"cuMemRelease", reinterpret_cast<void*>(&cuMemRelease)},
    {"cuArrayCreate_v2", reinterpret_cast<void*>(&cuArrayCreate_v2)},
    {"cuArrayCreate", reinterpret_cast<void*>(&cuArrayCreate)},
    {"cuArray3DCreate_v2", reinterpret_cast<void*>(&cuArray3DCreate_v2)},
    {"cuArray3DCreate", reinterpret_cast<void*>(&cuArray3DCreate)},
    {"cuArrayDestroy", reinterpret_cast<void*>(&cuArrayDestroy)},
    {"cuArrayGetMemoryRequirements", reinterpret_cast<void*>(&cuArrayGetMemoryRequirements)},
    {"cuMipmappedArrayCreate", reinterpret_cast<void*>(&cuMipmappedArrayCreate)},
    {"cuMipmappedArrayDestroy", reinterpret_cast<void*>(&cuMipmappedArrayDestroy)},
    {"cuGraphAddMemAllocNode", reinterpret_cast<void*>(&cuGraphAddMemAllocNode)},
    {"cuGraphAddMemFreeNode", reinterpret_cast<void*>(&cuGraphAddMemFreeNode)},
    {"cuMemGetInfo_v2", reinterpret_cast<void*>(&cuMemGetInfo_v2)},
    {"cuMemGetInfo", reinterpret_cast<void*>(&cuMemGetInfo)},
    {"cuLaunchKernel", reinterpret_cast<void*>(&cuLaunchKernel)},
    {"cuLaunchKernel_ptsz", reinterpret_cast<void*>(&cuLaunchKernel_ptsz)},
    {"cuLaunchKernelEx", reinterpret_cast<void*>(&cuLaunchKernelEx)},
    {"cuLaunchKernelEx_ptsz", reinterpret_cast<void*>(&cuLaunchKernelEx_ptsz)},
    {"cuLaunchCooperativeKernel", reinterpret_cast<void*>(&cuLaunchCooperativeKernel)},
    {"cuLaunchCooperativeKernel_ptsz", reinterpret_cast<void*>(&cuLaunchCooperativeKernel_ptsz)},
    {"cuGraphLaunch", reinterpret_cast<void*>(&cuGraphLaunch)},
    {"cuGraphLaunch_ptsz", reinterpret_cast<void*>(&cuGraphLaunch_ptsz)},
    {"cuEventCreate", reinterpret_cast<void*>(&cuEventCreate)},
    {"cuEventDestroy_v2", reinterpret_cast<void*>(&cuEventDestroy_v2)},
    {"cuEventRecord", reinterpret_cast<void*>(&cuEventRecord)},
    {"cuEventRecord_ptsz", reinterpret_cast<void*>(&cuEventRecord_ptsz)},
    {"cuEventQuery", reinterpret_cast<void*>(&cuEventQuery)},
    {"cuEventSynchronize", reinterpret_cast<void*>(&cuEventSynchronize)},
    {"cuEventElapsedTime", reinterpret_cast<void*>(&cuEventElapsedTime)},
    {"cuEventElapsedTime_v2", reinterpret_cast<void*>(&cuEventElapsedTime_v2)},
    {"cuStreamQuery", reinterpret_cast<void*>(&cuStreamQuery)},
    {"cuStreamQuery_ptsz", reinterpret_cast<void*>(&cuStreamQuery_ptsz)},
    {"cuStreamSynchronize", reinterpret_cast<void*>(&cuStreamSynchronize)},
    {"cuStreamIsCapturing", reinterpret_cast<void*>(&cuStreamIsCapturing)},
    {"cuStreamIsCapturing_ptsz", reinterpret_cast<void*>(&cuStreamIsCapturing_ptsz)},
    {"cuStreamGetCtx", reinterpret_cast<void*>(&cuStreamGetCtx)},
    {"cuGetErrorString", reinterpret_cast<void*>(&cuGetErrorString)},
    {"cuStreamCreate", reinterpret_cast<void*>(&cuStreamCreate)},
    {"cuStreamDestroy_v2", reinterpret_cast<void*>(&cuStreamDestroy_v2)},
    {"cuModuleLoadData", reinterpret_cast<void*>(&cuModuleLoadData)},
    {"cuModuleUnload", reinterpret_cast<void*>(&cuModuleUnload)},
    {"cuModuleGetFunction", reinterpret_cast<void*>(&cuModuleGetFunction)},
    {"cuGetProcAddress", nullptr},
    {"cuGetProcAddress_v2", nullptr},
};
void* SelfSym(const char* name);
}  // namespace

// ---- cuGetProcAddress: ABI variant selection like the real driver -----------------------------------------------

namespace {
struct Variant {
  const char* base;
  const char* sym;
  int min_version;  // first CUDA version (x1000 + y10) this variant is handed out for
  bool per_thread;  // selected by CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM
};
const Variant kVariants[] = {
    {"cuMemAlloc", "cuMemAlloc", 0, false},
    {"cuMemAlloc", "cuMemAlloc_v2", 3020, false},
    {"cuMemAllocPitch", "cuMemAllocPitch", 0, false},
    {"cuMemAllocPitch", "cuMemAllocPitch_v2", 3020, false},
    {"cuMemFree", "cuMemFree", 0, false},
    {"cuMemFree", "cuMemFree_v2", 3020, false},
    {"cuMemGetInfo", "cuMemGetInfo", 0, false},
    {"cuMemGetInfo", "cuMemGetInfo_v2", 3020, false},
    {"cuDeviceTotalMem", "cuDeviceTotalMem", 0, false},
    {"cuDeviceTotalMem", "cuDeviceTotalMem_v2", 3020, false},
    {"cuCtxCreate", "cuCtxCreate", 2000, false},
    {"cuCtxCreate", "cuCtxCreate_v2", 3020, false},
    {"cuCtxCreate", "cuCtxCreate_v3", 11040, false},
    {"cuCtxCreate", "cuCtxCreate_v4", 12050, false},
    {"cuArrayCreate", "cuArrayCreate", 2000, false},
    {"cuArrayCreate", "cuArrayCreate_v2", 3020, false},
    {"cuArray3DCreate", "cuArray3DCreate", 2000, false},
    {"cuArray3DCreate", "cuArray3DCreate_v2", 3020, false},
    {"cuDeviceGetUuid", "cuDeviceGetUuid", 9020, false},
    {"cuDeviceGetUuid", "cuDeviceGetUuid_v2", 11040, false},
    {"cuCtxDestroy", "cuCtxDestroy_v2", 4000, false},
    {"cuDevicePrimaryCtxRelease", "cuDevicePrimaryCtxRelease_v2", 11000, false},
    {"cuEventDestroy", "cuEventDestroy_v2", 4000, false},
    {"cuEventElapsedTime", "cuEventElapsedTime", 2000, false},
    {"cuEventElapsedTime", "cuEventElapsedTime_v2", 12080, false},
    {"cuGetProcAddress", "cuGetProcAddress", 11030, false},
    {"cuGetProcAddress", "cuGetProcAddress_v2", 12000, false},
    {"cuLaunchKernel", "cuLaunchKernel", 4000, false},
    {"cuLaunchKernel", "cuLaunchKernel_ptsz", 7000, true},
    {"cuLaunchKernelEx", "cuLaunchKernelEx", 11060, false},
    {"cuLaunchKernelEx", "cuLaunchKernelEx_ptsz", 11060, true},
    {"cuLaunchCooperativeKernel", "cuLaunchCooperativeKernel", 9000, false},
    {"cuLaunchCooperativeKernel", "cuLaunchCooperativeKernel_ptsz", 9000, true},
    {"cuGraphLaunch", "cuGraphLaunch", 10000, false},
    {"cuGraphLaunch", "cuGraphLaunch_ptsz", 10000, true},
    {"cuMemAllocAsync", "cuMemAllocAsync", 11020, false},
    {"cuMemAllocAsync", "cuMemAllocAsync_ptsz", 11020, true},
    {"cuMemAllocFromPoolAsync", "cuMemAllocFromPoolAsync", 11020, false},
    {"cuMemAllocFromPoolAsync", "cuMemAllocFromPoolAsync_ptsz", 11020, true},
    {"cuMemFreeAsync", "cuMemFreeAsync", 11020, false},
    {"cuMemFreeAsync", "cuMemFreeAsync_ptsz", 11020, true},
    {"cuEventRecord", "cuEventRecord", 2000, false},
    {"cuEventRecord", "cuEventRecord_ptsz", 7000, true},
    {"cuStreamQuery", "cuStreamQuery", 2000, false},
    {"cuStreamQuery", "cuStreamQuery_ptsz", 7000, true},
    {"cuStreamIsCapturing", "cuStreamIsCapturing", 10000, false},
    {"cuStreamIsCapturing", "cuStreamIsCapturing_ptsz", 10000, true},
};

CUresult MemAllocAlias(CUdeviceptr* p, size_t n) { return cuMemAlloc_v2(p, n); }

CUresult Lookup(const char* symbol, void** pfn, int version, cuuint64_t flags, CUdriverProcAddressQueryResult* st) {
  if (!symbol || !pfn) return CUDA_ERROR_INVALID_VALUE;
  bool ptsz = (flags & CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM) != 0;
  const Variant* best = nullptr;
  bool known = false;
  for (const Variant& v : kVariants) {
    if (strcmp(v.base, symbol) != 0) continue;
    known = true;
    if (v.min_version > version) continue;
    if (v.per_thread && !ptsz) continue;
    if (!best || v.per_thread > best->per_thread ||
        (v.per_thread == best->per_thread && v.min_version >= best->min_version))
      best = &v;
  }
  void* fn = nullptr;
  // FAKE_CUDA_PROCADDR_ALIAS: from 13010 on, cuMemAlloc is answered with an internal entry point that no
  // symbol names (as a newer driver may hand out a variant the shim has never heard of).
  if (getenv("FAKE_CUDA_PROCADDR_ALIAS") && strcmp(symbol, "cuMemAlloc") == 0 && version >= 13010) {
    *pfn = reinterpret_cast<void*>(&MemAllocAlias);
    if (st) *st = CU_GET_PROC_ADDRESS_SUCCESS;
    return CUDA_SUCCESS;
  }
  if (best) {
    fn = SelfSym(best->sym);
  } else if (!known) {
    fn = SelfSym(symbol);
  }
  if (!fn) {
    *pfn = nullptr;
    if (st) *st = known ? CU_GET_PROC_ADDRESS_VERSION_NOT_SUFFICIENT : CU_GET_PROC_ADDRESS_SYMBOL_NOT_FOUND;
    return CUDA_ERROR_NOT_FOUND;
  }
  *pfn = fn;
  if (st) *st = CU_GET_PROC_ADDRESS_SUCCESS;
  return CUDA_SUCCESS;
}
}  // namespace

FAKE CUresult cuGetProcAddress(const char* symbol, void** pfn, int version, cuuint64_t flags) {
  return Lookup(symbol, pfn, version, flags, nullptr);
}
FAKE CUresult cuGetProcAddress_v2(const char* symbol, void** pfn, int version, cuuint64_t flags,
                                  CUdriverProcAddressQueryResult* st) {
  return Lookup(symbol, pfn, version, flags, st);
}

namespace {
void* SelfSym(const char* name) {
  if (strcmp(name, "cuGetProcAddress") == 0) return reinterpret_cast<void*>(&cuGetProcAddress);
  if (strcmp(name, "cuGetProcAddress_v2") == 0) return reinterpret_cast<void*>(&cuGetProcAddress_v2);
  for (const Sym& s : kSyms)
    if (s.fn && strcmp(s.name, name) == 0) return s.fn;
  return nullptr;
}
}  // namespace
