// gpu::Backend: how the node agent learns about the GPUs of its host.
//
// The agent calls Init() once, Discover() at start-up and whenever it republishes the node, Usage() from
// the metrics scrape, and WaitHealthEvent() in a loop on one dedicated watcher thread. Implementations
// make Discover() and Usage() safe to call from any thread, concurrently with WaitHealthEvent().
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
  bool healthy = true;
  std::string health_reason;  // why it is unhealthy; empty when healthy
  // Link to each other GPU of the host by uuid: NV<n>, PIX, PXB, PHB, NODE or SYS (gpu/topology.h).
  // Empty when the backend cannot tell.
  std::map<std::string, std::string> links = {};
  int sm_count = 0;       // streaming multiprocessors; 0 when unknown (spatial slices' mps_sms)
  bool cordoned = false;  // set by the agent (tessera.dev/cordon), never by a backend
};

struct ProcessUsage {
  uint32_t pid = 0;
  uint64_t used_bytes = 0;
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

  // Current memory use and utilisation of one GPU.
  virtual Status Usage(const std::string& uuid, GpuUsage* out) = 0;

  // Waits up to `timeout` for the next health change. On return with ok(): *event holds the change, or
  // is empty when the timeout passed without one.
  virtual Status WaitHealthEvent(std::chrono::milliseconds timeout, std::optional<HealthEvent>* event) = 0;
};

// The NVML backend; `library` is what dlopen() is given.
std::unique_ptr<Backend> MakeNvmlBackend(std::string library = "libnvidia-ml.so.1");

}  // namespace tessera::gpu
