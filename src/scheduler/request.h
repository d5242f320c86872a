// From a Pod's JSON to the placement engine's PodRequest, with HAMi's semantics, and the validation the
// admission webhook applies.
//
// Called by the extender (filter/prioritize/bind) and the webhook. Semantics (issue 4, item 2):
//  - nvidia.com/gpu: GPUs per container; alone (no memory/cores) it means the whole card, exclusive.
//  - nvidia.com/gpumem: MiB per GPU; nvidia.com/gpumem-percentage: % of the card (gpumem wins if both);
//    neither: the whole card's memory. nvidia.com/gpucores: % of the card's compute (100 = exclusive).
//  - memory or cores without nvidia.com/gpu: one GPU.
//  - limits are read first, then requests (Kubernetes copies extended-resource limits into requests).
//  - annotations nvidia.com/use-gputype, nouse-gputype, use-gpuuuid, nouse-gpuuuid (comma lists),
//    nvidia.com/numa-bind, hami.io/node-scheduler-policy and hami.io/gpu-scheduler-policy (values and
//    comma lists: scheduler/policy.h), tessera.dev/compute-mode (time-sliced | spatial; absent: the
//    node's default) and tessera.dev/spatial-share-namespaces (true | false; absent: the flag's default).
//  - init containers are placed too (their slices listed separately in tessera.dev/init-devices), with
//    Kubernetes' rule: they run one at a time before the app containers, so the pod needs per GPU the
//    larger of its app containers' sum and each init container (plus the sidecars declared before it); an
//    init container reuses what the pod holds for its app containers. Sidecars (init containers with
//    restartPolicy Always) run beside the app containers and count like them. See ClusterView::Reserve.
// Pure functions; thread-safe.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "kube/annotations.h"
#include "kube/result.h"
#include "placement/engine.h"
#include "scheduler/policy.h"

namespace tessera::scheduler {

struct ResourceNames {
  std::string gpu = "nvidia.com/gpu";
  std::string memory = "nvidia.com/gpumem";
  std::string memory_percent = "nvidia.com/gpumem-percentage";
  std::string cores = "nvidia.com/gpucores";
  std::string priority = "nvidia.com/priority";
  // True if `name` is one of ours (the webhook's "asks for any GPU resource").
  bool IsOurs(const std::string& name) const {
    return name == gpu || name == memory || name == memory_percent || name == cores || name == priority;
  }
};

struct ParseOptions {
  ResourceNames names;
  PolicyChoice default_node_policy{placement::Policy::kBinpack};
  PolicyChoice default_gpu_policy{placement::Policy::kSpread};
  // Spatial pods of different namespaces may share a GPU when each allows it; this is the default of a
  // pod that does not say (tessera.dev/spatial-share-namespaces).
  bool spatial_share_namespaces = false;
};

// A small id per namespace, the same for the life of the process (placement's ContainerRequest::tenant).
int32_t NamespaceId(const std::string& ns);

// Where each ContainerRequest came from.
struct ContainerRef {
  bool init = false;
  bool sidecar = false;  // an init container with restartPolicy Always: runs beside the app containers
  int index = 0;         // into spec.containers or spec.initContainers
  bool cores_stated = false;  // states nvidia.com/gpucores (Kubernetes' quota counts it)
  int priority = -1;          // nvidia.com/priority as stated (0 or 1, validated); -1: not stated
  bool concurrent() const { return !init || sidecar; }  // holds its slice while the app containers run
};

struct ParsedPod {
  std::string ns, name, uid;
  bool wants_gpu = false;           // any container asks for one of our resources
  placement::PodRequest request;    // only the containers that get GPUs
  std::vector<ContainerRef> refs;   // parallel to request.containers
  int num_containers = 0;
  int num_init_containers = 0;
  std::vector<bool> init_sidecar;   // per spec.initContainers index: restartPolicy Always
  bool gpu_defaulted = false;       // some container got nvidia.com/gpu=1 implicitly
  bool burst = false;               // tessera.dev/cap-mode=burst (validated: hard or burst; absent: hard)
  // What the bind hands the node beside the devices (tessera.dev/container-settings): each GPU container's
  // priority (stated, else best effort) and the pod's cap mode, per spec index.
  kube::PodSettings Settings() const;
  // True if a run-once init container asks for a GPU (placement then reuses the pod's app slices for it).
  bool HasSequentialInitGpu() const {
    for (const auto& r : refs)
      if (!r.concurrent()) return true;
    return false;
  }
};

// Parses and validates. Errors carry a message naming the container, the field, the value and the
// allowed range, e.g. `container "w": nvidia.com/gpumem-percentage=120 is out of range (1..100)`.
// `max_gpu_memory_mib` > 0 also rejects nvidia.com/gpumem above the largest GPU known.
kube::Result<ParsedPod> ParsePod(const nlohmann::json& pod, const ParseOptions& opts, int64_t max_gpu_memory_mib = 0);

// The pod's CPU (millicores) and host memory (MiB) requests, Kubernetes-style: max(largest init container,
// sum of containers).
void PodCpuMemory(const nlohmann::json& pod, int64_t* cpu_milli, int64_t* memory_mib);

// The pod's annotation `key` when it is a string, else "".
std::string PodAnnotation(const nlohmann::json& pod, const char* key);
// One path segment of a JSON Patch path (RFC 6901): "nvidia.com/gpu" -> "nvidia.com~1gpu".
std::string JsonPointerEscape(const std::string& segment);

// True if any container (init or not) names one of our resources in limits or requests.
bool WantsGpu(const nlohmann::json& pod, const ResourceNames& names);

}  // namespace tessera::scheduler
