// `tessera scheduler --follow-lease` (the Helm chart's mode) against the real API server: leadership is read
// from a Lease that kube-scheduler holds, is never written, and never refuses a bind.
#include <gtest/gtest.h>

#include "scheduler/leader.h"
#include "scheduler_env.h"

namespace tessera::itest {
namespace {

#define NEED_KUBE(env)                                                        \
  if (!(env).available()) GTEST_SKIP() << "TESSERA_KUBECONFIG unset (run under ctest, fixture kube)"

TEST(SchedulerLease, FollowsKubeSchedulerLease) {
  SchedulerEnv env;
  NEED_KUBE(env);
  // The Lease as kube-scheduler writes it: holder "<hostname>_<uuid>". SchedulerEnv starts our replica with
  // --leader-id=replica-a and --lease-name=tessera-scheduler in the test's namespace.
  Json lease = {{"apiVersion", "coordination.k8s.io/v1"},
                {"kind", "Lease"},
                {"metadata", {{"name", "tessera-scheduler"}, {"namespace", env.ns()}}},
                {"spec",
                 {{"holderIdentity", "replica-a_4f1c2d3e-0000-4000-8000-123456789abc"},
                  {"leaseDurationSeconds", 60},
                  {"acquireTime", scheduler::NowMicroTime()},
                  {"renewTime", scheduler::NowMicroTime()},
                  {"leaseTransitions", 0}}}};
  auto created = env.client().Create(kube::kLeases, env.ns(), lease);
  ASSERT_TRUE(created.ok()) << created.error().ToString();
  std::string rv = kube::ResourceVersionOf(*created);

  SchedulerEnv::Options o;
  o.extra_args = {"--follow-lease"};
  ASSERT_NO_FATAL_FAILURE(env.Start(o));  // waits for tessera_scheduler_leader 1
  std::string node = env.AddNode("gpu", {{"T4", 16384, 0}});
  Json small = {{"nvidia.com/gpu", "1"}, {"nvidia.com/gpumem", "1000"}};
  ASSERT_TRUE(env.CreatePod(SchedulerEnv::GpuPod("while-leading", small)).ok());
  ASSERT_TRUE(env.WaitBound({"while-leading"}, 20)) << env.SchedulingMessage("while-leading");

  // Another replica's kube-scheduler takes the Lease: the metric follows within a few retry periods.
  auto got = env.client().Get(kube::kLeases, env.ns(), "tessera-scheduler");
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(kube::ResourceVersionOf(*got), rv) << "a follower must never write the Lease";
  Json taken = *got;
  taken["spec"]["holderIdentity"] = "replica-b_9e8d7c6b-0000-4000-8000-cba987654321";
  taken["spec"]["renewTime"] = scheduler::NowMicroTime();
  taken["spec"]["leaseTransitions"] = 1;
  auto updated = env.client().Update(kube::kLeases, env.ns(), "tessera-scheduler", taken);
  ASSERT_TRUE(updated.ok()) << updated.error().ToString();
  EXPECT_TRUE(env.WaitMetricLine("tessera_scheduler_leader 0", 10)) << env.Metrics();

  // The kube-scheduler that calls this replica decides by itself that it leads; a lagging read of the Lease
  // must not turn its binds into NotLeader failures.
  ASSERT_TRUE(env.CreatePod(SchedulerEnv::GpuPod("while-following", small)).ok());
  ASSERT_TRUE(env.WaitBound({"while-following"}, 20)) << env.SchedulingMessage("while-following");
  EXPECT_EQ(env.Metrics().find("reason=\"NotLeader\""), std::string::npos);

  // Back to our pod's kube-scheduler.
  got = env.client().Get(kube::kLeases, env.ns(), "tessera-scheduler");
  ASSERT_TRUE(got.ok());
  Json back = *got;
  back["spec"]["holderIdentity"] = "replica-a_0a0b0c0d-0000-4000-8000-000000000001";
  back["spec"]["renewTime"] = scheduler::NowMicroTime();
  ASSERT_TRUE(env.client().Update(kube::kLeases, env.ns(), "tessera-scheduler", back).ok());
  EXPECT_TRUE(env.WaitMetricLine("tessera_scheduler_leader 1", 10)) << env.Metrics();
  got = env.client().Get(kube::kLeases, env.ns(), "tessera-scheduler");
  ASSERT_TRUE(got.ok());
  EXPECT_EQ((*got)["spec"]["holderIdentity"], "replica-a_0a0b0c0d-0000-4000-8000-000000000001");
}

}  // namespace
}  // namespace tessera::itest
