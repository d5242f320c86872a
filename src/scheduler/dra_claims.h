// The extender path's pod requests as DRA ResourceClaims (issue 19, item 3): in DRA mode the mutating
// webhook turns a pod written for HAMi or the extender path into one that kube-scheduler places through
// driver gpu.tessera.io, so the same manifests run on either path.
//
// Each container (or init container) that gets GPUs (ParsePod's semantics) gets one ResourceClaim, made by
// kube's resourceclaim controller from a ResourceClaimTemplate in the pod's namespace:
//  - nvidia.com/gpu: N             -> one request of N devices (allocationMode ExactCount; N > 1 adds a
//                                     distinctAttribute constraint on the uuid, so N different GPUs)
//  - nvidia.com/gpumem: M          -> capacity memory "<M>Mi" on each device
//  - nvidia.com/gpumem-percentage  -> the percentage of each kind of GPU the cluster publishes (ResourceSlices
//                                     of gpu.tessera.io): one device size -> one request with a selector on
//                                     memoryMiB; several -> firstAvailable subrequests, smallest card first
//  - nvidia.com/gpucores: C        -> capacity cores "<C>" (stated 0 stays 0: no compute reserved)
//  - gpu alone (no memory, cores)  -> no capacity requests: the device's defaults, the whole card
//  - nvidia.com/priority, tessera.dev/cap-mode -> the opaque SliceConfig {priority, capMode}
//  - use-gputype / nouse-gputype   -> CEL on the model attribute (case-insensitive substring, as placement)
//  - use-gpuuuid / nouse-gpuuuid   -> CEL on the uuid attribute; numa-bind with N > 1 -> matchAttribute numaNode
// The pod's own copies of those resources are removed (no node advertises them in DRA mode), its
// schedulerName becomes the DRA scheduler's (default-scheduler unless configured), and each GPU container
// lists its claim in resources.claims. Templates are named by a hash of their spec, so identical requests
// in one namespace share one template.
//
// What differs from the extender path (docs/dra.md): gpucores 100 reserves all compute but not the memory
// another claim may still share; run-once init containers hold their own claim for the pod's lifetime;
// spatial mode and topology-aware GPU choice are refused / not applied.
// Pure functions; no I/O. Thread-safe.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "kube/result.h"
#include "scheduler/request.h"

namespace tessera::scheduler {

// One kind of GPU the cluster publishes (a device of a gpu.tessera.io ResourceSlice).
struct DraGpuKind {
  std::string model;
  int64_t memory_mib = 0;
  bool operator<(const DraGpuKind& o) const {
    return memory_mib != o.memory_mib ? memory_mib < o.memory_mib : model < o.model;
  }
  bool operator==(const DraGpuKind& o) const { return memory_mib == o.memory_mib && model == o.model; }
};

// The distinct GPU kinds in a list of ResourceSlices (devices of driver gpu.tessera.io only), sorted.
std::vector<DraGpuKind> DraGpuKinds(const std::vector<nlohmann::json>& resource_slices);

struct DraTranslateOptions {
  std::string device_class = "gpu.tessera.io";
  std::string scheduler_name = "default-scheduler";  // the kube-scheduler profile that allocates claims
};

struct DraClaimTemplate {
  std::string name;     // "tessera-gpu-<hash of spec>"
  nlohmann::json object;  // the whole ResourceClaimTemplate, without metadata.namespace
};

struct DraTranslation {
  std::vector<DraClaimTemplate> templates;  // one per GPU container, duplicates removed
  nlohmann::json patch = nlohmann::json::array();  // RFC 6902, against the pod as admitted
};

// Translates `pod` (already parsed by ParsePod into `parsed`) given the cluster's GPU kinds. Fails with a
// message naming the container and field when the request cannot be expressed: a gpumem-percentage with
// no GPU kind published (or none matching its type filters), more kinds than firstAvailable allows (8),
// spatial compute mode, or a type/uuid value that is not a plain string.
kube::Result<DraTranslation> TranslateToClaims(const nlohmann::json& pod, const ParsedPod& parsed,
                                               const std::vector<DraGpuKind>& kinds, const DraTranslateOptions& o,
                                               const ResourceNames& names);

}  // namespace tessera::scheduler
