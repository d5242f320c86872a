#include "scheduler/metrics.h"

#include <cstdio>
#include <sstream>

namespace tessera::scheduler {
namespace {

// Label values escaped per the text exposition format.
std::string Esc(const std::string& s) {
  std::string o;
  for (char c : s) {
    if (c == '\\') o += "\\\\";
    else if (c == '"') o += "\\\"";
    else if (c == '\n') o += "\\n";
    else o += c;
  }
  return o;
}

std::string Num(double v) {
  char b[64];
  std::snprintf(b, sizeof b, "%.15g", v);
  return b;
}

}  // namespace

const char* Metrics::VerbName(Verb v) {
  static const char* kNames[] = {"filter", "prioritize", "bind", "mutate", "validate"};
  return kNames[v];
}

void Metrics::ObserveLatency(Verb v, double seconds) {
  Hist& h = hist_[v];
  size_t i = 0;
  while (i < kBuckets.size() && seconds > kBuckets[i]) ++i;
  h.counts[i].fetch_add(1, std::memory_order_relaxed);
  h.sum_ns.fetch_add(static_cast<uint64_t>(seconds * 1e9), std::memory_order_relaxed);
  h.n.fetch_add(1, std::memory_order_relaxed);
}

void Metrics::CountBind() { binds_.fetch_add(1); }

void Metrics::CountBindFailure(const std::string& reason) {
  std::lock_guard<std::mutex> l(mu_);
  ++bind_failures_[reason];
}

void Metrics::CountAdmission(bool allowed) { (allowed ? admissions_allowed_ : admissions_denied_).fetch_add(1); }

std::string Metrics::Render(const ClusterView& view, bool hami_names) const {
  std::ostringstream o;
  if (hami_names) RenderHami(view, o);
  RenderTessera(view, o);
  return o.str();
}

void Metrics::RenderHami(const ClusterView& view, std::ostream& o) const {
  auto gpus = view.GpuAllocations();
  auto device_gauge = [&](const char* name, const char* help, auto value, bool with_cores) {
    o << "# HELP " << name << " " << help << "\n# TYPE " << name << " gauge\n";
    for (const auto& g : gpus) {
      o << name << "{";
      if (with_cores) o << "devicecores=\"" << g.cores << "\",";
      o << "deviceidx=\"" << g.index << "\",deviceuuid=\"" << Esc(g.gpu.uuid) << "\",nodeid=\"" << Esc(g.node)
        << "\",zone=\"vGPU\"} " << Num(value(g)) << "\n";
    }
  };
  device_gauge("GPUDeviceCoreLimit", "GPU device core limit (percent of the card)",
               [](const GpuAllocation& g) { return double(g.gpu.cores); }, false);
  device_gauge("GPUDeviceMemoryLimit", "GPU device memory limit in bytes",
               [](const GpuAllocation& g) { return double(g.gpu.memory_mib) * 1048576.0; }, false);
  device_gauge("GPUDeviceCoreAllocated", "GPU device cores allocated to containers (percent of the card)",
               [](const GpuAllocation& g) { return double(g.cores); }, false);
  device_gauge("GPUDeviceMemoryAllocated", "GPU device memory allocated to containers in bytes",
               [](const GpuAllocation& g) { return double(g.memory_mib) * 1048576.0; }, true);
  device_gauge("GPUDeviceSharedNum", "Number of containers sharing this GPU",
               [](const GpuAllocation& g) { return double(g.sharers); }, false);

  auto slices = view.SliceAllocations();
  for (int mem = 0; mem < 2; ++mem) {
    const char* name = mem ? "vGPUMemoryAllocated" : "vGPUCoreAllocated";
    o << "# HELP " << name << " "
      << (mem ? "vGPU memory allocated to a container in bytes" : "vGPU cores allocated to a container (percent)")
      << "\n# TYPE " << name << " gauge\n";
    for (const auto& s : slices) {
      o << name << "{containeridx=\"" << Esc(s.container) << "\",deviceuuid=\"" << Esc(s.uuid) << "\",nodename=\""
        << Esc(s.node) << "\",podname=\"" << Esc(s.pod) << "\",podnamespace=\"" << Esc(s.ns) << "\",zone=\"vGPU\"} "
        << Num(mem ? double(s.memory_mib) * 1048576.0 : double(s.cores)) << "\n";
    }
  }
  o << "# HELP QuotaUsed GPU memory (MiB) or GPU cores (percent) counted against a ResourceQuota\n"
       "# TYPE QuotaUsed gauge\n";
  for (const auto& q : view.QuotaUsage()) {
    o << "QuotaUsed{limit=\"" << q.quota.hard << "\",quotaName=\"" << Esc(q.quota.resource) << "\",quotanamespace=\""
      << Esc(q.quota.ns) << "\",resourcequota=\"" << Esc(q.quota.name) << "\",zone=\"vGPU\"} " << q.used << "\n";
  }
}

void Metrics::RenderTessera(const ClusterView& view, std::ostream& o) const {
  // The same allocation picture under clean names.
  auto gpus = view.GpuAllocations();
  struct G {
    const char* name;
    const char* help;
    double (*value)(const GpuAllocation&);
  };
  const G gauges[] = {
      {"tessera_gpu_memory_bytes", "GPU memory capacity",
       [](const GpuAllocation& g) { return double(g.gpu.memory_mib) * 1048576.0; }},
      {"tessera_gpu_memory_allocated_bytes", "GPU memory assigned to containers",
       [](const GpuAllocation& g) { return double(g.memory_mib) * 1048576.0; }},
      {"tessera_gpu_cores_allocated_ratio", "Share of the GPU's compute assigned to containers (1 = whole card)",
       [](const GpuAllocation& g) { return g.gpu.cores > 0 ? double(g.cores) / g.gpu.cores : 0.0; }},
      {"tessera_gpu_slices", "Containers holding a slice of the GPU", [](const GpuAllocation& g) { return double(g.sharers); }},
  };
  for (const auto& gg : gauges) {
    o << "# HELP " << gg.name << " " << gg.help << "\n# TYPE " << gg.name << " gauge\n";
    for (const auto& g : gpus)
      o << gg.name << "{node=\"" << Esc(g.node) << "\",gpu_uuid=\"" << Esc(g.gpu.uuid) << "\",model=\"" << Esc(g.gpu.model)
        << "\"} " << Num(gg.value(g)) << "\n";
  }

  o << "# HELP tessera_scheduler_extender_request_duration_seconds Time to answer one extender or webhook call\n"
       "# TYPE tessera_scheduler_extender_request_duration_seconds histogram\n";
  for (int v = 0; v < kVerbCount; ++v) {
    const Hist& h = hist_[v];
    uint64_t cum = 0;
    for (size_t i = 0; i < kBuckets.size(); ++i) {
      cum += h.counts[i].load();
      o << "tessera_scheduler_extender_request_duration_seconds_bucket{verb=\"" << VerbName(Verb(v)) << "\",le=\""
        << Num(kBuckets[i]) << "\"} " << cum << "\n";
    }
    cum += h.counts[kBuckets.size()].load();
    o << "tessera_scheduler_extender_request_duration_seconds_bucket{verb=\"" << VerbName(Verb(v))
      << "\",le=\"+Inf\"} " << cum << "\n";
    o << "tessera_scheduler_extender_request_duration_seconds_sum{verb=\"" << VerbName(Verb(v)) << "\"} "
      << Num(double(h.sum_ns.load()) / 1e9) << "\n";
    o << "tessera_scheduler_extender_request_duration_seconds_count{verb=\"" << VerbName(Verb(v)) << "\"} " << cum
      << "\n";
  }
  o << "# HELP tessera_scheduler_binds_total Pods bound by this scheduler\n# TYPE tessera_scheduler_binds_total counter\n"
    << "tessera_scheduler_binds_total " << binds_.load() << "\n";
  o << "# HELP tessera_scheduler_bind_failures_total Bind attempts that failed, by reason\n"
       "# TYPE tessera_scheduler_bind_failures_total counter\n";
  {
    std::lock_guard<std::mutex> l(mu_);
    for (const auto& [reason, n] : bind_failures_)
      o << "tessera_scheduler_bind_failures_total{reason=\"" << Esc(reason) << "\"} " << n << "\n";
  }
  o << "# HELP tessera_scheduler_admission_reviews_total Admission reviews answered, by verdict\n"
       "# TYPE tessera_scheduler_admission_reviews_total counter\n"
    << "tessera_scheduler_admission_reviews_total{allowed=\"true\"} " << admissions_allowed_.load() << "\n"
    << "tessera_scheduler_admission_reviews_total{allowed=\"false\"} " << admissions_denied_.load() << "\n";
  o << "# HELP tessera_scheduler_leader 1 if this replica holds the leader lease\n# TYPE tessera_scheduler_leader gauge\n"
    << "tessera_scheduler_leader " << (leader_.load() ? 1 : 0) << "\n";
  o << "# HELP tessera_scheduler_nodes Nodes in the scheduler's view\n# TYPE tessera_scheduler_nodes gauge\n"
    << "tessera_scheduler_nodes " << view.node_count() << "\n";
  o << "# HELP tessera_scheduler_pods Pods in the scheduler's view\n# TYPE tessera_scheduler_pods gauge\n"
    << "tessera_scheduler_pods " << view.pod_count() << "\n";
  o << "# HELP tessera_scheduler_snapshot_rebuilds_total Placement snapshot rebuilds from the view\n"
       "# TYPE tessera_scheduler_snapshot_rebuilds_total counter\n"
    << "tessera_scheduler_snapshot_rebuilds_total " << view.rebuilds() << "\n";
}

}  // namespace tessera::scheduler
