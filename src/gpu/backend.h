// gpu::Backend: how the node agent learns about the GPUs of its host.
//
// The agent calls Init() once, Discover() at start-up and whenever it republishes the node, Usage() from
// the metrics scrape, Processes() from the watchdog's poll, and WaitHealthEvent() in a loop on one
// dedicated watcher thread. Implementations make Discover(), Usage() and Processes() safe to call from any
// thread, concurrently with WaitHealthEvent().
// Only one thread may call WaitHealthEvent() at a time.
//
// GPUs are identified by UUID ("GPU-..."), never by index: indexes change with CUDA_VISIBLE_DEVICES
// and across reboots, UUIDs do not.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "gpu/status.h"

namespace tessera::gpu {

struct GpuInfo {
  int index = 0;              // enumeration order on this host (informational only)
  std::string uuid;           // "GPU-xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx"
  std::string model;          // e.g. "NVIDIA H100 80GB HBM3"
  uint64_t memory_bytes = 0;  // total device memory
  int numa_node = -1;         // -1 when the platform does not say
  std::string pci_bus_id;     // "0000:3b:00.0" when known
  std::string compute_capability;  // "9.0" when known
  std::string driver_version;      // the kernel driver's, "570.86.15", when known
  bool healthy = true;
  std::string health_reason;  // why it is unhealthy; empty when healthy
  // Link to each other GPU of the host by uuid: NV<n>, PIX, PXB, PHB, NODE or SYS (gpu/topology.h).
  // Empty when the backend cannot tell.
  std::map<std::string, std::string> links = {};
  int sm_count = 0;       // streaming multiprocessors; 0 when unknown (spatial slices' mps_sms)
  bool cordoned = false;  // set by the agent (tessera.dev/cordon), never by a backend
};

// One process holding memory on a GPU, as the driver sees it: pid in the host's pid namespace (NVML
// always names processes so, whatever namespace asks).
struct ProcessUsage {
  uint32_t pid = 0;
  uint64_t used_bytes = 0;
  bool used_known = true;  // false: the driver lists the process but cannot say how much it holds
  bool operator==(const ProcessUsage&) const = default;
};

struct GpuUsage {
  uint64_t memory_used_bytes = 0;
  uint64_t memory_total_bytes = 0;
  int utilization_percent = -1;  // SM busy percent over the driver's last sample; -1 unknown
  std::vector<ProcessUsage> processes;
};

// A change of one GPU's health. `healthy` is the new state.
struct HealthEvent {
  std::string uuid;
  bool healthy = false;
  std::string reason;  // e.g. "Xid 79 (GPU has fallen off the bus)"
};

class Backend {
 public:
  virtual ~Backend() = default;

  // Short name for logs and metrics: "nvml", "sim", "fault(sim)".
  virtual std::string Name() const = 0;

  // Prepares the backend; safe to call again after a failure.
  virtual Status Init() = 0;

  // Every GPU of the host with its current health, in index order.
  virtual Status Discover(std::vector<GpuInfo>* out) = 0;

  // Current memory use and utilisation of one GPU, with its processes.
  virtual Status Usage(const std::string& uuid, GpuUsage* out) = 0;

  // Only the processes of one GPU (compute, graphics and MPS clients; one entry per pid), what the
  // watchdog reads every poll. The default asks Usage(); backends override it when they can do less.
  virtual Status Processes(const std::string& uuid, std::vector<ProcessUsage>* out) {
    GpuUsage u;
    Status st = Usage(uuid, &u);
    if (st.ok()) *out = std::move(u.processes);
    return st;
  }

  // Waits up to `timeout` for the next health change. On return with ok(): *event holds the change, or
  // is empty when the timeout passed without one.
  virtual Status WaitHealthEvent(std::chrono::milliseconds timeout, std::optional<HealthEvent>* event) = 0;
};

// The NVML backend; `library` is what dlopen() is given.
std::unique_ptr<Backend> MakeNvmlBackend(std::string library = "libnvidia-ml.so.1");

}  // namespace tessera::gpu
