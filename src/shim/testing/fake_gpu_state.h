// Shared by the fake libcuda and fake libnvidia-ml test doubles: where the fake "GPU" keeps per-process
// usage so the fake NVML can report it (like the real driver does), and the fake devices' identity.
//
// FAKE_GPU_STATE_DIR=<dir>: each process using the fake libcuda writes <dir>/<pid> with one line of
// device usage in bytes per device ("123 0\n"). FAKE_CUDA_DEVICES (default 2), FAKE_CUDA_TOTAL_MIB
// (default 16384) and FAKE_CUDA_CTX_MIB (context overhead, default 300) shape the fake GPUs.
// FAKE_CUDA_CTX_EARLY_MIB=E: a new context first shows only E MiB and the rest of its overhead at its
// first allocation, as a real driver's lazily initialised context does.
// FAKE_DRIVER_PROC=<dir>: a /proc mount of the host's pid namespace, for processes run in their own pid
// namespace (a container): like the real driver, the fake one then names each process by its host pid
// (<dir>/self) and judges it alive there, so the per-process list carries pids the process itself
// does not know.
#pragma once

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <unistd.h>

namespace tessera::fake {

inline int DeviceCount() {
  const char* s = getenv("FAKE_CUDA_DEVICES");
  int n = s ? atoi(s) : 2;
  return n < 1 ? 1 : (n > 8 ? 8 : n);
}
inline uint64_t TotalBytes() {
  const char* s = getenv("FAKE_CUDA_TOTAL_MIB");
  return (s ? strtoull(s, nullptr, 10) : 16384ull) << 20;
}
inline uint64_t CtxBytes() {
  const char* s = getenv("FAKE_CUDA_CTX_MIB");
  return (s ? strtoull(s, nullptr, 10) : 300ull) << 20;
}
inline uint64_t CtxEarlyBytes() {  // 0: the whole context shows at creation
  const char* s = getenv("FAKE_CUDA_CTX_EARLY_MIB");
  uint64_t e = s ? strtoull(s, nullptr, 10) << 20 : 0;
  return e < CtxBytes() ? e : 0;
}
inline const char* DriverProc() { return getenv("FAKE_DRIVER_PROC"); }
// The calling process's pid as the driver names it.
inline int DriverPid() {
  const char* proc = DriverProc();
  if (proc == nullptr) return static_cast<int>(getpid());
  char path[512], link[32];
  snprintf(path, sizeof(path), "%s/self", proc);
  ssize_t n = readlink(path, link, sizeof(link) - 1);
  if (n <= 0) return static_cast<int>(getpid());
  link[n] = '\0';
  return atoi(link);
}
inline void UuidBytes(int dev, unsigned char out[16]) {
  for (int i = 0; i < 16; ++i) out[i] = 0;
  out[0] = 0xfa;
  out[1] = 0x4e;
  out[15] = static_cast<unsigned char>(dev);
}
inline void UuidString(int dev, char* out, size_t n) {
  snprintf(out, n, "GPU-fa4e0000-0000-0000-0000-0000000000%02x", dev);
}

// The fake GPUs a process sees, in the order a device list names them (entry i is ordinal i).
struct VisibleList {
  int count = 0;
  int phys[8] = {};
};
// Parses a comma-separated list of indices or UUIDs (CUDA_VISIBLE_DEVICES, NVIDIA_VISIBLE_DEVICES);
// nullptr: every device. An entry naming no device ends the list (the CUDA driver's rule), or with
// `skip_unknown` is passed over.
inline VisibleList ParseVisible(const char* list, bool skip_unknown) {
  VisibleList out;
  if (!list) {
    for (int d = 0; d < DeviceCount(); ++d) out.phys[out.count++] = d;
    return out;
  }
  for (const char* p = list; *p && out.count < 8;) {
    const char* e = strchr(p, ',');
    size_t n = e ? static_cast<size_t>(e - p) : strlen(p);
    int found = -1;
    for (int d = 0; d < DeviceCount() && found < 0; ++d) {
      char u[64], idx[16];
      UuidString(d, u, sizeof(u));
      snprintf(idx, sizeof(idx), "%d", d);
      if ((strlen(u) == n && !strncmp(p, u, n)) || (strlen(idx) == n && !strncmp(p, idx, n))) found = d;
    }
    if (found >= 0) {
      out.phys[out.count++] = found;
    } else if (!skip_unknown) {
      break;
    }
    if (!e) break;
    p = e + 1;
  }
  return out;
}

}  // namespace tessera::fake
