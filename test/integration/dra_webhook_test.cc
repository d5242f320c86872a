// DRA mode's webhook on the real control plane: the seed's two workers, written for HAMi (nvidia.com/gpu,
// gpucores, gpumem-percentage; schedulerName hami-scheduler), are admitted by `tessera scheduler
// --mode=dra`, which turns their requests into ResourceClaimTemplates; kube-controller-manager's
// resourceclaim controller makes their claims, the real kube-scheduler allocates them on a simulated
// 16 GiB GPU published by `tessera agent --mode dra`, and the kubelet's own DRA manager prepares them
// through the agent. Each container's slice must be what the manifest asked for on that card.
#include <gtest/gtest.h>

#include <array>
#include <cstdio>
#include <memory>

#include "agent_sim_node.h"
#include "dra_sim_node.h"
#include "kube/quantity.h"
#include "kube/resource_slice.h"
#include "scheduler_env.h"

namespace {

using tessera::itest::DraSimNode;
using tessera::itest::Poll;
using tessera::itest::SchedulerEnv;
using Json = tessera::kube::Json;
namespace kube = tessera::kube;

// The Deployment in deploy/examples/<file>, as JSON (kubectl converts the YAML; nothing is sent).
Json Manifest(const std::string& file) {
  std::string cmd = "kubectl create --dry-run=client -o json -f " + std::string(TESSERA_SOURCE_DIR) +
                    "/deploy/examples/" + file + " 2>&1";
  std::string out;
  std::unique_ptr<FILE, int (*)(FILE*)> p(popen(cmd.c_str(), "r"), pclose);
  if (!p) return Json();
  std::array<char, 4096> buf{};
  size_t n;
  while ((n = fread(buf.data(), 1, buf.size(), p.get())) > 0) out.append(buf.data(), n);
  return Json::parse(out, nullptr, false);
}

TEST(DraWebhook, SeedWorkersRunUnchangedThroughClaimsWithExactSlices) {
  SchedulerEnv env;
  if (!env.available()) GTEST_SKIP() << "needs the ctest fixture 'kube'";
  const std::string cls = "dra-wh-" + env.id();
  Json dc = {{"apiVersion", "resource.k8s.io/v1"},
             {"kind", "DeviceClass"},
             {"metadata", {{"name", cls}}},
             {"spec", {{"selectors", Json::array({{{"cel", {{"expression", "device.driver == \"gpu.tessera.io\""}}}}})}}}};
  ASSERT_TRUE(env.client().Create(kube::kDeviceClasses, "", dc).ok());
  struct ClassGone {
    SchedulerEnv* env;
    std::string name;
    ~ClassGone() { (void)env->client().Delete(kube::kDeviceClasses, "", name); }
  } class_gone{&env, cls};

  const std::string uuid = "GPU-drawh" + env.id() + "-0";
  DraSimNode node(env.shared_client(), "dra-wh-" + env.id(), {{uuid, "NVIDIA A100-SXM4-80GB", 16384, 0}});
  ASSERT_EQ(node.error(), "");
  ASSERT_TRUE(node.WaitRegistered(60)) << node.AgentLogTail();
  ASSERT_TRUE(node.WaitSlice(30, [](const Json& s) { return s["spec"]["devices"].size() == 1; }));

  SchedulerEnv::Options o;
  o.kube_scheduler = false;  // the control plane's own kube-scheduler allocates the claims
  o.extra_args = {"--mode=dra", "--dra-device-class=" + cls};
  env.Start(o);
  // The webhook resolves gpumem-percentage against the GPU kinds it has seen published.
  ASSERT_TRUE(env.WaitMetricLine("tessera_dra_gpu_kind{model=\"NVIDIA A100-SXM4-80GB\",memory_mib=\"16384\"} 1", 30))
      << env.Metrics();

  struct Worker {
    std::string file;
    int64_t memory_percent;
    int cores;
  };
  const std::vector<Worker> workers = {{"worker-a.yaml", 20, 25}, {"worker-b.yaml", 30, 40}};
  std::vector<std::string> pods;
  for (const auto& w : workers) {
    Json d = Manifest(w.file);
    ASSERT_TRUE(d.is_object() && d.contains("spec")) << w.file << ": " << d.dump();
    // The pod its Deployment would create: the template unchanged (resources, schedulerName), plus what keeps
    // it on this test's node of the shared control plane.
    Json pod = {{"apiVersion", "v1"}, {"kind", "Pod"}, {"metadata", d["spec"]["template"]["metadata"]},
                {"spec", d["spec"]["template"]["spec"]}};
    const std::string name = d["metadata"].value("name", "") + "-" + env.id();
    pod["metadata"]["name"] = name;
    pod["spec"]["nodeSelector"] = {{"kubernetes.io/hostname", node.name()}};
    pod["spec"]["tolerations"] = Json::array({{{"key", "dra-it.tessera.dev/test"}, {"operator", "Exists"}, {"effect", "NoSchedule"}}});
    ASSERT_EQ(pod["spec"]["schedulerName"], "hami-scheduler");
    auto created = env.CreatePod(pod);
    ASSERT_TRUE(created.ok()) << w.file << ": " << created.error().ToString();
    // Admission rewrote it for the DRA path.
    const Json& spec = (*created)["spec"];
    EXPECT_EQ(spec.value("schedulerName", ""), "default-scheduler");
    EXPECT_FALSE(spec["containers"][0]["resources"].value("limits", Json::object()).contains("nvidia.com/gpu")) << spec.dump();
    ASSERT_EQ(spec["resourceClaims"].size(), 1u) << spec.dump();
    const std::string tmpl = spec["resourceClaims"][0].value("resourceClaimTemplateName", "");
    EXPECT_TRUE(env.client().Get(kube::kResourceClaimTemplates, env.ns(), tmpl).ok()) << tmpl;
    pods.push_back(name);
  }

  ASSERT_TRUE(env.WaitBound(pods, 90)) << env.SchedulingMessage(pods[0]) << " / " << env.SchedulingMessage(pods[1]);
  for (size_t i = 0; i < pods.size(); ++i) {
    int status = 0;
    Json a;
    Poll(30, [&] {
      a = node.Admit(env.ns(), pods[i], &status);
      return status == 200;
    });
    ASSERT_EQ(status, 200) << pods[i] << ": " << a.dump() << "\n" << node.AgentLogTail();
    tessera::slice::SliceConfig cfg;
    std::string err;
    ASSERT_TRUE(node.SliceOf(a, "gpu-worker", &cfg, &err)) << pods[i] << ": " << err;
    const int64_t want_mib = workers[i].memory_percent * 16384 / 100;
    ASSERT_EQ(cfg.gpu_count, 1) << pods[i];
    EXPECT_EQ(std::string(cfg.gpus[0].uuid), uuid) << pods[i];
    EXPECT_EQ(cfg.gpus[0].memory_bytes, static_cast<uint64_t>(want_mib) << 20) << pods[i];
    EXPECT_EQ(cfg.gpus[0].cores, workers[i].cores) << pods[i];
    EXPECT_EQ(cfg.priority, 1) << pods[i];  // nvidia.com/priority not stated: best effort, as on the extender path
    // The claim the controller made says the same.
    Json p = env.GetPod(pods[i]);
    ASSERT_TRUE(p["status"].contains("resourceClaimStatuses")) << p.dump();
    const std::string claim = p["status"]["resourceClaimStatuses"][0].value("resourceClaimName", "");
    auto c = env.client().Get(kube::kResourceClaims, env.ns(), claim);
    ASSERT_TRUE(c.ok()) << claim;
    const Json& r = (*c)["status"]["allocation"]["devices"]["results"][0];
    auto mem = kube::Quantity::Parse(r["consumedCapacity"].value("memory", "0"));
    EXPECT_TRUE(mem.ok() && mem->Value() == (want_mib << 20)) << r.dump();
    EXPECT_EQ(r["consumedCapacity"].value("cores", ""), std::to_string(workers[i].cores)) << r.dump();
  }

  // A request the card cannot hold is refused at admission, with the reason, on this path too.
  Json bad = SchedulerEnv::GpuPod("too-much-" + env.id(), {{"nvidia.com/gpumem-percentage", "101"}});
  auto refused = env.CreatePod(bad);
  ASSERT_FALSE(refused.ok());
  EXPECT_NE(refused.error().message.find("nvidia.com/gpumem-percentage=101 is out of range (1..100)"), std::string::npos)
      << refused.error().message;

  for (const auto& p : pods) EXPECT_EQ(node.Remove(env.ns(), p), 200) << p;
}

}  // namespace
