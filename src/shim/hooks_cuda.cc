// CUDA driver API hooks: allocation, release, memory info, contexts, kernel submission.
#include <stdint.h>

#include "shim/hooks.h"
#include "shim/launch_gate.h"
#include "shim/shim.h"

namespace tessera::shim {
namespace {

// The charge sequence every allocating hook shares, for an allocation of `asked` bytes on slice GPU g:
// reserve the rounded size before the real call, return it when the driver fails, then let `commit`
// settle and record the allocation. commit(g, &charged) may move the charge to the driver's own figure
// (Settle) and returns false after releasing the allocation when it cannot be kept; whatever is charged
// then goes back. Inlined into each hook: no indirection on the allocation path.
template <typename Call, typename Commit>
inline CUresult ChargeAround(int g, uint64_t asked, const char* api, Call call, Commit commit) {
  if (g == kGpuUnknown) return call();  // no context: the driver reports its own error
  if (g == kGpuNotInSlice) {
    ReportRefusal(g, asked, api, "this GPU is not part of the slice");
    return CUDA_ERROR_OUT_OF_MEMORY;
  }
  OpScope op(g);
  uint64_t charged = ChargeSize(asked);
  if (!Charge(g, charged, asked, api)) return CUDA_ERROR_OUT_OF_MEMORY;
  CUresult r = call();
  if (r != CUDA_SUCCESS) {
    Uncharge(g, charged);
    return r;
  }
  if (!commit(g, &charged)) {
    Uncharge(g, charged);
    return CUDA_ERROR_OUT_OF_MEMORY;
  }
  return r;
}

// Moves the charge from *charged to `actual` (the driver's figure, rounded); false when the growth does
// not fit, with *charged unchanged.
inline bool Settle(int g, uint64_t* charged, uint64_t actual, uint64_t asked, const char* api) {
  if (actual > *charged) {
    if (!Charge(g, actual - *charged, asked, api)) return false;
  } else if (actual < *charged) {
    Uncharge(g, *charged - actual);
  }
  *charged = actual;
  return true;
}

// Records the allocation so its free returns exactly the charge. When the table is full the free could
// never return it, so the wall stays honest by refusing (the caller releases the allocation).
inline bool Track(Kind kind, uint64_t key, uint64_t charged, int g, uint64_t asked, const char* api) {
  if (TrackAlloc(kind, key, charged, g)) return true;
  ReportRefusal(g, asked, api, "allocation table full");
  return false;
}

// Every "allocate n bytes on the current device" entry point: `call` makes the real call, which stores
// the new pointer in *dptr.
template <typename P, typename Call>
CUresult AllocOnCurrent(P* dptr, uint64_t asked, const char* api, Call call) {
  if (!Enforcing()) return call();
  return ChargeAround(CurrentGpu(), asked, api, call, [&](int g, uint64_t* charged) {
    uint64_t key = static_cast<uint64_t>(*dptr);
    if (Track(Kind::kDevPtr, key, *charged, g, asked, api)) return true;
    g_real.cuMemFree_v2(static_cast<CUdeviceptr>(key));
    return false;
  });
}

// Release: forget the charge first (so a concurrent reuse of the address by another thread cannot
// collide with our entry), put it back if the driver refuses the free.
template <typename Call>
CUresult FreeTracked(Kind kind, uint64_t key, Call call) {
  uint64_t bytes = 0;
  int g = -1;
  bool had = key != 0 && UntrackAlloc(kind, key, &bytes, &g);
  if (!had && kind == Kind::kDevPtr && key != 0) had = UntrackAlloc(Kind::kGraph, key, &bytes, &g);
  OpScope op(had ? g : -1);
  CUresult r = call();
  if (had) {
    if (r == CUDA_SUCCESS)
      Uncharge(g, bytes);
    else
      TrackAlloc(kind, key, bytes, g);
  }
  return r;
}

uint64_t FormatBytes(CUarray_format f) {
  switch (f) {
    case CU_AD_FORMAT_UNSIGNED_INT8:
    case CU_AD_FORMAT_SIGNED_INT8:
      return 1;
    case CU_AD_FORMAT_UNSIGNED_INT16:
    case CU_AD_FORMAT_SIGNED_INT16:
    case CU_AD_FORMAT_HALF:
      return 2;
    case CU_AD_FORMAT_UNSIGNED_INT32:
    case CU_AD_FORMAT_SIGNED_INT32:
    case CU_AD_FORMAT_FLOAT:
      return 4;
    default:
      return 16;  // packed/compressed formats: over-estimate; the driver's requirement corrects it
  }
}

// Estimates from a descriptor, for both ABIs (v1: unsigned int widths, v2: size_t); 0 without one.
template <typename Desc>
uint64_t Array2DBytes(const Desc* d) {
  if (!d) return 0;
  uint64_t w = d->Width, h = d->Height ? d->Height : 1;
  return w * h * d->NumChannels * FormatBytes(d->Format);
}
template <typename Desc>
uint64_t Array3DBytes(const Desc* d) {
  if (!d) return 0;
  uint64_t w = d->Width, h = d->Height ? d->Height : 1, z = d->Depth ? d->Depth : 1;
  return w * h * z * d->NumChannels * FormatBytes(d->Format);
}

// Arrays: charge the estimate, then settle to the driver's own figure when it can tell us.
template <typename Handle, typename Req>
bool SettleArray(int g, uint64_t* charged, Handle h, Req req_fn, uint64_t asked, const char* api) {
  if (!req_fn) return true;
  CUdevice dev;
  if (g_real.cuCtxGetDevice(&dev) != CUDA_SUCCESS) return true;
  CUDA_ARRAY_MEMORY_REQUIREMENTS req{};
  if (req_fn(&req, h, dev) != CUDA_SUCCESS || req.size == 0) return true;
  return Settle(g, charged, ChargeSize(req.size), asked, api);
}

template <typename Handle, typename Create, typename Destroy, typename Req>
CUresult ArrayCommon(Handle* out, uint64_t estimate, Kind kind, const char* api, Create create,
                     Destroy destroy, Req req_fn) {
  if (!Enforcing()) return create();
  return ChargeAround(CurrentGpu(), estimate, api, create, [&](int g, uint64_t* charged) {
    if (SettleArray(g, charged, *out, req_fn, estimate, api) &&
        Track(kind, reinterpret_cast<uint64_t>(*out), *charged, g, estimate, api))
      return true;
    destroy(*out);
    return false;
  });
}

template <typename Create>
CUresult ContextCommon(CUdevice dev, const char* api, Create create) {
  EnsureInit();
  if (CurrentMode() != Mode::kActive) return create();
  int g = GpuOfDevice(dev);
  bool charged = false;
  if (!ContextBefore(g, api, &charged)) return CUDA_ERROR_OUT_OF_MEMORY;
  CUresult r = create();
  ContextAfter(g, charged, r);
  return r;
}

void ClampInfo(uint64_t* free_b, uint64_t* total_b, int g) {
  uint64_t limit = 0, used = 0;
  SliceMemInfo(g, &limit, &used);
  uint64_t room = limit > used ? limit - used : 0;
  *total_b = limit;
  if (*free_b > room) *free_b = room;
}

std::atomic<int> g_gate_init{0};

}  // namespace
}  // namespace tessera::shim

using namespace tessera::shim;

// ---- Start-up and contexts --------------------------------------------------------------------------------

extern "C" CUresult tsr_cuInit(unsigned int flags) {
  EnsureInit();
  if (!ResolveReal() || !g_real.cuInit) return CUDA_ERROR_STUB_LIBRARY;
  CUresult r = g_real.cuInit(flags);
  if (r == CUDA_SUCCESS && CurrentMode() == Mode::kActive) {
    // The limiter is set up once, before the application's first cuInit returns.
    int expect = 0;
    if (g_gate_init.compare_exchange_strong(expect, 1)) {
      LaunchGateInit(Config(), RegionHdr());
      g_gate_init.store(2);
    } else {
      while (g_gate_init.load() != 2) sched_yield();
    }
  }
  return r;
}

extern "C" CUresult tsr_cuDevicePrimaryCtxRetain(CUcontext* pctx, CUdevice dev) {
  return ContextCommon(dev, "cuDevicePrimaryCtxRetain",
                       [&] { return g_real.cuDevicePrimaryCtxRetain(pctx, dev); });
}
// The CUDA 3.1 ABI context (the unversioned export; cuGetProcAddress below 3020): the only kind of
// context the v1 array and memory calls accept.
extern "C" CUresult tsr_cuCtxCreate(CUcontext* pctx, unsigned int flags, CUdevice dev) {
  return ContextCommon(dev, "cuCtxCreate(v1)", [&] { return g_real.cuCtxCreate(pctx, flags, dev); });
}
extern "C" CUresult tsr_cuCtxCreate_v2(CUcontext* pctx, unsigned int flags, CUdevice dev) {
  return ContextCommon(dev, "cuCtxCreate", [&] { return g_real.cuCtxCreate_v2(pctx, flags, dev); });
}
extern "C" CUresult tsr_cuCtxCreate_v3(CUcontext* pctx, CUexecAffinityParam* params, int n,
                                       unsigned int flags, CUdevice dev) {
  return ContextCommon(dev, "cuCtxCreate_v3",
                       [&] { return g_real.cuCtxCreate_v3(pctx, params, n, flags, dev); });
}
extern "C" CUresult tsr_cuCtxCreate_v4(CUcontext* pctx, CUctxCreateParams* params, unsigned int flags,
                                       CUdevice dev) {
  return ContextCommon(dev, "cuCtxCreate_v4",
                       [&] { return g_real.cuCtxCreate_v4(pctx, params, flags, dev); });
}

// ---- Allocation -------------------------------------------------------------------------------------------

extern "C" CUresult tsr_cuMemAlloc_v2(CUdeviceptr* dptr, size_t bytes) {
  return AllocOnCurrent(dptr, bytes, "cuMemAlloc", [&] { return g_real.cuMemAlloc_v2(dptr, bytes); });
}
extern "C" CUresult tsr_cuMemAlloc(tsr_devptr_v1* dptr, unsigned int bytes) {
  return AllocOnCurrent(dptr, bytes, "cuMemAlloc(v1)", [&] { return g_real.cuMemAlloc(dptr, bytes); });
}
extern "C" CUresult tsr_cuMemAllocManaged(CUdeviceptr* dptr, size_t bytes, unsigned int flags) {
  return AllocOnCurrent(dptr, bytes, "cuMemAllocManaged",
                        [&] { return g_real.cuMemAllocManaged(dptr, bytes, flags); });
}

namespace {
// Pitched allocations: the charge is made for the widest pitch the driver could pick, then settled to
// pitch * height once the driver has chosen.
template <typename P, typename Q, typename Call>
CUresult PitchCommon(P* dptr, Q* pitch, uint64_t width, uint64_t height, const char* api, Call call) {
  if (!Enforcing()) return call();
  uint64_t rows = height ? height : 1;
  uint64_t est = (width + 511) / 512 * 512 * rows;
  return ChargeAround(CurrentGpu(), est, api, call, [&](int g, uint64_t* charged) {
    if (Settle(g, charged, ChargeSize(static_cast<uint64_t>(*pitch) * rows), est, api) &&
        Track(Kind::kDevPtr, static_cast<uint64_t>(*dptr), *charged, g, est, api))
      return true;
    g_real.cuMemFree_v2(static_cast<CUdeviceptr>(*dptr));
    return false;
  });
}
}  // namespace

extern "C" CUresult tsr_cuMemAllocPitch_v2(CUdeviceptr* dptr, size_t* pitch, size_t width, size_t height,
                                           unsigned int elem) {
  return PitchCommon(dptr, pitch, width, height, "cuMemAllocPitch",
                     [&] { return g_real.cuMemAllocPitch_v2(dptr, pitch, width, height, elem); });
}
extern "C" CUresult tsr_cuMemAllocPitch(tsr_devptr_v1* dptr, unsigned int* pitch, unsigned int width,
                                        unsigned int height, unsigned int elem) {
  return PitchCommon(dptr, pitch, width, height, "cuMemAllocPitch(v1)",
                     [&] { return g_real.cuMemAllocPitch(dptr, pitch, width, height, elem); });
}

extern "C" CUresult tsr_cuMemFree_v2(CUdeviceptr dptr) {
  if (!Enforcing()) return g_real.cuMemFree_v2(dptr);
  return FreeTracked(Kind::kDevPtr, dptr, [&] { return g_real.cuMemFree_v2(dptr); });
}
extern "C" CUresult tsr_cuMemFree(tsr_devptr_v1 dptr) {
  if (!Enforcing()) return g_real.cuMemFree(dptr);
  return FreeTracked(Kind::kDevPtr, dptr, [&] { return g_real.cuMemFree(dptr); });
}

// Stream-ordered allocator. The charge is taken when the allocation is asked for and returned when its
// free is enqueued; memory the pool keeps cached beyond that is the driver's usage and is seen by the
// reconciler as overhead.
extern "C" CUresult tsr_cuMemAllocAsync(CUdeviceptr* dptr, size_t bytes, CUstream stream) {
  return AllocOnCurrent(dptr, bytes, "cuMemAllocAsync",
                        [&] { return g_real.cuMemAllocAsync(dptr, bytes, stream); });
}
extern "C" CUresult tsr_cuMemAllocAsync_ptsz(CUdeviceptr* dptr, size_t bytes, CUstream stream) {
  return AllocOnCurrent(dptr, bytes, "cuMemAllocAsync",
                        [&] { return g_real.cuMemAllocAsync_ptsz(dptr, bytes, stream); });
}
extern "C" CUresult tsr_cuMemAllocFromPoolAsync(CUdeviceptr* dptr, size_t bytes, CUmemoryPool pool,
                                                CUstream stream) {
  return AllocOnCurrent(dptr, bytes, "cuMemAllocFromPoolAsync",
                        [&] { return g_real.cuMemAllocFromPoolAsync(dptr, bytes, pool, stream); });
}
extern "C" CUresult tsr_cuMemAllocFromPoolAsync_ptsz(CUdeviceptr* dptr, size_t bytes, CUmemoryPool pool,
                                                     CUstream stream) {
  return AllocOnCurrent(dptr, bytes, "cuMemAllocFromPoolAsync",
                        [&] { return g_real.cuMemAllocFromPoolAsync_ptsz(dptr, bytes, pool, stream); });
}
extern "C" CUresult tsr_cuMemFreeAsync(CUdeviceptr dptr, CUstream stream) {
  if (!Enforcing()) return g_real.cuMemFreeAsync(dptr, stream);
  return FreeTracked(Kind::kDevPtr, dptr, [&] { return g_real.cuMemFreeAsync(dptr, stream); });
}
extern "C" CUresult tsr_cuMemFreeAsync_ptsz(CUdeviceptr dptr, CUstream stream) {
  if (!Enforcing()) return g_real.cuMemFreeAsync_ptsz(dptr, stream);
  return FreeTracked(Kind::kDevPtr, dptr, [&] { return g_real.cuMemFreeAsync_ptsz(dptr, stream); });
}
extern "C" CUresult tsr_cuMemPoolTrimTo(CUmemoryPool pool, size_t keep) {
  CUresult r = g_real.cuMemPoolTrimTo(pool, keep);
  if (r == CUDA_SUCCESS && CurrentMode() == Mode::kActive) RequestReconcile();  // cached memory went back
  return r;
}

// Virtual memory management: physical memory is taken by cuMemCreate and given back by cuMemRelease;
// reserving and mapping address space costs nothing.
extern "C" CUresult tsr_cuMemCreate(CUmemGenericAllocationHandle* handle, size_t size,
                                    const CUmemAllocationProp* prop, unsigned long long flags) {
  if (!Enforcing() || !prop || prop->location.type != CU_MEM_LOCATION_TYPE_DEVICE)
    return g_real.cuMemCreate(handle, size, prop, flags);
  return ChargeAround(
      GpuOfDevice(prop->location.id), size, "cuMemCreate",
      [&] { return g_real.cuMemCreate(handle, size, prop, flags); },
      [&](int g, uint64_t* charged) {
        if (Track(Kind::kVmm, *handle, *charged, g, size, "cuMemCreate")) return true;
        g_real.cuMemRelease(*handle);
        return false;
      });
}
extern "C" CUresult tsr_cuMemRelease(CUmemGenericAllocationHandle handle) {
  if (!Enforcing()) return g_real.cuMemRelease(handle);
  return FreeTracked(Kind::kVmm, handle, [&] { return g_real.cuMemRelease(handle); });
}

// Arrays and mipmapped arrays, in both ABIs (v1 is what cuGetProcAddress hands out below CUDA 3.2).
namespace {
template <typename Create>
CUresult CreateArray(CUarray* arr, uint64_t est, const char* api, Create create) {
  return ArrayCommon(
      arr, est, Kind::kArray, api, create, [](CUarray a) { g_real.cuArrayDestroy(a); },
      g_real.cuArrayGetMemoryRequirements);
}
}  // namespace
extern "C" CUresult tsr_cuArrayCreate_v2(CUarray* arr, const CUDA_ARRAY_DESCRIPTOR* desc) {
  return CreateArray(arr, Array2DBytes(desc), "cuArrayCreate",
                     [&] { return g_real.cuArrayCreate_v2(arr, desc); });
}
extern "C" CUresult tsr_cuArrayCreate(CUarray* arr, const tsr_array_desc_v1* desc) {
  return CreateArray(arr, Array2DBytes(desc), "cuArrayCreate(v1)",
                     [&] { return g_real.cuArrayCreate(arr, desc); });
}
extern "C" CUresult tsr_cuArray3DCreate_v2(CUarray* arr, const CUDA_ARRAY3D_DESCRIPTOR* desc) {
  return CreateArray(arr, Array3DBytes(desc), "cuArray3DCreate",
                     [&] { return g_real.cuArray3DCreate_v2(arr, desc); });
}
extern "C" CUresult tsr_cuArray3DCreate(CUarray* arr, const tsr_array3d_desc_v1* desc) {
  return CreateArray(arr, Array3DBytes(desc), "cuArray3DCreate(v1)",
                     [&] { return g_real.cuArray3DCreate(arr, desc); });
}
extern "C" CUresult tsr_cuArrayDestroy(CUarray arr) {
  if (!Enforcing()) return g_real.cuArrayDestroy(arr);
  return FreeTracked(Kind::kArray, reinterpret_cast<uint64_t>(arr),
                     [&] { return g_real.cuArrayDestroy(arr); });
}
extern "C" CUresult tsr_cuMipmappedArrayCreate(CUmipmappedArray* arr, const CUDA_ARRAY3D_DESCRIPTOR* desc,
                                               unsigned int levels) {
  uint64_t est = 0;
  if (desc) {
    CUDA_ARRAY3D_DESCRIPTOR d = *desc;
    for (unsigned l = 0; l < (levels ? levels : 1); ++l) {
      est += Array3DBytes(&d);
      d.Width = d.Width > 1 ? d.Width / 2 : 1;
      if (d.Height) d.Height = d.Height > 1 ? d.Height / 2 : 1;
      if (d.Depth && !(d.Flags & CUDA_ARRAY3D_LAYERED)) d.Depth = d.Depth > 1 ? d.Depth / 2 : 1;
    }
  }
  return ArrayCommon(
      arr, est, Kind::kMipmap, "cuMipmappedArrayCreate",
      [&] { return g_real.cuMipmappedArrayCreate(arr, desc, levels); },
      [](CUmipmappedArray a) { g_real.cuMipmappedArrayDestroy(a); },
      g_real.cuMipmappedArrayGetMemoryRequirements);
}
extern "C" CUresult tsr_cuMipmappedArrayDestroy(CUmipmappedArray arr) {
  if (!Enforcing()) return g_real.cuMipmappedArrayDestroy(arr);
  return FreeTracked(Kind::kMipmap, reinterpret_cast<uint64_t>(arr),
                     [&] { return g_real.cuMipmappedArrayDestroy(arr); });
}

// Graph memory nodes: the allocation is charged when the node is added (its address is fixed then) and
// returned when a free node for it is added or when the address is freed outside the graph.
extern "C" CUresult tsr_cuGraphAddMemAllocNode(CUgraphNode* node, CUgraph graph, const CUgraphNode* deps,
                                               size_t ndeps, CUDA_MEM_ALLOC_NODE_PARAMS* params) {
  if (!Enforcing() || !params || params->poolProps.location.type != CU_MEM_LOCATION_TYPE_DEVICE)
    return g_real.cuGraphAddMemAllocNode(node, graph, deps, ndeps, params);
  return ChargeAround(
      GpuOfDevice(params->poolProps.location.id), params->bytesize, "cuGraphAddMemAllocNode",
      [&] { return g_real.cuGraphAddMemAllocNode(node, graph, deps, ndeps, params); },
      [&](int g, uint64_t* charged) {
        // A node already in the graph cannot be taken back: keep it, uncharged, when it cannot be recorded.
        if (!TrackAlloc(Kind::kGraph, params->dptr, *charged, g)) {
          Uncharge(g, *charged);
          *charged = 0;
        }
        return true;
      });
}
extern "C" CUresult tsr_cuGraphAddMemFreeNode(CUgraphNode* node, CUgraph graph, const CUgraphNode* deps,
                                              size_t ndeps, CUdeviceptr dptr) {
  if (!Enforcing()) return g_real.cuGraphAddMemFreeNode(node, graph, deps, ndeps, dptr);
  return FreeTracked(Kind::kGraph, dptr,
                     [&] { return g_real.cuGraphAddMemFreeNode(node, graph, deps, ndeps, dptr); });
}

// ---- What the application sees ----------------------------------------------------------------------------

extern "C" CUresult tsr_cuMemGetInfo_v2(size_t* free_b, size_t* total_b) {
  CUresult r = g_real.cuMemGetInfo_v2(free_b, total_b);
  if (r != CUDA_SUCCESS || !free_b || !total_b || CurrentMode() != Mode::kActive) return r;
  int g = CurrentGpu();
  if (g < 0) return r;
  uint64_t f = *free_b, t = *total_b;
  ClampInfo(&f, &t, g);
  *free_b = f;
  *total_b = t;
  return r;
}
extern "C" CUresult tsr_cuMemGetInfo(unsigned int* free_b, unsigned int* total_b) {
  CUresult r = g_real.cuMemGetInfo(free_b, total_b);
  if (r != CUDA_SUCCESS || !free_b || !total_b || CurrentMode() != Mode::kActive) return r;
  int g = CurrentGpu();
  if (g < 0) return r;
  uint64_t f = *free_b, t = *total_b;
  ClampInfo(&f, &t, g);
  *free_b = static_cast<unsigned int>(f > 0xffffffffu ? 0xffffffffu : f);
  *total_b = static_cast<unsigned int>(t > 0xffffffffu ? 0xffffffffu : t);
  return r;
}
extern "C" CUresult tsr_cuDeviceTotalMem_v2(size_t* bytes, CUdevice dev) {
  CUresult r = g_real.cuDeviceTotalMem_v2(bytes, dev);
  if (r != CUDA_SUCCESS || !bytes || CurrentMode() != Mode::kActive) return r;
  int g = GpuOfDevice(dev);
  if (g >= 0 && Config().gpus[g].memory_bytes < *bytes) *bytes = Config().gpus[g].memory_bytes;
  return r;
}
extern "C" CUresult tsr_cuDeviceTotalMem(unsigned int* bytes, CUdevice dev) {
  CUresult r = g_real.cuDeviceTotalMem(bytes, dev);
  if (r != CUDA_SUCCESS || !bytes || CurrentMode() != Mode::kActive) return r;
  int g = GpuOfDevice(dev);
  if (g >= 0 && Config().gpus[g].memory_bytes < *bytes)
    *bytes = static_cast<unsigned int>(Config().gpus[g].memory_bytes);
  return r;
}

// ---- Kernel submission: no lock, no system call unless the compute limiter is on --------------------------
// Each hook is two tail calls with the hook's own arguments: with the gate off it is a load, a branch and a
// jump to the driver, with no stack frame of its own; the gated path lives out of line.

namespace {
inline CUstream PerThread(CUstream s) { return s ? s : CU_STREAM_PER_THREAD; }
}  // namespace

#define TSR_LAUNCH_HOOK(name, gate_stream, PARAMS, ARGS)                      \
  namespace {                                                                 \
  __attribute__((noinline)) CUresult Gated_##name PARAMS {                    \
    CUstream s_ = gate_stream;                                                \
    LaunchGateBefore(s_);                                                     \
    CUresult r_ = g_real.name ARGS;                                           \
    LaunchGateAfter(s_, r_);                                                  \
    return r_;                                                                \
  }                                                                           \
  }                                                                           \
  extern "C" CUresult tsr_##name PARAMS {                                     \
    if (__builtin_expect(g_launch_gate_enabled, 0)) return Gated_##name ARGS; \
    return g_real.name ARGS;                                                  \
  }

#define TSR_KERNEL_PARAMS                                                                             \
  (CUfunction f, unsigned int gx, unsigned int gy, unsigned int gz, unsigned int bx, unsigned int by, \
   unsigned int bz, unsigned int shmem, CUstream stream, void** params, void** extra)
#define TSR_KERNEL_ARGS (f, gx, gy, gz, bx, by, bz, shmem, stream, params, extra)
#define TSR_COOP_PARAMS                                                                               \
  (CUfunction f, unsigned int gx, unsigned int gy, unsigned int gz, unsigned int bx, unsigned int by, \
   unsigned int bz, unsigned int shmem, CUstream stream, void** params)
#define TSR_COOP_ARGS (f, gx, gy, gz, bx, by, bz, shmem, stream, params)
#define TSR_EX_PARAMS (const CUlaunchConfig* config, CUfunction f, void** params, void** extra)
#define TSR_EX_ARGS (config, f, params, extra)

TSR_LAUNCH_HOOK(cuLaunchKernel, stream, TSR_KERNEL_PARAMS, TSR_KERNEL_ARGS)
TSR_LAUNCH_HOOK(cuLaunchKernel_ptsz, PerThread(stream), TSR_KERNEL_PARAMS, TSR_KERNEL_ARGS)
TSR_LAUNCH_HOOK(cuLaunchCooperativeKernel, stream, TSR_COOP_PARAMS, TSR_COOP_ARGS)
TSR_LAUNCH_HOOK(cuLaunchCooperativeKernel_ptsz, PerThread(stream), TSR_COOP_PARAMS, TSR_COOP_ARGS)
TSR_LAUNCH_HOOK(cuLaunchKernelEx, config ? config->hStream : nullptr, TSR_EX_PARAMS, TSR_EX_ARGS)
TSR_LAUNCH_HOOK(cuLaunchKernelEx_ptsz, PerThread(config ? config->hStream : nullptr), TSR_EX_PARAMS,
                TSR_EX_ARGS)
TSR_LAUNCH_HOOK(cuGraphLaunch, stream, (CUgraphExec exec, CUstream stream), (exec, stream))
TSR_LAUNCH_HOOK(cuGraphLaunch_ptsz, PerThread(stream), (CUgraphExec exec, CUstream stream), (exec, stream))
