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
  // A tenant may not hand itself high priority (or a burst cap) through the handoff's settings either.
  json self_high = GpuPod({{"nvidia.com/gpu", "1"}},
                          {{"tessera.dev/container-settings", R"({"containers":[{"priority":0,"cap_mode":"burst"}]})"}});
  EXPECT_EQ(ValidationError(self_high, o, 16384),
            "annotation tessera.dev/container-settings is set by the Tessera scheduler at bind time and may not be set "
            "by a pod");
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
  // The status subresource rewrites annotations as well as the pod does; ephemeral containers carry env.
  EXPECT_EQ(h["rules"][0]["resources"], json({"pods", "pods/status", "pods/ephemeralcontainers"}));
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

json WithEnv(const char* list, json env, json env_from = nullptr) {
  json pod = {{"metadata", {{"name", "p"}, {"namespace", "team-b"}}},
              {"spec", {{"containers", json::array({{{"name", "main"}, {"image", "x"}}})}}}};
  json c = {{"name", "sneaky"}, {"image", "x"}};
  if (!env.is_null()) c["env"] = env;
  if (!env_from.is_null()) c["envFrom"] = env_from;
  if (std::string(list) == "containers") pod["spec"]["containers"].push_back(c);
  else pod["spec"][list] = json::array({c});
  return pod;
}

TEST(WebhookTest, PodsMayNotSetTheVariablesThatPickGpusOrPreload) {
  // Every list, env and envFrom: refused with the container and the variable named.
  for (const char* list : {"containers", "initContainers", "ephemeralContainers"}) {
    for (const char* var : {"NVIDIA_VISIBLE_DEVICES", "CUDA_VISIBLE_DEVICES", "LD_PRELOAD", "TESSERA_CONFIG"}) {
      std::string err = ForbiddenEnvError(WithEnv(list, {{{"name", var}, {"value", "all"}}}));
      EXPECT_NE(err.find(std::string("spec.") + list + " \"sneaky\" sets env " + var), std::string::npos) << err;
      EXPECT_NE(err.find("pods may not set NVIDIA_VISIBLE_DEVICES, CUDA_VISIBLE_DEVICES, LD_PRELOAD or TESSERA_*"),
                std::string::npos);
    }
  }
  EXPECT_NE(ForbiddenEnvError(WithEnv("containers", nullptr, {{{"prefix", "NVIDIA_"}, {"configMapRef", {{"name", "m"}}}}}))
                .find("envFrom prefix NVIDIA_"),
            std::string::npos);
  EXPECT_NE(ForbiddenEnvError(WithEnv("containers", nullptr, {{{"prefix", "TESSERA_X_"}}})).find("envFrom prefix"),
            std::string::npos);
  // Look-alikes and unprefixed envFrom pass (the source's keys are not known here: docs/security.md).
  EXPECT_EQ(ForbiddenEnvError(WithEnv("containers", {{{"name", "MY_CUDA_VISIBLE_DEVICES"}}, {{"name", "TESSERA"}}})), "");
  EXPECT_EQ(ForbiddenEnvError(WithEnv("containers", nullptr, {{{"configMapRef", {{"name", "m"}}}}, {{"prefix", "APP_"}}})), "");

  // Through the AdmissionReview, for any pod, GPU or not; the exempt namespace (Tessera's own) passes.
  WebhookOptions o;
  o.exempt_namespace = "tessera-system";
  Metrics m;
  Webhook w(o, [] { return int64_t{16384}; }, &m);
  json pod = WithEnv("containers", {{{"name", "NVIDIA_VISIBLE_DEVICES"}, {"value", "all"}}});
  json r = Review(pod);
  r["request"]["namespace"] = "team-b";
  EXPECT_EQ(w.Validate(r)["response"]["allowed"], false);
  r["request"]["namespace"] = "tessera-system";
  EXPECT_EQ(w.Validate(r)["response"]["allowed"], true);
  // kubectl debug: an ephemeral container added through pods/ephemeralcontainers.
  json before = WithEnv("containers", nullptr);
  json after = WithEnv("ephemeralContainers", {{{"name", "LD_PRELOAD"}, {"value", "/tmp/x.so"}}});
  json u = UpdateReview(before, after, "alice");
  u["request"]["subResource"] = "ephemeralcontainers";
  u["request"]["namespace"] = "team-b";
  json out = w.Validate(u);
  EXPECT_EQ(out["response"]["allowed"], false);
  EXPECT_NE(out["response"]["status"]["message"].get<std::string>().find("spec.ephemeralContainers \"sneaky\" sets env LD_PRELOAD"),
            std::string::npos);
  // The match condition sends both to the webhook, and spares Tessera's namespace.
  WebhookRegistration reg;
  reg.url = "https://127.0.0.1:8443";
  reg.exempt_namespace = "tessera-system";
  std::string cel = ValidatingConfiguration(reg, ResourceNames{})["webhooks"][0]["matchConditions"][0]["expression"];
  EXPECT_NE(cel.find("request.namespace != 'tessera-system'"), std::string::npos) << cel;
  EXPECT_NE(cel.find("request.subResource == 'ephemeralcontainers'"), std::string::npos) << cel;
  EXPECT_NE(cel.find("e.name.startsWith('TESSERA_')"), std::string::npos) << cel;
}

TEST(WebhookTest, AStatusUpdateByATenantCannotRewriteTheAllocation) {
  WebhookOptions o;
  Metrics m;
  Webhook w(o, [] { return int64_t{16384}; }, &m);
  json bound = GpuPod({{"nvidia.com/gpu", "1"}}, {{"tessera.dev/devices", R"([[{"uuid":"GPU-a","memory_mib":1000,"cores":10}]])"},
                                                  {"tessera.dev/allocation-state", "allocated"}});
  json forged = bound;
  forged["metadata"]["annotations"]["tessera.dev/devices"] = R"([[{"uuid":"GPU-a","memory_mib":16384,"cores":100}]])";
  json u = UpdateReview(bound, forged, "system:serviceaccount:team-b:default");
  u["request"]["subResource"] = "status";
  json out = w.Validate(u);
  EXPECT_EQ(out["response"]["allowed"], false);
  EXPECT_NE(out["response"]["status"]["message"].get<std::string>().find("annotation tessera.dev/devices is written only by Tessera"),
            std::string::npos);
}

}  // namespace
}  // namespace tessera::scheduler
