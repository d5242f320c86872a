// agentslices: the node agent's spatial path on the real GPU, without gRPC or Kubernetes. It discovers
// GPU 0 through the agent's NVML backend, then writes one slice per --slice exactly as the agent does for
// a pod's container (SliceWriter with the MpsSupervisor: the GPU's MPS control daemon started and
// supervised, mps_pipe and mps_sms written into the slice config, the region served to the slice's
// processes through the agent socket). It prints one JSON line, then serves until stdin closes, then
// removes the slices (the daemon stops with the last one).
//   agentslices --state DIR --mps-base DIR --node-dir DIR --shim PATH --slice NAME:CORES:PRIORITY ...
// Output: {"gpu": uuid, "sms": N, "slices": [{"name", "dir", "envs": {...}, "mounts": [{"container_path",
// "host_path", "read_only"}], "config": "<slice.conf text>"}]}
// What a container of that pod would see is those mounts at their container paths (test/gpu's cap
// section enters a mount namespace with them).
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "agent/mps_supervisor.h"
#include "agent/slice_writer.h"
#include "gpu/backend.h"

using namespace tessera;

namespace {

int Fail(const std::string& why) {
  std::fprintf(stderr, "agentslices: %s\n", why.c_str());
  return 1;
}

struct SliceArg {
  std::string name;
  int cores = 0, priority = 1;
};

}  // namespace

int main(int argc, char** argv) {
  std::string state, mps_base, node_dir, shim;
  std::vector<SliceArg> slices;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string k = argv[i], v = argv[i + 1];
    if (k == "--state") state = v;
    else if (k == "--mps-base") mps_base = v;
    else if (k == "--node-dir") node_dir = v;
    else if (k == "--shim") shim = v;
    else if (k == "--slice") {
      SliceArg s;
      char name[64] = {};
      if (std::sscanf(v.c_str(), "%63[a-z0-9-]:%d:%d", name, &s.cores, &s.priority) != 3 || s.cores < 1 ||
          s.cores > 100 || (s.priority != 0 && s.priority != 1))
        return Fail("--slice " + v + ": want NAME:CORES:PRIORITY (cores 1..100, priority 0 or 1)");
      s.name = name;
      slices.push_back(s);
    } else {
      return Fail("unknown argument " + k);
    }
  }
  if (state.empty() || mps_base.empty() || node_dir.empty() || shim.empty() || slices.empty())
    return Fail("usage: agentslices --state DIR --mps-base DIR --node-dir DIR --shim PATH --slice NAME:CORES:PRIO ...");

  auto backend = gpu::MakeNvmlBackend();
  gpu::Status st = backend->Init();
  if (!st.ok()) return Fail("NVML: " + st.message());
  std::vector<gpu::GpuInfo> gpus;
  st = backend->Discover(&gpus);
  if (!st.ok() || gpus.empty()) return Fail("GPU discovery: " + (st.ok() ? std::string("no GPU") : st.message()));
  const gpu::GpuInfo& g = gpus[0];

  agent::MpsSupervisor mps({mps_base, std::chrono::milliseconds(2000), nullptr});
  agent::SliceWriter writer({state, shim, node_dir, &mps});
  st = writer.Prepare();
  if (!st.ok()) return Fail(st.message());
  writer.SetSmCounts({{g.uuid, g.sm_count}});
  mps.Start();

  nlohmann::json out = {{"gpu", g.uuid}, {"sms", g.sm_count}, {"slices", nlohmann::json::array()}};
  std::vector<std::filesystem::path> dirs;
  int k = 0;
  for (const auto& s : slices) {
    agent::ContainerAssignment a;
    a.pod_uid = "uid-" + s.name;
    a.namespace_ = "gpu-test";
    a.pod_name = s.name;
    a.container = "main";
    a.device_count = 1;
    a.priority = s.priority;
    a.spatial = true;
    a.grants = {{g.uuid, 0, s.cores}};  // memory 0: the whole card (the experiment is about compute)
    agent::ContainerSlice cs;
    st = writer.Write(a, {g.uuid + "::" + std::to_string(k++)}, {{g.uuid, g.memory_bytes}}, &cs);
    if (!st.ok()) return Fail("slice " + s.name + ": " + st.message());
    dirs.push_back(cs.dir);
    nlohmann::json mounts = nlohmann::json::array();
    for (const auto& m : cs.mounts)
      mounts.push_back({{"container_path", m.container_path}, {"host_path", m.host_path}, {"read_only", m.read_only}});
    std::stringstream conf;
    conf << std::ifstream(cs.dir / "slice.conf").rdbuf();
    out["slices"].push_back(
        {{"name", s.name}, {"dir", cs.dir.string()}, {"envs", cs.envs}, {"mounts", mounts}, {"config", conf.str()}});
  }
  std::cout << out.dump() << std::endl;
  // Serve the slices' rows until the caller is done.
  std::string line;
  while (std::getline(std::cin, line)) {
  }
  for (const auto& d : dirs) writer.Remove(d);
  mps.Stop();
  return 0;
}
