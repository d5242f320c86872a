// Fuzz target (bench/fuzz): slice::ParseSliceConfig on any bytes (the shim parses the file inside every
// application). What parses is in range, formats, and parses back to the same config.
#include <cstdint>
#include <cstring>

#include "fuzz_check.h"
#include "slice/config.h"

namespace slice = tessera::slice;

namespace {

bool Same(const slice::SliceConfig& a, const slice::SliceConfig& b) {
  if (a.version != b.version || strcmp(a.name, b.name) != 0 || strcmp(a.region, b.region) != 0 ||
      a.priority != b.priority || a.cap_mode != b.cap_mode || a.gpu_count != b.gpu_count ||
      strcmp(a.agent, b.agent) != 0 || strcmp(a.mps_pipe, b.mps_pipe) != 0 ||
      a.mps_percentage != b.mps_percentage || a.mps_sms != b.mps_sms)
    return false;
  for (int i = 0; i < a.gpu_count; ++i)
    if (strcmp(a.gpus[i].uuid, b.gpus[i].uuid) != 0 || a.gpus[i].memory_bytes != b.gpus[i].memory_bytes ||
        a.gpus[i].cores != b.gpus[i].cores)
      return false;
  return true;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static slice::SliceConfig cfg, again;  // large (three paths and 16 GPUs): off the stack
  char err[256];
  if (!slice::ParseSliceConfig(reinterpret_cast<const char*>(data), size, &cfg, err, sizeof(err))) {
    FUZZ_CHECK(memchr(err, '\0', sizeof(err)) != nullptr && err[0] != '\0');
    return 0;
  }
  FUZZ_CHECK(cfg.version == 1 && slice::ValidSliceName(cfg.name) && cfg.region[0] == '/');
  FUZZ_CHECK(cfg.priority == 0 || cfg.priority == 1);
  FUZZ_CHECK(cfg.gpu_count >= 1 && cfg.gpu_count <= slice::kMaxGpus);
  for (int i = 0; i < cfg.gpu_count; ++i) {
    FUZZ_CHECK(cfg.gpus[i].memory_bytes >= 1 && cfg.gpus[i].memory_bytes <= (1ull << 62));
    FUZZ_CHECK(cfg.gpus[i].cores >= 1 && cfg.gpus[i].cores <= 100);
    FUZZ_CHECK(slice::FindGpu(cfg, cfg.gpus[i].uuid) == i);
  }
  FUZZ_CHECK(cfg.mps_percentage >= 0 && cfg.mps_percentage <= 100 && cfg.mps_sms >= 0 && cfg.mps_sms <= 4096);
  static char buf[slice::kConfigMaxBytes];
  int n = slice::FormatSliceConfig(cfg, buf, sizeof(buf), err, sizeof(err));
  FUZZ_CHECK(n > 0);
  FUZZ_CHECK(slice::ParseSliceConfig(buf, static_cast<size_t>(n), &again, err, sizeof(err)));
  FUZZ_CHECK(Same(cfg, again));
  return 0;
}
