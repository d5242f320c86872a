// NodeSettings: what the node agent offers on its node (split count, memory and core scaling, compute
// mode, which GPUs), from its flags, the per-node ConfigMap and the node's cordon annotation.
//
// The ConfigMap has HAMi's device-plugin format (its `config.json` key, mounted into the agent as a file:
// the chart's `<fullname>-node-config`, value agent.nodeConfig):
//   {"nodeconfig": [{"name": "gpu-node-1",            // the Node's name; entries for other nodes are ignored
//                    "devicesplitcount": 4,           // 1..64: devices advertised per GPU
//                    "devicememoryscaling": 1.5,      // 0.1..16: memory published per GPU = real x this
//                    "devicecorescaling": 2,          // 0.1..16: cores published per GPU = 100 x this
//                    "operatingmode": "spatial",      // time-sliced (HAMi: hami-core) | spatial (HAMi: mps)
//                    "filterdevices": {"uuid": ["GPU-…"], "index": [3]},    // GPUs not offered (HAMi)
//                    "includedevices": {"uuid": [], "index": [0, 1]}}]}      // only these (Tessera)
// Keys the entry leaves out keep the agent's flags. Unknown keys and values out of range are errors that
// name the entry and the key; the agent then keeps the settings it had (nothing half-applied).
// Node annotation tessera.dev/cordon: comma list of GPU uuids or indexes the agent stops offering; they
// stay published, unhealthy and `cordoned`, so running pods keep their slices and new ones go elsewhere.
//
// Memory scaling above 1 overcommits: the scheduler then hands out, and each slice's wall enforces, MiB
// of a virtual card larger than the real one (docs/configuration.md says what happens when the real
// memory runs out). Pure functions; thread-safe.
#pragma once

#include <set>
#include <string>
#include <vector>

#include "gpu/backend.h"
#include "gpu/status.h"

namespace tessera::agent {

struct DeviceFilter {
  std::set<std::string> uuids;
  std::set<int> indexes;
  bool empty() const { return uuids.empty() && indexes.empty(); }
  bool Matches(const gpu::GpuInfo& g) const { return uuids.count(g.uuid) || indexes.count(g.index); }
  bool operator==(const DeviceFilter&) const = default;
};

struct NodeSettings {
  int split = 10;
  double memory_scaling = 1.0;
  double core_scaling = 1.0;
  bool spatial = false;  // the node's default compute mode
  DeviceFilter exclude, include;
  std::set<std::string> cordon;  // uuids or indexes, as the annotation names them
  bool operator==(const NodeSettings&) const = default;
};

// Applies the entry for `node` of the ConfigMap text to `base` (the flags). *matched tells whether the
// file had an entry for this node.
gpu::Status ApplyNodeConfig(const std::string& text, const std::string& node, const NodeSettings& base,
                            NodeSettings* out, bool* matched);

// The comma list of tessera.dev/cordon.
std::set<std::string> ParseCordon(const std::string& annotation);

// What is offered: GPUs passing the filters, cordoned ones marked unhealthy and cordoned.
std::vector<gpu::GpuInfo> OfferedGpus(const std::vector<gpu::GpuInfo>& all, const NodeSettings& s);

}  // namespace tessera::agent
