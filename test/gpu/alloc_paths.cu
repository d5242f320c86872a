// alloc_paths: fills the GPU through one allocation path until the driver (or the slice wall) refuses,
// then reports what it got as one JSON line. Run inside a slice by test/gpu/run.
//   alloc_paths fill PATH CHUNK_MIB [HOLD_SECONDS]   PATH: malloc pitch managed async pool array mipmap
//                                                    vmm graph driver dlsym
//   alloc_paths churn SECONDS CHUNK_MIB              allocate/free in a loop (to be killed)
//   alloc_paths init                                 create the context and exit (start-up, tiny slices)
#include <cuda.h>
#include <cuda_runtime.h>
#include <dlfcn.h>
#include <nvml.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <chrono>
#include <thread>
#include <vector>

namespace {

constexpr size_t kMiB = 1ull << 20;

// This process's memory on device 0 as the driver reports it (NVML process list: not hooked).
unsigned long long DriverUsed() {
  static bool init = nvmlInit_v2() == NVML_SUCCESS;
  if (!init) return 0;
  int dev = 0;
  cudaGetDevice(&dev);
  char pci[32];
  cudaDeviceGetPCIBusId(pci, sizeof(pci), dev);
  nvmlDevice_t h;
  if (nvmlDeviceGetHandleByPciBusId_v2(pci, &h) != NVML_SUCCESS) return 0;
  nvmlProcessInfo_t infos[256];
  unsigned n = 256;
  if (nvmlDeviceGetComputeRunningProcesses_v3(h, &n, infos) != NVML_SUCCESS) return 0;
  for (unsigned i = 0; i < n; ++i)
    if (infos[i].pid == static_cast<unsigned>(getpid())) return infos[i].usedGpuMemory;
  return 0;
}

struct Held {
  int kind;
  void* p;
  CUmemGenericAllocationHandle h;
  CUdeviceptr va;
  size_t size;
  cudaGraphExec_t exec;
  cudaGraph_t graph;
};

const char* Name(cudaError_t e) { return cudaGetErrorName(e); }

// One chunk through `path`; returns the runtime error (driver errors mapped to names through CUresult).
cudaError_t AllocOne(const char* path, size_t bytes, cudaStream_t s, cudaMemPool_t pool, Held* out, char* drv_err,
                     size_t drv_err_len) {
  memset(out, 0, sizeof(*out));
  out->size = bytes;
  if (!strcmp(path, "malloc")) return cudaMalloc(&out->p, bytes);
  if (!strcmp(path, "pitch")) {
    size_t pitch;
    return cudaMallocPitch(&out->p, &pitch, 1 << 16, bytes >> 16);
  }
  if (!strcmp(path, "managed")) return cudaMallocManaged(&out->p, bytes);
  if (!strcmp(path, "async")) {
    cudaError_t e = cudaMallocAsync(&out->p, bytes, s);
    return e != cudaSuccess ? e : cudaStreamSynchronize(s);
  }
  if (!strcmp(path, "pool")) {
    cudaError_t e = cudaMallocFromPoolAsync(&out->p, bytes, pool, s);
    return e != cudaSuccess ? e : cudaStreamSynchronize(s);
  }
  if (!strcmp(path, "array")) {
    out->kind = 1;
    cudaChannelFormatDesc d = cudaCreateChannelDesc<float>();
    return cudaMalloc3DArray(reinterpret_cast<cudaArray_t*>(&out->p), &d, make_cudaExtent(8192, bytes / (8192 * 4), 0));
  }
  if (!strcmp(path, "mipmap")) {
    out->kind = 2;
    cudaChannelFormatDesc d = cudaCreateChannelDesc<float>();
    return cudaMallocMipmappedArray(reinterpret_cast<cudaMipmappedArray_t*>(&out->p), &d,
                                    make_cudaExtent(8192, bytes / (8192 * 4), 0), 1);
  }
  if (!strcmp(path, "vmm")) {
    out->kind = 3;
    CUmemAllocationProp prop{};
    prop.type = CU_MEM_ALLOCATION_TYPE_PINNED;
    prop.location.type = CU_MEM_LOCATION_TYPE_DEVICE;
    prop.location.id = 0;
    CUresult r = cuMemCreate(&out->h, bytes, &prop, 0);
    if (r != CUDA_SUCCESS) {
      const char* n = "?";
      cuGetErrorName(r, &n);
      snprintf(drv_err, drv_err_len, "%s", n);
      return r == CUDA_ERROR_OUT_OF_MEMORY ? cudaErrorMemoryAllocation : cudaErrorUnknown;
    }
    cuMemAddressReserve(&out->va, bytes, 0, 0, 0);
    cuMemMap(out->va, bytes, 0, out->h, 0);
    CUmemAccessDesc acc{};
    acc.location = prop.location;
    acc.flags = CU_MEM_ACCESS_FLAGS_PROT_READWRITE;
    cuMemSetAccess(out->va, bytes, &acc, 1);
    return cudaSuccess;
  }
  if (!strcmp(path, "graph")) {
    out->kind = 4;
    cudaGraphCreate(&out->graph, 0);
    cudaMemAllocNodeParams p{};
    p.poolProps.allocType = cudaMemAllocationTypePinned;
    p.poolProps.location.type = cudaMemLocationTypeDevice;
    p.poolProps.location.id = 0;
    p.bytesize = bytes;
    cudaGraphNode_t node;
    cudaError_t e = cudaGraphAddMemAllocNode(&node, out->graph, nullptr, 0, &p);
    if (e != cudaSuccess) return e;
    out->p = p.dptr;
    e = cudaGraphInstantiate(&out->exec, out->graph, 0);
    if (e != cudaSuccess) return e;
    e = cudaGraphLaunch(out->exec, s);
    return e != cudaSuccess ? e : cudaStreamSynchronize(s);
  }
  if (!strcmp(path, "driver") || !strcmp(path, "dlsym")) {
    out->kind = 5;
    using AllocFn = CUresult (*)(CUdeviceptr*, size_t);
    AllocFn a = cuMemAlloc;
    if (!strcmp(path, "dlsym")) a = reinterpret_cast<AllocFn>(dlsym(dlopen("libcuda.so.1", RTLD_NOW), "cuMemAlloc_v2"));
    CUdeviceptr p;
    CUresult r = a(&p, bytes);
    out->p = reinterpret_cast<void*>(p);
    if (r != CUDA_SUCCESS) {
      const char* n = "?";
      cuGetErrorName(r, &n);
      snprintf(drv_err, drv_err_len, "%s", n);
      return r == CUDA_ERROR_OUT_OF_MEMORY ? cudaErrorMemoryAllocation : cudaErrorUnknown;
    }
    return cudaSuccess;
  }
  fprintf(stderr, "unknown path %s\n", path);
  exit(2);
}

void FreeOne(const Held& h, cudaStream_t s) {
  switch (h.kind) {
    case 0: cudaFree(h.p); break;
    case 1: cudaFreeArray(reinterpret_cast<cudaArray_t>(h.p)); break;
    case 2: cudaFreeMipmappedArray(reinterpret_cast<cudaMipmappedArray_t>(h.p)); break;
    case 3:
      cuMemUnmap(h.va, h.size);
      cuMemAddressFree(h.va, h.size);
      cuMemRelease(h.h);
      break;
    case 4:
      cudaFreeAsync(h.p, s);
      cudaStreamSynchronize(s);
      cudaGraphExecDestroy(h.exec);
      cudaGraphDestroy(h.graph);
      break;
    case 5: cuMemFree(reinterpret_cast<CUdeviceptr>(h.p)); break;
  }
}

int Fill(const char* path, size_t chunk, int hold_s) {
  cudaError_t e = cudaFree(nullptr);
  if (e != cudaSuccess) {
    printf("{\"path\":\"%s\",\"init_error\":\"%s\"}\n", path, Name(e));
    return 3;
  }
  cudaStream_t s;
  cudaStreamCreate(&s);
  cudaMemPool_t pool = nullptr;
  if (!strcmp(path, "pool")) {
    cudaMemPoolProps pp{};
    pp.allocType = cudaMemAllocationTypePinned;
    pp.location.type = cudaMemLocationTypeDevice;
    pp.location.id = 0;
    cudaMemPoolCreate(&pool, &pp);
  }
  size_t free_b = 0, total_b = 0;
  cudaMemGetInfo(&free_b, &total_b);
  std::vector<Held> held;
  unsigned long long peak = DriverUsed();
  char drv_err[64] = "";
  cudaError_t last = cudaSuccess;
  for (int i = 0; i < 100000; ++i) {
    Held h;
    last = AllocOne(path, chunk, s, pool, &h, drv_err, sizeof(drv_err));
    if (last != cudaSuccess) break;
    held.push_back(h);
    unsigned long long u = DriverUsed();
    if (u > peak) peak = u;
  }
  cudaGetLastError();
  size_t free2 = 0, total2 = 0;
  cudaMemGetInfo(&free2, &total2);
  if (hold_s > 0) std::this_thread::sleep_for(std::chrono::seconds(hold_s));
  for (const Held& h : held) FreeOne(h, s);
  if (pool) cudaMemPoolDestroy(pool);
  cudaDeviceSynchronize();
  // Graph allocations stay reserved by the device's graph pool until trimmed; the wall keeps counting
  // them (the driver still holds them) until the application gives them back.
  if (!strcmp(path, "graph")) cudaDeviceGraphMemTrim(0);
  // After freeing everything the same path must work again (the wall gave the memory back).
  Held again;
  cudaError_t e2 = AllocOne(path, chunk, s, pool ? nullptr : pool, &again, drv_err, sizeof(drv_err));
  if (!strcmp(path, "pool")) e2 = cudaSuccess;  // its pool is gone; covered by the fill itself
  else if (e2 == cudaSuccess) FreeOne(again, s);
  printf("{\"path\":\"%s\",\"chunk\":%zu,\"chunks\":%zu,\"bytes\":%zu,\"error\":\"%s\",\"driver_error\":\"%s\","
         "\"driver_used_peak\":%llu,\"meminfo_total\":%zu,\"meminfo_free_start\":%zu,\"meminfo_free_full\":%zu,"
         "\"realloc_after_free\":\"%s\"}\n",
         path, chunk, held.size(), held.size() * chunk, Name(last), drv_err, peak, total_b, free_b, free2, Name(e2));
  return 0;
}

// The CUDA 3.1 ABI, as old binaries and cuGetProcAddress(..., version < 3020) reach it: a v1 context
// (the driver refuses v1 calls in any other kind) and v1 arrays (32-bit sizes), all through dlsym of the
// unversioned exports. Same JSON as Fill.
int FillV1(size_t chunk) {
  struct DescV1 {
    unsigned int width, height;
    CUarray_format format;
    unsigned int channels;
  };
  void* lib = dlopen("libcuda.so.1", RTLD_NOW);
  using CtxFn = CUresult (*)(CUcontext*, unsigned int, CUdevice);
  using ArrFn = CUresult (*)(CUarray*, const DescV1*);
  using InfoFn = CUresult (*)(unsigned int*, unsigned int*);
  auto ctx_create = reinterpret_cast<CtxFn>(dlsym(lib, "cuCtxCreate"));
  auto arr_create = reinterpret_cast<ArrFn>(dlsym(lib, "cuArrayCreate"));
  auto info = reinterpret_cast<InfoFn>(dlsym(lib, "cuMemGetInfo"));
  CUcontext ctx = nullptr;
  CUresult r = cuInit(0);
  if (r == CUDA_SUCCESS) r = ctx_create(&ctx, 0, 0);
  auto name = [](CUresult e) {
    const char* n = "?";
    cuGetErrorName(e, &n);
    return e == CUDA_ERROR_OUT_OF_MEMORY ? "cudaErrorMemoryAllocation" : (e == CUDA_SUCCESS ? "cudaSuccess" : n);
  };
  if (r != CUDA_SUCCESS) {
    printf("{\"path\":\"array_v1\",\"init_error\":\"%s\"}\n", name(r));
    return 3;
  }
  const DescV1 d{8192, static_cast<unsigned int>(chunk / (8192 * 4)), CU_AD_FORMAT_FLOAT, 1};
  unsigned int free_b = 0, total_b = 0, free2 = 0, total2 = 0;
  info(&free_b, &total_b);
  std::vector<CUarray> held;
  unsigned long long peak = DriverUsed();
  CUresult last = CUDA_SUCCESS;
  for (int i = 0; i < 100000; ++i) {
    CUarray a = nullptr;
    last = arr_create(&a, &d);
    if (last != CUDA_SUCCESS) break;
    held.push_back(a);
    unsigned long long u = DriverUsed();
    if (u > peak) peak = u;
  }
  info(&free2, &total2);
  for (CUarray a : held) cuArrayDestroy(a);
  CUarray again = nullptr;
  CUresult r2 = arr_create(&again, &d);
  if (r2 == CUDA_SUCCESS) cuArrayDestroy(again);
  printf("{\"path\":\"array_v1\",\"chunk\":%zu,\"chunks\":%zu,\"bytes\":%zu,\"error\":\"%s\",\"driver_error\":\"\","
         "\"driver_used_peak\":%llu,\"meminfo_total\":%u,\"meminfo_free_start\":%u,\"meminfo_free_full\":%u,"
         "\"realloc_after_free\":\"%s\"}\n",
         chunk, held.size(), held.size() * chunk, name(last), peak, total_b, free_b, free2, name(r2));
  return 0;
}

int Churn(int seconds, size_t chunk) {
  if (cudaFree(nullptr) != cudaSuccess) return 3;
  printf("churning\n");
  fflush(stdout);
  auto end = std::chrono::steady_clock::now() + std::chrono::seconds(seconds);
  std::vector<void*> ps;
  while (std::chrono::steady_clock::now() < end) {
    void* p;
    if (cudaMalloc(&p, chunk) == cudaSuccess) ps.push_back(p);
    if (ps.size() > 3) {
      cudaFree(ps.front());
      ps.erase(ps.begin());
    }
    cudaGetLastError();
  }
  for (void* p : ps) cudaFree(p);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc >= 4 && !strcmp(argv[1], "fill") && !strcmp(argv[2], "array_v1")) return FillV1(strtoull(argv[3], nullptr, 10) * kMiB);
  if (argc >= 4 && !strcmp(argv[1], "fill")) return Fill(argv[2], strtoull(argv[3], nullptr, 10) * kMiB, argc > 4 ? atoi(argv[4]) : 0);
  if (argc == 4 && !strcmp(argv[1], "churn")) return Churn(atoi(argv[2]), strtoull(argv[3], nullptr, 10) * kMiB);
  if (argc == 2 && !strcmp(argv[1], "init")) {
    cudaError_t e = cudaFree(nullptr);
    printf("{\"init\":\"%s\"}\n", Name(e));
    return e == cudaSuccess ? 0 : 4;
  }
  fprintf(stderr, "usage: alloc_paths fill PATH CHUNK_MIB [HOLD_S] | churn SECONDS CHUNK_MIB | init\n");
  return 2;
}
