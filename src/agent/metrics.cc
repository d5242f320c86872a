#include "agent/metrics.h"

#include <cmath>
#include <cstdio>
#include <functional>

namespace tessera::agent {

std::string EscapeLabel(const std::string& v) {
  std::string out;
  out.reserve(v.size());
  for (char c : v) {
    if (c == '\\')
      out += "\\\\";
    else if (c == '"')
      out += "\\\"";
    else if (c == '\n')
      out += "\\n";
    else
      out += c;
  }
  return out;
}

namespace {

std::string Num(double v) {
  if (std::isnan(v)) return "NaN";
  char buf[64];
  if (v == std::floor(v) && std::fabs(v) < 1e15) {
    std::snprintf(buf, sizeof(buf), "%.0f", v);
  } else {
    std::snprintf(buf, sizeof(buf), "%.6g", v);
  }
  return buf;
}

using Labels = std::vector<std::pair<std::string, std::string>>;

std::string LabelText(const Labels& l) {
  std::string out = "{";
  for (size_t i = 0; i < l.size(); ++i) {
    out += (i ? "," : "") + l[i].first + "=\"" + EscapeLabel(l[i].second) + "\"";
  }
  return out + "}";
}

// One metric family: HELP and TYPE once, then every sample the generator emits.
void Family(std::string* out, const char* name, const char* type, const char* help,
            const std::function<void(const std::function<void(const Labels&, double)>&)>& gen) {
  std::string body;
  gen([&](const Labels& l, double v) { body += name + LabelText(l) + " " + Num(v) + "\n"; });
  *out += std::string("# HELP ") + name + " " + help + "\n# TYPE " + name + " " + type + "\n" + body;
}

}  // namespace

std::string RenderMetrics(const MetricsSnapshot& s, const RenderOptions& opts) {
  std::string out;
  auto gpu_labels = [&](const GpuSample& g) {
    return Labels{
        {"node", s.node}, {"gpu_uuid", g.uuid}, {"gpu_index", std::to_string(g.index)}, {"model", g.model}};
  };
  auto slice_labels = [](const SliceSample& sl, const SliceGpuSample& g) {
    return Labels{{"namespace", sl.namespace_},
                  {"pod", sl.pod},
                  {"container", sl.container},
                  {"slice", sl.slice},
                  {"gpu_uuid", g.uuid}};
  };
  auto each_slice_gpu = [&](const std::function<void(const SliceSample&, const SliceGpuSample&)>& f) {
    for (const auto& sl : s.slices) {
      for (const auto& g : sl.gpus) f(sl, g);
    }
  };

  if (opts.hami_names) {
    auto hami_gpu = [&](const GpuSample& g) {
      return Labels{{"nodeid", s.node},
                    {"deviceidx", std::to_string(g.index)},
                    {"deviceuuid", g.uuid},
                    {"devicetype", "NVIDIA-" + g.model}};
    };
    auto hami_ctr = [](const SliceSample& sl, const SliceGpuSample& g) {
      return Labels{{"podnamespace", sl.namespace_},
                    {"podname", sl.pod},
                    {"ctrname", sl.container},
                    {"vdeviceid", std::to_string(g.vdevice)},
                    {"deviceuuid", g.uuid}};
    };
    Family(&out, "HostGPUMemoryUsage", "gauge", "GPU device memory usage in bytes (HAMi name)",
           [&](auto emit) {
             for (const auto& g : s.gpus) emit(hami_gpu(g), double(g.memory_used_bytes));
           });
    Family(&out, "HostCoreUtilization", "gauge", "GPU core utilization in percent (HAMi name)",
           [&](auto emit) {
             for (const auto& g : s.gpus) {
               if (g.utilization_percent >= 0) emit(hami_gpu(g), g.utilization_percent);
             }
           });
    Family(&out, "vGPU_device_memory_usage_in_bytes", "gauge",
           "vGPU device memory usage in bytes (HAMi name)", [&](auto emit) {
             each_slice_gpu([&](auto& sl, auto& g) { emit(hami_ctr(sl, g), double(g.used_bytes)); });
           });
    Family(&out, "vGPU_device_memory_limit_in_bytes", "gauge",
           "vGPU device memory limit in bytes (HAMi name)", [&](auto emit) {
             each_slice_gpu([&](auto& sl, auto& g) { emit(hami_ctr(sl, g), double(g.limit_bytes)); });
           });
    Family(&out, "Device_utilization_desc_of_container", "gauge",
           "Container device utilization in percent of the GPU (HAMi name)", [&](auto emit) {
             each_slice_gpu([&](auto& sl, auto& g) {
               if (g.share_ratio >= 0) emit(hami_ctr(sl, g), std::round(g.share_ratio * 100));
             });
           });
  }

  Family(&out, "tessera_gpu_healthy", "gauge", "1 when the GPU is healthy, 0 when not", [&](auto emit) {
    for (const auto& g : s.gpus) emit(gpu_labels(g), g.healthy ? 1 : 0);
  });
  Family(&out, "tessera_gpu_memory_total_bytes", "gauge", "GPU memory in bytes", [&](auto emit) {
    for (const auto& g : s.gpus) emit(gpu_labels(g), double(g.memory_total_bytes));
  });
  Family(&out, "tessera_gpu_memory_used_bytes", "gauge", "GPU memory in use in bytes, all processes",
         [&](auto emit) {
           for (const auto& g : s.gpus) emit(gpu_labels(g), double(g.memory_used_bytes));
         });
  Family(&out, "tessera_gpu_utilization_ratio", "gauge", "Fraction of time the GPU was busy (0..1)",
         [&](auto emit) {
           for (const auto& g : s.gpus) {
             if (g.utilization_percent >= 0) emit(gpu_labels(g), g.utilization_percent / 100.0);
           }
         });
  Family(&out, "tessera_slice_memory_used_bytes", "gauge", "GPU memory a slice uses on one GPU, in bytes",
         [&](auto emit) {
           each_slice_gpu([&](auto& sl, auto& g) { emit(slice_labels(sl, g), double(g.used_bytes)); });
         });
  Family(&out, "tessera_slice_memory_limit_bytes", "gauge", "GPU memory wall of a slice on one GPU, in bytes",
         [&](auto emit) {
           each_slice_gpu([&](auto& sl, auto& g) { emit(slice_labels(sl, g), double(g.limit_bytes)); });
         });
  Family(
      &out, "tessera_slice_compute_cap_ratio", "gauge", "Configured compute cap of a slice (0..1 of the GPU)",
      [&](auto emit) { each_slice_gpu([&](auto& sl, auto& g) { emit(slice_labels(sl, g), g.cap_ratio); }); });
  Family(&out, "tessera_slice_compute_share_ratio", "gauge",
         "Measured share of the GPU's time a slice used (0..1)", [&](auto emit) {
           each_slice_gpu([&](auto& sl, auto& g) {
             if (g.share_ratio >= 0) emit(slice_labels(sl, g), g.share_ratio);
           });
         });
  Family(&out, "tessera_slice_throttled_seconds_total", "counter",
         "Time the slice's launches were held back by its cap", [&](auto emit) {
           each_slice_gpu([&](auto& sl, auto& g) { emit(slice_labels(sl, g), g.throttled_seconds); });
         });
  Family(&out, "tessera_slice_wall_refusals_total", "counter",
         "Allocations refused at the slice's memory wall", [&](auto emit) {
           each_slice_gpu([&](auto& sl, auto& g) { emit(slice_labels(sl, g), double(g.wall_refusals)); });
         });
  Family(&out, "tessera_slice_priority_waits_total", "counter", "Launches delayed for high-priority work",
         [&](auto emit) {
           each_slice_gpu([&](auto& sl, auto& g) { emit(slice_labels(sl, g), double(g.priority_waits)); });
         });

  Family(&out, "tessera_slice_memory_measured_bytes", "gauge",
         "GPU memory a slice's processes hold on one GPU by the driver's per-process figures, in bytes",
         [&](auto emit) {
           each_slice_gpu([&](auto& sl, auto& g) {
             if (g.measured_bytes >= 0) emit(slice_labels(sl, g), double(g.measured_bytes));
           });
         });
  const Labels node{{"node", s.node}};
  const WatchdogSample& w = s.watchdog;
  auto by_reason = [&](uint64_t over, uint64_t unknown) {
    return [&, over, unknown](auto emit) {
      if (!w.enabled) return;
      emit(Labels{{"node", s.node}, {"reason", "over_limit"}}, double(over));
      emit(Labels{{"node", s.node}, {"reason", "no_slice"}}, double(unknown));
    };
  };
  Family(&out, "tessera_watchdog_kills_total", "counter",
         "GPU processes the watchdog killed (over_limit: their slice was over its wall; no_slice: of no slice)",
         by_reason(w.over_limit_kills, w.unknown_kills));
  Family(&out, "tessera_watchdog_reports_total", "counter",
         "Findings reported without a kill (over_limit: excursions of a slice; no_slice: processes)",
         by_reason(w.over_limit_reports, w.unknown_reports));
  Family(&out, "tessera_watchdog_kill_failures_total", "counter", "Kills the watchdog attempted that failed",
         [&](auto emit) {
           if (w.enabled) emit(node, double(w.kill_failures));
         });
  Family(&out, "tessera_watchdog_polls_total", "counter", "Watchdog polls of the GPUs' process lists",
         [&](auto emit) {
           if (w.enabled) emit(node, double(w.polls));
         });
  Family(&out, "tessera_watchdog_poll_failures_total", "counter",
         "GPU process lists the watchdog could not read", [&](auto emit) {
           if (w.enabled) emit(node, double(w.poll_failures));
         });
  Family(&out, "tessera_watchdog_poll_duration_seconds", "gauge", "How long the last watchdog poll took",
         [&](auto emit) {
           if (w.enabled) emit(node, w.last_poll_seconds);
         });
  Family(&out, "tessera_watchdog_unknown_processes", "gauge",
         "GPU processes on a shared GPU that belong to no slice", [&](auto emit) {
           if (!w.enabled) return;
           for (const auto& g : s.gpus) {
             auto it = w.unknown_now.find(g.uuid);
             emit(Labels{{"node", s.node}, {"gpu_uuid", g.uuid}}, it == w.unknown_now.end() ? 0 : it->second.first);
           }
         });
  Family(&out, "tessera_watchdog_unknown_memory_bytes", "gauge",
         "GPU memory held by processes of no slice on a shared GPU, in bytes", [&](auto emit) {
           if (!w.enabled) return;
           for (const auto& g : s.gpus) {
             auto it = w.unknown_now.find(g.uuid);
             emit(Labels{{"node", s.node}, {"gpu_uuid", g.uuid}},
                  it == w.unknown_now.end() ? 0 : double(it->second.second));
           }
         });
  const auto& c = s.counters;
  struct Counter {
    const char* name;
    const char* help;
    uint64_t v;
  };
  const Counter counters[] = {
      {"tessera_agent_allocations_total", "Allocate calls answered with a slice", c.allocations},
      {"tessera_agent_allocation_failures_total", "Allocate calls that failed", c.allocation_failures},
      {"tessera_agent_ambiguous_matches_total",
       "Allocate calls whose pod had to be guessed among different requests", c.ambiguous_matches},
      {"tessera_agent_verified_total", "Slices confirmed through the kubelet's PodResources API", c.verified},
      {"tessera_agent_repairs_total",
       "Slices rewritten after PodResources showed another container held them", c.repairs},
      {"tessera_agent_registrations_total", "Successful registrations with the kubelet", c.registrations},
      {"tessera_agent_health_events_total", "GPU health changes observed", c.health_events},
  };
  for (const auto& k : counters) {
    Family(&out, k.name, "counter", k.help, [&](auto emit) { emit(node, double(k.v)); });
  }
  return out;
}

}  // namespace tessera::agent
