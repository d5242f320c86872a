// Throughput and resilience: a 40-pod burst onto one node, and 1,000 mixed pods onto 50 nodes while the
// scheduler is killed twice (one takeover by a second replica, one restart).
#include <gtest/gtest.h>
#include <signal.h>

#include <atomic>
#include <map>
#include <random>
#include <set>
#include <thread>

#include "scheduler_env.h"

namespace tessera::itest {
namespace {

#define NEED_KUBE(env)                                                        \
  if (!(env).available()) GTEST_SKIP() << "TESSERA_KUBECONFIG unset (run under ctest, fixture kube)"

// Checks every GPU's slices against its capacity, and every assignment against its binding.
void ExpectNoOvercommit(const std::vector<Json>& pods, const std::map<std::string, int64_t>& gpu_mib) {
  std::map<std::string, int64_t> mem, cores;
  std::map<std::string, int> exclusive, sharers;
  for (const auto& p : pods) {
    std::string node = p["spec"].value("nodeName", "");
    ASSERT_FALSE(node.empty()) << kube::Name(p) << " unbound";
    EXPECT_EQ(kube::Annotation(p, kube::kAnnoAssignedNode), node) << kube::Name(p);
    auto d = kube::DecodeDevices(kube::Annotation(p, kube::kAnnoDevices));
    ASSERT_TRUE(d.ok()) << kube::Name(p);
    for (const auto& c : *d)
      for (const auto& s : c) {
        EXPECT_EQ(s.uuid.rfind("GPU-" + node + "-", 0), 0u) << s.uuid << " is not on " << node;
        mem[s.uuid] += s.memory_mib;
        cores[s.uuid] += s.cores;
        sharers[s.uuid] += 1;
        if (s.cores >= 100) exclusive[s.uuid] += 1;
      }
  }
  for (const auto& [uuid, m] : mem) {
    ASSERT_TRUE(gpu_mib.count(uuid)) << uuid;
    EXPECT_LE(m, gpu_mib.at(uuid)) << uuid << " memory over-committed";
    EXPECT_LE(cores[uuid], 100) << uuid << " cores over-committed";
    if (exclusive[uuid]) {
      EXPECT_EQ(sharers[uuid], 1) << uuid << " exclusive card shared";
    }
  }
}

TEST(SchedulerBurst, FortyPodsOntoOneNodeBoundInUnderTenSeconds) {
  SchedulerEnv env;
  NEED_KUBE(env);
  ASSERT_NO_FATAL_FAILURE(env.Start());
  std::vector<SimGpu> gpus(8, SimGpu{"A100", 40960, 0});
  std::string node = env.AddNode("big", gpus);
  std::map<std::string, int64_t> cap;
  for (int i = 0; i < 8; ++i) cap["GPU-" + node + "-" + std::to_string(i)] = 40960;
  ASSERT_TRUE(env.WaitPods([&](const std::vector<Json>&) {
    return env.Metrics().find("nodeid=\"" + node + "\"") != std::string::npos;
  }, 10));
  std::vector<std::string> names;
  for (int i = 0; i < 40; ++i) names.push_back("burst-" + std::to_string(i));
  auto t0 = std::chrono::steady_clock::now();
  std::vector<std::thread> ts;
  std::atomic<int> created{0};
  for (int t = 0; t < 8; ++t)
    ts.emplace_back([&, t] {
      for (int i = t; i < 40; i += 8) {
        // 5 pods per card fill each of the 8 cards exactly: every slice must be distinct and fit.
        auto r = env.CreatePod(SchedulerEnv::GpuPod(names[i], {{"nvidia.com/gpu", "1"}, {"nvidia.com/gpucores", "20"},
                                                               {"nvidia.com/gpumem-percentage", "20"}}));
        if (r.ok()) ++created;
      }
    });
  for (auto& t : ts) t.join();
  ASSERT_EQ(created.load(), 40);
  std::vector<Json> pods;
  bool bound = env.WaitBound(names, 30, &pods);
  double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  ASSERT_TRUE(bound) << "not all 40 pods bound";
  std::printf("40-pod burst: created and bound in %.2f s\n", secs);
  EXPECT_LT(secs, 10.0);
  ExpectNoOvercommit(pods, cap);
  std::map<std::string, int> per_gpu;
  for (const auto& p : pods) per_gpu[Slices(p)[0].uuid]++;
  EXPECT_EQ(per_gpu.size(), 8u);
  for (const auto& [u, n] : per_gpu) EXPECT_EQ(n, 5) << u;
}

TEST(SchedulerBurst, ThousandPodsFiftyNodesSchedulerKilledTwice) {
  SchedulerEnv env;
  NEED_KUBE(env);
  SchedulerEnv::Options o;
  o.lease_duration_s = 3;
  ASSERT_NO_FATAL_FAILURE(env.Start(o));
  std::map<std::string, int64_t> cap;
  for (int n = 0; n < 50; ++n) {
    std::vector<SimGpu> gpus;
    for (int g = 0; g < 4; ++g) gpus.push_back(SimGpu{n % 2 ? "A100" : "T4", n % 2 ? 40960 : 15360, g / 2});
    std::string name = env.AddNode("n" + std::to_string(n), gpus);
    for (int g = 0; g < 4; ++g) cap["GPU-" + name + "-" + std::to_string(g)] = gpus[g].memory_mib;
  }
  // Mixed requests, sized so that everything fits (about 70% of the cluster's cores).
  std::mt19937 rng(42);
  std::vector<Json> specs;
  std::vector<std::string> names;
  for (int i = 0; i < 1000; ++i) {
    Json limits;
    Json anno = Json::object();
    switch (rng() % 6) {
      case 0: limits = {{"nvidia.com/gpu", "1"}, {"nvidia.com/gpucores", "10"}, {"nvidia.com/gpumem-percentage", "10"}}; break;
      case 1: limits = {{"nvidia.com/gpu", "1"}, {"nvidia.com/gpucores", "5"}, {"nvidia.com/gpumem", "1000"}}; break;
      case 2: limits = {{"nvidia.com/gpumem", "2000"}, {"nvidia.com/gpucores", "15"}}; break;
      case 3: limits = {{"nvidia.com/gpu", "2"}, {"nvidia.com/gpucores", "10"}, {"nvidia.com/gpumem", "1000"}}; break;
      case 4: limits = {{"nvidia.com/gpu", "1"}, {"nvidia.com/gpucores", "20"}, {"nvidia.com/gpumem-percentage", "5"}};
              anno = {{"hami.io/node-scheduler-policy", "spread"}}; break;
      default: limits = {{"nvidia.com/gpu", "1"}, {"nvidia.com/gpucores", "10"}, {"nvidia.com/gpumem", "500"}};
               anno = {{"nvidia.com/use-gputype", "A100"}}; break;
    }
    names.push_back("mix-" + std::to_string(i));
    specs.push_back(SchedulerEnv::GpuPod(names.back(), limits, anno));
  }
  std::atomic<int> next{0}, created{0};
  std::vector<std::thread> ts;
  for (int t = 0; t < 8; ++t)
    ts.emplace_back([&] {
      for (int i; (i = next++) < 1000;) {
        // The webhook is down during a kill: retry creation until a scheduler serves it again.
        for (int attempt = 0; attempt < 600; ++attempt) {
          if (env.CreatePod(specs[i]).ok()) {
            ++created;
            break;
          }
          std::this_thread::sleep_for(std::chrono::milliseconds(50));
        }
      }
    });
  auto bound_count = [&] {
    int n = 0;
    env.WaitPods([&](const std::vector<Json>& ps) {
      n = 0;
      for (const auto& p : ps) n += !p["spec"].value("nodeName", "").empty();
      return true;
    }, 1);
    return n;
  };
  // Kill 1: SIGKILL the leader after ~250 binds; a second replica (new identity) must wait out the lease.
  ASSERT_TRUE(env.WaitPods([&](const std::vector<Json>&) { return bound_count() >= 250; }, 120));
  env.KillTessera(SIGKILL);
  env.StartTessera("replica-b");
  ASSERT_TRUE(env.WaitLeader(20)) << "replica-b never took over";
  // Kill 2: after ~600 binds, SIGKILL again and bring replica-a back.
  ASSERT_TRUE(env.WaitPods([&](const std::vector<Json>&) { return bound_count() >= 600; }, 120));
  env.KillTessera(SIGKILL);
  env.StartTessera("replica-a");
  ASSERT_TRUE(env.WaitLeader(20));
  for (auto& t : ts) t.join();
  ASSERT_EQ(created.load(), 1000);
  std::vector<Json> pods;
  ASSERT_TRUE(env.WaitBound(names, 120, &pods)) << "not every pod was bound";
  ExpectNoOvercommit(pods, cap);
}

}  // namespace
}  // namespace tessera::itest
