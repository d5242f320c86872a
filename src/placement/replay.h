// Replay of a trace through the engine, one pod at a time, no departures (the ATC'23 artifact's
// protocol), recording after each pod the arrived workload and the unallocated GPU share.
//
// Called by `tessera sim` and bench/placement. Pure computation; one Replay() call is
// single-threaded and independent of any other, so callers run seeds/policies in parallel threads.
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

#include "placement/engine.h"
#include "placement/trace.h"

namespace tessera::placement::trace {

struct CurvePoint {
  double arrived_pct = 0;      // GPU requests of arrived pods (placed or not) / GPU capacity
  double unallocated_pct = 0;  // GPU capacity not allocated / GPU capacity
};

struct ReplayResult {
  std::vector<CurvePoint> curve;  // one point per arrived pod
  uint64_t placed = 0;
  uint64_t failed = 0;
  uint64_t failed_gpu_pods = 0;
  double unallocated_at_100 = 0;  // see UnallocatedAt()
  double seconds = 0;
};

struct ReplayOptions {
  double inflation = 1.3;        // arrivals up to this share of GPU capacity
  double typical_coverage = 0.95;  // fgd: share of pods whose kinds form the typical workload
                                   // (the artifact's 95 %); tessera always uses all kinds
  EngineOptions engine;
  // Called every few hundred pods with (pods done, pods total); may be empty.
  std::function<void(uint64_t, uint64_t)> progress;
};

// Runs one policy with one seed. Node choice: the highest raw score; exact ties are broken
// uniformly at random from a stream seeded by `seed` (kube-scheduler also picks at random among
// the top scores), separate from the shuffle stream so every policy sees the same arrivals.
ReplayResult Replay(const std::vector<TraceNode>& nodes, const std::vector<TracePod>& pods, Policy policy,
                    uint64_t seed, const ReplayOptions& opts);

// The unallocated share at `arrived` % as the artifact reports it: the mean over the points whose
// arrived share rounds to `arrived`; when none does, the mean of those within +-1 point; NaN if
// none is.
double UnallocatedAt(const std::vector<CurvePoint>& curve, double arrived);

}  // namespace tessera::placement::trace
