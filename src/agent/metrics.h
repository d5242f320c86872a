// Node agent metrics: the Prometheus text the agent serves on :9394/metrics.
//
// Two families of names. HAMi's, kept unchanged so existing dashboards keep working:
//   per container  vGPU_device_memory_usage_in_bytes, vGPU_device_memory_limit_in_bytes,
//                  Device_utilization_desc_of_container
//                  {podnamespace, podname, ctrname, vdeviceid, deviceuuid}
//   per GPU        HostGPUMemoryUsage, HostCoreUtilization {nodeid, deviceidx, deviceuuid, devicetype}
// and Tessera's, with units in the name:
//   tessera_slice_memory_used_bytes / _limit_bytes, tessera_slice_compute_cap_ratio,
//   tessera_slice_compute_share_ratio, tessera_slice_throttled_seconds_total,
//   tessera_slice_wall_refusals_total, tessera_slice_priority_waits_total
//   {namespace, pod, container, slice, gpu_uuid}
//   tessera_gpu_healthy, tessera_gpu_memory_total_bytes, tessera_gpu_memory_used_bytes,
//   tessera_gpu_utilization_ratio {node, gpu_uuid, gpu_index, model}
//   tessera_slice_memory_measured_bytes (the driver's per-process figures summed, from the watchdog)
//   tessera_watchdog_* counters and gauges of the watchdog (watchdog.h), {node[, reason | gpu_uuid]}
//   tessera_agent_* counters of the agent itself.
// promtool's linter objects to HAMi's camelCase names; RenderOptions::hami_names turns them off for
// users who do not need them (then `promtool check metrics` is clean).
//
// RenderMetrics is a pure function of a snapshot. Thread-safe.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace tessera::agent {

struct GpuSample {
  std::string uuid;
  int index = 0;
  std::string model;
  bool healthy = true;
  uint64_t memory_total_bytes = 0;
  uint64_t memory_used_bytes = 0;
  int utilization_percent = -1;  // -1 unknown: the series is left out
};

struct SliceGpuSample {
  std::string uuid;
  int vdevice = 0;  // position of this GPU within the container's slice
  uint64_t used_bytes = 0;
  uint64_t limit_bytes = 0;
  double cap_ratio = 1.0;   // configured compute cap (cores / 100)
  double share_ratio = -1;  // measured share of the GPU's time; -1 unknown
  double throttled_seconds = 0;
  uint64_t wall_refusals = 0;
  uint64_t priority_waits = 0;
  int64_t measured_bytes = -1;  // the driver's figure (watchdog); -1 unknown: the series is left out
};

struct SliceSample {
  std::string namespace_, pod, container, slice;
  std::vector<SliceGpuSample> gpus;
};

struct AgentCounters {
  uint64_t allocations = 0;
  uint64_t allocation_failures = 0;
  uint64_t ambiguous_matches = 0;
  uint64_t verified = 0;
  uint64_t repairs = 0;
  uint64_t registrations = 0;
  uint64_t health_events = 0;
};

struct WatchdogSample {
  bool enabled = false;  // false: the tessera_watchdog_* families are declared without series
  uint64_t polls = 0, poll_failures = 0;
  double last_poll_seconds = 0;
  uint64_t over_limit_kills = 0, over_limit_reports = 0, unknown_kills = 0, unknown_reports = 0;
  uint64_t kill_failures = 0;
  std::map<std::string, std::pair<int, uint64_t>> unknown_now;  // GPU UUID → (processes, bytes)
};

struct MetricsSnapshot {
  std::string node;
  WatchdogSample watchdog;
  std::vector<GpuSample> gpus;
  std::vector<SliceSample> slices;
  AgentCounters counters;
};

struct RenderOptions {
  bool hami_names = true;
};

std::string RenderMetrics(const MetricsSnapshot& s, const RenderOptions& opts = {});

// Escapes a label value for the text format (backslash, double quote, newline).
std::string EscapeLabel(const std::string& v);

}  // namespace tessera::agent
