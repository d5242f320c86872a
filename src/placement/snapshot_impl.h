// Private to src/placement: the precomputed per-node state behind Snapshot.
//
// Engine code reads it through Snapshot::impl(); nothing outside src/placement includes this file.
// Layout is flat (one vector of GPU states, offsets per node; one vector of per-node x per-typical
// statistics) so an Evaluate over thousands of nodes touches contiguous memory and allocates nothing.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "placement/engine.h"

namespace tessera::placement {


struct GpuState {
  int64_t mem_total = 0;
  int64_t mem_free = 0;
  int32_t cores_total = 100;
  int32_t cores_free = 100;
  int32_t sharers = 0;
  int16_t numa = 0;
  uint16_t model = 0;  // interned model id
  bool healthy = true;
  bool exclusive = false;
  ModeUse mode = {};

  // GPU capacity this card can still give, in percent of one card (0 when unusable).
  double Amount() const {
    if (!healthy || exclusive || cores_total <= 0) return 0;
    return cores_free * 100.0 / cores_total;
  }
};

// One typical request kind, resolved against the snapshot's model table.
struct TypicalKind {
  int64_t cpu_milli = 0;
  int64_t memory_mib = 0;
  int gpus = 0;
  int pct = 0;              // per-GPU share in percent of a card
  double w_count = 0;       // share of arrivals (fgd)
  double w_mix = 0;         // tessera: half share of arrivals, half share of GPU demand
  std::vector<uint8_t> model_ok;  // by model id

  bool Fits(const GpuState& g) const {
    if (!g.healthy || g.exclusive || !model_ok[g.model]) return false;
    return int64_t(g.cores_free) * 100 >= int64_t(pct) * g.cores_total &&
           g.mem_free * 100 >= int64_t(pct) * g.mem_total;
  }
};

// tessera's fill model: how many arrivals' worth of chances a card gets to be topped up (see sliver).
inline constexpr double kSliverHorizon = 30;

// Per node and typical kind: how many GPUs fit the kind, and the capacity on those that do not.
struct KindStat {
  int32_t fit = 0;
  bool access = false;  // some healthy card of the node has a model the kind accepts
  double nonfit = 0;
};

struct Snapshot::Impl {
  std::vector<Node> nodes;
  std::vector<uint32_t> gpu_begin;  // size nodes+1
  std::vector<GpuState> gpus;
  std::vector<int64_t> cpu_free;
  std::vector<int64_t> mem_free;
  std::vector<uint64_t> version;
  std::vector<double> total_free;   // sum of Amount() over the node's GPUs
  std::vector<double> frag;         // expected fragmentation (fgd weights, CPU checked)
  std::vector<double> frag_mix;     // the same with tessera's weights, CPU and memory checked, over the
                                    // kinds that accept one of the node's models (see mix_norm)
  std::vector<double> mix_norm;     // 1 / (sum of w_mix over the kinds the node's models accept), or 0
  std::vector<const char*> invalid; // node-level reason it can never host GPU pods, or nullptr
  // Looked up by string_view without building a std::string (the extender asks for 5,000 names a call).
  struct NameHash {
    using is_transparent = void;
    size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
  };
  std::unordered_map<std::string, uint32_t, NameHash, std::equal_to<>> by_name;
  std::vector<std::string> model_names;

  std::shared_ptr<const Workload> workload;
  std::vector<TypicalKind> kinds;
  std::vector<KindStat> stats;  // node * kinds.size() + k
  // tessera's measure on a node whose cards are all of one model needs only the kinds that model
  // accepts, and kinds equal but for their model lists then count the same: merged_kinds[m] holds them
  // merged (weights summed), merged_stats their per-node statistics (stride merged_stride). With
  // type-constrained workloads this is several times fewer kinds per score than `kinds`.
  std::vector<int> node_model;  // the model id of all the node's cards, or -1 (mixed or none)
  std::vector<std::vector<TypicalKind>> merged_kinds;
  std::vector<KindStat> merged_stats;
  size_t merged_stride = 0;

  int64_t total_cores = 0;
  int64_t used_cores = 0;
  int64_t max_cpu = 1;
  double max_gpu_amount = 100;
  // Typical host CPU (millicores) and memory (MiB) that come with one card-percent of GPU demand.
  double cpu_per_pct = 0;
  double mem_per_pct = 0;  // largest node GPU capacity in card-percent
  // tessera: sliver[x] is the expected capacity (card-percent) a card with x % free ends up wasting,
  // under the fill model of docs/placement.md: while some fractional kind still fits, a pod of one of
  // them lands with probability min(1, kSliverHorizon x their share of arrivals), picked by share.
  std::array<double, 101> sliver{};

  void Build(std::vector<Node> in, std::shared_ptr<const Workload> wl);
  uint16_t InternModel(const std::string& m);
  void RefreshNode(uint32_t n);  // recompute total_free, stats, frag of node n
  const GpuState* gpu_ptr(uint32_t n) const { return gpus.data() + gpu_begin[n]; }
  GpuState* gpu_ptr(uint32_t n) { return gpus.data() + gpu_begin[n]; }
  int gpu_count(uint32_t n) const { return int(gpu_begin[n + 1] - gpu_begin[n]); }
  const KindStat* stat_ptr(uint32_t n) const { return stats.data() + size_t(n) * kinds.size(); }
  const KindStat* merged_stat_ptr(uint32_t n) const { return merged_stats.data() + size_t(n) * merged_stride; }
};

}  // namespace tessera::placement
