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

json UpdateReview(json old_pod, json pod, const std::string& user) {
  json r = Review(std::move(pod), "UPDATE");
  r["request"]["oldObject"] = std::move(old_pod);
  r["request"]["userInfo"] = {{"username", user}, {"groups", {"system:authenticated"}}};
  return r;
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

TEST(WebhookTest, CreateRejectsOwnAnnotationsOnAnyPod) {
  WebhookOptions o;
  json cpu_pod = {{"metadata", {{"annotations", {{"tessera.dev/devices", "[[]]"}}}}},
                  {"spec", {{"containers", json::array({{{"name", "c"}}})}}}};
  EXPECT_EQ(ValidationError(cpu_pod, o, 16384),
            "annotation tessera.dev/devices is set by the Tessera scheduler at bind time and may not be set by a pod");
}

TEST(WebhookTest, UpdateOfAllocationAnnotationsOnlyByTesseraIdentities) {
  WebhookOptions o;
  o.trusted_users = {"system:serviceaccount:tessera-system:tessera-scheduler",
                     "system:serviceaccount:tessera-system:tessera-agent"};
  Metrics m;
  Webhook w(o, [] { return int64_t{16384}; }, &m);
  const std::string slice = R"([[{"uuid":"GPU-a","memory_mib":1000,"cores":10}]])";
  json bound = GpuPod({{"nvidia.com/gpu", "1"}}, {{"tessera.dev/devices", slice}, {"tessera.dev/allocation-state", "pending"}});
  auto with = [&](const std::string& key, json value) {
    json p = bound;
    if (value.is_null()) p["metadata"]["annotations"].erase(key);
    else p["metadata"]["annotations"][key] = value;
    return p;
  };
  const std::string only = "only Tessera's own identities may (system:serviceaccount:tessera-system:tessera-scheduler, "
                           "system:serviceaccount:tessera-system:tessera-agent; --webhook-trusted-users)";
  // Changed, removed, added: each refused for anyone else, naming the annotation, the user and who may.
  EXPECT_EQ(UpdateValidationError(bound, with("tessera.dev/devices", "[[]]"), "alice", o),
            "annotation tessera.dev/devices is written only by Tessera (the scheduler at bind, the agent after "
            "allocation): user \"alice\" may not change it; " + only);
  EXPECT_NE(UpdateValidationError(bound, with("tessera.dev/allocation-state", nullptr), "alice", o)
                .find("annotation tessera.dev/allocation-state is written only by Tessera"),
            std::string::npos);
  EXPECT_NE(UpdateValidationError(bound, with("hami.io/vgpu-node", "n1"), "alice", o).find("may not set it"),
            std::string::npos);
  // The agent marking the pod allocated, and the scheduler's bind, are theirs to write.
  EXPECT_EQ(UpdateValidationError(bound, with("tessera.dev/allocation-state", "allocated"),
                                  "system:serviceaccount:tessera-system:tessera-agent", o), "");
  EXPECT_EQ(UpdateValidationError(GpuPod({{"nvidia.com/gpu", "1"}}), bound,
                                  "system:serviceaccount:tessera-system:tessera-scheduler", o), "");
  // Anything else on the pod is anyone's: other annotations, the same value written again.
  EXPECT_EQ(UpdateValidationError(bound, with("team", "ml"), "alice", o), "");
  EXPECT_EQ(UpdateValidationError(bound, bound, "alice", o), "");
  // GPU resources may not change (the API server forbids it for pods today; this holds if it ever allows).
  json more = bound;
  more["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpumem"] = "2000";
  EXPECT_EQ(UpdateValidationError(bound, more, "alice", o),
            "container \"w\": resources.limits[nvidia.com/gpumem] may not change once the pod exists (unset -> "
            "2000); user \"alice\" may not change it; " + only);
  // Through the AdmissionReview: userInfo.username decides; other operations pass.
  json out = w.Validate(UpdateReview(bound, with("tessera.dev/devices", "[[]]"), "alice"));
  EXPECT_EQ(out["response"]["allowed"], false);
  EXPECT_EQ(out["response"]["status"]["code"], 400);
  EXPECT_EQ(w.Validate(UpdateReview(bound, with("tessera.dev/devices", "[[]]"),
                                    "system:serviceaccount:tessera-system:tessera-scheduler"))["response"]["allowed"],
            true);
  EXPECT_EQ(w.Validate(Review(bound, "DELETE"))["response"]["allowed"], true);
  // The mutating webhook never patches an update (schedulerName is immutable by then).
  EXPECT_FALSE(w.Mutate(UpdateReview(bound, bound, "alice"))["response"].contains("patch"));
}

TEST(WebhookTest, ValidatingConfigurationSeesUpdatesThatChangeAllocationByOthers) {
  WebhookRegistration reg;
  reg.url = "https://127.0.0.1:8443";
  reg.trusted_users = {"tessera-admin", "system:serviceaccount:ns:agent"};
  json h = ValidatingConfiguration(reg, ResourceNames{})["webhooks"][0];
  EXPECT_EQ(h["rules"][0]["operations"], json({"CREATE", "UPDATE"}));
  std::string cel = h["matchConditions"][0]["expression"];
  EXPECT_NE(cel.find("request.userInfo.username in ['tessera-admin','system:serviceaccount:ns:agent']"),
            std::string::npos) << cel;
  EXPECT_NE(cel.find("'tessera.dev/allocation-state'"), std::string::npos) << cel;
  EXPECT_NE(cel.find("oldObject.metadata.annotations[k]"), std::string::npos) << cel;
  // The mutating webhook stays on CREATE only.
  EXPECT_EQ(MutatingConfiguration(reg, ResourceNames{})["webhooks"][0]["rules"][0]["operations"], json({"CREATE"}));
  EXPECT_EQ(TrustedUsersError({"a", "system:serviceaccount:x:y"}), "");
  EXPECT_EQ(TrustedUsersError({"a", ""}), "--webhook-trusted-users: an entry is empty (expected usernames, comma-separated)");
  EXPECT_EQ(TrustedUsersError({"o'brien"}),
            "--webhook-trusted-users: \"o'brien\" contains a quote, backslash or control character");
}

}  // namespace
}  // namespace tessera::scheduler
