// What `tessera top` shows: GPUs and the slices on them, from either source.
//
// A TopSnapshot is filled from a node agent's /metrics (SnapshotFromMetrics) or from the slice regions on
// this host (top_local.h), then rendered by top_render.h. One TopSlice is one slice on one GPU (a slice
// with two GPUs is two rows). Fields a source cannot tell are left at their "unknown" value (-1 or empty)
// and shown as "-". Plain value types; no shared state.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "cli/top_prom.h"

namespace tessera::cli {

struct TopProcess {
  int pid = 0;
  uint64_t bytes = 0;  // on this row's GPU
};

struct TopSlice {
  std::string name;       // slice name (standalone) or "<namespace>/<pod>/<container>"
  std::string ns, pod, container;  // Kubernetes identity when known
  std::string gpu;        // GPU UUID
  uint64_t used_bytes = 0;
  uint64_t limit_bytes = 0;
  int cap_percent = -1;       // compute cap in force
  double share_percent = -1;  // measured share of the GPU's time
  int priority = -1;          // 0 high, 1 best effort
  int process_count = -1;
  std::vector<TopProcess> processes;  // pids known only from local regions
  int64_t wall_refusals = -1;
  double throttled_seconds = -1;
  // Raw counters from a local region, kept to turn two snapshots into a measured share.
  uint64_t busy_ns = 0;
  uint64_t throttled_ns = 0;
};

struct TopGpu {
  std::string uuid;
  std::string model;
  int64_t used_bytes = -1;    // as the GPU reports it (agent), or the sum of its slices (local)
  int64_t total_bytes = -1;
  double utilization_percent = -1;
  uint64_t allocated_bytes = 0;  // sum of the limits of its slices
  int slices = 0;
};

struct TopSnapshot {
  std::string source;  // "http://node:9394/metrics" or "local"
  int64_t time_ms = 0;
  std::vector<TopGpu> gpus;
  std::vector<TopSlice> slices;
};

// Builds a snapshot from an agent's samples. Understands both the tessera_* names and the HAMi-compatible
// names (vGPU_device_memory_*, HostGPUMemoryUsage, ...), preferring tessera_* when both are present.
TopSnapshot SnapshotFromMetrics(const std::vector<PromSample>& samples, const std::string& source);

// Sorts slices (by GPU, then name) and fills each GPU's slice count and allocated bytes; adds GPUs that
// only appear in slices.
void FinishSnapshot(TopSnapshot* snap);

// For local snapshots: sets share_percent and throttled_seconds rate from the counters of the previous
// snapshot of the same slice/GPU over the elapsed time. Slices without a predecessor keep -1.
void ApplyRates(const TopSnapshot& prev, TopSnapshot* cur);

}  // namespace tessera::cli
