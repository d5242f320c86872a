// BindRefusal: what /bind refuses on the re-read pod and node, one case per way a caller could lie.
#include "scheduler/bind_check.h"

#include <gtest/gtest.h>

#include <functional>

namespace tessera::scheduler {
namespace {

using nlohmann::json;

json Pod() {
  return json::parse(R"({"metadata":{"name":"p","namespace":"team-a","uid":"u1"},
    "spec":{"schedulerName":"tessera-scheduler","containers":[{"name":"c"}]}})");
}
json Node() {
  return json::parse(R"({"metadata":{"name":"gpu-1","labels":{"pool":"a","gpus":"8"}},"spec":{}})");
}
const std::vector<std::string> kNames = {"tessera-scheduler", "hami-scheduler"};

TEST(BindCheckTest, APendingPodOfOursOnAPlainNodeIsAccepted) {
  EXPECT_EQ(BindRefusal(Pod(), "u1", Node(), kNames), "");
  json p = Pod();
  p["spec"]["schedulerName"] = "hami-scheduler";
  EXPECT_EQ(BindRefusal(p, "u1", Node(), kNames), "");
}

TEST(BindCheckTest, EachLieIsRefusedWithItsReason) {
  struct Case {
    const char* what;
    std::function<void(json& pod, json& node, std::string& uid)> change;
    const char* reason;
  };
  std::vector<Case> cases = {
      {"no uid", [](json&, json&, std::string& u) { u = ""; }, "PodUID is empty"},
      {"replaced pod", [](json&, json&, std::string& u) { u = "u0"; }, "has uid u1, not u0"},
      {"another team's scheduler", [](json& p, json&, std::string&) { p["spec"]["schedulerName"] = "default-scheduler"; },
       "spec.schedulerName default-scheduler"},
      {"no schedulerName means default-scheduler", [](json& p, json&, std::string&) { p["spec"].erase("schedulerName"); },
       "spec.schedulerName default-scheduler"},
      {"already bound", [](json& p, json&, std::string&) { p["spec"]["nodeName"] = "n2"; }, "already bound to n2"},
      {"being deleted", [](json& p, json&, std::string&) { p["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"; },
       "being deleted"},
      {"control-plane taint",
       [](json&, json& n, std::string&) {
         n["spec"]["taints"] = {{{"key", "node-role.kubernetes.io/control-plane"}, {"effect", "NoSchedule"}}};
       },
       "taint node-role.kubernetes.io/control-plane:NoSchedule"},
      {"NoExecute taint with value",
       [](json&, json& n, std::string&) { n["spec"]["taints"] = {{{"key", "team"}, {"value", "b"}, {"effect", "NoExecute"}}}; },
       "taint team=b:NoExecute"},
      {"toleration of another value",
       [](json& p, json& n, std::string&) {
         n["spec"]["taints"] = {{{"key", "team"}, {"value", "b"}, {"effect", "NoSchedule"}}};
         p["spec"]["tolerations"] = {{{"key", "team"}, {"operator", "Equal"}, {"value", "a"}}};
       },
       "taint team=b:NoSchedule"},
      {"nodeSelector", [](json& p, json&, std::string&) { p["spec"]["nodeSelector"] = {{"pool", "b"}}; },
       "nodeSelector pool=b"},
      {"required affinity",
       [](json& p, json&, std::string&) {
         p["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"] =
             json::parse(R"([{"matchExpressions":[{"key":"pool","operator":"NotIn","values":["a"]}]},
                            {"matchFields":[{"key":"metadata.name","operator":"In","values":["gpu-2"]}]}])");
       },
       "required node affinity"},
  };
  for (const auto& c : cases) {
    json p = Pod(), n = Node();
    std::string uid = "u1";
    c.change(p, n, uid);
    std::string why = BindRefusal(p, uid, n, kNames);
    EXPECT_NE(why.find(c.reason), std::string::npos) << c.what << ": got \"" << why << "\"";
  }
}

TEST(BindCheckTest, TolerationsAndTermsFollowKubernetes) {
  json taint = {{"key", "k"}, {"value", "v"}, {"effect", "NoSchedule"}};
  EXPECT_TRUE(Tolerates(json::parse(R"([{"operator":"Exists"}])"), taint));
  EXPECT_TRUE(Tolerates(json::parse(R"([{"key":"k","operator":"Exists","effect":"NoSchedule"}])"), taint));
  EXPECT_TRUE(Tolerates(json::parse(R"([{"key":"k","value":"v"}])"), taint));
  EXPECT_FALSE(Tolerates(json::parse(R"([{"key":"k","operator":"Exists","effect":"NoExecute"}])"), taint));
  EXPECT_FALSE(Tolerates(json::parse(R"([{"operator":"Equal"}])"), taint));
  json pod = Pod(), node = Node();
  node["spec"]["taints"] = {taint};
  pod["spec"]["tolerations"] = json::parse(R"([{"key":"k","operator":"Exists"}])");
  pod["spec"]["nodeSelector"] = {{"pool", "a"}};
  pod["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"] =
      json::parse(R"([{"matchExpressions":[{"key":"gpus","operator":"Gt","values":["4"]},
                                            {"key":"zone","operator":"DoesNotExist"}]}])");
  EXPECT_EQ(BindRefusal(pod, "u1", node, kNames), "");
  EXPECT_FALSE(MatchesTerm(json::object(), node));  // an empty term matches nothing
  EXPECT_FALSE(MatchesTerm(json::parse(R"({"matchExpressions":[{"key":"gpus","operator":"Lt","values":["x"]}]})"), node));
}

}  // namespace
}  // namespace tessera::scheduler
