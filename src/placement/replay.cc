// Trace replay (see replay.h).
#include "placement/replay.h"

#include <chrono>
#include <cmath>
#include <limits>

namespace tessera::placement::trace {

namespace {

// Per (node, pod kind) verdict cache: a node's verdict for a kind only changes when the node does,
// so each placement invalidates one node and the rest is reused. This is what keeps a full-trace
// replay within seconds while still calling the engine for every decision that can differ.
struct CacheEntry {
  uint64_t version_plus_one = 0;  // 0: empty
  double raw = 0;
  bool feasible = false;
};

}  // namespace

ReplayResult Replay(const std::vector<TraceNode>& tnodes, const std::vector<TracePod>& pods, Policy policy,
                    uint64_t seed, const ReplayOptions& opts) {
  const auto start = std::chrono::steady_clock::now();
  ReplayResult out;
  // fgd keeps the artifact's popular kinds only; tessera weighs every kind the list has (rare
  // multi-card requests are exactly the ones fragmentation hurts most).
  const double coverage = policy == Policy::kTessera ? 1.0 : opts.typical_coverage;
  Snapshot snap(ToNodes(tnodes), TypicalWorkload(pods, coverage));
  const Engine engine(opts.engine);
  const int64_t capacity_milli = snap.total_gpu_cores() * 10;
  const std::vector<uint32_t> order = ArrivalOrder(pods, capacity_milli, opts.inflation, seed);

  int shapes = 0;
  for (const auto& p : pods) shapes = std::max(shapes, p.shape + 1);
  std::vector<PodRequest> requests(shapes);
  std::vector<bool> built(shapes, false);
  for (const auto& p : pods) {
    if (!built[p.shape]) {
      requests[p.shape] = ToRequest(p, policy);
      built[p.shape] = true;
    }
  }
  const size_t n = snap.size();
  std::vector<CacheEntry> cache(n * size_t(shapes));
  std::mt19937_64 tie_rng(seed ^ 0x9e3779b97f4a7c15ULL);

  out.curve.reserve(order.size());
  int64_t arrived_milli = 0;
  Assignment assignment;
  for (size_t i = 0; i < order.size(); ++i) {
    const TracePod& pod = pods[order[i]];
    const PodRequest& req = requests[pod.shape];
    arrived_milli += pod.gpu_milli_total();
    double best = -std::numeric_limits<double>::infinity();
    uint32_t pick = 0;
    uint64_t ties = 0;
    for (uint32_t node = 0; node < n; ++node) {
      CacheEntry& e = cache[size_t(node) * shapes + pod.shape];
      const uint64_t v = snap.version(node) + 1;
      if (e.version_plus_one != v) {
        NodeVerdict verdict = engine.ScoreNode(snap, req, node);
        e.version_plus_one = v;
        e.feasible = verdict.reason == nullptr;
        e.raw = verdict.raw;
      }
      if (!e.feasible) continue;
      if (e.raw > best) {
        best = e.raw;
        pick = node;
        ties = 1;
      } else if (e.raw == best) {
        // Reservoir sampling over the tied nodes: each ends up chosen with equal probability.
        ++ties;
        if (UniformBelow(tie_rng, ties) == 0) pick = node;
      }
    }
    bool placed = false;
    if (ties > 0) {
      const char* reason = nullptr;
      if (engine.Assign(snap, req, pick, &assignment, &reason)) {
        snap.Commit(pick, req, assignment);
        placed = true;
      }
    }
    if (placed) {
      ++out.placed;
    } else {
      ++out.failed;
      if (pod.num_gpu > 0) ++out.failed_gpu_pods;
    }
    CurvePoint pt;
    pt.arrived_pct = 100.0 * double(arrived_milli) / double(capacity_milli);
    pt.unallocated_pct = 100.0 - 100.0 * double(snap.used_gpu_cores()) / double(snap.total_gpu_cores());
    out.curve.push_back(pt);
    if (opts.progress && (i % 256 == 0 || i + 1 == order.size())) opts.progress(i + 1, order.size());
  }
  out.unallocated_at_100 = UnallocatedAt(out.curve, 100.0);
  out.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return out;
}

double UnallocatedAt(const std::vector<CurvePoint>& curve, double arrived) {
  double sum = 0;
  int count = 0;
  for (const auto& p : curve) {
    if (std::round(p.arrived_pct) == arrived) {
      sum += p.unallocated_pct;
      ++count;
    }
  }
  if (count == 0) {
    for (const auto& p : curve) {
      if (std::abs(p.arrived_pct - arrived) <= 1.0) {
        sum += p.unallocated_pct;
        ++count;
      }
    }
  }
  return count ? sum / count : std::nan("");
}

}  // namespace tessera::placement::trace
