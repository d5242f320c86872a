#include "scheduler/extender.h"

#include <gtest/gtest.h>

#include <algorithm>

namespace tessera::scheduler {
namespace {

using nlohmann::json;

json Node(const std::string& name, int gpus) {
  std::vector<kube::GpuInfo> g;
  for (int i = 0; i < gpus; ++i) g.push_back({name + "-gpu" + std::to_string(i), "T4", 16384, 100, 0, true});
  return {{"metadata", {{"name", name}, {"annotations", {{kube::kAnnoGpus, kube::EncodeGpus(g)}}}}},
          {"status", {{"allocatable", {{"cpu", "64"}, {"memory", "256Gi"}}}}}};
}

json Pod(const std::string& name, const json& limits) {
  return {{"metadata", {{"name", name}, {"namespace", "default"}, {"uid", "uid-" + name}}},
          {"spec", {{"containers", json::array({{{"name", "c"}, {"resources", {{"limits", limits}}}}})}}}};
}

json ByHost(json list) {
  std::sort(list.begin(), list.end(), [](const json& a, const json& b) { return a["Host"] < b["Host"]; });
  return list;
}

class ExtenderBodies : public ::testing::Test {
 protected:
  ExtenderBodies() {
    // n1..n3 have room for a 60 % slice; full has one GPU already taken whole; cpu has no GPUs.
    view.ReplaceNodes({Node("n1", 2), Node("n2", 1), Node("n3", 4), Node("full", 1), {{"metadata", {{"name", "cpu"}}}}});
    kube::ContainerDevices taken = {{{"full-gpu0", 16384, 100}}};
    json holder = Pod("holder", {{"nvidia.com/gpu", "1"}});
    holder["spec"]["nodeName"] = "full";
    holder["metadata"]["annotations"] = {{kube::kAnnoAssignedNode, "full"},
                                         {kube::kAnnoDevices, kube::EncodeDevices(taken)}};
    view.OnPod(kube::EventType::kAdded, holder);
  }
  ClusterView view{ParseOptions{}};
  Metrics metrics;
  Extender ext{{}, &view, nullptr, &metrics, [] { return false; }};
  const std::vector<std::string> names = {"n1", "n2", "cpu", "n3", "full"};
};

// kube-scheduler's prioritize may list the nodes in another order than filter answered: the scores filter
// kept still go to the right hosts.
TEST_F(ExtenderBodies, PrioritizeGivesFilterScoresToTheRightHostsInAnyOrder) {
  json pod = Pod("p", {{"nvidia.com/gpu", "1"}, {"nvidia.com/gpumem-percentage", "60"}, {"nvidia.com/gpucores", "30"}});
  json args = {{"Pod", pod}, {"NodeNames", names}};
  json filtered = json::parse(ext.FilterBody(args.dump()));
  ASSERT_EQ(filtered["NodeNames"], json({"n1", "n2", "n3"})) << filtered.dump();
  EXPECT_EQ(filtered["FailedNodes"].size(), 2u);
  json expected = ByHost(ext.Prioritize({{"Pod", pod}, {"NodeNames", filtered["NodeNames"]}}));
  json reversed = {{"Pod", pod}, {"NodeNames", {"n3", "n2", "n1"}}};
  json got = json::parse(ext.PrioritizeBody(reversed.dump()));
  ASSERT_EQ(got.size(), 3u);
  EXPECT_EQ(got[0]["Host"], "n3");  // answered in the order asked
  EXPECT_EQ(ByHost(got), expected);
}

// A pod that asks for no GPU passes every node; a pod whose request is invalid fails every node with the
// reason (what `kubectl describe pod` shows). Both as the JSON form answers.
TEST_F(ExtenderBodies, NoGpuPassesEverywhereInvalidRequestFailsEverywhereWithTheReason) {
  json plain = {{"Pod", Pod("plain", {{"cpu", "1"}})}, {"NodeNames", names}};
  json got = json::parse(ext.FilterBody(plain.dump()));
  EXPECT_EQ(got["NodeNames"], json(names));
  EXPECT_EQ(got, ext.Filter(plain));

  json bad = {{"Pod", Pod("bad", {{"nvidia.com/gpu", "1"}, {"nvidia.com/gpumem-percentage", "120"}})},
              {"NodeNames", names}};
  got = json::parse(ext.FilterBody(bad.dump()));
  EXPECT_TRUE(got["NodeNames"].empty());
  ASSERT_EQ(got["FailedNodes"].size(), names.size());
  EXPECT_NE(got["FailedNodes"]["n1"].get<std::string>().find("nvidia.com/gpumem-percentage=120 is out of range"),
            std::string::npos)
      << got.dump();
  EXPECT_EQ(got, ext.Filter(bad));
}

// With nodeCacheCapable=false kube-scheduler sends whole Node objects and expects the fitting ones back.
TEST_F(ExtenderBodies, FullNodeObjectsComeBackFiltered) {
  json pod = Pod("q", {{"nvidia.com/gpu", "1"}, {"nvidia.com/gpumem-percentage", "10"}});
  json args = {{"Pod", pod}, {"Nodes", {{"items", json::array({Node("n1", 2), Node("full", 1)})}}}};
  json got = json::parse(ext.FilterBody(args.dump()));
  ASSERT_TRUE(got.contains("Nodes")) << got.dump();
  ASSERT_EQ(got["Nodes"]["items"].size(), 1u);
  EXPECT_EQ(got["Nodes"]["items"][0]["metadata"]["name"], "n1");
  EXPECT_TRUE(got["FailedNodes"].contains("full"));
}

}  // namespace
}  // namespace tessera::scheduler
