// Trace model for `tessera sim`: the Alibaba GPU-sharing trace ("openb", cluster-trace-gpu-v2023)
// parsed from CSV text, turned into engine Nodes and PodRequests, and the artifact's workload
// protocol (seeded shuffle, inflation by sampling with replacement to a share of GPU capacity).
//
// Pure functions over strings and vectors: the caller (src/cli/cmd_sim.cc) reads the files.
// Errors are returned as values with the file's line and field named. Thread-safe (no state).
#pragma once

#include <cstdint>
#include <memory>
#include <random>
#include <string>
#include <string_view>
#include <vector>

#include "placement/engine.h"

namespace tessera::placement::trace {

struct TraceNode {
  std::string name;
  int64_t cpu_milli = 0;
  int64_t memory_mib = 0;
  int gpus = 0;
  std::string model;
};

struct TracePod {
  std::string name;
  int64_t cpu_milli = 0;
  int64_t memory_mib = 0;
  int num_gpu = 0;
  int gpu_milli = 0;  // share of each GPU in thousandths (1000: whole card)
  std::vector<std::string> gpu_spec;  // allowed models (empty: any)
  int shape = 0;      // index of the pod's request kind (equal requests share it); set by ParsePods

  int64_t gpu_milli_total() const { return int64_t(num_gpu) * gpu_milli; }
};

// Parse results: either the value or a message naming the line and the field.
template <typename T>
struct Parsed {
  T value{};
  std::string error;  // empty on success
  bool ok() const { return error.empty(); }
};

// Host memory of a node whose list has no memory_mib column (or an empty field): not enforced.
inline constexpr int64_t kUnlimitedMemory = int64_t(1) << 50;

// Every node list format of cluster-trace-gpu-v2023. Columns by header name, in any order; unknown
// columns are ignored. Required: `gpu` (cards per node, 0..kMaxGpusPerNode) and `cpu_milli` (or `cpu`
// in whole cores). Optional: `sn` (name; "node-<row>" when absent), `memory_mib` (absent: not
// enforced), `model` (required only on a node with GPUs). A malformed field is an error naming the
// line, the field and the allowed range.
Parsed<std::vector<TraceNode>> ParseNodes(std::string_view csv);
// Every pod list format of the dataset (default, gpushare*, cpu*, gpuspec*, multigpu*, nomem*).
// Required: `num_gpu` (0..kMaxGpusPerNode) and `cpu_milli` (or `cpu` / `num_cpu` in whole cores).
// Optional: `name` (or `job_id`), `memory_mib` (0), `gpu_milli` (share of each card, 0..1000; absent:
// 1000 for GPU pods), `gpu_spec` (`|`-joined allowed models; absent or empty: any). Others ignored.
// Rule: gpu_milli > 0 exactly when num_gpu > 0.
Parsed<std::vector<TracePod>> ParsePods(std::string_view csv);

// GPU memory of a model in MiB (the trace has none; used to size cards and percentages).
int64_t ModelMemoryMib(std::string_view model);

// Engine nodes: each trace node gets `gpus` cards of its model, 100 cores each, healthy, split
// over two NUMA nodes.
std::vector<Node> ToNodes(const std::vector<TraceNode>& nodes);

// The engine request for a trace pod: one container with num_gpu GPUs of gpu_milli/10 cores and
// the same percentage of card memory (rounded up to a whole core), the pod's CPU and memory.
PodRequest ToRequest(const TracePod& pod, Policy policy);

// The workload distribution of a pod list: request kinds (CPU, GPUs, share, models; memory is the
// mean of the kind) weighted by frequency, most frequent kinds covering `coverage` of the pods.
std::shared_ptr<const Workload> TypicalWorkload(const std::vector<TracePod>& pods, double coverage);

// The artifact's protocol: shuffle the list with `seed`, then append pods sampled with replacement
// from the original list while the total GPU request stays within `ratio` x `capacity_milli`
// (sampling stops at the first pod that would cross it). Returns indices into `pods`.
std::vector<uint32_t> ArrivalOrder(const std::vector<TracePod>& pods, int64_t capacity_milli, double ratio,
                                   uint64_t seed);

// Deterministic across standard libraries (std::shuffle / distributions are not).
uint64_t UniformBelow(std::mt19937_64& rng, uint64_t n);

}  // namespace tessera::placement::trace
