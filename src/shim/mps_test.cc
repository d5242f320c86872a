#include "shim/mps.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <string>

namespace tessera::shim {
namespace {

TEST(Mps, ClientEnvComesFromTheSliceNotTheApplication) {
  setenv("CUDA_MPS_ACTIVE_THREAD_PERCENTAGE", "100", 1);
  MpsApplyClientEnv("/run/tessera/mps/GPU-x/pipe", 25, 1);
  EXPECT_STREQ(getenv("CUDA_MPS_ACTIVE_THREAD_PERCENTAGE"), "25");
  EXPECT_STREQ(getenv("CUDA_MPS_PIPE_DIRECTORY"), "/run/tessera/mps/GPU-x/pipe");
  EXPECT_STREQ(getenv("CUDA_MPS_CLIENT_PRIORITY"), "1");
  MpsApplyClientEnv("/p", 0, 0);
  EXPECT_STREQ(getenv("CUDA_MPS_ACTIVE_THREAD_PERCENTAGE"), "1");
  EXPECT_STREQ(getenv("CUDA_MPS_CLIENT_PRIORITY"), "0");
}

TEST(Mps, BestEffortLeavesAGuardBesideHighPriority) {
  EXPECT_EQ(MpsPartitionPercent(90, 1, 0, false), 90);   // alone: its cores
  EXPECT_EQ(MpsPartitionPercent(90, 1, 0, true), 90 - kMpsBestEffortGuardPct);
  EXPECT_EQ(MpsPartitionPercent(10, 0, 0, true), 10);    // high priority keeps its share
  EXPECT_EQ(MpsPartitionPercent(3, 1, 0, true), 1);      // never below 1 %
  EXPECT_EQ(MpsPartitionPercent(90, 1, 70, true), 70);   // the slice's mps_percentage wins
  EXPECT_EQ(MpsPartitionPercent(90, 1, 101, false), 90); // out of range: ignored
}

// H100 (132 SMs), counts measured with bench/cap/run.py: 75 % -> 98 SMs, 76 % -> 100, 10 % -> 12, 11 % -> 14.
TEST(Mps, PartitionSizedByCoresGetsAtLeastItsShareOfSms) {
  EXPECT_EQ(MpsGrantedSms(75, 132), 98);
  EXPECT_EQ(MpsGrantedSms(90, 132), 118);
  EXPECT_EQ(MpsPartitionPercent(75, 1, 0, false, 132), 76);  // 100 SMs >= 99
  EXPECT_EQ(MpsPartitionPercent(50, 1, 0, false, 132), 50);  // 66 SMs exactly
  EXPECT_EQ(MpsPartitionPercent(25, 1, 0, false, 132), 26);  // 34 SMs >= 33
  EXPECT_EQ(MpsPartitionPercent(10, 0, 0, false, 132), 11);  // 14 SMs >= 13.2
  EXPECT_EQ(MpsPartitionPercent(100, 1, 0, false, 132), 100);
  EXPECT_EQ(MpsPartitionPercent(99, 1, 0, false, 132), 100);  // 131 SMs is odd: only 100 % gives them all
  EXPECT_EQ(MpsPartitionPercent(75, 1, 0, false, 0), 75);    // SM count unknown: cores as asked
  // The guard and mps_percentage are partitions chosen by SMs already: used as given.
  EXPECT_EQ(MpsPartitionPercent(90, 1, 0, true, 132), 90 - kMpsBestEffortGuardPct);
  EXPECT_EQ(MpsPartitionPercent(75, 1, 60, false, 132), 60);
}

TEST(Mps, BudgetChargesThePartitionGranted) {
  EXPECT_EQ(SpatialChargePpm(100, 132, 76), 757'575);  // 100 of 132 SMs
  EXPECT_EQ(SpatialChargePpm(0, 132, 76), 760'000);    // granted unknown: the percentage asked
  EXPECT_EQ(SpatialChargePpm(14, 0, 11), 110'000);
  EXPECT_EQ(SpatialChargePpm(140, 132, 100), 1'000'000);
}

TEST(Mps, PathsArePerGpu) {
  const MpsPaths p = MpsPathsFor("GPU-abc", "/run/tessera/mps");
  EXPECT_EQ(p.pipe_dir, "/run/tessera/mps/GPU-abc/pipe");
  EXPECT_EQ(p.log_dir, "/run/tessera/mps/GPU-abc/log");
}

TEST(Mps, StartFailsCleanlyWithoutTheDaemonBinary) {
  const char* old = getenv("PATH");
  const std::string saved = old ? old : "";
  setenv("PATH", "/nonexistent", 1);
  std::string err;
  char dir[] = "/tmp/tessera-mps-XXXXXX";
  ASSERT_NE(mkdtemp(dir), nullptr);
  EXPECT_FALSE(StartMpsDaemon("GPU-abc", MpsPathsFor("GPU-abc", dir), &err));
  EXPECT_NE(err.find("nvidia-cuda-mps-control"), std::string::npos) << err;
  setenv("PATH", saved.c_str(), 1);
}

}  // namespace
}  // namespace tessera::shim
