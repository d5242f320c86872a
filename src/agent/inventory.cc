#include "agent/inventory.h"

#include <cctype>
#include <cmath>
#include <sstream>

#include "kube/annotations.h"

namespace tessera::agent {

std::vector<PluginDevice> PluginDevices(const std::vector<gpu::GpuInfo>& gpus, int split) {
  std::vector<PluginDevice> out;
  for (const auto& g : gpus) {
    for (int k = 0; k < split; ++k) {
      out.push_back({g.uuid + "::" + std::to_string(k), g.healthy, g.numa_node});
    }
  }
  return out;
}

std::string LabelValue(const std::string& text) {
  std::string out;
  for (char c : text) {
    bool ok = std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '_' || c == '-';
    out += ok ? c : '-';
  }
  if (out.size() > 63) out.resize(63);
  while (!out.empty() && !std::isalnum(static_cast<unsigned char>(out.back()))) out.pop_back();
  while (!out.empty() && !std::isalnum(static_cast<unsigned char>(out.front()))) out.erase(0, 1);
  return out;
}

nlohmann::json NodeMetadataPatch(const std::vector<gpu::GpuInfo>& gpus, int split, const std::string& agent_version,
                                 const NodeSettings* settings) {
  const double mem_scale = settings ? settings->memory_scaling : 1.0;
  const double core_scale = settings ? settings->core_scaling : 1.0;
  std::vector<kube::GpuInfo> published;
  for (const auto& g : gpus) {
    kube::GpuInfo p;
    p.uuid = g.uuid;
    p.model = g.model;
    p.memory_mib = static_cast<int64_t>(static_cast<double>(g.memory_bytes >> 20) * mem_scale);
    p.cores = static_cast<int>(std::lround(100 * core_scale));
    p.cordoned = g.cordoned;
    p.links = g.links;
    // Unknown NUMA (single-socket hosts, some VMs) is published as node 0: every GPU then counts as
    // local to every other, which is what numa-bind should conclude there.
    p.numa = g.numa_node < 0 ? 0 : g.numa_node;
    p.healthy = g.healthy;
    published.push_back(p);
  }
  nlohmann::json labels = {{kube::kLabelGpuNode, "true"},
                           {"nvidia.com/gpu.present", gpus.empty() ? "false" : "true"},
                           {"nvidia.com/gpu.count", std::to_string(gpus.size())}};
  if (!gpus.empty()) {
    labels["nvidia.com/gpu.product"] = LabelValue(gpus.front().model);
    labels["nvidia.com/gpu.memory"] = std::to_string(gpus.front().memory_bytes >> 20);
  }
  nlohmann::json annotations = {{kube::kAnnoGpus, kube::EncodeGpus(published)},
                                {"tessera.dev/split", std::to_string(split)},
                                {"tessera.dev/agent-version", agent_version}};
  if (settings) {
    annotations[kube::kAnnoComputeMode] = settings->spatial ? kube::kModeSpatial : kube::kModeTimeSliced;
    std::ostringstream m, c;
    m << mem_scale;
    c << core_scale;
    annotations["tessera.dev/memory-scaling"] = m.str();
    annotations["tessera.dev/core-scaling"] = c.str();
  }
  return {{"metadata", {{"labels", labels}, {"annotations", annotations}}}};
}

nlohmann::json NodeStatusPatch(const std::vector<gpu::GpuInfo>& gpus, int split,
                               const std::string& resource) {
  int healthy = 0;
  for (const auto& g : gpus) healthy += g.healthy ? 1 : 0;
  return {{"status",
           {{"capacity", {{resource, std::to_string(gpus.size() * static_cast<size_t>(split))}}},
            {"allocatable", {{resource, std::to_string(healthy * split)}}}}}};
}

}  // namespace tessera::agent
