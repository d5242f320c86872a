// FormatUuid: a CUDA device UUID in the text form that slice configs, NVML and nvidia-smi use
// ("GPU-xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx"), for matching a device against a slice's GPUs. One
// definition for the memory wall (shim.cc) and the launch gate.
#pragma once

#include <cuda.h>

#include <cstdio>

namespace tessera::shim {

inline void FormatUuid(const CUuuid& u, char out[48]) {
  const auto* b = reinterpret_cast<const unsigned char*>(u.bytes);
  std::snprintf(out, 48, "GPU-%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", b[0],
                b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13], b[14],
                b[15]);
}

}  // namespace tessera::shim
