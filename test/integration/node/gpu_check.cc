// tessera-gpu-check: the worker image's CUDA program (it stands in for the seed's PyTorch job in the real
// one-node test). It shows what a process in a GPU container sees through the CUDA driver API, with
// libtessera.so preloaded by the container's /etc/ld.so.preload: for each visible device its UUID and
// cuMemGetInfo (the call cudaMemGetInfo makes), the slice config the shim enforces (memory wall and
// compute share), then it allocates in steps until the driver refuses and reports that error. One
// "key: value" fact per line so a test can read it; exit 0 when the program ran to its end (an
// allocation refused past the wall is the expected end), 1 when CUDA itself failed.
//   tessera-gpu-check [--step-mib N]   (default 64)
#include <cuda.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "slice/config.h"

namespace {

// The names of the results this program can meet (the fake driver has no cuGetErrorName).
const char* ErrName(CUresult r) {
  switch (r) {
    case CUDA_SUCCESS: return "CUDA_SUCCESS";
    case CUDA_ERROR_INVALID_VALUE: return "CUDA_ERROR_INVALID_VALUE";
    case CUDA_ERROR_OUT_OF_MEMORY: return "CUDA_ERROR_OUT_OF_MEMORY";
    case CUDA_ERROR_NOT_INITIALIZED: return "CUDA_ERROR_NOT_INITIALIZED";
    case CUDA_ERROR_NO_DEVICE: return "CUDA_ERROR_NO_DEVICE";
    case CUDA_ERROR_INVALID_DEVICE: return "CUDA_ERROR_INVALID_DEVICE";
    case CUDA_ERROR_INVALID_CONTEXT: return "CUDA_ERROR_INVALID_CONTEXT";
    default: return "CUDA error";
  }
}

bool Check(CUresult r, const char* what) {
  if (r == CUDA_SUCCESS) return true;
  std::printf("error: %s: %s (%d)\n", what, ErrName(r), static_cast<int>(r));
  return false;
}

}  // namespace

int main(int argc, char** argv) {
  unsigned long long step_mib = 64;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--step-mib") == 0 && i + 1 < argc) {
      char* end = nullptr;
      step_mib = std::strtoull(argv[++i], &end, 10);
      if (*end != '\0' || step_mib < 1 || step_mib > 65536) {
        std::fprintf(stderr, "tessera-gpu-check: --step-mib must be 1..65536, got '%s'\n", argv[i]);
        return 2;
      }
    } else {
      std::fprintf(stderr, "usage: tessera-gpu-check [--step-mib N]   (N: 1..65536, default 64)\n");
      return 2;
    }
  }
  std::setvbuf(stdout, nullptr, _IOLBF, 0);

  const char* conf_path = std::getenv("TESSERA_SLICE_CONFIG");
  std::printf("CUDA_VISIBLE_DEVICES: %s\n", std::getenv("CUDA_VISIBLE_DEVICES") ? std::getenv("CUDA_VISIBLE_DEVICES") : "");
  if (conf_path != nullptr) {
    tessera::slice::SliceConfig cfg;
    char err[256] = {};
    if (tessera::slice::LoadSliceConfig(conf_path, false, &cfg, err, sizeof(err))) {
      for (int g = 0; g < cfg.gpu_count; ++g) {
        std::printf("slice: %s gpu %s memory_mib %llu cores %d\n", cfg.name, cfg.gpus[g].uuid,
                    static_cast<unsigned long long>(cfg.gpus[g].memory_bytes >> 20), cfg.gpus[g].cores);
      }
    } else {
      std::printf("slice: unreadable %s: %s\n", conf_path, err);
    }
  } else {
    std::printf("slice: none (TESSERA_SLICE_CONFIG unset)\n");
  }

  if (!Check(cuInit(0), "cuInit")) return 1;
  int count = 0;
  if (!Check(cuDeviceGetCount(&count), "cuDeviceGetCount")) return 1;
  std::printf("devices: %d\n", count);
  if (count < 1) return 1;
  CUdevice dev;
  CUcontext ctx;
  if (!Check(cuDeviceGet(&dev, 0), "cuDeviceGet") || !Check(cuDevicePrimaryCtxRetain(&ctx, dev), "cuDevicePrimaryCtxRetain") ||
      !Check(cuCtxSetCurrent(ctx), "cuCtxSetCurrent")) {
    return 1;
  }
  CUuuid uuid;
  if (!Check(cuDeviceGetUuid(&uuid, dev), "cuDeviceGetUuid")) return 1;
  std::printf("device 0 uuid: GPU-");
  for (int i = 0; i < 16; ++i) {
    std::printf("%02x%s", static_cast<unsigned char>(uuid.bytes[i]), (i == 3 || i == 5 || i == 7 || i == 9) ? "-" : "");
  }
  std::printf("\n");
  size_t free_b = 0, total_b = 0;
  if (!Check(cuMemGetInfo(&free_b, &total_b), "cuMemGetInfo")) return 1;
  std::printf("cudaMemGetInfo: free_mib %zu total_mib %zu\n", free_b >> 20, total_b >> 20);

  // Allocate up to the wall and one step past it.
  const size_t step = static_cast<size_t>(step_mib) << 20;
  std::vector<CUdeviceptr> held;
  CUresult last = CUDA_SUCCESS;
  const size_t max_steps = (total_b / step) + 2;
  while (held.size() < max_steps) {
    CUdeviceptr p = 0;
    last = cuMemAlloc(&p, step);
    if (last != CUDA_SUCCESS) break;
    held.push_back(p);
  }
  std::printf("allocated_mib: %llu in %zu allocations of %llu MiB\n",
              static_cast<unsigned long long>(held.size()) * step_mib, held.size(), step_mib);
  if (last == CUDA_SUCCESS) {
    std::printf("past the wall: no error after %zu allocations (no wall)\n", held.size());
  } else {
    std::printf("past the wall: cuMemAlloc(%llu MiB) -> %s (%d)\n", step_mib, ErrName(last), static_cast<int>(last));
  }
  for (CUdeviceptr p : held) cuMemFree(p);
  if (cuMemGetInfo(&free_b, &total_b) == CUDA_SUCCESS) {
    std::printf("after free: free_mib %zu total_mib %zu\n", free_b >> 20, total_b >> 20);
  }
  cuDevicePrimaryCtxRelease(dev);
  return 0;
}
