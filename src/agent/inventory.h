// Inventory: how the node's GPUs are shown to the kubelet and to the cluster.
//
// To the kubelet (device plugin): each GPU becomes `split` devices "<uuid>::<k>", k = 0..split-1, all
// healthy or unhealthy with their GPU, with the GPU's NUMA node as topology. To the cluster (the Node
// object): annotation tessera.dev/gpus (format in src/kube/annotations.h), the standard labels
// nvidia.com/gpu.present, .product, .count, .memory (MiB), tessera.dev/gpu-node, and
// status capacity/allocatable of the plugin's resource (healthy GPUs × split), the numbers the kubelet
// itself reports. Pure functions; thread-safe.
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "agent/node_config.h"
#include "gpu/backend.h"

namespace tessera::agent {

struct PluginDevice {
  std::string id;
  bool healthy = true;
  int numa = -1;
};

std::vector<PluginDevice> PluginDevices(const std::vector<gpu::GpuInfo>& gpus, int split);

// A label value as Kubernetes accepts it: [A-Za-z0-9._-], at most 63, alphanumeric at both ends.
std::string LabelValue(const std::string& text);

// The merge patch of the Node's metadata and the merge patch of its status. With `settings`: memory and
// cores scaled, the compute mode (tessera.dev/compute-mode) and the scaling factors published.
nlohmann::json NodeMetadataPatch(const std::vector<gpu::GpuInfo>& gpus, int split, const std::string& agent_version,
                                 const NodeSettings* settings = nullptr);
nlohmann::json NodeStatusPatch(const std::vector<gpu::GpuInfo>& gpus, int split, const std::string& resource);

}  // namespace tessera::agent
