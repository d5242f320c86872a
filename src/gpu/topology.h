// GPU-to-GPU topology: how two GPUs of one host are connected, in the words of `nvidia-smi topo -m`.
//
// The node agent publishes, per GPU, the link to each other GPU of the node (GpuInfo::links), and the
// scheduler's topology-aware GPU choice ranks multi-GPU sets by them (src/placement/topology.h). Names:
//   NV<n>  n NVLinks between the two (directly or through an NVSwitch fabric), fastest;
//   PIX    at most one PCIe bridge between them;
//   PXB    several PCIe bridges, no host bridge;
//   PHB    through a PCIe host bridge (one CPU);
//   NODE   across host bridges of one NUMA node;
//   SYS    across NUMA nodes (the SMP interconnect), slowest.
// The NVML backend derives them from nvmlDeviceGetNvLinkState / nvmlDeviceGetNvLinkRemotePciInfo_v2 and
// nvmlDeviceGetTopologyCommonAncestor; the simulator reads them from its file. Pure functions; thread-safe.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "gpu/backend.h"
#include "gpu/status.h"

namespace tessera::gpu {

// True for NV1..NV64, PIX, PXB, PHB, NODE, SYS.
bool ValidLinkName(std::string_view name);

// The PCIe link name for an nvmlGpuTopologyLevel_t value (0 internal, 10 single, 20 multiple,
// 30 host bridge, 40 node, 50 system); anything else is SYS.
std::string LinkFromCommonAncestor(int level);

// Checks every GPU's links (known names, peers that are other GPUs of `gpus`) and makes them symmetric:
// a link given on one side only is copied to the other; two sides that disagree are an error naming both.
Status NormalizeLinks(std::vector<GpuInfo>* gpus, const std::string& where);

}  // namespace tessera::gpu
