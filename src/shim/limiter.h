// CapBucket: the admission arithmetic behind a compute cap.
//
// A slice capped at N % of a GPU may use N % of that GPU's time over any window. The limiter keeps,
// per slice and GPU, one 64-bit "theoretical arrival time" (TAT, nanoseconds on CLOCK_MONOTONIC) in
// memory shared by every process of the slice (the cap file, limiter_region.h). Charging g ns of GPU
// time pushes the TAT forward by g / share ns of wall time; a submission is admitted while TAT <= now.
// A slice that was idle may bank at most `credit_ns` of wall time (the TAT never lags now by more),
// so over any window T its GPU time is at most share * (T + credit) plus what is in flight. This is
// the generic cell rate algorithm: one atomic word, no lock, no clock of its own, which is why it can
// live in a shared mapping that a process may die holding nothing of.
//
// Burst mode (cap_mode=burst) admits a submission past the cap when the caller says nobody else wants
// the GPU; it still charges, but never lets the debt run past `credit_ns` ahead of now, so the slice is
// back under its cap within that time once a neighbour shows up.
//
// Thread-safety: every function is safe from any thread of any process that maps the word; all state
// is the atomic itself. Callers pass `now` so tests drive a virtual clock.
#pragma once

#include <atomic>
#include <cstdint>

namespace tessera::shim {

struct CapParams {
  // Share of the GPU in parts per million (cores=25 -> 250000). 1'000'000 or more means uncapped.
  int64_t share_ppm = 1'000'000;
  // Wall time an idle slice may bank, and how far a bursting slice may run ahead of its cap.
  int64_t credit_ns = 20'000'000;
  bool burst = false;
};

struct Admission {
  bool admitted = false;
  int64_t wait_ns = 0;  // when not admitted: how long until the TAT reaches now
};

class CapBucket {
 public:
  // Wall time that `gpu_ns` of GPU time costs a slice with `share_ppm`.
  static int64_t WallCost(int64_t gpu_ns, int64_t share_ppm);

  // Admit one submission whose estimated GPU cost is `estimate_ns`, charging the estimate when
  // admitted. `others_idle` is only consulted in burst mode.
  static Admission TryAdmit(std::atomic<int64_t>& tat, const CapParams& p, int64_t now, int64_t estimate_ns,
                            bool others_idle);

  // Add (or, for a correction, remove) GPU time measured after the fact.
  static void Charge(std::atomic<int64_t>& tat, const CapParams& p, int64_t now, int64_t gpu_ns);

  static bool Uncapped(const CapParams& p) { return p.share_ppm >= 1'000'000; }
};

}  // namespace tessera::shim
