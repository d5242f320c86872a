// Fake libnvidia-ml.so.1: the NVML calls the shim, `tessera run` and the agent's NVML backend make,
// answering from the fake libcuda's published per-process usage (FAKE_GPU_STATE_DIR), so reconciliation
// with "the driver's" per-process figure and GPU discovery are testable without a GPU. Fake GPU i sits
// on NUMA node i % 2 at PCI bus 0000:(0x10 + i):00.0 and supports no health events.
// NVIDIA_VISIBLE_DEVICES (UUIDs or indices, "all", "none"/"void") limits the devices enumerated, as the
// NVIDIA container toolkit does by giving a container only those GPUs' device nodes; unset: all.
#include <dirent.h>
#include <nvml.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cerrno>
#include <cstdint>

#include "shim/testing/fake_gpu_state.h"

using namespace tessera::fake;

namespace {
struct Dev {
  int index;
};
Dev g_devs[8] = {{0}, {1}, {2}, {3}, {4}, {5}, {6}, {7}};

// The devices a process may enumerate, in NVIDIA_VISIBLE_DEVICES order (the container's index i is the
// i-th entry); entries naming no device are skipped, as the toolkit refuses to start such a container.
const VisibleList& VisibleDevices() {
  static const VisibleList v = [] {
    const char* env = getenv("NVIDIA_VISIBLE_DEVICES");
    if (env && (strcmp(env, "none") == 0 || strcmp(env, "void") == 0)) return VisibleList{};
    if (!env || !*env || strcmp(env, "all") == 0) env = nullptr;
    return ParseVisible(env, true);
  }();
  return v;
}
bool IsVisible(int phys) {
  const VisibleList& v = VisibleDevices();
  for (int i = 0; i < v.count; ++i)
    if (v.phys[i] == phys) return true;
  return false;
}

int IndexOf(nvmlDevice_t d) {
  Dev* p = reinterpret_cast<Dev*>(d);
  if (p < g_devs || p >= g_devs + DeviceCount()) return -1;
  return p->index;
}

// Calls fn(pid, bytes) for each live process with usage on device `dev`.
template <typename Fn>
void ForEachProcess(int dev, Fn fn) {
  const char* dir = getenv("FAKE_GPU_STATE_DIR");
  if (!dir) return;
  DIR* d = opendir(dir);
  if (!d) return;
  while (dirent* e = readdir(d)) {
    char* end = nullptr;
    long pid = strtol(e->d_name, &end, 10);
    if (pid <= 0 || *end != '\0') continue;
    const char* proc = DriverProc();
    // exited: driver freed it (pids are the driver's: judged in its /proc when that is another one)
    if (proc == nullptr && kill(static_cast<pid_t>(pid), 0) != 0 && errno == ESRCH) continue;
    char stat_path[600], stat_buf[512];
    snprintf(stat_path, sizeof(stat_path), "%s/%ld/stat", proc ? proc : "/proc", pid);
    if (proc != nullptr && access(stat_path, F_OK) != 0) continue;
    if (FILE* sf = fopen(stat_path, "r")) {  // a zombie holds no GPU memory either
      size_t n = fread(stat_buf, 1, sizeof(stat_buf) - 1, sf);
      fclose(sf);
      stat_buf[n] = 0;
      const char* rp = strrchr(stat_buf, ')');
      if (rp && (rp[2] == 'Z' || rp[2] == 'X')) continue;
    }
    char path[512];
    snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
    FILE* f = fopen(path, "r");
    if (!f) continue;
    unsigned long long v = 0;
    bool ok = true;
    for (int i = 0; i <= dev && ok; ++i) ok = fscanf(f, "%llu", &v) == 1;
    fclose(f);
    if (ok && v > 0) fn(static_cast<unsigned>(pid), static_cast<uint64_t>(v));
  }
  closedir(d);
}
}  // namespace

#define FAKE extern "C" __attribute__((visibility("default")))

FAKE nvmlReturn_t nvmlInit_v2() { return NVML_SUCCESS; }
FAKE nvmlReturn_t nvmlShutdown() { return NVML_SUCCESS; }
FAKE const char* nvmlErrorString(nvmlReturn_t) { return "fake nvml error"; }
FAKE nvmlReturn_t nvmlSystemGetDriverVersion(char* v, unsigned int n) {
  snprintf(v, n, "580.00.fake");
  return NVML_SUCCESS;
}
FAKE nvmlReturn_t nvmlDeviceGetCount_v2(unsigned int* n) {
  *n = static_cast<unsigned>(VisibleDevices().count);
  return NVML_SUCCESS;
}
FAKE nvmlReturn_t nvmlDeviceGetHandleByIndex_v2(unsigned int i, nvmlDevice_t* d) {
  const VisibleList& v = VisibleDevices();
  if (i >= static_cast<unsigned>(v.count)) return NVML_ERROR_INVALID_ARGUMENT;
  *d = reinterpret_cast<nvmlDevice_t>(&g_devs[v.phys[i]]);
  return NVML_SUCCESS;
}
FAKE nvmlReturn_t nvmlDeviceGetHandleByUUID(const char* uuid, nvmlDevice_t* d) {
  for (int i = 0; i < DeviceCount(); ++i) {
    if (!IsVisible(i)) continue;
    char u[96];
    UuidString(i, u, sizeof(u));
    if (strcmp(u, uuid) == 0) {
      *d = reinterpret_cast<nvmlDevice_t>(&g_devs[i]);
      return NVML_SUCCESS;
    }
  }
  return NVML_ERROR_NOT_FOUND;
}
FAKE nvmlReturn_t nvmlDeviceGetUUID(nvmlDevice_t d, char* uuid, unsigned int n) {
  int i = IndexOf(d);
  if (i < 0) return NVML_ERROR_INVALID_ARGUMENT;
  UuidString(i, uuid, n);
  return NVML_SUCCESS;
}
FAKE nvmlReturn_t nvmlDeviceGetName(nvmlDevice_t d, char* name, unsigned int n) {
  if (IndexOf(d) < 0) return NVML_ERROR_INVALID_ARGUMENT;
  snprintf(name, n, "Fake GPU");
  return NVML_SUCCESS;
}
FAKE nvmlReturn_t nvmlDeviceGetMemoryInfo(nvmlDevice_t d, nvmlMemory_t* m) {
  int i = IndexOf(d);
  if (i < 0) return NVML_ERROR_INVALID_ARGUMENT;
  uint64_t used = 0;
  ForEachProcess(i, [&](unsigned, uint64_t b) { used += b; });
  m->total = TotalBytes();
  m->used = used;
  m->free = TotalBytes() - used;
  return NVML_SUCCESS;
}
FAKE nvmlReturn_t nvmlDeviceGetMemoryInfo_v2(nvmlDevice_t d, nvmlMemory_v2_t* m) {
  nvmlMemory_t v1;
  nvmlReturn_t r = nvmlDeviceGetMemoryInfo(d, &v1);
  if (r != NVML_SUCCESS) return r;
  m->total = v1.total;
  m->used = v1.used;
  m->free = v1.free;
  m->reserved = 0;
  return NVML_SUCCESS;
}
FAKE nvmlReturn_t nvmlDeviceGetComputeRunningProcesses_v3(nvmlDevice_t d, unsigned int* count,
                                                          nvmlProcessInfo_t* out) {
  int i = IndexOf(d);
  if (i < 0) return NVML_ERROR_INVALID_ARGUMENT;
  unsigned n = 0, cap = *count;
  ForEachProcess(i, [&](unsigned pid, uint64_t b) {
    if (n < cap) {
      out[n].pid = pid;
      out[n].usedGpuMemory = b;
      out[n].gpuInstanceId = 0xFFFFFFFF;
      out[n].computeInstanceId = 0xFFFFFFFF;
    }
    ++n;
  });
  *count = n;
  return n > cap ? NVML_ERROR_INSUFFICIENT_SIZE : NVML_SUCCESS;
}
FAKE nvmlReturn_t nvmlDeviceGetPciInfo_v3(nvmlDevice_t d, nvmlPciInfo_t* pci) {
  int i = IndexOf(d);
  if (i < 0) return NVML_ERROR_INVALID_ARGUMENT;
  memset(pci, 0, sizeof(*pci));
  unsigned bus = static_cast<unsigned>(0x10 + i) & 0xff;
  snprintf(pci->busId, sizeof(pci->busId), "00000000:%02X:00.0", bus);
  snprintf(pci->busIdLegacy, sizeof(pci->busIdLegacy), "0000:%02X:00.0", bus);
  pci->bus = bus;
  return NVML_SUCCESS;
}
FAKE nvmlReturn_t nvmlDeviceGetMemoryAffinity(nvmlDevice_t d, unsigned int words, unsigned long* set,
                                              nvmlAffinityScope_t scope) {
  int i = IndexOf(d);
  if (i < 0 || words == 0 || set == nullptr || scope != NVML_AFFINITY_SCOPE_NODE) return NVML_ERROR_INVALID_ARGUMENT;
  for (unsigned w = 0; w < words; ++w) set[w] = 0;
  set[0] = 1ul << (i % 2);
  return NVML_SUCCESS;
}
FAKE nvmlReturn_t nvmlDeviceGetUtilizationRates(nvmlDevice_t d, nvmlUtilization_t* u) {
  if (IndexOf(d) < 0) return NVML_ERROR_INVALID_ARGUMENT;
  u->gpu = 0;
  u->memory = 0;
  return NVML_SUCCESS;
}
FAKE nvmlReturn_t nvmlEventSetCreate(nvmlEventSet_t* set) {
  *set = nullptr;
  return NVML_SUCCESS;
}
FAKE nvmlReturn_t nvmlEventSetFree(nvmlEventSet_t) { return NVML_SUCCESS; }
FAKE nvmlReturn_t nvmlDeviceGetSupportedEventTypes(nvmlDevice_t d, unsigned long long* types) {
  if (IndexOf(d) < 0) return NVML_ERROR_INVALID_ARGUMENT;
  *types = 0;
  return NVML_SUCCESS;
}
FAKE nvmlReturn_t nvmlDeviceRegisterEvents(nvmlDevice_t, unsigned long long, nvmlEventSet_t) {
  return NVML_ERROR_NOT_SUPPORTED;
}
FAKE nvmlReturn_t nvmlEventSetWait_v2(nvmlEventSet_t, nvmlEventData_t*, unsigned int) {
  return NVML_ERROR_TIMEOUT;
}
