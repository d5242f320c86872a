// The real CUDA driver and NVML entry points, as the shim and the compute limiter must call them.
//
// libtessera.so exports functions with the driver's own names, so calling `cuEventRecord` from inside
// the shim could land in a hook. Everything inside the shim (and the limiter in launch_gate*/limiter*)
// calls through g_real / g_real_nvml instead: plain function pointers resolved from libcuda.so.1 and
// libnvidia-ml.so.1 with the real dlsym. A pointer is null when that driver lacks the symbol.
//
// Resolution happens once, on the first hook call (or the first dlsym/cuGetProcAddress for a CUDA
// name), never at library load: a process that never touches CUDA never loads libcuda. ResolveReal()
// is idempotent and thread-safe; after it returned true every field is final and may be read without
// synchronisation. Nothing here allocates with the application's allocator beyond what dlopen does.
#pragma once

#include <cuda.h>
#include <nvml.h>

// cuda.h maps many names to versioned symbols with macros (cuMemAlloc -> cuMemAlloc_v2). The shim
// names every ABI variant explicitly, so those macros are switched off here.
#undef cuArray3DCreate
#undef cuArrayCreate
#undef cuCtxCreate
#undef cuDeviceGetUuid
#undef cuDeviceTotalMem
#undef cuEventElapsedTime
#undef cuEventRecord
#undef cuGetProcAddress
#undef cuGetProcAddress_v2
#undef cuGraphLaunch
#undef cuLaunchCooperativeKernel
#undef cuLaunchKernel
#undef cuLaunchKernelEx
#undef cuMemAlloc
#undef cuMemAllocAsync
#undef cuMemAllocFromPoolAsync
#undef cuMemAllocPitch
#undef cuMemFree
#undef cuMemFreeAsync
#undef cuMemGetInfo
#undef cuStreamGetCtx
#undef cuStreamIsCapturing
#undef cuStreamQuery
#undef cuStreamSynchronize

// CUdeviceptr of the pre-3.2 (32-bit) driver API variants.
typedef unsigned int tsr_devptr_v1;
// Array descriptors of the pre-3.2 cuArrayCreate / cuArray3DCreate: the fields of the _v2 descriptors
// with unsigned int extents. cuda.h declares them only for the driver's own build, so they are spelled
// out here.
struct tsr_array_desc_v1 {
  unsigned int Width;
  unsigned int Height;
  CUarray_format Format;
  unsigned int NumChannels;
};
struct tsr_array3d_desc_v1 {
  unsigned int Width;
  unsigned int Height;
  unsigned int Depth;
  CUarray_format Format;
  unsigned int NumChannels;
  unsigned int Flags;
};
static_assert(sizeof(tsr_array_desc_v1) == 16 && sizeof(tsr_array3d_desc_v1) == 24,
              "v1 array descriptor ABI");

namespace tessera::shim {

struct RealCuda {
#define TSR_HOOK(name, ret, params) ret(*name) params;
#define TSR_REAL(name, ret, params) ret(*name) params;
#include "shim/cuda_functions.def"
};

struct RealNvml {
  nvmlReturn_t (*nvmlInit_v2)();
  nvmlReturn_t (*nvmlDeviceGetHandleByUUID)(const char* uuid, nvmlDevice_t* dev);
  nvmlReturn_t (*nvmlDeviceGetUUID)(nvmlDevice_t dev, char* uuid, unsigned int len);
  nvmlReturn_t (*nvmlDeviceGetComputeRunningProcesses_v3)(nvmlDevice_t dev, unsigned int* count,
                                                          nvmlProcessInfo_t* infos);
  nvmlReturn_t (*nvmlDeviceGetMemoryInfo)(nvmlDevice_t dev, nvmlMemory_t* mem);
  nvmlReturn_t (*nvmlDeviceGetMemoryInfo_v2)(nvmlDevice_t dev, nvmlMemory_v2_t* mem);
};

// Zero until ResolveReal() succeeded.
extern RealCuda g_real;
extern RealNvml g_real_nvml;

// Loads libcuda.so.1 (if the process has not) and fills g_real. False when libcuda cannot be loaded.
bool ResolveReal();
// Loads libnvidia-ml.so.1 and fills g_real_nvml (does not call nvmlInit). False when unavailable.
bool ResolveRealNvml();

// The C library's dlsym, bypassing the shim's own dlsym hook.
void* RealDlsym(void* handle, const char* name);
// The C library's own dlsym and dlvsym functions (found in its symbol table, never through the loader,
// which would answer with the shim's hooks); nullptr when the C library has none.
void* LibcDlsym();
void* LibcDlvsym();

}  // namespace tessera::shim
