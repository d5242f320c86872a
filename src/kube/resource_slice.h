// Dynamic Resource Allocation objects of driver gpu.tessera.io: the ResourceSlice a node agent publishes
// for its GPUs, and the reading of a ResourceClaim's allocation that its kubelet plugin prepares.
//
// Each GPU is one device named after its UUID ("gpu-<uuid in lower case>", a DNS label that survives
// reboots and re-enumeration), shared by several claims (allowMultipleAllocations) through two consumable
// capacities: `memory` (bytes, whole MiB, default the whole card) and `cores` (percent of the SMs, 0..100,
// default 100). A claim that names neither therefore gets the card exclusively, as `nvidia.com/gpu: 1`
// does on the extender path. Attributes for CEL selectors: uuid, model, index, memory (MiB),
// numaNode, pciBusID, computeCapability, driverVersion (the last four when known), e.g.
//   device.attributes["gpu.tessera.io"].model.startsWith("NVIDIA H100")
//   device.capacity["gpu.tessera.io"].memory.compareTo(quantity("40Gi")) >= 0
// An unhealthy GPU stays listed with a NoSchedule taint `gpu.tessera.io/unhealthy` (value: the reason),
// so the scheduler places no new claim on it and `kubectl get resourceslice -o yaml` says why.
//
// Pure functions over JSON; no I/O. Thread-safe.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "kube/client.h"

namespace tessera::kube {

inline constexpr const char* kDraDriver = "gpu.tessera.io";
inline constexpr const char* kDraUnhealthyTaint = "gpu.tessera.io/unhealthy";
inline constexpr Resource kResourceSlices{"/apis/resource.k8s.io/v1", "resourceslices", false};
inline constexpr Resource kResourceClaims{"/apis/resource.k8s.io/v1", "resourceclaims", true};
inline constexpr Resource kResourceClaimTemplates{"/apis/resource.k8s.io/v1", "resourceclaimtemplates", true};
inline constexpr Resource kDeviceClasses{"/apis/resource.k8s.io/v1", "deviceclasses", false};

// One GPU as the ResourceSlice describes it (the agent fills it from gpu::GpuInfo).
struct DraGpu {
  int index = 0;
  std::string uuid;
  std::string model;
  uint64_t memory_bytes = 0;
  int numa_node = -1;              // -1: unknown (attribute left out)
  std::string pci_bus_id;          // empty: unknown
  std::string compute_capability;  // "9.0"; empty: unknown
  std::string driver_version;      // "570.86.15"; empty: unknown
  bool healthy = true;
  std::string health_reason;
};

// "GPU-AB12…" → "gpu-ab12…" (lower case, anything outside [a-z0-9-] becomes '-', at most 63 characters).
std::string DraDeviceName(const std::string& uuid);

// The name of the node's single ResourceSlice: "<node>-gpu.tessera.io" (shortened with a hash when longer
// than 253 characters).
std::string DraSliceName(const std::string& node);

// The node's ResourceSlice: pool = node name, one pool slice, `generation` as given. node_uid, when not
// empty, makes the Node the slice's owner, so deleting the Node deletes the slice.
Json BuildResourceSlice(const std::string& node, const std::string& node_uid, const std::vector<DraGpu>& gpus,
                        int64_t generation);

// The DRA-relevant parts of two ResourceSlice specs are equal (devices, pool name, node): republishing
// is needed only when they are not.
bool SameSliceDevices(const Json& a, const Json& b);

// One device our driver got in a claim's allocation, with the capacity it consumes.
struct DraAllocatedDevice {
  std::string request;   // the claim's request name (a "request/subrequest" pair for firstAvailable)
  std::string pool;      // node name
  std::string device;    // DraDeviceName(uuid)
  std::string share_id;  // empty when the allocation is not shared
  int64_t memory_bytes = -1;  // consumedCapacity.memory; -1 when absent (the whole card)
  int cores = -1;             // consumedCapacity.cores; -1 when absent (100)
};

// The opaque configuration a claim (or its DeviceClass) may carry for driver gpu.tessera.io:
//   {"apiVersion": "gpu.tessera.io/v1", "kind": "SliceConfig", "priority": 0|1, "capMode": "hard"|"burst"}
struct DraSliceConfig {
  int priority = 1;  // 0 high, 1 best effort
  bool burst = false;
};

// One opaque config entry of our driver: the requests it applies to (empty: all) and its parameters.
struct DraConfigEntry {
  std::vector<std::string> requests;
  Json parameters;
};

struct DraClaimAllocation {
  std::vector<DraAllocatedDevice> devices;  // only our driver's, in allocation order
  std::vector<DraConfigEntry> config;       // class config first, then the claim's, as the API orders them
  // The config for one request: every entry that applies, later ones overriding earlier ones.
  DraSliceConfig ConfigFor(const std::string& request) const;
};

// Reads status.allocation of a ResourceClaim. Fails (naming the field) when the claim is not allocated,
// a result of our driver lacks pool/device, a consumed capacity is malformed or out of range, or our
// opaque config has an unknown field or a value outside its range.
Result<DraClaimAllocation> ParseClaimAllocation(const Json& claim);

// Parses one opaque parameters object of our driver (see DraSliceConfig) onto *cfg.
Status ParseDraSliceConfig(const Json& params, const std::string& where, DraSliceConfig* cfg);

}  // namespace tessera::kube
