#include "shim/limiter.h"

#include <gtest/gtest.h>

#include <atomic>
#include <thread>
#include <vector>

namespace tessera::shim {
namespace {

constexpr int64_t kMs = 1'000'000;

TEST(CapBucket, WallCostScalesByShare) {
  EXPECT_EQ(CapBucket::WallCost(2 * kMs, 250'000), 8 * kMs);
  EXPECT_EQ(CapBucket::WallCost(1, 1'000'000), 1);
  // 10 s of GPU time at 1 %: no overflow.
  EXPECT_EQ(CapBucket::WallCost(10'000 * kMs, 10'000), 1'000'000 * kMs);
}

TEST(CapBucket, UncappedAlwaysAdmits) {
  std::atomic<int64_t> tat{1'000 * kMs};
  CapParams p;
  EXPECT_TRUE(CapBucket::TryAdmit(tat, p, 0, 5 * kMs, false).admitted);
  EXPECT_EQ(tat.load(), 1'000 * kMs);
}

// A greedy submitter of fixed-length work, admitted by the bucket, reaches the share exactly over a
// long run, whatever the work length.
TEST(CapBucket, GreedyLoopHoldsShare) {
  for (int64_t share : {100'000, 250'000, 500'000, 750'000}) {
    for (int64_t work : {kMs / 20, kMs / 10, 2 * kMs, 10 * kMs}) {
      std::atomic<int64_t> tat{0};
      CapParams p;
      p.share_ppm = share;
      int64_t now = 0, gpu_free = 0, used = 0;
      const int64_t end = 10'000 * kMs;
      while (now < end) {
        Admission a = CapBucket::TryAdmit(tat, p, now, work, false);
        if (!a.admitted) {
          now += a.wait_ns;
          continue;
        }
        const int64_t start = std::max(now, gpu_free);
        gpu_free = start + work;
        if (gpu_free <= end) used += work;
        now = start;  // the submitter only blocks on the bucket
      }
      const double got = static_cast<double>(used) / end;
      EXPECT_NEAR(got, share / 1e6, 0.005) << "share " << share << " work " << work;
    }
  }
}

TEST(CapBucket, IdleCreditIsBounded) {
  std::atomic<int64_t> tat{0};
  CapParams p;
  p.share_ppm = 100'000;
  p.credit_ns = 20 * kMs;
  // After a long idle time only credit_ns of wall time (2 ms of GPU at 10 %) is banked.
  const int64_t now = 60'000 * kMs;
  int admitted = 0;
  while (CapBucket::TryAdmit(tat, p, now, kMs / 2, false).admitted) ++admitted;
  EXPECT_EQ(admitted, 5);  // tat from now-20ms, +5 ms per admission: 5 admissions reach now+5ms
}

TEST(CapBucket, CorrectionRefundsButNeverPastCredit) {
  std::atomic<int64_t> tat{0};
  CapParams p;
  p.share_ppm = 500'000;
  p.credit_ns = 10 * kMs;
  const int64_t now = 100 * kMs;
  ASSERT_TRUE(CapBucket::TryAdmit(tat, p, now, 4 * kMs, false).admitted);
  EXPECT_EQ(tat.load(), now - 10 * kMs + 8 * kMs);
  CapBucket::Charge(tat, p, now, 2 * kMs);  // it cost 6 ms, not 4
  EXPECT_EQ(tat.load(), now + 2 * kMs);
  CapBucket::Charge(tat, p, now, -50 * kMs);  // a huge refund is clamped at the credit
  EXPECT_EQ(tat.load(), now - 10 * kMs);
}

TEST(CapBucket, BurstRunsAheadOnlyWhileOthersIdle) {
  std::atomic<int64_t> tat{0};
  CapParams p;
  p.share_ppm = 100'000;
  p.credit_ns = 20 * kMs;
  p.burst = true;
  const int64_t now = 1'000 * kMs;
  ASSERT_TRUE(CapBucket::TryAdmit(tat, p, now, 10 * kMs, false).admitted);
  EXPECT_FALSE(CapBucket::TryAdmit(tat, p, now, 10 * kMs, false).admitted);
  // Nobody else wants the GPU: admitted, but the debt stays within credit_ns ahead of now.
  for (int i = 0; i < 100; ++i) EXPECT_TRUE(CapBucket::TryAdmit(tat, p, now, 10 * kMs, true).admitted);
  EXPECT_LE(tat.load(), now + p.credit_ns);
  // A neighbour appears: back to the cap after at most credit_ns.
  Admission a = CapBucket::TryAdmit(tat, p, now, 10 * kMs, false);
  EXPECT_FALSE(a.admitted);
  EXPECT_LE(a.wait_ns, p.credit_ns);
}

// Concurrent admitters on one shared word never admit more than the share allows.
TEST(CapBucket, ConcurrentAdmissionIsExact) {
  std::atomic<int64_t> tat{0};
  CapParams p;
  p.share_ppm = 250'000;
  p.credit_ns = 400 * kMs;          // 400 ms of wall credit = 100 ms of GPU at 25 %
  const int64_t now = 1'000 * kMs;  // frozen clock: only banked time can be admitted
  std::atomic<int> admitted{0};
  std::vector<std::thread> th;
  for (int t = 0; t < 8; ++t) {
    th.emplace_back([&] {
      for (int i = 0; i < 1000; ++i) {
        if (CapBucket::TryAdmit(tat, p, now, kMs, false).admitted) admitted.fetch_add(1);
      }
    });
  }
  for (auto& t : th) t.join();
  EXPECT_EQ(admitted.load(), 101);  // the last one starts exactly at now
}

}  // namespace
}  // namespace tessera::shim
