// DeviceNodesFor on a fake /dev and /proc: a container gets its own GPUs' nodes and the shared ones only.
#include "agent/device_nodes.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

namespace tessera::agent {
namespace {

TEST(DeviceNodesTest, OwnGpusNodesAndTheDriversSharedOnesThatExist) {
  namespace fs = std::filesystem;
  fs::path root = fs::temp_directory_path() / ("device-nodes-" + std::to_string(getpid()));
  fs::create_directories(root / "dev");
  for (const char* n : {"nvidia0", "nvidia1", "nvidia2", "nvidia3", "nvidiactl", "nvidia-uvm"}) std::ofstream(root / "dev" / n);
  // GPU B's minor is 3 according to the driver, although it enumerates second.
  fs::create_directories(root / "proc/driver/nvidia/gpus/0000:3b:00.0");
  std::ofstream(root / "proc/driver/nvidia/gpus/0000:3b:00.0/information") << "Model: X\nDevice Minor: 3\n";
  std::vector<gpu::GpuInfo> gpus(3);
  gpus[0].uuid = "GPU-a";
  gpus[0].index = 0;
  gpus[1].uuid = "GPU-b";
  gpus[1].index = 1;
  gpus[1].pci_bus_id = "0000:3B:00.0";
  gpus[2].uuid = "GPU-c";
  gpus[2].index = 2;
  std::string dev = (root / "dev").string(), proc = (root / "proc").string();
  auto nodes = DeviceNodesFor({"GPU-b", "GPU-b", "GPU-c", "GPU-unknown"}, gpus, dev, proc);
  std::vector<std::string> paths;
  for (const auto& n : nodes) {
    paths.push_back(n.container_path);
    EXPECT_EQ(n.host_path, dev + n.container_path.substr(4));
    EXPECT_EQ(n.permissions, "rw");
  }
  // Not /dev/nvidia0 or /dev/nvidia1 (other GPUs); not nvidia-uvm-tools or modeset (absent on this host).
  EXPECT_EQ(paths, (std::vector<std::string>{"/dev/nvidia3", "/dev/nvidia2", "/dev/nvidiactl", "/dev/nvidia-uvm"}));
  // Simulated GPUs on a host without GPU nodes: nothing, not the shared nodes alone.
  EXPECT_TRUE(DeviceNodesFor({"GPU-a"}, gpus, (root / "none").string(), proc).empty());
  fs::remove_all(root);
}

}  // namespace
}  // namespace tessera::agent
