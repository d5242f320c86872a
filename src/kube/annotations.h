// The Node and Pod annotation contract between `tessera agent` (publishes GPUs, allocates slices) and
// `tessera scheduler` (places pods, writes assignments), plus HAMi's compatible names.
//
// Node (written by the agent, read by the scheduler and `tessera doctor`):
//   annotation tessera.dev/gpus = JSON array, one entry per GPU:
//     [{"uuid":"GPU-…","model":"A100-SXM4-40GB","memory_mib":40960,"cores":100,"numa":0,"healthy":true,
//       "links":{"GPU-…":"NV12"}}, …]
//   ("cores" may be omitted: 100. "links": the link to each other GPU, src/gpu/topology.h; may be omitted.
//   "cordoned": true when the admin cordoned it, see below; it is then also "healthy": false.)
//   annotation tessera.dev/compute-mode = time-sliced | spatial: the mode a pod without its own gets here.
//   annotation tessera.dev/cordon (written by the admin) = comma list of GPU uuids or indexes the agent
//   stops offering; pods already running on them keep running. status.capacity/allocatable["nvidia.com/gpu"] = GPUs × split count.
//   label tessera.dev/gpu-node=true once the agent has published (informational; nothing waits on it).
// Pod (written by the scheduler at bind time, carried in the Binding itself; read by the agent at Allocate):
//   tessera.dev/assigned-node    node name
//   tessera.dev/devices          JSON array indexed like spec.containers; element i is the list of GPU
//                                slices of container i ([] when it has none):
//                                [[{"uuid":"GPU-…","memory_mib":3276,"cores":25}], []]
//   tessera.dev/init-devices     same shape for spec.initContainers (absent when none ask for a GPU)
//   tessera.dev/bind-time        RFC 3339 UTC time of the bind
//   tessera.dev/allocation-state "pending" (scheduler) → "allocated" (agent, after Allocate)
//   tessera.dev/compute-mode     time-sliced | spatial (user's choice, else the node's; the scheduler writes
//                                the resolved mode at bind, the agent gives spatial slices an MPS server)
//   tessera.dev/spatial-share-namespaces "true": this spatial pod may share a GPU with other namespaces'
//                                spatial pods that allow it too (default: the scheduler's flag)
//   hami.io/vgpu-devices-allocated, hami.io/bind-phase: HAMi's equivalents, written for compatibility.
// Plain functions and value types; thread-safe.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "kube/result.h"

namespace tessera::kube {

inline constexpr const char* kAnnoGpus = "tessera.dev/gpus";
inline constexpr const char* kLabelGpuNode = "tessera.dev/gpu-node";
inline constexpr const char* kAnnoAssignedNode = "tessera.dev/assigned-node";
inline constexpr const char* kAnnoDevices = "tessera.dev/devices";
inline constexpr const char* kAnnoInitDevices = "tessera.dev/init-devices";
inline constexpr const char* kAnnoBindTime = "tessera.dev/bind-time";
inline constexpr const char* kAnnoAllocationState = "tessera.dev/allocation-state";
inline constexpr const char* kAnnoHamiDevices = "hami.io/vgpu-devices-allocated";
inline constexpr const char* kAnnoHamiBindPhase = "hami.io/bind-phase";
inline constexpr const char* kAnnoHamiNode = "hami.io/vgpu-node";
inline constexpr const char* kAnnoComputeMode = "tessera.dev/compute-mode";
inline constexpr const char* kAnnoSettings = "tessera.dev/container-settings";
inline constexpr const char* kAnnoCapMode = "tessera.dev/cap-mode";
inline constexpr const char* kCapHard = "hard";
inline constexpr const char* kCapBurst = "burst";
inline constexpr const char* kAnnoSpatialShare = "tessera.dev/spatial-share-namespaces";
inline constexpr const char* kAnnoCordon = "tessera.dev/cordon";
inline constexpr const char* kModeTimeSliced = "time-sliced";
inline constexpr const char* kModeSpatial = "spatial";
inline constexpr const char* kAllocationPending = "pending";
inline constexpr const char* kAllocationAllocated = "allocated";

// One GPU as the agent publishes it.
struct GpuInfo {
  std::string uuid;
  std::string model;
  int64_t memory_mib = 0;
  int cores = 100;
  int numa = 0;
  bool healthy = true;
  bool cordoned = false;
  std::map<std::string, std::string> links = {};  // peer uuid -> NV<n>, PIX, PXB, PHB, NODE, SYS
  bool operator==(const GpuInfo&) const = default;
};
std::string EncodeGpus(const std::vector<GpuInfo>& gpus);
// Errors name the entry and field ("tessera.dev/gpus[1].memory_mib: must be > 0").
Result<std::vector<GpuInfo>> DecodeGpus(const std::string& json);

// One GPU slice given to a container.
struct DeviceSlice {
  std::string uuid;
  int64_t memory_mib = 0;
  int cores = 0;
  bool operator==(const DeviceSlice&) const = default;
};
using ContainerDevices = std::vector<std::vector<DeviceSlice>>;  // per container index
std::string EncodeDevices(const ContainerDevices& d);
Result<ContainerDevices> DecodeDevices(const std::string& json);
// What the node applies to one container's slice beside its devices, resolved by the scheduler at bind:
// the priority from the container's priority resource (whatever name the scheduler was given for it), the
// cap mode from tessera.dev/cap-mode. The agent reads these and never the pod spec's resources.
struct ContainerSettings {
  int priority = 1;    // 0 high (latency-sensitive), 1 best effort
  bool burst = false;  // cap mode burst: may use SMs idle on the GPU past the cap; otherwise hard
  bool operator==(const ContainerSettings&) const = default;
};
// tessera.dev/container-settings: {"containers":[{"priority":0,"cap_mode":"hard"},...],"initContainers":[...]},
// one entry per spec index (containers without GPUs get the defaults).
struct PodSettings {
  std::vector<ContainerSettings> containers, init_containers;
  bool operator==(const PodSettings&) const = default;
};
std::string EncodeSettings(const PodSettings& s);
// Errors name the entry and field ("tessera.dev/container-settings.containers[1].priority: must be 0 or 1").
Result<PodSettings> DecodeSettings(const std::string& json);

// HAMi's "uuid,NVIDIA,mem,cores:;" per container, containers separated by ";".
std::string EncodeHamiDevices(const ContainerDevices& d);

}  // namespace tessera::kube
