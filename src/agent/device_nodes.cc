#include "agent/device_nodes.h"

#include "kube/file_read.h"

#include <sys/stat.h>

#include <algorithm>
#include <cctype>
#include <fstream>
#include <set>
#include <sstream>

namespace tessera::agent {

namespace {
bool Exists(const std::string& p) {
  struct stat st {};
  return stat(p.c_str(), &st) == 0;
}
std::string Lower(std::string s) {
  for (auto& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}
}  // namespace

int DeviceMinor(const gpu::GpuInfo& g, const std::string& proc_root) {
  if (!g.pci_bus_id.empty()) {
    // The driver names the directory by the bus id in lower case ("0000:3b:00.0").
    // The driver's information file is a dozen short lines.
    std::string text, err, line;
    kube::ReadFileCapped(proc_root + "/driver/nvidia/gpus/" + Lower(g.pci_bus_id) + "/information", 64 << 10,
                         "the driver's GPU information", &text, &err);
    std::istringstream f(text);
    while (std::getline(f, line)) {
      if (line.rfind("Device Minor:", 0) != 0) continue;
      try {
        int m = std::stoi(line.substr(13));
        if (m >= 0 && m < 256) return m;
      } catch (...) {
      }
    }
  }
  return g.index;
}

std::vector<DeviceNode> DeviceNodesFor(const std::vector<std::string>& uuids, const std::vector<gpu::GpuInfo>& gpus,
                                       const std::string& dev_root, const std::string& proc_root) {
  std::vector<DeviceNode> out;
  std::set<std::string> seen;
  auto add = [&](const std::string& name) {
    std::string host = dev_root + "/" + name;
    if (!seen.insert(name).second || !Exists(host)) return;
    out.push_back({"/dev/" + name, host, "rw"});
  };
  for (const auto& u : uuids) {
    auto it = std::find_if(gpus.begin(), gpus.end(), [&](const gpu::GpuInfo& g) { return g.uuid == u; });
    if (it != gpus.end()) add("nvidia" + std::to_string(DeviceMinor(*it, proc_root)));
  }
  if (out.empty()) return out;  // no GPU node on this host (simulated GPUs): nothing to hand over
  for (const char* shared : {"nvidiactl", "nvidia-uvm", "nvidia-uvm-tools", "nvidia-modeset"}) add(shared);
  return out;
}

}  // namespace tessera::agent
