// tessera-mps: start, stop or query the Tessera-owned MPS control daemon of one GPU (spatial mode).
//   tessera-mps start|stop|status|sms --gpu GPU-UUID [--base DIR]
// Used by test/gpu and by operators (the library calls are StartMpsDaemon/StopMpsDaemon/MpsControl).
// `sms` prints the GPU's SM count, the value of a spatial slice's `mps_sms` key (docs/compute.md); it
// asks the driver directly, never through an MPS server.
// libtessera.so compiles every src/shim/mps*.cc; only the tool build defines TESSERA_MPS_TOOL.
#ifdef TESSERA_MPS_TOOL
#include <dlfcn.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "shim/mps.h"

namespace {

// The GPU's SM count from the CUDA driver (dlopen'ed: the tool links nothing of CUDA), 0 on failure. The
// driver picks the GPU by its UUID in CUDA_VISIBLE_DEVICES (as for the daemon, StartMpsDaemon).
int GpuSmCount(const std::string& uuid, std::string* err) {
  unsetenv("CUDA_MPS_PIPE_DIRECTORY");  // this query must not become an MPS client (of any partition)
  setenv("CUDA_VISIBLE_DEVICES", uuid.c_str(), 1);
  void* lib = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
  if (lib == nullptr) {
    *err = "cannot load libcuda.so.1";
    return 0;
  }
  using InitFn = int (*)(unsigned);
  using GetFn = int (*)(int*, int);
  using AttrFn = int (*)(int*, int, int);
  auto init = reinterpret_cast<InitFn>(dlsym(lib, "cuInit"));
  auto get = reinterpret_cast<GetFn>(dlsym(lib, "cuDeviceGet"));
  auto attr = reinterpret_cast<AttrFn>(dlsym(lib, "cuDeviceGetAttribute"));
  if (!init || !get || !attr || init(0) != 0) {
    *err = "the CUDA driver did not initialise (is " + uuid + " a GPU of this machine?)";
    return 0;
  }
  constexpr int kMultiprocessorCount = 16;  // CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT
  int dev = 0, sms = 0;
  if (get(&dev, 0) != 0 || attr(&sms, kMultiprocessorCount, dev) != 0) {
    *err = "no GPU " + uuid;
    return 0;
  }
  return sms;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: tessera-mps start|stop|status|sms --gpu GPU-UUID [--base DIR]\n");
    return 2;
  }
  std::string verb = argv[1], gpu, base = tessera::shim::kMpsBaseDir;
  for (int i = 2; i + 1 < argc; i += 2) {
    if (std::strcmp(argv[i], "--gpu") == 0)
      gpu = argv[i + 1];
    else if (std::strcmp(argv[i], "--base") == 0)
      base = argv[i + 1];
    else {
      std::fprintf(stderr, "tessera-mps: unknown flag %s (allowed: --gpu, --base)\n", argv[i]);
      return 2;
    }
  }
  if (gpu.rfind("GPU-", 0) != 0) {
    std::fprintf(stderr, "tessera-mps: --gpu must be a GPU UUID (GPU-...), got '%s'\n", gpu.c_str());
    return 2;
  }
  const auto paths = tessera::shim::MpsPathsFor(gpu, base);
  std::string err, reply;
  if (verb == "start") {
    if (!tessera::shim::StartMpsDaemon(gpu, paths, &err)) {
      std::fprintf(stderr, "tessera-mps: %s\n", err.c_str());
      return 1;
    }
    std::printf("%s\n", paths.pipe_dir.c_str());
    return 0;
  }
  if (verb == "stop") {
    if (!tessera::shim::StopMpsDaemon(paths, &err)) {
      std::fprintf(stderr, "tessera-mps: %s\n", err.c_str());
      return 1;
    }
    return 0;
  }
  if (verb == "status") {
    if (!tessera::shim::MpsControl(paths, "get_server_list", &reply, &err)) {
      std::fprintf(stderr, "tessera-mps: not running: %s\n", err.c_str());
      return 1;
    }
    std::printf("running; servers: %s\n", reply.c_str());
    return 0;
  }
  if (verb == "sms") {
    const int sms = GpuSmCount(gpu, &err);
    if (sms <= 0) {
      std::fprintf(stderr, "tessera-mps: %s\n", err.c_str());
      return 1;
    }
    std::printf("%d\n", sms);
    return 0;
  }
  std::fprintf(stderr, "tessera-mps: unknown verb %s (start, stop, status, sms)\n", verb.c_str());
  return 2;
}
#endif  // TESSERA_MPS_TOOL
