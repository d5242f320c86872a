#include "cli/top_local.h"

#include <dirent.h>
#include <sys/stat.h>
#include <time.h>

#include <algorithm>
#include <fstream>
#include <sstream>
#include <vector>

#include <nlohmann/json.hpp>

#include "kube/file_read.h"
#include "slice/config.h"
#include "slice/region.h"

namespace tessera::cli {
namespace {

bool IsFile(const std::string& p) {
  struct stat st;
  return ::stat(p.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

// The region path in a slice config is the path the slice's processes see. On a node that is the
// container's /run/tessera/region/..., so look for the same file name under the host-side region/ folder.
std::string FindRegion(const std::string& slice_dir, const std::string& configured) {
  if (IsFile(configured)) return configured;
  std::string base = configured.substr(configured.find_last_of('/') + 1);
  for (const std::string& c : {slice_dir + "/region/" + base, slice_dir + "/region", slice_dir + "/" + base}) {
    if (IsFile(c)) return c;
  }
  return "";
}

int64_t MonotonicMs() {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1000 + ts.tv_nsec / 1000000;
}

void ReadSliceRows(const std::string& slice_dir, TopSnapshot* snap, std::vector<std::string>* warnings) {
  std::string conf = slice_dir + "/slice.conf";
  if (!IsFile(conf)) return;
  slice::SliceConfig cfg;
  char err[512] = {0};
  if (!slice::LoadSliceConfig(conf.c_str(), false, &cfg, err, sizeof err)) {
    warnings->push_back(conf + ": " + err);
    return;
  }
  std::string region_path = FindRegion(slice_dir, cfg.region);
  slice::Region region;
  if (region_path.empty() || !slice::OpenRegion(region_path.c_str(), false, &region, err, sizeof err)) {
    // A slice whose processes have not started yet has no region: show its limits with nothing used.
    if (!region_path.empty()) warnings->push_back(region_path + ": " + err);
    for (int g = 0; g < cfg.gpu_count; ++g) {
      TopSlice s;
      s.name = cfg.name;
      s.gpu = cfg.gpus[g].uuid;
      s.limit_bytes = cfg.gpus[g].memory_bytes;
      s.cap_percent = cfg.gpus[g].cores;
      s.priority = cfg.priority;
      s.process_count = 0;
      s.wall_refusals = 0;
      snap->slices.push_back(s);
    }
    return;
  }
  const slice::RegionHeader* h = region.hdr;
  std::vector<slice::ProcUsage> procs(slice::kRegionMaxProcs);
  int nprocs = slice::ReadProcs(h, procs.data(), slice::kRegionMaxProcs);
  for (int g = 0; g < static_cast<int>(h->gpu_count) && g < slice::kMaxGpus; ++g) {
    slice::GpuUsage u = slice::ReadGpuUsage(h, g);
    const slice::RegionGpu& rg = h->gpus[g];
    TopSlice s;
    s.name = h->slice;
    s.gpu = h->limits[g].uuid;
    s.used_bytes = u.used_bytes;
    s.limit_bytes = u.limit_bytes;
    uint32_t cap = rg.cap_percent.load(std::memory_order_relaxed);
    s.cap_percent = static_cast<int>(cap ? cap : h->limits[g].cores);
    s.priority = h->priority;
    s.wall_refusals = static_cast<int64_t>(u.wall_refusals);
    s.busy_ns = rg.busy_ns.load(std::memory_order_relaxed);
    s.throttled_ns = rg.throttled_ns.load(std::memory_order_relaxed);
    s.throttled_seconds = static_cast<double>(s.throttled_ns) / 1e9;
    s.process_count = 0;
    for (int p = 0; p < nprocs; ++p) {
      s.process_count++;
      s.processes.push_back({procs[p].pid, procs[p].bytes[g]});
    }
    snap->slices.push_back(std::move(s));
  }
  slice::CloseRegion(&region);
}

// On a node the agent leaves owner.json beside each slice: the pod and container it serves. Rows then carry
// the same "<namespace>/<pod>/<container>" name as when read from the agent's metrics.
void ApplyOwner(const std::string& slice_dir, size_t first_row, TopSnapshot* snap) {
  // The agent writes a few hundred bytes; a larger file is not its.
  std::string text, err;
  if (!kube::ReadFileCapped(slice_dir + "/owner.json", size_t{64} << 10, "a slice's owner file", &text, &err)) return;
  nlohmann::json j = nlohmann::json::parse(text, nullptr, false);
  if (!j.is_object() || !j.value("pod", nlohmann::json()).is_string()) return;
  std::string ns = j.value("namespace", ""), pod = j.value("pod", ""), ctr = j.value("container", "");
  if (pod.empty()) return;
  for (size_t i = first_row; i < snap->slices.size(); ++i) {
    TopSlice& s = snap->slices[i];
    s.ns = ns;
    s.pod = pod;
    s.container = ctr;
    s.name = ns + "/" + pod + "/" + ctr;
  }
}

void ReadSlice(const std::string& slice_dir, TopSnapshot* snap, std::vector<std::string>* warnings) {
  size_t first_row = snap->slices.size();
  ReadSliceRows(slice_dir, snap, warnings);
  ApplyOwner(slice_dir, first_row, snap);
}

}  // namespace

std::vector<std::string> DefaultSliceDirs() { return {"/run/tessera/slices", "/var/lib/tessera/slices"}; }

TopSnapshot ReadLocalSnapshot(const std::vector<std::string>& dirs, std::vector<std::string>* warnings) {
  TopSnapshot snap;
  snap.source = "local";
  snap.time_ms = MonotonicMs();
  for (const std::string& dir : dirs) {
    DIR* d = ::opendir(dir.c_str());
    if (!d) continue;
    std::vector<std::string> names;
    while (struct dirent* e = ::readdir(d)) {
      if (e->d_name[0] != '.') names.push_back(e->d_name);
    }
    ::closedir(d);
    std::sort(names.begin(), names.end());
    for (const std::string& n : names) ReadSlice(dir + "/" + n, &snap, warnings);
  }
  FinishSnapshot(&snap);
  return snap;
}

}  // namespace tessera::cli
