#include "cli/top_model.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <tuple>

namespace tessera::cli {
namespace {

// Which field a metric fills. The agent exports each value under a tessera_* name and, for the values
// HAMi users already graph, under HAMi's name as well; tessera_* wins when both are present.
enum class Field {
  kSliceUsed, kSliceLimit, kSliceCap, kSliceShare, kSlicePriority, kSliceProcs, kSliceRefusals,
  kSliceThrottled, kGpuUsed, kGpuTotal, kGpuUtil, kGpuInfo
};
struct MetricMap {
  const char* name;
  Field field;
  bool preferred;  // tessera_* name
  double scale;    // ratios (0..1) are shown as percent
};
constexpr MetricMap kMetrics[] = {
    {"tessera_slice_memory_used_bytes", Field::kSliceUsed, true, 1},
    {"vGPU_device_memory_usage_in_bytes", Field::kSliceUsed, false, 1},
    {"tessera_slice_memory_limit_bytes", Field::kSliceLimit, true, 1},
    {"vGPU_device_memory_limit_in_bytes", Field::kSliceLimit, false, 1},
    {"tessera_slice_compute_cap_ratio", Field::kSliceCap, true, 100},
    {"tessera_slice_compute_share_ratio", Field::kSliceShare, true, 100},
    {"Device_utilization_desc_of_container", Field::kSliceShare, false, 1},
    {"tessera_slice_priority", Field::kSlicePriority, true, 1},
    {"tessera_slice_processes", Field::kSliceProcs, true, 1},
    {"tessera_slice_wall_refusals_total", Field::kSliceRefusals, true, 1},
    {"tessera_slice_throttled_seconds_total", Field::kSliceThrottled, true, 1},
    {"tessera_gpu_memory_used_bytes", Field::kGpuUsed, true, 1},
    {"HostGPUMemoryUsage", Field::kGpuUsed, false, 1},
    {"tessera_gpu_memory_total_bytes", Field::kGpuTotal, true, 1},
    {"tessera_gpu_utilization_ratio", Field::kGpuUtil, true, 100},
    {"HostCoreUtilization", Field::kGpuUtil, false, 1},
};

std::string GpuOf(const PromSample& s) {
  for (const char* k : {"gpu_uuid", "deviceuuid"}) {
    const std::string& v = s.Label(k);
    if (!v.empty()) return v;
  }
  return "";
}

// Applies v to *dst unless a preferred value already set it.
template <typename T>
void Set(T* dst, bool* from_preferred, T v, bool preferred) {
  if (*from_preferred && !preferred) return;
  *dst = v;
  *from_preferred = preferred;
}

struct SliceAcc {
  TopSlice s;
  bool pref[8] = {};
};
struct GpuAcc {
  TopGpu g;
  bool pref[4] = {};
};

}  // namespace

TopSnapshot SnapshotFromMetrics(const std::vector<PromSample>& samples, const std::string& source) {
  std::map<std::tuple<std::string, std::string>, SliceAcc> slices;  // (slice key, gpu)
  std::map<std::string, GpuAcc> gpus;
  for (const PromSample& smp : samples) {
    const MetricMap* m = nullptr;
    for (const MetricMap& c : kMetrics) {
      if (smp.name == c.name) {
        m = &c;
        break;
      }
    }
    if (!m || std::isnan(smp.value)) continue;
    std::string gpu = GpuOf(smp);
    if (gpu.empty()) continue;
    double v = smp.value * m->scale;
    auto u64 = [](double d) { return d <= 0 ? uint64_t{0} : static_cast<uint64_t>(d); };
    if (m->field == Field::kGpuUsed || m->field == Field::kGpuTotal || m->field == Field::kGpuUtil ||
        m->field == Field::kGpuInfo) {
      // Every per-GPU tessera_* series carries the model; HAMi's devicetype is "NVIDIA-<model>".
      if (!smp.Label("model").empty()) {
        gpus[gpu].g.model = smp.Label("model");
      } else if (gpus[gpu].g.model.empty() && smp.Label("devicetype").rfind("NVIDIA-", 0) == 0) {
        gpus[gpu].g.model = smp.Label("devicetype").substr(7);
      }
      GpuAcc& a = gpus[gpu];
      a.g.uuid = gpu;
      switch (m->field) {
        case Field::kGpuUsed: Set(&a.g.used_bytes, &a.pref[0], static_cast<int64_t>(u64(v)), m->preferred); break;
        case Field::kGpuTotal: Set(&a.g.total_bytes, &a.pref[1], static_cast<int64_t>(u64(v)), m->preferred); break;
        case Field::kGpuUtil: Set(&a.g.utilization_percent, &a.pref[2], v, m->preferred); break;
        default: break;
      }
      continue;
    }
    // Kubernetes identity from either naming (namespace/pod/container or HAMi's podnamespace/...); a slice
    // with no pod (standalone) is known by its slice name. The same key for both families merges them.
    auto first = [&](const char* a, const char* b) { return smp.Label(a).empty() ? smp.Label(b) : smp.Label(a); };
    std::string ns = first("namespace", "podnamespace"), pod = first("pod", "podname"),
                ctr = first("container", "ctrname");
    std::string key = pod.empty() ? smp.Label("slice") : ns + "/" + pod + "/" + ctr;
    if (key.empty()) continue;
    SliceAcc& a = slices[{key, gpu}];
    a.s.name = key;
    if (!ns.empty()) a.s.ns = ns;
    if (!pod.empty()) a.s.pod = pod;
    if (!ctr.empty()) a.s.container = ctr;
    a.s.gpu = gpu;
    switch (m->field) {
      case Field::kSliceUsed: Set(&a.s.used_bytes, &a.pref[0], u64(v), m->preferred); break;
      case Field::kSliceLimit: Set(&a.s.limit_bytes, &a.pref[1], u64(v), m->preferred); break;
      case Field::kSliceCap: Set(&a.s.cap_percent, &a.pref[2], static_cast<int>(std::lround(v)), m->preferred); break;
      case Field::kSliceShare: Set(&a.s.share_percent, &a.pref[3], v, m->preferred); break;
      case Field::kSlicePriority: Set(&a.s.priority, &a.pref[4], static_cast<int>(std::lround(v)), m->preferred); break;
      case Field::kSliceProcs: Set(&a.s.process_count, &a.pref[5], static_cast<int>(std::lround(v)), m->preferred); break;
      case Field::kSliceRefusals: Set(&a.s.wall_refusals, &a.pref[6], static_cast<int64_t>(u64(v)), m->preferred); break;
      case Field::kSliceThrottled: Set(&a.s.throttled_seconds, &a.pref[7], v, m->preferred); break;
      default: break;
    }
  }
  TopSnapshot snap;
  snap.source = source;
  for (auto& [k, a] : gpus) snap.gpus.push_back(std::move(a.g));
  for (auto& [k, a] : slices) snap.slices.push_back(std::move(a.s));
  FinishSnapshot(&snap);
  return snap;
}

void FinishSnapshot(TopSnapshot* snap) {
  std::sort(snap->slices.begin(), snap->slices.end(), [](const TopSlice& a, const TopSlice& b) {
    return std::tie(a.gpu, a.name) < std::tie(b.gpu, b.name);
  });
  for (TopGpu& g : snap->gpus) {
    g.slices = 0;
    g.allocated_bytes = 0;
  }
  for (const TopSlice& s : snap->slices) {
    auto it = std::find_if(snap->gpus.begin(), snap->gpus.end(), [&](const TopGpu& g) { return g.uuid == s.gpu; });
    if (it == snap->gpus.end()) {
      TopGpu g;
      g.uuid = s.gpu;
      snap->gpus.push_back(g);
      it = snap->gpus.end() - 1;
    }
    it->slices++;
    it->allocated_bytes += s.limit_bytes;
  }
  std::sort(snap->gpus.begin(), snap->gpus.end(), [](const TopGpu& a, const TopGpu& b) { return a.uuid < b.uuid; });
}

void ApplyRates(const TopSnapshot& prev, TopSnapshot* cur) {
  double dt_ns = static_cast<double>(cur->time_ms - prev.time_ms) * 1e6;
  if (dt_ns <= 0) return;
  for (TopSlice& s : cur->slices) {
    for (const TopSlice& p : prev.slices) {
      if (p.name != s.name || p.gpu != s.gpu) continue;
      // A counter that went backwards means the region was rebuilt: no rate this round.
      if (s.busy_ns >= p.busy_ns) {
        s.share_percent = std::min(100.0, 100.0 * static_cast<double>(s.busy_ns - p.busy_ns) / dt_ns);
      }
      break;
    }
  }
}

}  // namespace tessera::cli
