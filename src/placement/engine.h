// Placement engine: which node, and which GPU(s) inside it, a pod should get.
//
// The engine is a pure function of an immutable cluster Snapshot and a PodRequest. It answers the
// two questions a kube-scheduler extender is asked: Filter (which nodes can take the pod, and why not
// for each of the others) and Prioritize (a 0..100 score per feasible node), and it picks the GPUs
// inside the chosen node (Assign) for the bind-time handoff. `tessera sim` replays traces through the
// very same calls, so what the simulator measures is what the scheduler does.
//
// Callers:
//  - src/scheduler (extender): builds a Snapshot from its informer cache, calls Evaluate() per
//    filter/prioritize call and Assign() at bind time, then Commit()s the assignment so later
//    calls see it until the informer catches up.
//  - src/cli/cmd_sim.cc: builds one Snapshot from a trace and Commit()s pods one at a time.
//
// Units: GPU compute is in "cores", out of Gpu::cores per card (100 by default: percent of one GPU,
// as HAMi's nvidia.com/gpucores). GPU memory in MiB. CPU in millicores, host memory in MiB.
//
// Thread-safety: a Snapshot is immutable except through Commit(); any number of threads may call
// Engine::Evaluate/Assign/ScoreNode on the same const Snapshot concurrently. Commit() needs exclusive
// access (the extender swaps in a new Snapshot or holds a writer lock). Engine itself is immutable
// after construction. Nothing here does I/O, throws, or knows Kubernetes types.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace tessera::placement {

// The most GPUs one node may carry; larger nodes are rejected by Snapshot (reason on the node).
inline constexpr int kMaxGpusPerNode = 32;

// Node- and GPU-level policies. Names (ParsePolicy/PolicyName): random, binpack, spread, bestfit,
// fgd, tessera.
//  - binpack / spread: fill the most / least used node (or GPU) first.
//  - bestfit: leave the least free CPU+GPU on the node (the ATC'23 baseline's formula).
//  - fgd: fragmentation gradient descent (Weng et al., ATC'23): minimise the growth of the node's
//    expected GPU fragmentation under the workload's typical requests.
//  - tessera: our fragmentation-aware policy (see docs/placement.md): the growth of the expected
//    fragmentation over the workload distribution (kinds weighted by arrivals and by GPU demand,
//    host memory checked next to CPU) plus the GPU capacity the placement strands behind exhausted
//    host CPU/memory plus the expected sliver waste of the cards it changes (can the card still be
//    filled by the workload's fractional kinds?), with best-fit tie-breaking.
//  - random: every feasible node scores the same (the caller's tie-break picks).
// At GPU level only binpack and spread are meaningful for the simple policies; fgd and tessera choose
// GPUs by their own measure whatever gpu_policy says.
enum class Policy : uint8_t { kRandom = 0, kBinpack, kSpread, kBestFit, kFgd, kTessera };

std::string_view PolicyName(Policy p);
std::optional<Policy> ParsePolicy(std::string_view name);
std::span<const Policy> AllPolicies();

// ---------------------------------------------------------------- snapshot input

// How the slices of one GPU compute beside each other (docs/compute.md): time-sliced (the driver's
// time slicing, Tessera's caps and priority) or spatial (clients of one MPS server per GPU, each with an
// SM partition). A container asks for one or takes its node's default. The two never share a GPU.
enum class ComputeMode : uint8_t { kNodeDefault = 0, kTimeSliced, kSpatial };

// No namespace holds a spatial slice of the GPU yet / several do (ModeUse::tenant).
inline constexpr int32_t kNoTenant = -1;
inline constexpr int32_t kMixedTenants = -2;

// The compute modes of the slices a GPU holds (see placement/spatial.h for the rules).
struct ModeUse {
  int time_sliced = 0;       // containers holding a time-sliced slice
  int spatial = 0;           // containers holding a spatial slice
  int32_t tenant = kNoTenant;  // the one namespace (caller's id) of the spatial slices, or kMixedTenants
  bool all_share = true;     // every spatial slice allows other namespaces beside it
  bool operator==(const ModeUse&) const = default;
};

// What is already allocated on one GPU.
struct GpuUsage {
  int64_t memory_mib = 0;
  int cores = 0;
  bool exclusive = false;  // held by one container that must not share it
  int sharers = 0;         // containers currently holding a slice of it
  ModeUse mode = {};
};

struct Gpu {
  std::string uuid;   // "GPU-..."
  std::string model;  // e.g. "A100", "T4"; matched by type filters (case-insensitive substring)
  int64_t memory_mib = 0;
  int cores = 100;  // capacity in cores (see Units above)
  int numa = 0;
  bool healthy = true;
  GpuUsage used;
};

struct Node {
  std::string name;
  std::vector<std::pair<std::string, std::string>> labels;
  int64_t cpu_milli = 0;  // allocatable
  int64_t cpu_used_milli = 0;
  int64_t memory_mib = 0;  // allocatable host memory
  int64_t memory_used_mib = 0;
  std::vector<Gpu> gpus;
  ComputeMode default_mode = ComputeMode::kTimeSliced;  // for containers that name none
  // GPU-to-GPU link ranks (placement/topology.h LinkRank), gpus.size() squared, row-major; empty when
  // the node published no topology.
  std::vector<uint8_t> links;
};

// ---------------------------------------------------------------- request

// GPU model filter semantics (request type filters and typical-request models): case-insensitive
// substring, so "V100" matches "V100M32" and "A100" matches "NVIDIA-A100-SXM4-80GB".
bool ModelMatches(std::string_view model, std::string_view pattern);

struct ContainerRequest {
  int gpus = 0;             // number of GPUs this container needs (0: none)
  int64_t memory_mib = 0;   // GPU memory per GPU; when 0, memory_percent applies
  int memory_percent = 0;   // GPU memory per GPU as % of the card (0..100); 0 with memory_mib 0: none
  int cores = 0;            // compute per GPU in the card's cores (0: no reservation)
  bool exclusive = false;   // no other container may share the chosen GPU(s)
  std::vector<std::string> type_include;  // GPU model must match one of these (empty: any)
  std::vector<std::string> type_exclude;  // GPU model must match none of these
  std::vector<std::string> uuid_include;  // GPU uuid must be one of these (empty: any)
  std::vector<std::string> uuid_exclude;
  bool numa_bind = false;                 // all GPUs of this container on one NUMA node
  Policy gpu_policy = Policy::kBinpack;   // how to pick GPUs inside the node
  // GPU policy modifiers (HAMi's topology-aware and numa): a multi-GPU container takes the set with the
  // best links (topology.h), and GPUs of one NUMA node when enough fit there (numa_bind requires it).
  bool topology_aware = false;
  bool numa_prefer = false;
  ComputeMode mode = ComputeMode::kNodeDefault;
  int32_t tenant = 0;          // the pod's namespace as an id chosen by the caller (spatial separation)
  bool share_tenants = false;  // a spatial slice may sit beside other namespaces' that allow it too
};

struct PodRequest {
  std::vector<ContainerRequest> containers;
  int64_t cpu_milli = 0;   // whole pod
  int64_t memory_mib = 0;  // whole pod, host memory
  Policy node_policy = Policy::kBinpack;
  // Node policy modifiers: prefer, before node_policy's own measure, the node where the pod's
  // multi-GPU containers get the best links / GPUs of one NUMA node.
  bool node_topology_aware = false;
  bool node_numa = false;
};

// ---------------------------------------------------------------- typical workload

// One kind of request the cluster typically receives, with its share of arrivals. The
// fragmentation-aware policies measure a node's fragmentation against this distribution.
struct TypicalRequest {
  int64_t cpu_milli = 0;
  int64_t memory_mib = 0;  // host memory
  int gpus = 0;
  int cores = 0;           // per GPU, in cores of a 100-core card (100: a whole card)
  std::vector<std::string> models;  // allowed GPU models (empty: any)
  double weight = 0;                // relative frequency; normalised by Workload
};

// Immutable, normalised distribution of typical requests (shared by many snapshots).
class Workload {
 public:
  // Keeps the most frequent request kinds covering `coverage` (0..1] of the total weight, then
  // renormalises. Requests with weight <= 0 are dropped.
  static std::shared_ptr<const Workload> Make(std::vector<TypicalRequest> requests,
                                              double coverage = 1.0);
  const std::vector<TypicalRequest>& requests() const { return requests_; }

 private:
  std::vector<TypicalRequest> requests_;
};

// ---------------------------------------------------------------- output

// GPUs granted to one container: indices into Node::gpus with what each gives.
struct GpuGrant {
  uint16_t gpu = 0;
  int64_t memory_mib = 0;
  int cores = 0;
  bool exclusive = false;
};

struct Assignment {
  std::vector<std::vector<GpuGrant>> containers;  // one entry per ContainerRequest, in order
};

// The verdict on one node. `reason` is nullptr when the node is feasible, else a static string
// suitable for the extender's FailedNodes map (e.g. "insufficient GPU memory").
struct NodeVerdict {
  uint32_t node = 0;
  const char* reason = nullptr;
  double raw = 0;  // policy value, higher is better (comparable across nodes of one call)
  int score = 0;   // 0..100 after normalising raw over the feasible nodes of the call
};

// Reused across calls by the caller to avoid allocations.
struct Evaluation {
  std::vector<NodeVerdict> verdicts;  // one per candidate, candidate order
  size_t feasible = 0;
};

// ---------------------------------------------------------------- snapshot

// Nodes plus precomputed per-node summaries (free capacity per GPU, model matches, the node's
// fragmentation under the workload). Build once per informer resync; Commit() keeps it current.
class Snapshot {
 public:
  Snapshot(std::vector<Node> nodes, std::shared_ptr<const Workload> workload = nullptr);
  ~Snapshot();
  Snapshot(Snapshot&&) noexcept;
  Snapshot& operator=(Snapshot&&) noexcept;
  Snapshot(const Snapshot&);
  Snapshot& operator=(const Snapshot&);

  size_t size() const;
  const Node& node(uint32_t i) const;
  std::optional<uint32_t> Find(std::string_view name) const;
  const std::shared_ptr<const Workload>& workload() const;

  // Bumped by every Commit() to that node: lets callers cache per-node results.
  uint64_t version(uint32_t i) const;

  // Applies an assignment produced by Engine::Assign for `node` (CPU, memory, GPU usage).
  void Commit(uint32_t node, const PodRequest& req, const Assignment& a);

  // Cluster totals over healthy GPUs, in cores (Gpu::cores units).
  int64_t total_gpu_cores() const;
  int64_t used_gpu_cores() const;

  // The node's expected fragmentation (in cores) under the workload (0 without a workload).
  double fragmentation(uint32_t i) const;

  // tessera's expected waste (card-percent) of one card with `free_percent` % free under the
  // workload's fractional kinds (docs/placement.md, "sliver"); free_percent is clamped to 0..100.
  double expected_sliver(int free_percent) const;

  struct Impl;
  const Impl& impl() const { return *impl_; }

 private:
  std::unique_ptr<Impl> impl_;
};

// ---------------------------------------------------------------- engine

struct EngineOptions {
  // Weights of the bestfit formula: CPU and GPU.
  double bestfit_cpu_weight = 0.5;
  double bestfit_gpu_weight = 0.5;
  // tessera: weight of the best-fit tie-break against the fragmentation growth (card-percent).
  double tessera_fit_weight = 1e-3;
  // tessera: weight of the GPU capacity stranded by exhausted host CPU/memory (see docs).
  double tessera_balance_weight = 1.0;
  // tessera: weight of the expected sliver waste of the cards a placement changes (see docs).
  double tessera_sliver_weight = 32.0;
};

class Engine {
 public:
  explicit Engine(EngineOptions opts = {});

  // Filter + Prioritize in one pass over `candidates` (all nodes when empty). `out` is resized and
  // overwritten; reuse it across calls. Scores are normalised over the feasible candidates.
  void Evaluate(const Snapshot& snap, const PodRequest& req, std::span<const uint32_t> candidates,
                Evaluation* out) const;

  // One node: reason (nullptr if feasible) and raw score; no normalisation. Cheap enough to call
  // per node; the simulator caches it by (node version, request kind).
  NodeVerdict ScoreNode(const Snapshot& snap, const PodRequest& req, uint32_t node) const;

  // Picks the GPUs on `node` per the request's policies. Returns false and sets *reason when the
  // node cannot take the pod.
  bool Assign(const Snapshot& snap, const PodRequest& req, uint32_t node, Assignment* out,
              const char** reason) const;

  const EngineOptions& options() const { return opts_; }

 private:
  EngineOptions opts_;
};

}  // namespace tessera::placement
