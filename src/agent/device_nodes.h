// The device nodes a container needs for its GPUs, for the device plugin's Allocate response (DeviceSpecs).
//
// The container runtime then creates exactly these nodes in the container and allows them in its device
// cgroup, so a container sees its own GPUs' /dev/nvidiaN and the driver's shared nodes (/dev/nvidiactl,
// /dev/nvidia-uvm, /dev/nvidia-uvm-tools, /dev/nvidia-modeset), and no other GPU's node, whatever its
// environment says. Only nodes that exist under `dev_root` are listed (a missing one would fail the
// container's creation). Minor numbers come from the driver's /proc/driver/nvidia/gpus/<bus id>/information
// when readable, else the GPU's enumeration index. Pure apart from reading those files; thread-safe.
#pragma once

#include <string>
#include <vector>

#include "gpu/backend.h"

namespace tessera::agent {

struct DeviceNode {
  std::string container_path;  // "/dev/nvidia3"
  std::string host_path;       // the same path under dev_root
  std::string permissions = "rw";
};

// The GPU's device minor (N of /dev/nvidiaN).
int DeviceMinor(const gpu::GpuInfo& g, const std::string& proc_root = "/proc");

// Nodes for the GPUs `uuids` (each once, in order), then the shared ones; unknown UUIDs are skipped.
std::vector<DeviceNode> DeviceNodesFor(const std::vector<std::string>& uuids, const std::vector<gpu::GpuInfo>& gpus,
                                       const std::string& dev_root = "/dev", const std::string& proc_root = "/proc");

}  // namespace tessera::agent
