// The NVML backend. libnvidia-ml.so.1 is opened with dlopen() so the agent binary runs (and reports
// plainly) on hosts without the driver, and so one binary serves every driver version: each entry
// point is looked up by its versioned name and the optional ones (NUMA id) may be missing.
#include <dlfcn.h>
#include <nvml.h>

#include <algorithm>
#include <cctype>
#include <fstream>
#include <map>
#include <mutex>
#include <set>
#include <thread>

#include "gpu/backend.h"
#include "gpu/topology.h"

namespace tessera::gpu {
namespace {

// Xids caused by the application rather than the card (bad kernel, page fault in user code,
// preemption): a GPU that reports them is still fit for the next pod.
const std::set<unsigned long long> kApplicationXids = {13, 31, 43, 45, 68, 109};

struct NvmlApi {
  decltype(&nvmlInit_v2) init = nullptr;
  decltype(&nvmlShutdown) shutdown = nullptr;
  decltype(&nvmlErrorString) error_string = nullptr;
  decltype(&nvmlDeviceGetCount_v2) get_count = nullptr;
  decltype(&nvmlDeviceGetHandleByIndex_v2) get_handle = nullptr;
  decltype(&nvmlDeviceGetUUID) get_uuid = nullptr;
  decltype(&nvmlDeviceGetName) get_name = nullptr;
  decltype(&nvmlDeviceGetMemoryInfo) get_memory = nullptr;
  decltype(&nvmlDeviceGetPciInfo_v3) get_pci = nullptr;
  decltype(&nvmlDeviceGetMemoryAffinity) get_memory_affinity = nullptr;  // optional (older drivers)
  decltype(&nvmlDeviceGetUtilizationRates) get_utilization = nullptr;
  // Per-process memory (optional each): CUDA compute contexts, graphics contexts (Vulkan/OpenGL memory the
  // CUDA shim never sees) and MPS clients.
  decltype(&nvmlDeviceGetComputeRunningProcesses_v3) get_processes = nullptr;
  decltype(&nvmlDeviceGetGraphicsRunningProcesses_v3) get_graphics_processes = nullptr;
  decltype(&nvmlDeviceGetMPSComputeRunningProcesses_v3) get_mps_processes = nullptr;
  decltype(&nvmlDeviceGetCudaComputeCapability) get_compute_capability = nullptr;  // optional
  decltype(&nvmlSystemGetDriverVersion) get_driver_version = nullptr;              // optional
  decltype(&nvmlEventSetCreate) event_set_create = nullptr;
  decltype(&nvmlEventSetFree) event_set_free = nullptr;
  decltype(&nvmlDeviceRegisterEvents) register_events = nullptr;
  decltype(&nvmlDeviceGetSupportedEventTypes) supported_events = nullptr;
  decltype(&nvmlEventSetWait_v2) event_wait = nullptr;
  // Topology (optional: without them GPUs are published with no links).
  decltype(&nvmlDeviceGetTopologyCommonAncestor) common_ancestor = nullptr;
  decltype(&nvmlDeviceGetAttributes_v2) attributes = nullptr;  // SM count
  decltype(&nvmlDeviceGetNvLinkState) nvlink_state = nullptr;
  decltype(&nvmlDeviceGetNvLinkRemotePciInfo_v2) nvlink_remote = nullptr;
};

template <typename F>
bool Resolve(void* lib, const char* name, F* out, bool required, std::string* missing) {
  *out = reinterpret_cast<F>(dlsym(lib, name));
  if (!*out && required) {
    *missing += std::string(missing->empty() ? "" : ", ") + name;
    return false;
  }
  return true;
}

std::string SysfsBusId(const char* nvml_bus_id) {
  // NVML: "00000000:3B:00.0" (8-digit domain); sysfs: "0000:3b:00.0".
  std::string id(nvml_bus_id);
  if (id.size() > 12) id = id.substr(id.size() - 12);
  std::transform(id.begin(), id.end(), id.begin(), [](unsigned char c) { return std::tolower(c); });
  return id;
}

int NumaFromSysfs(const std::string& bus_id) {
  std::ifstream in("/sys/bus/pci/devices/" + bus_id + "/numa_node");
  int node = -1;
  if (in >> node) return node < 0 ? -1 : node;
  return -1;
}

class NvmlBackend : public Backend {
 public:
  explicit NvmlBackend(std::string library) : library_(std::move(library)) {}
  ~NvmlBackend() override {
    std::lock_guard<std::mutex> lock(mu_);
    if (events_ && api_.event_set_free) api_.event_set_free(events_);
    if (initialised_ && api_.shutdown) api_.shutdown();
    if (lib_) dlclose(lib_);
  }

  std::string Name() const override { return "nvml"; }

  Status Init() override {
    std::lock_guard<std::mutex> lock(mu_);
    if (initialised_) return Status::Ok();
    if (!lib_) {
      lib_ = dlopen(library_.c_str(), RTLD_NOW | RTLD_LOCAL);
      if (!lib_) {
        const char* why = dlerror();
        return Status::Error("cannot load " + library_ + " (" + (why ? why : "unknown") +
                             "): is the NVIDIA driver installed and its libraries visible to the agent?");
      }
      std::string missing;
      bool ok = true;
      ok &= Resolve(lib_, "nvmlInit_v2", &api_.init, true, &missing);
      ok &= Resolve(lib_, "nvmlShutdown", &api_.shutdown, true, &missing);
      ok &= Resolve(lib_, "nvmlErrorString", &api_.error_string, true, &missing);
      ok &= Resolve(lib_, "nvmlDeviceGetCount_v2", &api_.get_count, true, &missing);
      ok &= Resolve(lib_, "nvmlDeviceGetHandleByIndex_v2", &api_.get_handle, true, &missing);
      ok &= Resolve(lib_, "nvmlDeviceGetUUID", &api_.get_uuid, true, &missing);
      ok &= Resolve(lib_, "nvmlDeviceGetName", &api_.get_name, true, &missing);
      ok &= Resolve(lib_, "nvmlDeviceGetMemoryInfo", &api_.get_memory, true, &missing);
      ok &= Resolve(lib_, "nvmlDeviceGetPciInfo_v3", &api_.get_pci, true, &missing);
      ok &= Resolve(lib_, "nvmlDeviceGetUtilizationRates", &api_.get_utilization, true, &missing);
      ok &= Resolve(lib_, "nvmlEventSetCreate", &api_.event_set_create, true, &missing);
      ok &= Resolve(lib_, "nvmlEventSetFree", &api_.event_set_free, true, &missing);
      ok &= Resolve(lib_, "nvmlDeviceRegisterEvents", &api_.register_events, true, &missing);
      ok &= Resolve(lib_, "nvmlDeviceGetSupportedEventTypes", &api_.supported_events, true, &missing);
      ok &= Resolve(lib_, "nvmlEventSetWait_v2", &api_.event_wait, true, &missing);
      Resolve(lib_, "nvmlDeviceGetMemoryAffinity", &api_.get_memory_affinity, false, &missing);
      Resolve(lib_, "nvmlDeviceGetComputeRunningProcesses_v3", &api_.get_processes, false, &missing);
      Resolve(lib_, "nvmlDeviceGetGraphicsRunningProcesses_v3", &api_.get_graphics_processes, false, &missing);
      Resolve(lib_, "nvmlDeviceGetMPSComputeRunningProcesses_v3", &api_.get_mps_processes, false, &missing);
      Resolve(lib_, "nvmlDeviceGetCudaComputeCapability", &api_.get_compute_capability, false, &missing);
      Resolve(lib_, "nvmlSystemGetDriverVersion", &api_.get_driver_version, false, &missing);
      Resolve(lib_, "nvmlDeviceGetTopologyCommonAncestor", &api_.common_ancestor, false, &missing);
      Resolve(lib_, "nvmlDeviceGetAttributes_v2", &api_.attributes, false, &missing);
      Resolve(lib_, "nvmlDeviceGetNvLinkState", &api_.nvlink_state, false, &missing);
      Resolve(lib_, "nvmlDeviceGetNvLinkRemotePciInfo_v2", &api_.nvlink_remote, false, &missing);
      if (!ok) {
        dlclose(lib_);
        lib_ = nullptr;
        return Status::Error(library_ + " lacks " + missing + ": the driver is too old for Tessera");
      }
    }
    nvmlReturn_t rc = api_.init();
    if (rc != NVML_SUCCESS) return Err("nvmlInit_v2", rc);
    initialised_ = true;
    return RegisterEventsLocked();
  }

  Status Discover(std::vector<GpuInfo>* out) override {
    std::lock_guard<std::mutex> lock(mu_);
    if (!initialised_) return Status::Error("nvml backend: Discover before Init");
    unsigned int count = 0;
    nvmlReturn_t rc = api_.get_count(&count);
    if (rc != NVML_SUCCESS) return Err("nvmlDeviceGetCount_v2", rc);
    out->clear();
    std::string driver_version;
    char version[NVML_SYSTEM_DRIVER_VERSION_BUFFER_SIZE] = {};
    if (api_.get_driver_version && api_.get_driver_version(version, sizeof(version)) == NVML_SUCCESS) {
      driver_version = version;
    }
    for (unsigned int i = 0; i < count; ++i) {
      nvmlDevice_t dev{};
      rc = api_.get_handle(i, &dev);
      if (rc != NVML_SUCCESS) return Err("nvmlDeviceGetHandleByIndex_v2(" + std::to_string(i) + ")", rc);
      GpuInfo info;
      info.index = static_cast<int>(i);
      char buf[NVML_DEVICE_UUID_V2_BUFFER_SIZE] = {};
      rc = api_.get_uuid(dev, buf, sizeof(buf));
      if (rc != NVML_SUCCESS) return Err("nvmlDeviceGetUUID", rc);
      info.uuid = buf;
      char name[NVML_DEVICE_NAME_V2_BUFFER_SIZE] = {};
      rc = api_.get_name(dev, name, sizeof(name));
      if (rc != NVML_SUCCESS) return Err("nvmlDeviceGetName", rc);
      info.model = name;
      nvmlMemory_t mem{};
      rc = api_.get_memory(dev, &mem);
      if (rc != NVML_SUCCESS) return Err("nvmlDeviceGetMemoryInfo", rc);
      info.memory_bytes = mem.total;
      nvmlPciInfo_t pci{};
      if (api_.get_pci(dev, &pci) == NVML_SUCCESS) info.pci_bus_id = SysfsBusId(pci.busId);
      // The host NUMA node nearest the GPU (what `nvidia-smi topo -m` calls NUMA affinity): the driver
      // knows it even in VMs whose PCI devices report no node in sysfs.
      info.numa_node = NearestNumaNode(dev);
      if (info.numa_node < 0 && !info.pci_bus_id.empty()) info.numa_node = NumaFromSysfs(info.pci_bus_id);
      int major = 0, minor = 0;
      if (api_.get_compute_capability && api_.get_compute_capability(dev, &major, &minor) == NVML_SUCCESS) {
        info.compute_capability = std::to_string(major) + "." + std::to_string(minor);
      }
      info.driver_version = driver_version;
      nvmlDeviceAttributes_t attr{};
      if (api_.attributes && api_.attributes(dev, &attr) == NVML_SUCCESS)
        info.sm_count = static_cast<int>(attr.multiprocessorCount);
      auto h = unhealthy_.find(info.uuid);
      if (h != unhealthy_.end()) {
        info.healthy = false;
        info.health_reason = h->second;
      }
      handles_[info.uuid] = dev;
      out->push_back(std::move(info));
    }
    LinksLocked(out);
    return Status::Ok();
  }

  // Fills GpuInfo::links: NV<n> where NVLinks join two GPUs (directly, or both through the NVSwitch
  // fabric: a link whose far end is no GPU of this host), else the PCIe path from the common ancestor.
  void LinksLocked(std::vector<GpuInfo>* gpus) {
    const size_t n = gpus->size();
    std::vector<std::map<std::string, int>> to_gpu(n);  // per GPU: active links per far-end GPU uuid
    std::vector<int> to_fabric(n, 0);
    std::map<std::string, std::string> by_bus;
    for (const auto& g : *gpus) by_bus[g.pci_bus_id] = g.uuid;
    for (size_t i = 0; i < n && api_.nvlink_state && api_.nvlink_remote; ++i) {
      nvmlDevice_t dev = handles_[(*gpus)[i].uuid];
      for (unsigned int link = 0; link < NVML_NVLINK_MAX_LINKS; ++link) {
        nvmlEnableState_t active = NVML_FEATURE_DISABLED;
        if (api_.nvlink_state(dev, link, &active) != NVML_SUCCESS || active != NVML_FEATURE_ENABLED) continue;
        nvmlPciInfo_t remote{};
        if (api_.nvlink_remote(dev, link, &remote) != NVML_SUCCESS) continue;
        auto peer = by_bus.find(SysfsBusId(remote.busId));
        if (peer != by_bus.end()) ++to_gpu[i][peer->second];
        else ++to_fabric[i];
      }
    }
    for (size_t i = 0; i < n; ++i) {
      for (size_t j = 0; j < n; ++j) {
        if (i == j) continue;
        const std::string& peer = (*gpus)[j].uuid;
        int nv = to_gpu[i].count(peer) ? to_gpu[i][peer] : 0;
        if (nv == 0 && to_fabric[i] > 0 && to_fabric[j] > 0) nv = std::min(to_fabric[i], to_fabric[j]);
        if (nv > 0) {
          (*gpus)[i].links[peer] = "NV" + std::to_string(std::min(nv, 64));
          continue;
        }
        nvmlGpuTopologyLevel_t level{};
        if (api_.common_ancestor &&
            api_.common_ancestor(handles_[(*gpus)[i].uuid], handles_[peer], &level) == NVML_SUCCESS)
          (*gpus)[i].links[peer] = LinkFromCommonAncestor(static_cast<int>(level));
      }
    }
  }

  Status Usage(const std::string& uuid, GpuUsage* out) override {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = handles_.find(uuid);
    if (it == handles_.end()) return Status::Error("nvml backend: unknown GPU " + uuid + " (Discover first)");
    nvmlMemory_t mem{};
    nvmlReturn_t rc = api_.get_memory(it->second, &mem);
    if (rc != NVML_SUCCESS) return Err("nvmlDeviceGetMemoryInfo", rc);
    out->memory_total_bytes = mem.total;
    out->memory_used_bytes = mem.used;
    nvmlUtilization_t util{};
    out->utilization_percent =
        api_.get_utilization(it->second, &util) == NVML_SUCCESS ? static_cast<int>(util.gpu) : -1;
    ProcessesLocked(it->second, &out->processes);
    return Status::Ok();
  }

  Status Processes(const std::string& uuid, std::vector<ProcessUsage>* out) override {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = handles_.find(uuid);
    if (it == handles_.end()) return Status::Error("nvml backend: unknown GPU " + uuid + " (Discover first)");
    if (!api_.get_processes) {
      return Status::Error("nvml backend: the driver has no nvmlDeviceGetComputeRunningProcesses_v3");
    }
    return ProcessesLocked(it->second, out);
  }

  Status WaitHealthEvent(std::chrono::milliseconds timeout, std::optional<HealthEvent>* event) override {
    event->reset();
    nvmlEventSet_t set;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (!initialised_) return Status::Error("nvml backend: WaitHealthEvent before Init");
      set = events_;
    }
    if (!set) {
      // No device supports critical events (e.g. some virtualised GPUs): nothing will ever arrive.
      std::this_thread::sleep_for(timeout);
      return Status::Ok();
    }
    nvmlEventData_t data{};
    // The wait runs without mu_ so Discover/Usage stay responsive; NVML allows concurrent calls.
    nvmlReturn_t rc = api_.event_wait(set, &data, static_cast<unsigned int>(timeout.count()));
    if (rc == NVML_ERROR_TIMEOUT) return Status::Ok();
    if (rc != NVML_SUCCESS) return Err("nvmlEventSetWait_v2", rc);
    std::lock_guard<std::mutex> lock(mu_);
    std::string uuid;
    for (const auto& [u, h] : handles_) {
      if (h == data.device) uuid = u;
    }
    if (uuid.empty()) return Status::Ok();
    std::string reason;
    if (data.eventType == nvmlEventTypeXidCriticalError) {
      if (kApplicationXids.count(data.eventData)) return Status::Ok();
      reason = "Xid " + std::to_string(data.eventData);
    } else if (data.eventType == nvmlEventTypeDoubleBitEccError) {
      reason = "double-bit ECC error";
    } else {
      return Status::Ok();
    }
    unhealthy_[uuid] = reason;
    *event = HealthEvent{uuid, false, reason};
    return Status::Ok();
  }

 private:
  Status RegisterEventsLocked() {
    unsigned int count = 0;
    if (api_.get_count(&count) != NVML_SUCCESS) return Status::Ok();
    nvmlEventSet_t set{};
    if (api_.event_set_create(&set) != NVML_SUCCESS) return Status::Ok();
    bool any = false;
    for (unsigned int i = 0; i < count; ++i) {
      nvmlDevice_t dev{};
      if (api_.get_handle(i, &dev) != NVML_SUCCESS) continue;
      char buf[NVML_DEVICE_UUID_V2_BUFFER_SIZE] = {};
      if (api_.get_uuid(dev, buf, sizeof(buf)) == NVML_SUCCESS) handles_[buf] = dev;
      unsigned long long supported = 0;
      if (api_.supported_events(dev, &supported) != NVML_SUCCESS) continue;
      unsigned long long wanted =
          supported & (nvmlEventTypeXidCriticalError | nvmlEventTypeDoubleBitEccError);
      if (wanted && api_.register_events(dev, wanted, set) == NVML_SUCCESS) any = true;
    }
    if (any) {
      events_ = set;
    } else {
      api_.event_set_free(set);
    }
    return Status::Ok();
  }

  // Every process of the GPU from the three lists, one entry per pid: a process with compute and graphics
  // contexts appears in both with the same figure, so the larger is kept rather than the sum.
  Status ProcessesLocked(nvmlDevice_t dev, std::vector<ProcessUsage>* out) {
    out->clear();
    Status first = Status::Ok();
    for (auto list : {api_.get_processes, api_.get_graphics_processes, api_.get_mps_processes}) {
      if (!list) continue;
      procs_.resize(std::max<size_t>(procs_.size(), 64));
      unsigned int n = static_cast<unsigned int>(procs_.size());
      nvmlReturn_t rc = list(dev, &n, procs_.data());
      if (rc == NVML_ERROR_INSUFFICIENT_SIZE) {  // n is now the count needed; more may start meanwhile
        procs_.resize(n + 16);
        n = static_cast<unsigned int>(procs_.size());
        rc = list(dev, &n, procs_.data());
      }
      if (rc == NVML_ERROR_NOT_SUPPORTED) continue;
      if (rc != NVML_SUCCESS) {
        if (first.ok()) first = Err("nvmlDevice*RunningProcesses_v3", rc);
        continue;
      }
      for (unsigned int i = 0; i < n; ++i) {
        const nvmlProcessInfo_t& p = procs_[i];
        const bool known = p.usedGpuMemory != static_cast<unsigned long long>(NVML_VALUE_NOT_AVAILABLE);
        const uint64_t used = known ? p.usedGpuMemory : 0;
        auto same = std::find_if(out->begin(), out->end(), [&](const ProcessUsage& u) { return u.pid == p.pid; });
        if (same == out->end()) {
          out->push_back(ProcessUsage{p.pid, used, known});
        } else if (known) {
          same->used_bytes = std::max(same->used_bytes, used);
          same->used_known = true;
        }
      }
    }
    // The compute list is the one that must work; the others are extras some drivers refuse.
    return api_.get_processes ? first : Status::Ok();
  }

  Status Err(const std::string& what, nvmlReturn_t rc) const {
    const char* s = api_.error_string ? api_.error_string(rc) : "?";
    return Status::Error(what + " failed: " + s + " (" + std::to_string(static_cast<int>(rc)) + ")");
  }

  std::string library_;
  std::mutex mu_;
  void* lib_ = nullptr;
  // Lowest NUMA node in the GPU's memory affinity set, -1 when the driver cannot say.
  int NearestNumaNode(nvmlDevice_t dev) {
    if (!api_.get_memory_affinity) return -1;
    constexpr unsigned kWords = 16;  // 1024 nodes
    unsigned long set[kWords] = {};
    if (api_.get_memory_affinity(dev, kWords, set, NVML_AFFINITY_SCOPE_NODE) != NVML_SUCCESS) return -1;
    constexpr unsigned kBits = 8 * sizeof(unsigned long);
    for (unsigned w = 0; w < kWords; ++w) {
      if (set[w] != 0) return static_cast<int>(w * kBits + __builtin_ctzl(set[w]));
    }
    return -1;
  }

  NvmlApi api_;
  bool initialised_ = false;
  nvmlEventSet_t events_ = nullptr;
  std::map<std::string, nvmlDevice_t> handles_;
  std::map<std::string, std::string> unhealthy_;
  std::vector<nvmlProcessInfo_t> procs_;  // scratch for the process lists (under mu_)
};

}  // namespace

std::unique_ptr<Backend> MakeNvmlBackend(std::string library) {
  return std::make_unique<NvmlBackend>(std::move(library));
}

}  // namespace tessera::gpu
