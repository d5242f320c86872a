#include "gpu/fault_backend.h"

#include <gtest/gtest.h>

#include "gpu/sim_backend.h"

namespace tessera::gpu {
namespace {

std::unique_ptr<Backend> TwoGpus() {
  SimSpec spec;
  EXPECT_TRUE(ParseSimSpec("gpus: [{uuid: GPU-a, model: m, memory_mib: 1}, "
                           "{uuid: GPU-b, model: m, memory_mib: 1}]",
                           "t", &spec)
                  .ok());
  return std::make_unique<SimBackend>(spec);
}

TEST(FaultBackend, CountsDownThenPassesThrough) {
  FaultPlan plan;
  plan.fail_init = 2;
  plan.fail_discover = 1;
  plan.fail_usage = 1;
  plan.fail_wait = 1;
  FaultBackend b(TwoGpus(), plan);
  EXPECT_EQ(b.Name(), "fault(sim)");
  EXPECT_FALSE(b.Init().ok());
  EXPECT_FALSE(b.Init().ok());
  ASSERT_TRUE(b.Init().ok());
  std::vector<GpuInfo> gpus;
  Status st = b.Discover(&gpus);
  EXPECT_FALSE(st.ok());
  EXPECT_NE(st.message().find("injected"), std::string::npos);
  ASSERT_TRUE(b.Discover(&gpus).ok());
  EXPECT_EQ(gpus.size(), 2u);
  GpuUsage u;
  EXPECT_FALSE(b.Usage("GPU-a", &u).ok());
  EXPECT_TRUE(b.Usage("GPU-a", &u).ok());
  std::optional<HealthEvent> ev;
  EXPECT_FALSE(b.WaitHealthEvent(std::chrono::milliseconds(0), &ev).ok());
  EXPECT_TRUE(b.WaitHealthEvent(std::chrono::milliseconds(0), &ev).ok());
}

TEST(FaultBackend, HidesDevices) {
  FaultBackend b(TwoGpus());
  ASSERT_TRUE(b.Init().ok());
  FaultPlan plan;
  plan.hidden.insert("GPU-a");
  b.SetPlan(plan);
  std::vector<GpuInfo> gpus;
  ASSERT_TRUE(b.Discover(&gpus).ok());
  ASSERT_EQ(gpus.size(), 1u);
  EXPECT_EQ(gpus[0].uuid, "GPU-b");
}

TEST(FaultPlanParse, GoodAndBad) {
  FaultPlan p;
  ASSERT_TRUE(ParseFaultPlan("init=2,wait=1,hide=GPU-a;GPU-b", &p).ok());
  EXPECT_EQ(p.fail_init, 2);
  EXPECT_EQ(p.fail_wait, 1);
  EXPECT_EQ(p.hidden.size(), 2u);
  EXPECT_NE(ParseFaultPlan("boom=1", &p).message().find("unknown key 'boom'"), std::string::npos);
  EXPECT_NE(ParseFaultPlan("init=-1", &p).message().find("init='-1'"), std::string::npos);
  EXPECT_NE(ParseFaultPlan("init", &p).message().find("key=value"), std::string::npos);
}

TEST(FaultBackend, ProcessesFailsThenPassesThrough) {
  FaultPlan plan;
  ASSERT_TRUE(ParseFaultPlan("processes=1", &plan).ok());
  EXPECT_EQ(plan.fail_processes, 1);
  FaultBackend b(TwoGpus(), plan);
  ASSERT_TRUE(b.Init().ok());
  std::vector<ProcessUsage> procs{{1, 1, true}};
  Status st = b.Processes("GPU-a", &procs);
  EXPECT_FALSE(st.ok());
  EXPECT_NE(st.message().find("injected fault: Processes failed for GPU-a"), std::string::npos);
  ASSERT_TRUE(b.Processes("GPU-a", &procs).ok());
  EXPECT_TRUE(procs.empty());
}

}  // namespace
}  // namespace tessera::gpu
