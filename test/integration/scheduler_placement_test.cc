// Placement through the real kube-scheduler + `tessera scheduler` extender on simulated GPU nodes.
#include <gtest/gtest.h>

#include <map>
#include <set>

#include "agent_sim_node.h"
#include "scheduler_env.h"
#include "slice/config.h"

namespace tessera::itest {
namespace {

#define NEED_KUBE(env)                                                        \
  if (!(env).available()) GTEST_SKIP() << "TESSERA_KUBECONFIG unset (run under ctest, fixture kube)"

TEST(SchedulerPlacement, SeedWorkersLandWithTheirSlices) {
  SchedulerEnv env;
  NEED_KUBE(env);
  ASSERT_NO_FATAL_FAILURE(env.Start());
  std::string node = env.AddNode("gpu", {{"T4", 15360, 0}});
  // worker-a is also latency-sensitive with a burst cap: the bind hands both to the node.
  ASSERT_TRUE(env.CreatePod(SchedulerEnv::GpuPod("worker-a",
                                                 {{"nvidia.com/gpu", "1"},
                                                  {"nvidia.com/gpucores", "25"},
                                                  {"nvidia.com/gpumem-percentage", "20"},
                                                  {"nvidia.com/priority", "0"}},
                                                 {{"tessera.dev/cap-mode", "burst"}}))
                  .ok());
  ASSERT_TRUE(env.CreatePod(SchedulerEnv::GpuPod("worker-b", {{"nvidia.com/gpu", "1"}, {"nvidia.com/gpucores", "40"}, {"nvidia.com/gpumem-percentage", "30"}})).ok());
  std::vector<Json> pods;
  ASSERT_TRUE(env.WaitBound({"worker-a", "worker-b"}, 20, &pods)) << env.SchedulingMessage("worker-a");
  for (const auto& p : pods) {
    EXPECT_EQ(p["spec"]["schedulerName"], env.scheduler_name());  // hami-scheduler rewritten by the webhook
    EXPECT_EQ(p["spec"]["nodeName"], node);
    EXPECT_EQ(kube::Annotation(p, kube::kAnnoAssignedNode), node);
    EXPECT_EQ(kube::Annotation(p, kube::kAnnoAllocationState), "pending");
    EXPECT_FALSE(kube::Annotation(p, kube::kAnnoBindTime).empty());
    auto s = Slices(p);
    ASSERT_EQ(s.size(), 1u);
    EXPECT_EQ(s[0].uuid, "GPU-" + node + "-0");
    auto settings = kube::DecodeSettings(kube::Annotation(p, kube::kAnnoSettings));
    ASSERT_TRUE(settings.ok()) << settings.error().message;
    ASSERT_EQ(settings->containers.size(), 1u);
    EXPECT_EQ(settings->containers[0], kube::Name(p) == "worker-a" ? (kube::ContainerSettings{0, true})
                                                                   : (kube::ContainerSettings{1, false}));
    if (kube::Name(p) == "worker-a") {
      EXPECT_EQ(s[0].memory_mib, 15360 * 20 / 100);
      EXPECT_EQ(s[0].cores, 25);
    } else {
      EXPECT_EQ(s[0].memory_mib, 15360 * 30 / 100);
      EXPECT_EQ(s[0].cores, 40);
    }
  }
  std::string m = env.Metrics();
  EXPECT_NE(m.find("GPUDeviceSharedNum{deviceidx=\"0\",deviceuuid=\"GPU-" + node + "-0\",nodeid=\"" + node +
                   "\",zone=\"vGPU\"} 2"),
            std::string::npos)
      << m;
  EXPECT_NE(m.find("GPUDeviceCoreAllocated{deviceidx=\"0\",deviceuuid=\"GPU-" + node + "-0\",nodeid=\"" + node +
                   "\",zone=\"vGPU\"} 65"),
            std::string::npos);
  EXPECT_NE(m.find("tessera_scheduler_binds_total 2"), std::string::npos);
}

TEST(SchedulerPlacement, BinpackAndSpreadAtNodeAndGpuLevel) {
  SchedulerEnv env;
  NEED_KUBE(env);
  ASSERT_NO_FATAL_FAILURE(env.Start());  // defaults: node binpack, GPU spread
  std::string n1 = env.AddNode("n1", {{"T4", 16384, 0}, {"T4", 16384, 0}});
  std::string n2 = env.AddNode("n2", {{"T4", 16384, 0}, {"T4", 16384, 0}});
  Json small = {{"nvidia.com/gpu", "1"}, {"nvidia.com/gpucores", "10"}, {"nvidia.com/gpumem", "1000"}};
  // Node binpack + GPU spread: both on one node, different GPUs.
  ASSERT_TRUE(env.CreatePod(SchedulerEnv::GpuPod("bp-1", small)).ok());
  ASSERT_TRUE(env.WaitBound({"bp-1"}, 20));
  ASSERT_TRUE(env.CreatePod(SchedulerEnv::GpuPod("bp-2", small)).ok());
  std::vector<Json> p;
  ASSERT_TRUE(env.WaitBound({"bp-1", "bp-2"}, 20, &p));
  EXPECT_EQ(p[0]["spec"]["nodeName"], p[1]["spec"]["nodeName"]);
  EXPECT_NE(Slices(p[0])[0].uuid, Slices(p[1])[0].uuid);
  std::string used = p[0]["spec"]["nodeName"];
  // Node spread: goes to the emptier node. GPU binpack: shares the busier GPU.
  ASSERT_TRUE(env.CreatePod(SchedulerEnv::GpuPod("sp-1", small, {{"hami.io/node-scheduler-policy", "spread"}})).ok());
  ASSERT_TRUE(env.CreatePod(SchedulerEnv::GpuPod("gb-1", small, {{"hami.io/gpu-scheduler-policy", "binpack"}})).ok());
  ASSERT_TRUE(env.WaitBound({"sp-1", "gb-1"}, 20, &p));
  EXPECT_NE(p[0]["spec"]["nodeName"], used);
  EXPECT_EQ(p[1]["spec"]["nodeName"], used);  // node binpack still
  auto gb = Slices(p[1])[0].uuid;
  auto first = Slices(env.GetPod("bp-1"))[0].uuid, second = Slices(env.GetPod("bp-2"))[0].uuid;
  EXPECT_TRUE(gb == first || gb == second);
}

TEST(SchedulerPlacement, TypeAndUuidFiltersExclusiveMultiGpuAndNuma) {
  SchedulerEnv env;
  NEED_KUBE(env);
  ASSERT_NO_FATAL_FAILURE(env.Start());
  std::string t4 = env.AddNode("t4", {{"Tesla-T4", 15360, 0}, {"Tesla-T4", 15360, 0}});
  std::string a100 = env.AddNode("a100", {{"A100-SXM4-40GB", 40960, 0}, {"A100-SXM4-40GB", 40960, 0},
                                          {"A100-SXM4-40GB", 40960, 1}, {"A100-SXM4-40GB", 40960, 1}});
  Json small = {{"nvidia.com/gpu", "1"}, {"nvidia.com/gpumem", "1000"}, {"nvidia.com/gpucores", "5"}};
  ASSERT_TRUE(env.CreatePod(SchedulerEnv::GpuPod("want-a100", small, {{"nvidia.com/use-gputype", "A100"}})).ok());
  ASSERT_TRUE(env.CreatePod(SchedulerEnv::GpuPod("not-a100", small, {{"nvidia.com/nouse-gputype", "A100"}})).ok());
  std::string uuid = "GPU-" + a100 + "-2";
  ASSERT_TRUE(env.CreatePod(SchedulerEnv::GpuPod("by-uuid", small, {{"nvidia.com/use-gpuuuid", uuid}})).ok());
  std::vector<Json> p;
  ASSERT_TRUE(env.WaitBound({"want-a100", "not-a100", "by-uuid"}, 20, &p)) << env.SchedulingMessage("by-uuid");
  EXPECT_EQ(p[0]["spec"]["nodeName"], a100);
  EXPECT_EQ(p[1]["spec"]["nodeName"], t4);
  EXPECT_EQ(Slices(p[2])[0].uuid, uuid);
  // No card matches: stays pending with a reason.
  ASSERT_TRUE(env.CreatePod(SchedulerEnv::GpuPod("want-h100", small, {{"nvidia.com/use-gputype", "H100"}})).ok());
  EXPECT_TRUE(env.WaitPods([&](const std::vector<Json>&) { return !env.SchedulingMessage("want-h100").empty(); }, 20));
  EXPECT_TRUE(env.GetPod("want-h100")["spec"].value("nodeName", "").empty());
  // It would fit the H100 node added below, and kube-scheduler retries it: gone before that node exists,
  // so the GPUs there are only the ones this test places.
  ASSERT_TRUE(env.client().Delete(kube::kPods, env.ns(), "want-h100").ok());
  ASSERT_TRUE(env.WaitPods([](const std::vector<Json>& pods) {
    for (const auto& p : pods)
      if (p["metadata"].value("name", "") == "want-h100") return false;
    return true;
  }, 20));

  // Multi-GPU + NUMA on an H100 box with NUMA 0 = GPUs 0,1 and NUMA 1 = GPUs 2,3. GPU 0 is taken first, so
  // two whole cards on one NUMA node exist only on NUMA 1; without numa-bind GPUs 1 and 2 would do.
  std::string h100 = env.AddNode("h100", {{"H100", 81920, 0}, {"H100", 81920, 0}, {"H100", 81920, 1}, {"H100", 81920, 1}});
  ASSERT_TRUE(env.CreatePod(SchedulerEnv::GpuPod("first", small, {{"nvidia.com/use-gpuuuid", "GPU-" + h100 + "-0"}})).ok());
  ASSERT_TRUE(env.WaitBound({"first"}, 20));
  ASSERT_TRUE(env.CreatePod(SchedulerEnv::GpuPod("numa", {{"nvidia.com/gpu", "2"}},
                                                 {{"nvidia.com/numa-bind", "true"}, {"nvidia.com/use-gputype", "H100"}}))
                  .ok());
  ASSERT_TRUE(env.WaitBound({"numa"}, 20, &p)) << env.SchedulingMessage("numa");
  auto s = Slices(p[0]);
  ASSERT_EQ(s.size(), 2u);
  std::set<std::string> numa1 = {"GPU-" + h100 + "-2", "GPU-" + h100 + "-3"};
  EXPECT_TRUE(numa1.count(s[0].uuid) && numa1.count(s[1].uuid) && s[0].uuid != s[1].uuid)
      << s[0].uuid << " " << s[1].uuid;
  // Only nvidia.com/gpu: whole cards, exclusive.
  EXPECT_EQ(s[0].cores, 100);
  EXPECT_EQ(s[0].memory_mib, 81920);
  // Those cards are exclusive now: a small pod pinned to one of them cannot share it.
  ASSERT_TRUE(env.CreatePod(SchedulerEnv::GpuPod("share-excl", small, {{"nvidia.com/use-gpuuuid", s[0].uuid}})).ok());
  EXPECT_TRUE(env.WaitPods([&](const std::vector<Json>&) { return !env.SchedulingMessage("share-excl").empty(); }, 20));
  EXPECT_TRUE(env.GetPod("share-excl")["spec"].value("nodeName", "").empty());
  // A second pod asking for two whole cards has nowhere to go now (only GPU 1 is free), and says why.
  ASSERT_TRUE(env.CreatePod(SchedulerEnv::GpuPod("numa-2", {{"nvidia.com/gpu", "2"}},
                                                 {{"nvidia.com/numa-bind", "true"}, {"nvidia.com/use-gputype", "H100"}}))
                  .ok());
  // (On a loaded machine an earlier attempt may have failed otherwise, e.g. an extender timeout: wait for the
  // reason, kube-scheduler retries within its 2 s backoff.)
  std::string why;
  EXPECT_TRUE(env.WaitPods([&](const std::vector<Json>&) {
    return (why = env.SchedulingMessage("numa-2")).find("not enough GPUs") != std::string::npos;
  }, 20)) << why;
}

// A ResourceQuota on nvidia.com/gpumem with Kubernetes' own semantics: its quota controller (running in the
// fixture) fills status.hard and status.used with the MiB pods state, counted from creation on whether bound
// or not; Kubernetes' admission refuses stated MiB over the limit. Percentages only become MiB on the chosen
// card, so the scheduler adds those (per container, as a stated value counts) to status.used and refuses
// with Kubernetes' message.
TEST(SchedulerPlacement, QuotaOnGpuMemoryCountsPercentagesInMib) {
  SchedulerEnv env;
  NEED_KUBE(env);
  ASSERT_NO_FATAL_FAILURE(env.Start());
  env.AddNode("q", {{"T4", 10000, 0}, {"T4", 10000, 0}});
  Json quota = {{"apiVersion", "v1"},
                {"kind", "ResourceQuota"},
                {"metadata", {{"name", "gpu-mem"}}},
                {"spec", {{"hard", {{"requests.nvidia.com/gpumem", "8000"}}}}}};
  ASSERT_TRUE(env.client().Create(kube::kResourceQuotas, env.ns(), quota).ok());
  auto k8s_used = [&]() -> std::string {
    auto q = env.client().Get(kube::kResourceQuotas, env.ns(), "gpu-mem");
    if (!q.ok() || !q->contains("status") || !(*q)["status"].contains("used")) return "";
    return (*q)["status"]["used"].value("requests.nvidia.com/gpumem", "");
  };
  ASSERT_TRUE(env.WaitPods([&](const std::vector<Json>&) { return k8s_used() == "0"; }, 30))
      << "Kubernetes' quota controller never published status (is kube-controller-manager running resourcequota?)";
  auto quota_used = [&](int mib) {  // the scheduler's view agrees
    return env.WaitPods([&](const std::vector<Json>&) {
      return env.Metrics().find("QuotaUsed{limit=\"8000\",quotaName=\"nvidia.com/gpumem\",quotanamespace=\"" + env.ns() +
                                "\",resourcequota=\"gpu-mem\",zone=\"vGPU\"} " + std::to_string(mib) + "\n") !=
             std::string::npos;
    }, 20);
  };
  auto stated = [](int gpus, int mib) {
    return Json{{"nvidia.com/gpu", std::to_string(gpus)}, {"nvidia.com/gpumem", std::to_string(mib)}};
  };
  // Stated MiB count from creation, bound or not: this pod never schedules (no such node) yet uses 3000.
  Json waiting = SchedulerEnv::GpuPod("waiting", stated(1, 3000));
  waiting["spec"]["nodeSelector"] = {{"no-such-label", "anywhere"}};
  ASSERT_TRUE(env.CreatePod(waiting).ok());
  // Two GPUs of 500 MiB each count 500, as Kubernetes counts the stated value.
  ASSERT_TRUE(env.CreatePod(SchedulerEnv::GpuPod("two-gpus", stated(2, 500))).ok());
  ASSERT_TRUE(env.WaitBound({"two-gpus"}, 20)) << env.SchedulingMessage("two-gpus");
  EXPECT_TRUE(env.WaitPods([&](const std::vector<Json>&) { return k8s_used() == "3500"; }, 20)) << k8s_used();
  ASSERT_TRUE(quota_used(3500)) << env.Metrics();
  // 30% of the 10000-MiB card = 3000 MiB more: 6500 <= 8000.
  ASSERT_TRUE(env.CreatePod(SchedulerEnv::GpuPod("pct30", {{"nvidia.com/gpu", "1"}, {"nvidia.com/gpumem-percentage", "30"}})).ok());
  ASSERT_TRUE(env.WaitBound({"pct30"}, 20)) << env.SchedulingMessage("pct30");
  ASSERT_TRUE(quota_used(6500)) << env.Metrics();
  // 20% = 2000 more would make 8500: refused with Kubernetes' message, the MiB explained.
  ASSERT_TRUE(env.CreatePod(SchedulerEnv::GpuPod("pct20", {{"nvidia.com/gpu", "1"}, {"nvidia.com/gpumem-percentage", "20"}})).ok());
  std::string msg;
  EXPECT_TRUE(env.WaitPods([&](const std::vector<Json>&) {
    return (msg = env.SchedulingMessage("pct20")).find("exceeded quota") != std::string::npos;
  }, 20)) << msg;
  EXPECT_NE(msg.find("exceeded quota: gpu-mem, requested: requests.nvidia.com/gpumem=2000 (20% of a 10000 MiB T4), "
                     "used: requests.nvidia.com/gpumem=6500, limited: requests.nvidia.com/gpumem=8000"),
            std::string::npos) << msg;
  EXPECT_TRUE(env.GetPod("pct20")["spec"].value("nodeName", "").empty());
  // Stated MiB over the limit never get in: Kubernetes' own quota admission refuses them at creation.
  auto big = env.CreatePod(SchedulerEnv::GpuPod("stated-5000", stated(1, 5000)));
  ASSERT_FALSE(big.ok());
  EXPECT_NE(big.error().message.find("exceeded quota: gpu-mem"), std::string::npos) << big.error().message;
  // Deleting the waiting pod frees its 3000 MiB in Kubernetes' count (its controller recounts), the
  // scheduler follows, and the pending pod fits once kube-scheduler tries it again. A quota change is no
  // event for kube-scheduler: like any unschedulable pod it retries on a cluster event (here a Node
  // update) or after its unschedulable-queue timeout.
  // (The deletion is itself a cluster event, so kube-scheduler may retry pct20 at once: the scheduler's
  // total then goes straight from 6500 to 5500, and 3500 is never there to be seen. Wait for Kubernetes'.)
  ASSERT_TRUE(env.client().Delete(kube::kPods, env.ns(), "waiting").ok());
  ASSERT_TRUE(env.WaitPods([&](const std::vector<Json>&) { return k8s_used() == "500"; }, 20)) << k8s_used();
  std::string node = env.id() + "-q";
  ASSERT_TRUE(env.client().Patch(kube::kNodes, "", node, {{"metadata", {{"labels", {{"quota-test", "retry"}}}}}}).ok());
  EXPECT_TRUE(env.WaitBound({"pct20"}, 30)) << env.SchedulingMessage("pct20") << "\nKubernetes used: " << k8s_used();
  EXPECT_TRUE(quota_used(5500)) << env.Metrics();
}

// A ResourceQuota on nvidia.com/gpucores (HAMi limits cores per namespace too): Kubernetes counts the cores
// containers state; a whole card asked for with nvidia.com/gpu alone reserves 100 per GPU without stating
// it, so the scheduler adds that and refuses the pod that would go past the limit.
TEST(SchedulerPlacement, QuotaOnGpuCoresCountsWholeCards) {
  SchedulerEnv env;
  NEED_KUBE(env);
  ASSERT_NO_FATAL_FAILURE(env.Start());
  env.AddNode("c", {{"T4", 10000, 0}, {"T4", 10000, 0}, {"T4", 10000, 0}});
  Json quota = {{"apiVersion", "v1"},
                {"kind", "ResourceQuota"},
                {"metadata", {{"name", "gpu-cores"}}},
                {"spec", {{"hard", {{"requests.nvidia.com/gpucores", "150"}}}}}};
  ASSERT_TRUE(env.client().Create(kube::kResourceQuotas, env.ns(), quota).ok());
  auto k8s_used = [&]() -> std::string {
    auto q = env.client().Get(kube::kResourceQuotas, env.ns(), "gpu-cores");
    if (!q.ok() || !q->contains("status") || !(*q)["status"].contains("used")) return "";
    return (*q)["status"]["used"].value("requests.nvidia.com/gpucores", "");
  };
  ASSERT_TRUE(env.WaitPods([&](const std::vector<Json>&) { return k8s_used() == "0"; }, 30))
      << "Kubernetes' quota controller never published status";
  auto quota_used = [&](int cores) {
    return env.WaitPods([&](const std::vector<Json>&) {
      return env.Metrics().find("QuotaUsed{limit=\"150\",quotaName=\"nvidia.com/gpucores\",quotanamespace=\"" +
                                env.ns() + "\",resourcequota=\"gpu-cores\",zone=\"vGPU\"} " +
                                std::to_string(cores) + "\n") != std::string::npos;
    }, 20);
  };
  ASSERT_TRUE(env.CreatePod(SchedulerEnv::GpuPod(
                  "cores30", {{"nvidia.com/gpu", "1"}, {"nvidia.com/gpumem", "1000"}, {"nvidia.com/gpucores", "30"}}))
                  .ok());
  ASSERT_TRUE(env.WaitBound({"cores30"}, 20)) << env.SchedulingMessage("cores30");
  EXPECT_TRUE(env.WaitPods([&](const std::vector<Json>&) { return k8s_used() == "30"; }, 20)) << k8s_used();
  ASSERT_TRUE(env.CreatePod(SchedulerEnv::GpuPod("whole1", {{"nvidia.com/gpu", "1"}})).ok());
  ASSERT_TRUE(env.WaitBound({"whole1"}, 20)) << env.SchedulingMessage("whole1");
  ASSERT_TRUE(quota_used(130)) << env.Metrics();
  // A second whole card would make 230 > 150: refused, the cores named.
  ASSERT_TRUE(env.CreatePod(SchedulerEnv::GpuPod("whole2", {{"nvidia.com/gpu", "1"}})).ok());
  std::string msg;
  EXPECT_TRUE(env.WaitPods([&](const std::vector<Json>&) {
    return (msg = env.SchedulingMessage("whole2")).find("exceeded quota") != std::string::npos;
  }, 20)) << msg;
  EXPECT_NE(msg.find("exceeded quota: gpu-cores, requested: requests.nvidia.com/gpucores=100, used: "
                     "requests.nvidia.com/gpucores=130, limited: requests.nvidia.com/gpucores=150 (percent of a "
                     "GPU's cores)"),
            std::string::npos)
      << msg;
  EXPECT_TRUE(env.GetPod("whole2")["spec"].value("nodeName", "").empty());
  // Stated cores over the limit never get in: Kubernetes' own admission refuses them at creation.
  auto big = env.CreatePod(SchedulerEnv::GpuPod(
      "cores-130", {{"nvidia.com/gpu", "1"}, {"nvidia.com/gpumem", "1000"}, {"nvidia.com/gpucores", "100"}}));
  EXPECT_TRUE(big.ok());  // 30 + 100 stated = 130 <= 150: Kubernetes admits it ...
  auto bigger = env.CreatePod(SchedulerEnv::GpuPod(
      "cores-over", {{"nvidia.com/gpu", "1"}, {"nvidia.com/gpumem", "1000"}, {"nvidia.com/gpucores", "30"}}));
  ASSERT_FALSE(bigger.ok());  // ... and not 30 more (160 > 150)
  EXPECT_NE(bigger.error().message.find("exceeded quota: gpu-cores"), std::string::npos) << bigger.error().message;
}

// The slice a container got at admission (its /run/tessera/slice.conf as the agent wrote it).
bool AdmittedSlice(const Json& answer, const std::string& ctr, slice::SliceConfig* cfg, std::string* err) {
  for (const auto& c : answer.value("containers", Json::array())) {
    if (c.value("name", "") != ctr) continue;
    for (const auto& m : c.value("mounts", Json::array())) {
      if (m.value("container_path", "") != "/run/tessera/slice.conf") continue;
      char e[256];
      if (slice::LoadSliceConfig(m.value("host_path", "").c_str(), false, cfg, e, sizeof(e))) return true;
      *err = e;
      return false;
    }
  }
  *err = "container " + ctr + " has no slice.conf mount in " + answer.dump();
  return false;
}

// Kubernetes' rule for init containers (they run one at a time before the app containers): a pod with a
// 4000-MiB init container and a 4000-MiB app container holds 4000 MiB of an 8000-MiB card, not 8000, and
// the agent still hands each container the slice the assignment names. A sidecar (restartPolicy Always)
// runs beside the app container and is summed.
TEST(SchedulerPlacement, InitContainersReuseTheAppSliceSidecarsAreSummed) {
  SchedulerEnv env;
  NEED_KUBE(env);
  ASSERT_NO_FATAL_FAILURE(env.Start());
  std::string name = env.AddNode("init", {{"T4", 8000, 0}, {"T4", 8000, 0}});
  const std::string gpu0 = "GPU-" + name + "-0", gpu1 = "GPU-" + name + "-1";
  AgentSimNode::Options ao;
  ao.create_node = false;
  AgentSimNode node(env.shared_client(), name,
                    {AgentSimGpu{gpu0, "T4", 8000, 0}, AgentSimGpu{gpu1, "T4", 8000, 0}}, ao);
  ASSERT_EQ(node.error(), "");
  ASSERT_TRUE(node.WaitRegistered(60)) << node.AgentLogTail();
  auto gpu_ctr = [](const std::string& n, int64_t mib) {
    return Json{{"name", n},
                {"image", "busybox"},
                {"resources", {{"limits", {{"nvidia.com/gpu", "1"}, {"nvidia.com/gpumem", std::to_string(mib)}}}}}};
  };
  auto pod = [&](const std::string& pod_name, const std::string& uuid, Json init, Json ctrs) {
    Json p = SchedulerEnv::GpuPod(pod_name, Json::object(), {{"nvidia.com/use-gpuuuid", uuid}});
    p["spec"]["containers"] = std::move(ctrs);
    if (!init.empty()) p["spec"]["initContainers"] = std::move(init);
    return p;
  };
  ASSERT_TRUE(env.CreatePod(pod("with-init", gpu0, Json::array({gpu_ctr("setup", 4000)}),
                                Json::array({gpu_ctr("main", 4000)}))).ok());
  std::vector<Json> p;
  ASSERT_TRUE(env.WaitBound({"with-init"}, 20, &p)) << env.SchedulingMessage("with-init");
  auto init = kube::DecodeDevices(kube::Annotation(p[0], kube::kAnnoInitDevices));
  ASSERT_TRUE(init.ok() && init->size() == 1 && (*init)[0].size() == 1) << kube::Annotation(p[0], kube::kAnnoInitDevices);
  EXPECT_EQ((*init)[0][0].uuid, gpu0);
  EXPECT_EQ((*init)[0][0].memory_mib, 4000);
  // 4000 MiB of GPU 0 are still free: another 4000-MiB pod fits there, then nothing more does.
  ASSERT_TRUE(env.CreatePod(pod("fills-gpu0", gpu0, Json::array(), Json::array({gpu_ctr("main", 4000)}))).ok());
  ASSERT_TRUE(env.WaitBound({"fills-gpu0"}, 20)) << env.SchedulingMessage("fills-gpu0");
  ASSERT_TRUE(env.CreatePod(pod("over-gpu0", gpu0, Json::array(), Json::array({gpu_ctr("main", 1000)}))).ok());
  EXPECT_TRUE(env.WaitPods([&](const std::vector<Json>&) { return !env.SchedulingMessage("over-gpu0").empty(); }, 20));
  EXPECT_TRUE(env.GetPod("over-gpu0")["spec"].value("nodeName", "").empty());
  // A sidecar is summed with the app container: GPU 1 is then full.
  Json sidecar = gpu_ctr("proxy", 4000);
  sidecar["restartPolicy"] = "Always";
  ASSERT_TRUE(env.CreatePod(pod("with-sidecar", gpu1, Json::array({sidecar}), Json::array({gpu_ctr("main", 4000)}))).ok());
  ASSERT_TRUE(env.WaitBound({"with-sidecar"}, 20)) << env.SchedulingMessage("with-sidecar");
  ASSERT_TRUE(env.CreatePod(pod("over-gpu1", gpu1, Json::array(), Json::array({gpu_ctr("main", 1000)}))).ok());
  EXPECT_TRUE(env.WaitPods([&](const std::vector<Json>&) { return !env.SchedulingMessage("over-gpu1").empty(); }, 20));
  EXPECT_TRUE(env.GetPod("over-gpu1")["spec"].value("nodeName", "").empty());
  // The node side: the kubelet's device manager admits them (init containers first, its devices reused by the
  // app container), and every container's slice is the one its assignment names.
  std::string err;
  EXPECT_EQ(node.AdmitBound(60, &err), 3) << err << "\n" << node.AgentLogTail();
  EXPECT_EQ(node.Mismatches(), std::vector<std::string>{});
  for (const auto& [pod_name, ctr] : {std::pair{"with-init", "setup"}, std::pair{"with-sidecar", "proxy"}}) {
    auto it = node.admitted().find(env.ns() + "/" + pod_name);
    ASSERT_NE(it, node.admitted().end()) << pod_name;
    slice::SliceConfig cfg;
    ASSERT_TRUE(AdmittedSlice(it->second, ctr, &cfg, &err)) << err;
    ASSERT_EQ(cfg.gpu_count, 1) << pod_name;
    EXPECT_EQ(std::string(cfg.gpus[0].uuid), std::string(pod_name) == "with-init" ? gpu0 : gpu1);
    EXPECT_EQ(cfg.gpus[0].memory_bytes, uint64_t{4000} << 20) << pod_name;
  }
}

}  // namespace
}  // namespace tessera::itest
