#include "scheduler/webhook.h"

#include <gtest/gtest.h>

namespace tessera::scheduler {
namespace {

using nlohmann::json;

json Review(json pod, const std::string& op = "CREATE") {
  return {{"apiVersion", "admission.k8s.io/v1"},
          {"kind", "AdmissionReview"},
          {"request", {{"uid", "r1"}, {"operation", op}, {"object", pod}}}};
}

json GpuPod(json limits, json annotations = json::object(), std::string scheduler = "hami-scheduler") {
  return {{"metadata", {{"name", "p"}, {"annotations", annotations}}},
          {"spec", {{"schedulerName", scheduler},
                    {"containers", json::array({{{"name", "w"}, {"resources", {{"limits", limits}}}}})}}}};
}

TEST(WebhookTest, MutatesSchedulerNameAndFillsGpu) {
  WebhookOptions o;
  json patch = MutationPatch(GpuPod({{"nvidia.com/gpumem", "1000"}}), o);
  ASSERT_EQ(patch.size(), 2u) << patch.dump();
  EXPECT_EQ(patch[0]["path"], "/spec/schedulerName");
  EXPECT_EQ(patch[0]["value"], "tessera-scheduler");
  EXPECT_EQ(patch[1]["path"], "/spec/containers/0/resources/limits/nvidia.com~1gpu");
  EXPECT_EQ(patch[1]["value"], "1");
  EXPECT_TRUE(MutationPatch(GpuPod({{"nvidia.com/gpu", "1"}}, {}, "tessera-scheduler"), o).empty());
  json cpu_pod = {{"spec", {{"containers", json::array({{{"name", "c"}, {"resources", {{"limits", {{"cpu", "1"}}}}}}})}}}};
  EXPECT_TRUE(MutationPatch(cpu_pod, o).empty());
  Metrics m;
  Webhook w(o, [] { return int64_t{0}; }, &m);
  json out = w.Mutate(Review(GpuPod({{"nvidia.com/gpu", "1"}})));
  EXPECT_EQ(out["response"]["uid"], "r1");
  EXPECT_EQ(out["response"]["allowed"], true);
  EXPECT_EQ(out["response"]["patchType"], "JSONPatch");
}

TEST(WebhookTest, ValidationRejectsEachImpossibleRequest) {
  WebhookOptions o;
  Metrics m;
  Webhook w(o, [] { return int64_t{16384}; }, &m);
  auto deny = [&](json pod) {
    json out = w.Validate(Review(pod));
    EXPECT_EQ(out["response"]["allowed"], false) << pod.dump();
    return out["response"]["status"].value("message", "");
  };
  EXPECT_EQ(deny(GpuPod({{"nvidia.com/gpumem-percentage", "0"}})),
            "container \"w\": nvidia.com/gpumem-percentage=0 is out of range (1..100)");
  EXPECT_EQ(deny(GpuPod({{"nvidia.com/gpumem", "20000"}})),
            "container \"w\": nvidia.com/gpumem=20000 MiB is larger than any GPU in the cluster (1..16384 MiB)");
  EXPECT_EQ(deny(GpuPod({{"nvidia.com/gpu", "1"}}, {{"tessera.dev/devices", "[]"}})),
            "annotation tessera.dev/devices is set by the Tessera scheduler at bind time and may not be set by a pod");
  json ok = w.Validate(Review(GpuPod({{"nvidia.com/gpu", "1"}, {"nvidia.com/gpumem", "16384"}})));
  EXPECT_EQ(ok["response"]["allowed"], true);
}

TEST(WebhookTest, ConfigurationsSelectGpuPodsAndFailClosed) {
  WebhookRegistration reg;
  reg.url = "https://127.0.0.1:8443";
  reg.ca_bundle_pem = "PEM";
  json m = MutatingConfiguration(reg, ResourceNames{});
  const json& h = m["webhooks"][0];
  EXPECT_EQ(h["failurePolicy"], "Fail");
  EXPECT_EQ(h["clientConfig"]["url"], "https://127.0.0.1:8443/mutate");
  EXPECT_EQ(h["clientConfig"]["caBundle"], "UEVN");
  std::string cel = h["matchConditions"][0]["expression"];
  EXPECT_NE(cel.find("'nvidia.com/gpumem-percentage'"), std::string::npos);
  EXPECT_NE(cel.find("initContainers"), std::string::npos);
  EXPECT_EQ(ValidatingConfiguration(reg, ResourceNames{})["webhooks"][0]["clientConfig"]["url"],
            "https://127.0.0.1:8443/validate");
}

}  // namespace
}  // namespace tessera::scheduler
