#include "scheduler/view.h"

#include <gtest/gtest.h>

#include <set>
#include <thread>

namespace tessera::scheduler {
namespace {

using nlohmann::json;

json Node(const std::string& name, int gpus, int64_t mib = 16384) {
  std::vector<kube::GpuInfo> g;
  for (int i = 0; i < gpus; ++i) g.push_back({name + "-gpu" + std::to_string(i), "T4", mib, 100, i % 2, true});
  return {{"metadata", {{"name", name}, {"annotations", {{kube::kAnnoGpus, kube::EncodeGpus(g)}}}}},
          {"status", {{"allocatable", {{"cpu", "64"}, {"memory", "256Gi"}}}}}};
}

json Pod(const std::string& name, int pct, int cores) {
  return {{"metadata", {{"name", name}, {"namespace", "default"}, {"uid", "uid-" + name}}},
          {"spec",
           {{"containers",
             json::array({{{"name", "c"},
                           {"resources",
                            {{"limits",
                              {{"nvidia.com/gpu", "1"},
                               {"nvidia.com/gpumem-percentage", std::to_string(pct)},
                               {"nvidia.com/gpucores", std::to_string(cores)}}}}}}})}}}};
}

ParsedPod Parse(const json& pod) { return *ParsePod(pod, ParseOptions{}); }

TEST(ViewTest, ConcurrentReservationsOnOneNodeNeverOvercommit) {
  ClusterView v{ParseOptions{}};
  v.ReplaceNodes({Node("n1", 2)});
  placement::Engine engine;
  // 2 GPUs x 100 cores, 30-core pods: at most 3 per GPU fit -> exactly 6 of 16 succeed.
  std::vector<std::thread> ts;
  std::atomic<int> ok{0};
  std::mutex mu;
  std::vector<Reservation> got;
  for (int i = 0; i < 16; ++i) {
    ts.emplace_back([&, i] {
      auto r = v.Reserve(Parse(Pod("p" + std::to_string(i), 10, 30)), "n1", engine);
      if (r) {
        ++ok;
        std::lock_guard<std::mutex> l(mu);
        got.push_back(*r);
      }
    });
  }
  for (auto& t : ts) t.join();
  EXPECT_EQ(ok.load(), 6);
  std::map<std::string, int> cores;
  for (const auto& r : got) cores[r.devices[0][0].uuid] += r.devices[0][0].cores;
  for (const auto& [uuid, c] : cores) EXPECT_LE(c, 100) << uuid;
  for (const auto& g : v.GpuAllocations()) {
    EXPECT_EQ(g.cores, 90);
    EXPECT_EQ(g.sharers, 3);
    EXPECT_EQ(g.memory_mib, 3 * 1638);  // 10% of 16384, rounded down by the engine
  }
}

// A pod with containers given as {name, MiB, init?, sidecar?} on one GPU each.
struct Ctr {
  std::string name;
  int64_t mib;
  bool init = false;
  bool sidecar = false;
};
json PodWith(const std::string& name, const std::vector<Ctr>& ctrs) {
  json pod = {{"metadata", {{"name", name}, {"namespace", "default"}, {"uid", "uid-" + name}}},
              {"spec", {{"containers", json::array()}}}};
  for (const auto& c : ctrs) {
    json j = {{"name", c.name},
              {"resources", {{"limits", {{"nvidia.com/gpu", "1"}, {"nvidia.com/gpumem", std::to_string(c.mib)}}}}}};
    if (c.sidecar) j["restartPolicy"] = "Always";
    pod["spec"][c.init ? "initContainers" : "containers"].push_back(j);
  }
  return pod;
}

int64_t UsedMib(const ClusterView& v) {
  int64_t m = 0;
  for (const auto& g : v.GpuAllocations()) m += g.memory_mib;
  return m;
}

// Kubernetes runs init containers one at a time before the app containers: the pod needs
// max(init, sum of app), and the init container's slice lies inside what the pod holds.
TEST(ViewTest, InitContainerReusesTheAppSliceSidecarIsSummed) {
  placement::Engine engine;
  ClusterView v{ParseOptions{}};
  v.ReplaceNodes({Node("n1", 1, 8000)});
  json pod = PodWith("init", {{"setup", 4000, true}, {"main", 4000}});
  auto r = v.Reserve(Parse(pod), "n1", engine);
  ASSERT_TRUE(r.ok()) << r.error().message;
  ASSERT_EQ(r->init_devices.size(), 1u);
  ASSERT_EQ(r->init_devices[0].size(), 1u);
  EXPECT_EQ(r->init_devices[0][0].uuid, r->devices[0][0].uuid);  // the same card, its own slice
  EXPECT_EQ(r->init_devices[0][0].memory_mib, 4000);
  EXPECT_EQ(UsedMib(v), 4000) << "4000 MiB must stay free, not 0";
  // Rebuilt from the annotations alone (a restarted scheduler): the same.
  pod["metadata"]["annotations"] = {{kube::kAnnoAssignedNode, "n1"},
                                    {kube::kAnnoDevices, kube::EncodeDevices(r->devices)},
                                    {kube::kAnnoInitDevices, kube::EncodeDevices(r->init_devices)}};
  ClusterView fresh{ParseOptions{}};
  fresh.ReplaceNodes({Node("n1", 1, 8000)});
  fresh.ReplacePods({pod});
  EXPECT_EQ(UsedMib(fresh), 4000);
  // So another 4000-MiB pod fits, and nothing more.
  EXPECT_TRUE(v.Reserve(Parse(PodWith("next", {{"main", 4000}})), "n1", engine).ok());
  EXPECT_EQ(UsedMib(v), 8000);
  EXPECT_FALSE(v.Reserve(Parse(PodWith("full", {{"main", 1}})), "n1", engine).ok());

  // A sidecar (restartPolicy Always) runs beside the app container: summed.
  ClusterView s{ParseOptions{}};
  s.ReplaceNodes({Node("n1", 1, 8000)});
  ASSERT_TRUE(s.Reserve(Parse(PodWith("side", {{"proxy", 4000, true, true}, {"main", 4000}})), "n1", engine).ok());
  EXPECT_EQ(UsedMib(s), 8000);
  EXPECT_FALSE(s.Reserve(Parse(PodWith("more", {{"main", 1}})), "n1", engine).ok());
}

TEST(ViewTest, InitContainerLargerThanTheAppGrowsTheHoldByTheExcessOnly) {
  placement::Engine engine;
  ClusterView v{ParseOptions{}};
  v.ReplaceNodes({Node("n1", 1, 8000)});
  ASSERT_TRUE(v.Reserve(Parse(PodWith("other", {{"main", 2000}})), "n1", engine).ok());
  // app 4000 + init 6000 summed would need 10000 > 6000 free; the pod needs max(6000, 4000) = 6000. The
  // filter agrees with the bind.
  json big = PodWith("big-init", {{"download", 6000, true}, {"main", 4000}});
  std::string reason = "not evaluated";
  v.Evaluate(Parse(big), {"n1"}, engine, [&](size_t, const char* why, int) { reason = why ? why : ""; });
  EXPECT_EQ(reason, "");
  auto r = v.Reserve(Parse(big), "n1", engine);
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(r->init_devices[0][0].memory_mib, 6000);
  EXPECT_EQ(r->devices[0][0].memory_mib, 4000);
  EXPECT_EQ(UsedMib(v), 8000);
  // An init container that fits nowhere says so.
  ClusterView w{ParseOptions{}};
  w.ReplaceNodes({Node("n1", 1, 8000)});
  ASSERT_TRUE(w.Reserve(Parse(PodWith("other", {{"main", 4000}})), "n1", engine).ok());
  json too_big = PodWith("too-big", {{"download", 6000, true}, {"main", 1000}});
  w.Evaluate(Parse(too_big), {"n1"}, engine, [&](size_t, const char* why, int) { reason = why ? why : ""; });
  EXPECT_EQ(reason, "insufficient GPU memory");
  EXPECT_FALSE(w.Reserve(Parse(too_big), "n1", engine).ok());
  EXPECT_EQ(UsedMib(w), 4000);
}

TEST(ViewTest, AssignmentsRebuiltFromPodAnnotationsAfterRestart) {
  placement::Engine engine;
  ClusterView first{ParseOptions{}};
  first.ReplaceNodes({Node("n1", 1)});
  auto r = first.Reserve(Parse(Pod("a", 50, 60)), "n1", engine);
  ASSERT_TRUE(r.ok()) << r.error().message;
  // A fresh process only sees what the API server has: the pod with its annotations, not yet bound.
  json pod = Pod("a", 50, 60);
  pod["metadata"]["annotations"] = {{kube::kAnnoAssignedNode, "n1"}, {kube::kAnnoDevices, kube::EncodeDevices(r->devices)}};
  ClusterView second{ParseOptions{}};
  second.ReplaceNodes({Node("n1", 1)});
  second.ReplacePods({pod});
  auto allocs = second.GpuAllocations();
  ASSERT_EQ(allocs.size(), 1u);
  EXPECT_EQ(allocs[0].cores, 60);
  // The same pod retried on the same node keeps its slice; another pod that would overcommit is refused.
  auto again = second.Reserve(Parse(Pod("a", 50, 60)), "n1", engine);
  ASSERT_TRUE(again.ok());
  EXPECT_TRUE(again->reused);
  auto other = second.Reserve(Parse(Pod("b", 10, 50)), "n1", engine);
  EXPECT_FALSE(other.ok());
  // Deleting the pod frees the GPU.
  second.OnPod(kube::EventType::kDeleted, pod);
  EXPECT_TRUE(second.Reserve(Parse(Pod("b", 10, 50)), "n1", engine).ok());
}

TEST(ViewTest, EvaluateReportsReasonsAndForgetReleases) {
  placement::Engine engine;
  ClusterView v{ParseOptions{}};
  json broken = Node("bad", 1);
  broken["metadata"]["annotations"][kube::kAnnoGpus] = "[{}]";
  v.ReplaceNodes({Node("n1", 1), broken, {{"metadata", {{"name", "cpu-only"}}}}});
  std::map<std::string, std::string> reasons;
  std::vector<std::string> names = {"n1", "bad", "cpu-only"};
  auto record = [&](size_t i, const char* why, int) { reasons[names[i]] = why ? why : ""; };
  v.Evaluate(Parse(Pod("x", 10, 100)), names, engine, record);
  EXPECT_EQ(reasons["n1"], "");
  EXPECT_NE(reasons["bad"].find("tessera.dev/gpus[0].uuid"), std::string::npos) << reasons["bad"];
  EXPECT_NE(reasons["cpu-only"].find("no GPUs published"), std::string::npos);
  auto r = v.Reserve(Parse(Pod("x", 10, 100)), "n1", engine);
  ASSERT_TRUE(r.ok());
  v.Evaluate(Parse(Pod("y", 10, 10)), names, engine, record);
  EXPECT_NE(reasons["n1"], "");  // exclusive card taken
  v.Forget("uid-x");
  v.Evaluate(Parse(Pod("y", 10, 10)), names, engine, record);
  EXPECT_EQ(reasons["n1"], "");
}

TEST(ViewTest, QuotaCountsPercentagesInMibOfTheChosenCard) {
  placement::Engine engine;
  ClusterView v{ParseOptions{}};
  v.ReplaceNodes({Node("n1", 2, 10000)});
  v.ReplaceQuotas({{{"metadata", {{"name", "gpu-mem"}, {"namespace", "default"}}},
                    {"spec", {{"hard", {{"requests.nvidia.com/gpumem", "5000"}}}}}}});
  ASSERT_TRUE(v.Reserve(Parse(Pod("a", 30, 10)), "n1", engine).ok());  // 3000 MiB
  auto over = v.Reserve(Parse(Pod("b", 30, 10)), "n1", engine);        // +3000 > 5000
  ASSERT_FALSE(over.ok());
  EXPECT_EQ(over.error().message,
            "exceeded quota: gpu-mem, requested: requests.nvidia.com/gpumem=3000 (30% of a 10000 MiB T4), used: "
            "requests.nvidia.com/gpumem=3000, limited: requests.nvidia.com/gpumem=5000 (MiB of GPU memory)");
  EXPECT_TRUE(v.Reserve(Parse(Pod("c", 20, 10)), "n1", engine).ok());  // 2000 fits exactly
  auto q = v.QuotaUsage();
  ASSERT_EQ(q.size(), 1u);
  EXPECT_EQ(q[0].used, 5000);
}

// Kubernetes counts the MiB a pod states (status.used, from creation on, bound or not); the scheduler adds
// only what Kubernetes cannot see (percentages, whole cards), per container as a stated value would count.
TEST(ViewTest, QuotaAddsToKubernetesUsedOnlyWhatPodsDoNotState) {
  placement::Engine engine;
  ClusterView v{ParseOptions{}};
  v.ReplaceNodes({Node("n1", 2, 10000)});
  v.ReplaceQuotas({{{"metadata", {{"name", "gpu-mem"}, {"namespace", "default"}}},
                    {"spec", {{"hard", {{"requests.nvidia.com/gpumem", "9000"}}}}},
                    {"status", {{"hard", {{"requests.nvidia.com/gpumem", "8000"}}},
                                {"used", {{"requests.nvidia.com/gpumem", "4000"}}}}}}});
  // Stated MiB: Kubernetes admitted and counted it already; never refused here, even on two GPUs.
  json two = PodWith("two-gpus", {{"main", 3000}});
  two["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] = "2";
  auto t = v.Reserve(Parse(two), "n1", engine);
  ASSERT_TRUE(t.ok()) << t.error().message;
  EXPECT_EQ(v.QuotaUsage()[0].used, 4000);
  // 30% of a 10000-MiB card on two GPUs counts 3000 (MiB per GPU, as a stated 3000 would).
  json pct = Pod("pct", 30, 10);
  pct["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] = "2";
  ASSERT_TRUE(v.Reserve(Parse(pct), "n1", engine).ok());
  EXPECT_EQ(v.QuotaUsage()[0].used, 7000);
  EXPECT_EQ(v.QuotaUsage()[0].quota.hard, 8000);  // status.hard wins over spec.hard
  auto over = v.Reserve(Parse(Pod("over", 20, 10)), "n1", engine);
  ASSERT_FALSE(over.ok());
  EXPECT_EQ(over.error().message,
            "exceeded quota: gpu-mem, requested: requests.nvidia.com/gpumem=2000 (20% of a 10000 MiB T4), used: "
            "requests.nvidia.com/gpumem=7000, limited: requests.nvidia.com/gpumem=8000 (MiB of GPU memory)");
  // Rebuilt from the API's copy (annotations), the same charge.
  json bound = pct;
  auto r = v.FindPod("default", "pct");
  ASSERT_TRUE(r.has_value());
  bound["metadata"]["annotations"] = {{kube::kAnnoAssignedNode, "n1"},
                                      {kube::kAnnoDevices, kube::EncodeDevices(r->effective().devices)}};
  ClusterView fresh{ParseOptions{}};
  fresh.ReplaceNodes({Node("n1", 2, 10000)});
  fresh.ReplaceQuotas({{{"metadata", {{"name", "gpu-mem"}, {"namespace", "default"}}},
                        {"spec", {{"hard", {{"requests.nvidia.com/gpumem", "8000"}}}}}}});
  fresh.ReplacePods({bound});
  EXPECT_EQ(fresh.QuotaUsage()[0].used, 3000);
}

// A quota on nvidia.com/gpucores: Kubernetes counts the cores a container states; the scheduler adds what
// slices reserve without stating it (a whole card reserves 100 per GPU; a share without cores none), and
// refuses the pod that would go past the limit, naming it. Memory quotas are not affected.
TEST(ViewTest, CoresQuotaChargesWholeCardsAndRefusesThePodPastTheLimit) {
  placement::Engine engine;
  ClusterView v{ParseOptions{}};
  v.ReplaceNodes({Node("n1", 4, 10000)});
  v.ReplaceQuotas({{{"metadata", {{"name", "gpu-cores"}, {"namespace", "default"}}},
                    {"spec", {{"hard", {{"requests.nvidia.com/gpucores", "150"}}}}},
                    {"status", {{"hard", {{"requests.nvidia.com/gpucores", "150"}}},
                                {"used", {{"requests.nvidia.com/gpucores", "40"}}}}}}});
  auto whole = [](const std::string& name) {
    json p = PodWith(name, {{"main", 1}});
    p["spec"]["containers"][0]["resources"]["limits"].erase("nvidia.com/gpumem");
    return p;
  };
  ASSERT_TRUE(v.Reserve(Parse(whole("w1")), "n1", engine).ok());
  ASSERT_EQ(v.QuotaUsage().size(), 1u);
  EXPECT_TRUE(v.QuotaUsage()[0].quota.cores);
  EXPECT_EQ(v.QuotaUsage()[0].used, 140);  // 40 stated + 100 for the whole card
  // Stated cores: Kubernetes counted them at creation; a share without cores reserves none.
  ASSERT_TRUE(v.Reserve(Parse(Pod("stated", 30, 30)), "n1", engine).ok());
  ASSERT_TRUE(v.Reserve(Parse(PodWith("mem-only", {{"main", 1000}})), "n1", engine).ok());
  EXPECT_EQ(v.QuotaUsage()[0].used, 140);
  auto over = v.Reserve(Parse(whole("w2")), "n1", engine);
  ASSERT_FALSE(over.ok());
  EXPECT_EQ(over.error().message,
            "exceeded quota: gpu-cores, requested: requests.nvidia.com/gpucores=100, used: "
            "requests.nvidia.com/gpucores=140, limited: requests.nvidia.com/gpucores=150 (percent of a GPU's cores)");
  // The filter says the same for the node.
  std::string why;
  v.Evaluate(Parse(whole("w3")), {"n1"}, engine, [&](size_t, const char* r, int) { why = r ? r : ""; });
  EXPECT_NE(why.find("exceeded quota: gpu-cores"), std::string::npos) << why;
  // Released: the charge goes with it.
  v.Forget("uid-w1");
  EXPECT_EQ(v.QuotaUsage()[0].used, 40);
  EXPECT_TRUE(v.Reserve(Parse(whole("w2")), "n1", engine).ok());
}

}  // namespace
}  // namespace tessera::scheduler

#include "scheduler/extender.h"

namespace tessera::scheduler {
namespace {

// The HTTP fast paths give the same answers as the JSON forms, and prioritize reuses filter's scores.
TEST(ExtenderBodyTest, FastPathsMatchJsonForms) {
  ClusterView v{ParseOptions{}};
  v.ReplaceNodes({Node("n1", 2), Node("n2", 1), {{"metadata", {{"name", "cpu"}}}}});
  Metrics m;
  Extender ext({}, &v, nullptr, &m, [] { return false; });
  using Json = nlohmann::json;
  Json args = {{"Pod", Pod("p", 60, 30)}, {"Nodes", nullptr}, {"NodeNames", {"n1", "n2", "cpu"}}};
  std::string f = ext.FilterBody(args.dump());
  Json fr = Json::parse(f);
  EXPECT_EQ(fr, ext.Filter(args)) << f;
  EXPECT_EQ(fr["NodeNames"], Json({"n1", "n2"}));
  EXPECT_TRUE(fr["FailedNodes"].contains("cpu"));
  std::string pbody = ext.PrioritizeBody(args.dump());
  auto sorted = [](Json a) {
    std::sort(a.begin(), a.end(), [](const Json& x, const Json& y) { return x["Host"] < y["Host"]; });
    return a;
  };
  Json pr = sorted(Json::parse(pbody));
  ASSERT_EQ(pr.size(), 3u) << pbody;
  EXPECT_EQ(pr, sorted(ext.Prioritize(args))) << pbody;
  // Second prioritize (no cached filter) takes the general path and agrees.
  EXPECT_EQ(sorted(Json::parse(ext.PrioritizeBody(args.dump()))), pr);
  EXPECT_EQ(ext.PrioritizeBody("not json"), "[]");
}

}  // namespace
}  // namespace tessera::scheduler

namespace tessera::scheduler {
namespace {

json WithAnnotations(json obj, const json& more) {
  for (auto it = more.begin(); it != more.end(); ++it) obj["metadata"]["annotations"][it.key()] = *it;
  return obj;
}

// The published topology reaches the engine: a topology-aware pod asking for 2 of 4 GPUs gets the NVLink
// pair the node annotation names, not the first two.
TEST(ViewTest, PublishedLinksSteerTopologyAwarePods) {
  std::vector<kube::GpuInfo> g;
  for (int i = 0; i < 4; ++i) g.push_back({"GPU-" + std::to_string(i), "H100", 81920, 100, 0, true});
  for (int a = 0; a < 4; ++a)
    for (int b = 0; b < 4; ++b)
      if (a != b) g[a].links["GPU-" + std::to_string(b)] = (a + b == 5) ? "NV18" : "PHB";  // pair {2,3}
  json node = {{"metadata", {{"name", "n1"}, {"annotations", {{kube::kAnnoGpus, kube::EncodeGpus(g)}}}}},
               {"status", {{"allocatable", {{"cpu", "64"}, {"memory", "256Gi"}}}}}};
  ClusterView v{ParseOptions{}};
  v.ReplaceNodes({node});
  placement::Engine engine;
  json pod = Pod("two", 10, 10);
  pod["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] = "2";
  pod = WithAnnotations(pod, {{"hami.io/gpu-scheduler-policy", "spread,topology-aware"}});
  auto r = v.Reserve(Parse(pod), "n1", engine);
  ASSERT_TRUE(r.ok()) << r.error().message;
  std::set<std::string> got;
  for (const auto& s : r->devices[0]) got.insert(s.uuid);
  EXPECT_EQ(got, (std::set<std::string>{"GPU-2", "GPU-3"}));
}

// Spatial and time-sliced pods take different GPUs, also after a relist rebuilt the view from the
// annotations the bind wrote; another namespace's spatial pod finds no GPU.
TEST(ViewTest, SpatialPodsKeepTheirGpuAcrossARelist) {
  placement::Engine engine;
  ClusterView v{ParseOptions{}};
  v.ReplaceNodes({Node("n1", 2)});
  json sp = WithAnnotations(Pod("sp", 10, 10), {{kube::kAnnoComputeMode, "spatial"}});
  auto r = v.Reserve(Parse(sp), "n1", engine);
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_TRUE(r->spatial);
  sp = WithAnnotations(sp, {{kube::kAnnoAssignedNode, "n1"},
                            {kube::kAnnoDevices, kube::EncodeDevices(r->devices)},
                            {kube::kAnnoComputeMode, "spatial"}});
  sp["spec"]["nodeName"] = "n1";
  ClusterView fresh{ParseOptions{}};
  fresh.ReplaceNodes({Node("n1", 2)});
  fresh.ReplacePods({sp});
  for (ClusterView* view : {&v, &fresh}) {
    auto t = view->Reserve(Parse(Pod("ts", 10, 10)), "n1", engine);
    ASSERT_TRUE(t.ok()) << t.error().message;
    EXPECT_FALSE(t->spatial);
    EXPECT_NE(t->devices[0][0].uuid, r->devices[0][0].uuid);
    json other = WithAnnotations(Pod("other", 10, 10), {{kube::kAnnoComputeMode, "spatial"}});
    other["metadata"]["namespace"] = "team-b";
    auto o = view->Reserve(Parse(other), "n1", engine);
    ASSERT_FALSE(o.ok());
    EXPECT_NE(o.error().message.find("namespace"), std::string::npos) << o.error().message;
  }
}

// A node whose default is spatial gives pods without their own choice a spatial slice.
TEST(ViewTest, NodeDefaultModeApplies) {
  placement::Engine engine;
  ClusterView v{ParseOptions{}};
  v.ReplaceNodes({WithAnnotations(Node("n1", 1), {{kube::kAnnoComputeMode, "spatial"}})});
  auto r = v.Reserve(Parse(Pod("a", 10, 10)), "n1", engine);
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_TRUE(r->spatial);
  auto t = v.Reserve(Parse(WithAnnotations(Pod("b", 10, 10), {{kube::kAnnoComputeMode, "time-sliced"}})), "n1", engine);
  EXPECT_FALSE(t.ok());
}

}  // namespace
}  // namespace tessera::scheduler
