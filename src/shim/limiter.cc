#include "shim/limiter.h"

#include <algorithm>

namespace tessera::shim {

int64_t CapBucket::WallCost(int64_t gpu_ns, int64_t share_ppm) {
  if (share_ppm <= 0) share_ppm = 1;
  // 128-bit intermediate: a 10 s graph at 1 % would overflow 64 bits after the multiply.
  __int128 v = static_cast<__int128>(gpu_ns) * 1'000'000 / share_ppm;
  return static_cast<int64_t>(v);
}

Admission CapBucket::TryAdmit(std::atomic<int64_t>& tat, const CapParams& p, int64_t now, int64_t estimate_ns,
                              bool others_idle) {
  if (Uncapped(p)) return {true, 0};
  const int64_t cost = WallCost(std::max<int64_t>(estimate_ns, 0), p.share_ppm);
  int64_t cur = tat.load(std::memory_order_relaxed);
  for (;;) {
    const bool bursting = cur > now && p.burst && others_idle;
    if (cur > now && !bursting) return {false, cur - now};
    int64_t next = std::max(cur, now - p.credit_ns) + cost;
    if (bursting) next = std::min(next, now + p.credit_ns);
    if (tat.compare_exchange_weak(cur, next, std::memory_order_acq_rel, std::memory_order_relaxed)) {
      return {true, 0};
    }
  }
}

void CapBucket::Charge(std::atomic<int64_t>& tat, const CapParams& p, int64_t now, int64_t gpu_ns) {
  if (Uncapped(p) || gpu_ns == 0) return;
  const int64_t cost = WallCost(gpu_ns, p.share_ppm);
  int64_t cur = tat.load(std::memory_order_relaxed);
  for (;;) {
    int64_t next = std::max(cur, now - p.credit_ns) + cost;
    // A refund never grants more than the banked credit an idle slice could have had.
    if (cost < 0) next = std::max(next, now - p.credit_ns);
    if (tat.compare_exchange_weak(cur, next, std::memory_order_acq_rel, std::memory_order_relaxed)) {
      return;
    }
  }
}

}  // namespace tessera::shim
