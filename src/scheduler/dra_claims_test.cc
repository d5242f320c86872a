#include "scheduler/dra_claims.h"

#include <gtest/gtest.h>

#include "scheduler/webhook.h"

namespace tessera::scheduler {
namespace {

using nlohmann::json;

json Pod(json limits, json annotations = json::object(), json extra_spec = json::object()) {
  json p = {{"metadata", {{"name", "w"}, {"namespace", "team"}, {"annotations", annotations}}},
            {"spec", {{"schedulerName", "hami-scheduler"},
                      {"containers", json::array({{{"name", "gpu-worker"}, {"resources", {{"limits", limits}}}}})}}}};
  for (auto& [k, v] : extra_spec.items()) p["spec"][k] = v;
  return p;
}

const std::vector<DraGpuKind> kA100AndT4 = {{"Tesla T4", 15360}, {"NVIDIA A100-SXM4-80GB", 81920}};

DraTranslation Translate(const json& pod, const std::vector<DraGpuKind>& kinds = kA100AndT4) {
  ParseOptions po;
  auto parsed = ParsePod(pod, po);
  EXPECT_TRUE(parsed.ok()) << parsed.error().message;
  auto t = TranslateToClaims(pod, *parsed, kinds, {}, po.names);
  EXPECT_TRUE(t.ok()) << t.error().message;
  return t.ok() ? *t : DraTranslation{};
}

std::string Refusal(const json& pod, const std::vector<DraGpuKind>& kinds = kA100AndT4) {
  ParseOptions po;
  auto parsed = ParsePod(pod, po);
  if (!parsed) return parsed.error().message;
  auto t = TranslateToClaims(pod, *parsed, kinds, {}, po.names);
  return t.ok() ? "" : t.error().message;
}

// The pod after the patch (a small RFC 6902 subset: add, remove on objects and "-" appends).
json Apply(json doc, const json& patch) {
  for (const auto& op : patch) {
    json::json_pointer ptr(op["path"].get<std::string>());
    if (op["op"] == "remove") {
      doc[ptr.parent_pointer()].erase(ptr.back());
    } else if (ptr.back() == "-") {
      doc[ptr.parent_pointer()].push_back(op["value"]);
    } else {
      doc[ptr] = op["value"];
    }
  }
  return doc;
}

const json& Request(const DraTranslation& t, size_t i = 0) {
  return t.templates.at(i).object["spec"]["spec"]["devices"]["requests"][0];
}

TEST(DraClaimsTest, TheSeedWorkerBecomesOneClaimPerSizeOfCard) {
  // Worker A: 1 GPU, 25 % of the cores, 20 % of the memory of whichever card it lands on.
  json pod = Pod({{"nvidia.com/gpu", "1"}, {"nvidia.com/gpucores", "25"}, {"nvidia.com/gpumem-percentage", "20"}});
  DraTranslation t = Translate(pod);
  ASSERT_EQ(t.templates.size(), 1u);
  const json& r = Request(t);
  ASSERT_TRUE(r.contains("firstAvailable")) << r.dump();
  ASSERT_EQ(r["firstAvailable"].size(), 2u);
  // Smallest card first; memory is the percentage of that card, cores as stated.
  EXPECT_EQ(r["firstAvailable"][0]["capacity"]["requests"]["memory"], "3072Mi");
  EXPECT_EQ(r["firstAvailable"][0]["capacity"]["requests"]["cores"], "25");
  EXPECT_EQ(r["firstAvailable"][1]["capacity"]["requests"]["memory"], "16384Mi");
  EXPECT_EQ(r["firstAvailable"][0]["selectors"].back()["cel"]["expression"],
            "device.attributes[\"gpu.tessera.io\"].memoryMiB == 15360");
  EXPECT_EQ(r["firstAvailable"][0]["deviceClassName"], "gpu.tessera.io");
  EXPECT_EQ(r["firstAvailable"][0]["count"], 1);

  json out = Apply(pod, t.patch);
  EXPECT_EQ(out["spec"]["schedulerName"], "default-scheduler");
  EXPECT_TRUE(out["spec"]["containers"][0]["resources"]["limits"].empty()) << out.dump();
  ASSERT_EQ(out["spec"]["resourceClaims"].size(), 1u);
  EXPECT_EQ(out["spec"]["resourceClaims"][0]["resourceClaimTemplateName"], t.templates[0].name);
  EXPECT_EQ(out["spec"]["containers"][0]["resources"]["claims"][0]["name"], out["spec"]["resourceClaims"][0]["name"]);

  // One kind of card: a single request pinned to that size.
  DraTranslation one = Translate(pod, {{"Tesla T4", 15360}});
  EXPECT_EQ(Request(one)["exactly"]["capacity"]["requests"]["memory"], "3072Mi");
  EXPECT_FALSE(Request(one).contains("firstAvailable"));
}

TEST(DraClaimsTest, MemoryInMiBWholeCardsAndMultiGpu) {
  DraTranslation mib = Translate(Pod({{"nvidia.com/gpumem", "3000"}}));
  const json& e = Request(mib)["exactly"];
  EXPECT_EQ(e["capacity"]["requests"]["memory"], "3000Mi");
  EXPECT_EQ(e["capacity"]["requests"]["cores"], "0");  // no gpucores: no compute reserved, as on the extender path
  EXPECT_FALSE(e.contains("selectors"));

  // nvidia.com/gpu alone: the device's defaults, the whole card.
  DraTranslation whole = Translate(Pod({{"nvidia.com/gpu", "1"}}));
  EXPECT_FALSE(Request(whole)["exactly"].contains("capacity")) << Request(whole).dump();

  // Two GPUs: two different devices, and on one NUMA node when asked.
  DraTranslation two = Translate(Pod({{"nvidia.com/gpu", "2"}, {"nvidia.com/gpumem", "1000"}}, {{"nvidia.com/numa-bind", "true"}}));
  EXPECT_EQ(Request(two)["exactly"]["count"], 2);
  const json& cons = two.templates[0].object["spec"]["spec"]["devices"]["constraints"];
  ASSERT_EQ(cons.size(), 2u) << cons.dump();
  EXPECT_EQ(cons[0]["distinctAttribute"], "gpu.tessera.io/uuid");
  EXPECT_EQ(cons[1]["matchAttribute"], "gpu.tessera.io/numaNode");
}

TEST(DraClaimsTest, FiltersPriorityAndCapModeCarryOver) {
  json pod = Pod({{"nvidia.com/gpumem-percentage", "50"}, {"nvidia.com/priority", "0"}},
                 {{"nvidia.com/use-gputype", "a100,H100"},
                  {"nvidia.com/nouse-gpuuuid", "GPU-bad"},
                  {"tessera.dev/cap-mode", "burst"}});
  DraTranslation t = Translate(pod);
  const json& e = Request(t)["exactly"];  // the type filter leaves one size (the A100)
  EXPECT_EQ(e["capacity"]["requests"]["memory"], "40960Mi");
  ASSERT_EQ(e["selectors"].size(), 3u) << e.dump();
  EXPECT_EQ(e["selectors"][0]["cel"]["expression"],
            "[\"a100\", \"h100\"].exists(t, device.attributes[\"gpu.tessera.io\"].model.lowerAscii().contains(t))");
  EXPECT_EQ(e["selectors"][1]["cel"]["expression"], "!(device.attributes[\"gpu.tessera.io\"].uuid in [\"GPU-bad\"])");
  const json& cfg = t.templates[0].object["spec"]["spec"]["devices"]["config"][0];
  EXPECT_EQ(cfg["opaque"]["driver"], "gpu.tessera.io");
  EXPECT_EQ(cfg["opaque"]["parameters"]["priority"], 0);
  EXPECT_EQ(cfg["opaque"]["parameters"]["capMode"], "burst");
  EXPECT_EQ(cfg["opaque"]["parameters"]["kind"], "SliceConfig");

  // A quote in a type cannot break out of the CEL string.
  DraTranslation q = Translate(Pod({{"nvidia.com/gpumem", "10"}}, {{"nvidia.com/use-gputype", "a\") || true || (\""}}));
  EXPECT_EQ(Request(q)["exactly"]["selectors"][0]["cel"]["expression"],
            "[\"a\\\") || true || (\\\"\"].exists(t, device.attributes[\"gpu.tessera.io\"].model.lowerAscii().contains(t))");
}

TEST(DraClaimsTest, IdenticalRequestsShareATemplateAndOtherClaimsStay) {
  json pod = Pod({{"nvidia.com/gpumem", "2000"}}, json::object(),
                 {{"resourceClaims", json::array({{{"name", "mine"}, {"resourceClaimName", "x"}}})}});
  pod["spec"]["containers"].push_back({{"name", "second"}, {"resources", {{"limits", {{"nvidia.com/gpumem", "2000"}}}, {"claims", json::array({{{"name", "mine"}}})}}}});
  pod["spec"]["containers"].push_back({{"name", "cpu-only"}, {"resources", {{"limits", {{"nvidia.com/priority", "1"}, {"cpu", "1"}}}}}});
  DraTranslation t = Translate(pod);
  ASSERT_EQ(t.templates.size(), 1u);  // same spec, same name
  json out = Apply(pod, t.patch);
  ASSERT_EQ(out["spec"]["resourceClaims"].size(), 3u) << out.dump();
  EXPECT_EQ(out["spec"]["resourceClaims"][0]["name"], "mine");
  EXPECT_NE(out["spec"]["resourceClaims"][1]["name"], out["spec"]["resourceClaims"][2]["name"]);
  EXPECT_EQ(out["spec"]["containers"][1]["resources"]["claims"].size(), 2u);
  // The priority of a container without a GPU is dropped too (no node advertises it on this path).
  EXPECT_EQ(out["spec"]["containers"][2]["resources"]["limits"], json({{"cpu", "1"}}));
  // Different requests, different templates.
  DraTranslation other = Translate(Pod({{"nvidia.com/gpumem", "2001"}}));
  EXPECT_NE(other.templates[0].name, t.templates[0].name);
}

TEST(DraClaimsTest, RefusesWhatAClaimCannotSay) {
  json pct = Pod({{"nvidia.com/gpumem-percentage", "20"}});
  EXPECT_NE(Refusal(pct, {}).find("nvidia.com/gpumem-percentage=20 needs the GPU sizes that nodes publish"), std::string::npos)
      << Refusal(pct, {});
  EXPECT_NE(Refusal(Pod({{"nvidia.com/gpumem-percentage", "20"}}, {{"nvidia.com/use-gputype", "V100"}}))
                .find("none matches the pod's GPU type filters"),
            std::string::npos);
  std::vector<DraGpuKind> many;
  for (int i = 1; i <= 9; ++i) many.push_back({"GPU", i * 1024});
  EXPECT_NE(Refusal(pct, many).find("publishes 9 GPU sizes and a claim can offer at most 8"), std::string::npos);
  EXPECT_NE(Refusal(Pod({{"nvidia.com/gpumem", "100"}}, {{"tessera.dev/compute-mode", "spatial"}}))
                .find("spatial is not available on the DRA path"),
            std::string::npos);
  EXPECT_NE(Refusal(Pod({{"nvidia.com/gpumem", "100"}}, {{"nvidia.com/use-gputype", "a\nb"}})).find("control character"),
            std::string::npos);
}

TEST(DraClaimsTest, GpuKindsComeFromOurDriversSlices) {
  auto slice = [](const std::string& driver, const std::string& model, int64_t mib) {
    return json{{"metadata", {{"name", driver + model}}},
                {"spec", {{"driver", driver},
                          {"devices", json::array({{{"name", "gpu-0"},
                                                    {"attributes", {{"model", {{"string", model}}}, {"memoryMiB", {{"int", mib}}}}}}})}}}};
  };
  auto kinds = DraGpuKinds({slice("gpu.tessera.io", "T4", 15360), slice("gpu.tessera.io", "T4", 15360),
                            slice("other.example.com", "X", 1), slice("gpu.tessera.io", "A100", 81920)});
  ASSERT_EQ(kinds.size(), 2u);
  EXPECT_EQ(kinds[0].model, "T4");
  EXPECT_EQ(kinds[1].memory_mib, 81920);
}

TEST(DraClaimsTest, WebhookInDraModeCreatesTemplatesAndRefusesBadRequests) {
  WebhookOptions o;
  o.dra = true;
  Metrics m;
  std::vector<std::pair<std::string, json>> created;
  DraHooks hooks;
  hooks.gpu_kinds = [] { return kA100AndT4; };
  hooks.ensure_template = [&](const std::string& ns, const json& t) -> kube::Status {
    created.emplace_back(ns, t);
    return kube::Ok{};
  };
  Webhook w(o, [] { return int64_t{81920}; }, &m, hooks);
  auto review = [](json pod, bool dry_run) {
    pod["metadata"].erase("namespace");  // the API server states it in the request
    return json{{"request", {{"uid", "u"}, {"operation", "CREATE"}, {"namespace", "team"}, {"dryRun", dry_run}, {"object", pod}}}};
  };
  json ok = w.Mutate(review(Pod({{"nvidia.com/gpu", "1"}, {"nvidia.com/gpumem", "4000"}}), false));
  EXPECT_EQ(ok["response"]["allowed"], true);
  EXPECT_EQ(ok["response"]["patchType"], "JSONPatch");
  ASSERT_EQ(created.size(), 1u);
  EXPECT_EQ(created[0].first, "team");
  EXPECT_EQ(created[0].second["kind"], "ResourceClaimTemplate");

  // A dry run creates nothing.
  w.Mutate(review(Pod({{"nvidia.com/gpumem", "4000"}}), true));
  EXPECT_EQ(created.size(), 1u);

  // What ParsePod refuses is refused here (the validating webhook no longer sees the resources).
  json bad = w.Mutate(review(Pod({{"nvidia.com/gpumem-percentage", "120"}}), false));
  EXPECT_EQ(bad["response"]["allowed"], false);
  EXPECT_EQ(bad["response"]["status"]["message"], "container \"gpu-worker\": nvidia.com/gpumem-percentage=120 is out of range (1..100)");

  // The API refusing the template refuses the pod, saying why.
  hooks.ensure_template = [](const std::string&, const json&) -> kube::Status {
    return kube::Error{403, "Forbidden", "resourceclaimtemplates is forbidden"};
  };
  Webhook denied(o, [] { return int64_t{81920}; }, &m, hooks);
  json f = denied.Mutate(review(Pod({{"nvidia.com/gpumem", "4000"}}), false));
  EXPECT_EQ(f["response"]["allowed"], false);
  EXPECT_NE(f["response"]["status"]["message"].get<std::string>().find("creating ResourceClaimTemplate team/tessera-gpu-"),
            std::string::npos);

  // Pods without our resources pass untouched; the registration says it has side effects.
  json cpu = {{"metadata", {{"name", "c"}}}, {"spec", {{"containers", json::array({{{"name", "c"}}})}}}};
  EXPECT_FALSE(w.Mutate(review(cpu, false))["response"].contains("patch"));
  WebhookRegistration reg;
  reg.url = "https://127.0.0.1:1";
  reg.dra = true;
  EXPECT_EQ(MutatingConfiguration(reg, {})["webhooks"][0]["sideEffects"], "NoneOnDryRun");
}

}  // namespace
}  // namespace tessera::scheduler
