// The admission webhook on the real API server: every rejection, the mutations, and failurePolicy Fail.
#include <gtest/gtest.h>

#include "scheduler_env.h"

namespace tessera::itest {
namespace {

#define NEED_KUBE(env)                                                        \
  if (!(env).available()) GTEST_SKIP() << "TESSERA_KUBECONFIG unset (run under ctest, fixture kube)"

TEST(SchedulerWebhook, RejectsImpossibleRequestsWithFieldValueAndRange) {
  SchedulerEnv env;
  NEED_KUBE(env);
  ASSERT_NO_FATAL_FAILURE(env.Start());
  env.AddNode("w", {{"T4", 16384, 0}});
  // The webhook learns the largest GPU from its view; wait until the node is in it.
  ASSERT_TRUE(env.WaitPods([&](const std::vector<Json>&) {
    return env.Metrics().find("GPUDeviceMemoryLimit{deviceidx=\"0\"") != std::string::npos;
  }, 10));
  struct Case {
    Json limits;
    Json annotations;
    std::string want;
  } cases[] = {
      {{{"nvidia.com/gpumem-percentage", "0"}}, {}, "nvidia.com/gpumem-percentage=0 is out of range (1..100)"},
      // Negative and fractional values never reach the webhook: the API server's own validation names them.
      {{{"nvidia.com/gpumem-percentage", "-3"}}, {}, "limits[nvidia.com/gpumem-percentage]: Invalid value: \"-3\": must be greater than or equal to 0"},
      {{{"nvidia.com/gpumem-percentage", "150"}}, {}, "nvidia.com/gpumem-percentage=150 is out of range (1..100)"},
      {{{"nvidia.com/gpucores", "101"}}, {}, "nvidia.com/gpucores=101 is out of range (0..100)"},
      {{{"nvidia.com/gpumem", "20000"}}, {}, "nvidia.com/gpumem=20000 MiB is larger than any GPU in the cluster (1..16384 MiB)"},
      {{{"nvidia.com/gpumem", "2.5"}}, {}, "limits[nvidia.com/gpumem]: Invalid value: \"2500m\": must be an integer"},
      {{{"nvidia.com/gpu", "-1"}}, {}, "limits[nvidia.com/gpu]: Invalid value: \"-1\": must be greater than or equal to 0"},
      {{{"nvidia.com/gpu", "1"}}, {{"tessera.dev/assigned-node", "x"}}, "annotation tessera.dev/assigned-node is set by the Tessera scheduler"},
      {{{"nvidia.com/gpu", "1"}}, {{"tessera.dev/devices", "[]"}}, "annotation tessera.dev/devices is set by the Tessera scheduler"},
      {{{"nvidia.com/gpu", "1"}}, {{"hami.io/vgpu-devices-allocated", "x"}}, "annotation hami.io/vgpu-devices-allocated is set"},
      {{{"nvidia.com/gpu", "1"}}, {{"hami.io/gpu-scheduler-policy", "tight"}}, "hami.io/gpu-scheduler-policy=tight is not allowed (binpack or spread)"},
  };
  int i = 0;
  for (const auto& c : cases) {
    auto r = env.CreatePod(SchedulerEnv::GpuPod("bad-" + std::to_string(i++), c.limits, c.annotations));
    ASSERT_FALSE(r.ok()) << c.limits.dump() << " was admitted";
    EXPECT_NE(r.error().message.find(c.want), std::string::npos) << r.error().message;
    bool names_where = r.error().message.find("container \"gpu-worker\"") != std::string::npos ||
                       r.error().message.find("annotation") != std::string::npos ||
                       r.error().message.find("Invalid value") != std::string::npos;
    EXPECT_TRUE(names_where) << r.error().message;
  }
}

TEST(SchedulerWebhook, MutatesOnlyGpuPodsAndFailsClosedWhenDown) {
  SchedulerEnv env;
  NEED_KUBE(env);
  ASSERT_NO_FATAL_FAILURE(env.Start());
  // Memory without nvidia.com/gpu: one GPU added; default-scheduler replaced.
  auto r = env.CreatePod(SchedulerEnv::GpuPod("mem-only", {{"nvidia.com/gpumem", "1000"}}, {}, "default-scheduler"));
  ASSERT_TRUE(r.ok()) << r.error().ToString();
  EXPECT_EQ((*r)["spec"]["schedulerName"], env.scheduler_name());
  EXPECT_EQ((*r)["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"], "1");
  // A pod without GPU resources is left alone.
  Json cpu = SchedulerEnv::GpuPod("cpu-only", {{"cpu", "1"}}, {}, "");
  auto c = env.CreatePod(cpu);
  ASSERT_TRUE(c.ok());
  EXPECT_EQ((*c)["spec"]["schedulerName"], "default-scheduler");
  // Webhook down: GPU pods refused with a clear reason, CPU pods still admitted.
  env.KillTessera(SIGKILL);
  auto down = env.CreatePod(SchedulerEnv::GpuPod("while-down", {{"nvidia.com/gpu", "1"}}));
  ASSERT_FALSE(down.ok());
  EXPECT_NE(down.error().message.find("failed calling webhook"), std::string::npos) << down.error().message;
  EXPECT_NE(down.error().message.find("mutate.tessera.dev"), std::string::npos) << down.error().message;
  EXPECT_TRUE(env.CreatePod(SchedulerEnv::GpuPod("cpu-while-down", {{"cpu", "1"}}, {}, "")).ok());
}

}  // namespace
}  // namespace tessera::itest
