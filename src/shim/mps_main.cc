// tessera-mps: start, stop or query the Tessera-owned MPS control daemon of one GPU (spatial mode).
//   tessera-mps start|stop|status --gpu GPU-UUID [--base DIR]
// Used by test/gpu and by operators; `tessera run --spatial` and the node agent call the same library.
// libtessera.so compiles every src/shim/mps*.cc; only the tool build defines TESSERA_MPS_TOOL.
#ifdef TESSERA_MPS_TOOL
#include <cstdio>
#include <cstring>
#include <string>

#include "shim/mps.h"

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: tessera-mps start|stop|status --gpu GPU-UUID [--base DIR]\n");
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
  std::fprintf(stderr, "tessera-mps: unknown verb %s (start, stop, status)\n", verb.c_str());
  return 2;
}
#endif  // TESSERA_MPS_TOOL
