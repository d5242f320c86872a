// nodeinfo: what the node agent's GPU backend sees on this host, and where each slice's processes are,
// as one JSON document, for test/gpu/run's multi-GPU section. The full agent needs gRPC and Kubernetes
// and is not built on the GPU machine; this uses the agent's own NVML backend (src/gpu/nvml_backend.cc)
// and the slice library, so it checks the same discovery and the same slice-to-GPU matching (by UUID).
//
//   nodeinfo [SLICE_CONFIG...]
//
// Output: {"backend":"nvml","gpus":[{index, uuid, model, memory_bytes, numa_node, pci_bus_id, healthy,
// health_reason, used_bytes, processes:[{pid, used_bytes}]}], "slices":[{config, name, pids:[...],
// gpus:[{uuid, host_index, limit_bytes, used_bytes, charged_bytes, peak_bytes, wall_refusals,
// driver_bytes}], elsewhere_bytes}]}. driver_bytes: what NVML says the slice's processes hold on that
// GPU; elsewhere_bytes: what they hold on GPUs outside the slice (must be 0). Exit 1 with {"error":...}
// when the backend fails.
#include <stdio.h>

#include <algorithm>
#include <map>
#include <string>
#include <vector>

#include "gpu/backend.h"
#include "slice/config.h"
#include "slice/region.h"

namespace {

std::string Str(const std::string& s) {
  std::string o = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') o += '\\';
    if (static_cast<unsigned char>(c) >= 0x20) o += c;
  }
  return o + "\"";
}
std::string Num(uint64_t v) { return std::to_string(v); }

int Fail(const std::string& what) {
  printf("{\"error\":%s}\n", Str(what).c_str());
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  using namespace tessera;
  auto backend = gpu::MakeNvmlBackend();
  gpu::Status st = backend->Init();
  if (!st.ok()) return Fail(st.message());
  std::vector<gpu::GpuInfo> gpus;
  st = backend->Discover(&gpus);
  if (!st.ok()) return Fail(st.message());
  std::map<std::string, gpu::GpuUsage> usage;  // by UUID
  for (const gpu::GpuInfo& g : gpus) {
    st = backend->Usage(g.uuid, &usage[g.uuid]);
    if (!st.ok()) return Fail(st.message());
  }

  std::string out = "{\"backend\":" + Str(backend->Name()) + ",\"gpus\":[";
  for (size_t i = 0; i < gpus.size(); ++i) {
    const gpu::GpuInfo& g = gpus[i];
    const gpu::GpuUsage& u = usage[g.uuid];
    out += std::string(i ? "," : "") + "{\"index\":" + std::to_string(g.index) + ",\"uuid\":" + Str(g.uuid) +
           ",\"model\":" + Str(g.model) + ",\"memory_bytes\":" + Num(g.memory_bytes) +
           ",\"numa_node\":" + std::to_string(g.numa_node) + ",\"pci_bus_id\":" + Str(g.pci_bus_id) +
           ",\"healthy\":" + (g.healthy ? "true" : "false") + ",\"health_reason\":" + Str(g.health_reason) +
           ",\"used_bytes\":" + Num(u.memory_used_bytes) + ",\"processes\":[";
    for (size_t k = 0; k < u.processes.size(); ++k)
      out += std::string(k ? "," : "") + "{\"pid\":" + std::to_string(u.processes[k].pid) +
             ",\"used_bytes\":" + Num(u.processes[k].used_bytes) + "}";
    out += "]}";
  }
  out += "],\"slices\":[";
  for (int a = 1; a < argc; ++a) {
    slice::SliceConfig cfg;
    slice::Region r;
    char err[512];
    if (!slice::LoadSliceConfig(argv[a], false, &cfg, err, sizeof(err)) ||
        !slice::OpenRegion(cfg.region, false, &r, err, sizeof(err)))
      return Fail(std::string(argv[a]) + ": " + err);
    std::vector<slice::ProcUsage> procs(slice::kRegionMaxProcs);
    procs.resize(static_cast<size_t>(slice::ReadProcs(r.hdr, procs.data(), slice::kRegionMaxProcs)));
    auto of_slice = [&](uint32_t pid) {
      return std::any_of(procs.begin(), procs.end(),
                         [&](const slice::ProcUsage& p) { return static_cast<uint32_t>(p.pid) == pid; });
    };
    auto driver_bytes = [&](const std::string& uuid) {
      uint64_t sum = 0;
      for (const gpu::ProcessUsage& p : usage[uuid].processes)
        if (of_slice(p.pid)) sum += p.used_bytes;
      return sum;
    };
    out += std::string(a > 1 ? "," : "") + "{\"config\":" + Str(argv[a]) + ",\"name\":" + Str(cfg.name) +
           ",\"pids\":[";
    for (size_t k = 0; k < procs.size(); ++k) out += std::string(k ? "," : "") + std::to_string(procs[k].pid);
    out += "],\"gpus\":[";
    for (int g = 0; g < cfg.gpu_count; ++g) {
      int host = -1;
      for (const gpu::GpuInfo& info : gpus)
        if (info.uuid == cfg.gpus[g].uuid) host = info.index;
      int rg = slice::FindRegionGpu(r.hdr, cfg.gpus[g].uuid);
      slice::GpuUsage u{};
      if (rg >= 0) u = slice::ReadGpuUsage(r.hdr, rg);
      out += std::string(g ? "," : "") + "{\"uuid\":" + Str(cfg.gpus[g].uuid) +
             ",\"host_index\":" + std::to_string(host) + ",\"limit_bytes\":" + Num(cfg.gpus[g].memory_bytes) +
             ",\"used_bytes\":" + Num(u.used_bytes) + ",\"charged_bytes\":" + Num(u.charged_bytes) +
             ",\"peak_bytes\":" + Num(u.peak_bytes) + ",\"wall_refusals\":" + Num(u.wall_refusals) +
             ",\"driver_bytes\":" + Num(host >= 0 ? driver_bytes(cfg.gpus[g].uuid) : 0) + "}";
    }
    uint64_t elsewhere = 0;
    for (const gpu::GpuInfo& info : gpus)
      if (slice::FindGpu(cfg, info.uuid.c_str()) < 0) elsewhere += driver_bytes(info.uuid);
    out += "],\"elsewhere_bytes\":" + Num(elsewhere) + "}";
    slice::CloseRegion(&r);
  }
  out += "]}\n";
  fputs(out.c_str(), stdout);
  return 0;
}
