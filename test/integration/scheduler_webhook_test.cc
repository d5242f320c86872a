// The admission webhook on the real API server: every rejection, the mutations, failurePolicy Fail, and
// updates of Tessera's annotations by anyone but Tessera's own identities.
#include <gtest/gtest.h>

#include <thread>

#include "scheduler_env.h"

namespace tessera::itest {
namespace {

#define NEED_KUBE(env)                                                        \
  if (!(env).available()) GTEST_SKIP() << "TESSERA_KUBECONFIG unset (run under ctest, fixture kube)"

// A client acting as ServiceAccount `sa` of the environment's namespace (a token from the TokenRequest API),
// allowed to read and patch pods there.
std::shared_ptr<kube::Client> ClientAs(SchedulerEnv& env, const std::string& sa) {
  kube::Client& admin = env.client();
  const std::string ns = env.ns();
  auto post = [&](const std::string& path, const Json& body) {
    auto r = admin.Request("POST", path, body.dump());
    EXPECT_TRUE(r.ok() || r.error().AlreadyExists()) << path << ": " << r.error().ToString();
    return r.ok() ? *r : Json::object();
  };
  post("/api/v1/namespaces/" + ns + "/serviceaccounts",
       {{"apiVersion", "v1"}, {"kind", "ServiceAccount"}, {"metadata", {{"name", sa}}}});
  post("/apis/rbac.authorization.k8s.io/v1/namespaces/" + ns + "/roles",
       {{"apiVersion", "rbac.authorization.k8s.io/v1"},
        {"kind", "Role"},
        {"metadata", {{"name", "pod-editor"}}},
        {"rules", Json::array({{{"apiGroups", {""}}, {"resources", {"pods"}}, {"verbs", {"get", "patch", "update"}}}})}});
  post("/apis/rbac.authorization.k8s.io/v1/namespaces/" + ns + "/rolebindings",
       {{"apiVersion", "rbac.authorization.k8s.io/v1"},
        {"kind", "RoleBinding"},
        {"metadata", {{"name", "pod-editor-" + sa}}},
        {"roleRef", {{"apiGroup", "rbac.authorization.k8s.io"}, {"kind", "Role"}, {"name", "pod-editor"}}},
        {"subjects", Json::array({{{"kind", "ServiceAccount"}, {"name", sa}, {"namespace", ns}}})}});
  Json token = post("/api/v1/namespaces/" + ns + "/serviceaccounts/" + sa + "/token",
                    {{"apiVersion", "authentication.k8s.io/v1"}, {"kind", "TokenRequest"}, {"spec", Json::object()}});
  kube::Config cfg = admin.config();
  cfg.client_cert_pem.clear();
  cfg.client_key_pem.clear();
  cfg.token = token.contains("status") ? token["status"].value("token", "") : "";
  auto c = kube::Client::Create(cfg);
  EXPECT_TRUE(c.ok()) << c.error().ToString();
  return c.ok() ? *c : nullptr;
}

Json Annotations(const Json& kv) { return {{"metadata", {{"annotations", kv}}}}; }

TEST(SchedulerWebhook, RejectsImpossibleRequestsWithFieldValueAndRange) {
  SchedulerEnv env;
  NEED_KUBE(env);
  ASSERT_NO_FATAL_FAILURE(env.Start());
  env.AddNode("w", {{"T4", 16384, 0}});
  // The webhook learns the largest GPU from its view; wait until the node is in it.
  ASSERT_TRUE(env.WaitPods([&](const std::vector<Json>&) {
    return env.Metrics().find("GPUDeviceMemoryLimit{deviceidx=\"0\"") != std::string::npos;
  }, 10));
  struct Case {
    Json limits;
    Json annotations;
    std::string want;
  } cases[] = {
      {{{"nvidia.com/gpumem-percentage", "0"}}, {}, "nvidia.com/gpumem-percentage=0 is out of range (1..100)"},
      // Negative and fractional values never reach the webhook: the API server's own validation names them.
      {{{"nvidia.com/gpumem-percentage", "-3"}}, {}, "limits[nvidia.com/gpumem-percentage]: Invalid value: \"-3\": must be greater than or equal to 0"},
      {{{"nvidia.com/gpumem-percentage", "150"}}, {}, "nvidia.com/gpumem-percentage=150 is out of range (1..100)"},
      {{{"nvidia.com/gpucores", "101"}}, {}, "nvidia.com/gpucores=101 is out of range (0..100)"},
      {{{"nvidia.com/gpumem", "20000"}}, {}, "nvidia.com/gpumem=20000 MiB is larger than any GPU in the cluster (1..16384 MiB)"},
      {{{"nvidia.com/gpumem", "2.5"}}, {}, "limits[nvidia.com/gpumem]: Invalid value: \"2500m\": must be an integer"},
      {{{"nvidia.com/gpu", "-1"}}, {}, "limits[nvidia.com/gpu]: Invalid value: \"-1\": must be greater than or equal to 0"},
      {{{"nvidia.com/gpu", "1"}}, {{"tessera.dev/assigned-node", "x"}}, "annotation tessera.dev/assigned-node is set by the Tessera scheduler"},
      {{{"nvidia.com/gpu", "1"}}, {{"tessera.dev/devices", "[]"}}, "annotation tessera.dev/devices is set by the Tessera scheduler"},
      {{{"nvidia.com/gpu", "1"}}, {{"hami.io/vgpu-devices-allocated", "x"}}, "annotation hami.io/vgpu-devices-allocated is set"},
      {{{"nvidia.com/gpu", "1"}}, {{"hami.io/gpu-scheduler-policy", "tight"}}, "hami.io/gpu-scheduler-policy=tight is not allowed: \"tight\" is not one of binpack, spread, topology-aware, numa"},
  };
  int i = 0;
  for (const auto& c : cases) {
    auto r = env.CreatePod(SchedulerEnv::GpuPod("bad-" + std::to_string(i++), c.limits, c.annotations));
    ASSERT_FALSE(r.ok()) << c.limits.dump() << " was admitted";
    EXPECT_NE(r.error().message.find(c.want), std::string::npos) << r.error().message;
    bool names_where = r.error().message.find("container \"gpu-worker\"") != std::string::npos ||
                       r.error().message.find("annotation") != std::string::npos ||
                       r.error().message.find("Invalid value") != std::string::npos;
    EXPECT_TRUE(names_where) << r.error().message;
  }
}

TEST(SchedulerWebhook, MutatesOnlyGpuPodsAndFailsClosedWhenDown) {
  SchedulerEnv env;
  NEED_KUBE(env);
  ASSERT_NO_FATAL_FAILURE(env.Start());
  // Memory without nvidia.com/gpu: one GPU added; default-scheduler replaced.
  auto r = env.CreatePod(SchedulerEnv::GpuPod("mem-only", {{"nvidia.com/gpumem", "1000"}}, {}, "default-scheduler"));
  ASSERT_TRUE(r.ok()) << r.error().ToString();
  EXPECT_EQ((*r)["spec"]["schedulerName"], env.scheduler_name());
  EXPECT_EQ((*r)["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"], "1");
  // A pod without GPU resources is left alone.
  Json cpu = SchedulerEnv::GpuPod("cpu-only", {{"cpu", "1"}}, {}, "");
  auto c = env.CreatePod(cpu);
  ASSERT_TRUE(c.ok());
  EXPECT_EQ((*c)["spec"]["schedulerName"], "default-scheduler");
  // Webhook down: GPU pods refused with a clear reason, CPU pods still admitted.
  env.KillTessera(SIGKILL);
  auto down = env.CreatePod(SchedulerEnv::GpuPod("while-down", {{"nvidia.com/gpu", "1"}}));
  ASSERT_FALSE(down.ok());
  EXPECT_NE(down.error().message.find("failed calling webhook"), std::string::npos) << down.error().message;
  EXPECT_NE(down.error().message.find("mutate.tessera.dev"), std::string::npos) << down.error().message;
  EXPECT_TRUE(env.CreatePod(SchedulerEnv::GpuPod("cpu-while-down", {{"cpu", "1"}}, {}, "")).ok());
}

TEST(SchedulerWebhook, OnlyTesseraIdentitiesChangeAllocationAnnotationsOnUpdate) {
  SchedulerEnv env;
  NEED_KUBE(env);
  SchedulerEnv::Options o;
  // The scheduler itself runs as env.self_user() (trusted by SchedulerEnv); a second trusted identity plays the
  // agent, as the chart's agent ServiceAccount would.
  const std::string agent_user = "system:serviceaccount:" + env.ns() + ":agent-like";
  o.extra_args = {"--webhook-trusted-users=" + agent_user};
  ASSERT_NO_FATAL_FAILURE(env.Start(o));
  env.AddNode("u", {{"T4", 16384, 0}});
  ASSERT_TRUE(env.CreatePod(SchedulerEnv::GpuPod("gpu-a", {{"nvidia.com/gpu", "1"}, {"nvidia.com/gpumem", "1000"}})).ok());
  ASSERT_TRUE(env.CreatePod(SchedulerEnv::GpuPod("cpu-a", {{"cpu", "1"}}, {}, "")).ok());
  ASSERT_TRUE(env.WaitBound({"gpu-a"}, 20)) << env.SchedulingMessage("gpu-a");
  const std::string devices = kube::Annotation(env.GetPod("gpu-a"), kube::kAnnoDevices);
  ASSERT_FALSE(devices.empty());

  auto intruder = ClientAs(env, "intruder");
  auto agent = ClientAs(env, "agent-like");
  ASSERT_TRUE(intruder && agent);
  // RBAC reaches the authorizer's cache shortly after the RoleBinding is written: wait for it.
  ASSERT_TRUE(env.WaitPods([&](const std::vector<Json>&) {
    return intruder->Get(kube::kPods, env.ns(), "gpu-a").ok() && agent->Get(kube::kPods, env.ns(), "gpu-a").ok();
  }, 20));
  const std::string intruder_user = "user \"system:serviceaccount:" + env.ns() + ":intruder\"";
  auto patch = [&](kube::Client& c, const std::string& pod, const Json& annotations) {
    return c.Patch(kube::kPods, env.ns(), pod, Annotations(annotations));
  };
  // Someone else changing, removing or adding an allocation annotation is refused, naming it and the user.
  auto changed = patch(*intruder, "gpu-a", {{kube::kAnnoDevices, "[[]]"}});
  ASSERT_FALSE(changed.ok()) << "an intruder rewrote tessera.dev/devices";
  EXPECT_NE(changed.error().message.find("annotation tessera.dev/devices is written only by Tessera"), std::string::npos)
      << changed.error().message;
  EXPECT_NE(changed.error().message.find(intruder_user + " may not change it"), std::string::npos)
      << changed.error().message;
  auto removed = patch(*intruder, "gpu-a", {{kube::kAnnoAllocationState, nullptr}});
  ASSERT_FALSE(removed.ok()) << "an intruder removed tessera.dev/allocation-state";
  EXPECT_NE(removed.error().message.find(intruder_user + " may not remove it"), std::string::npos)
      << removed.error().message;
  auto added = patch(*intruder, "cpu-a", {{kube::kAnnoDevices, devices}});
  ASSERT_FALSE(added.ok()) << "an intruder put an assignment on a CPU pod";
  EXPECT_NE(added.error().message.find(intruder_user + " may not set it"), std::string::npos) << added.error().message;
  EXPECT_EQ(kube::Annotation(env.GetPod("gpu-a"), kube::kAnnoDevices), devices);
  EXPECT_EQ(kube::Annotation(env.GetPod("gpu-a"), kube::kAnnoAllocationState), "pending");
  // Tessera's identities may: the agent marking the pod allocated, the scheduler's own identity.
  auto marked = patch(*agent, "gpu-a", {{kube::kAnnoAllocationState, "allocated"}});
  ASSERT_TRUE(marked.ok()) << marked.error().ToString();
  EXPECT_EQ(kube::Annotation(env.GetPod("gpu-a"), kube::kAnnoAllocationState), "allocated");
  EXPECT_TRUE(patch(env.client(), "gpu-a", {{kube::kAnnoBindTime, "2026-01-01T00:00:00Z"}}).ok());
  // Other updates never reach the webhook, so they go through even while it is down; ours fail closed.
  env.KillTessera(SIGKILL);
  auto label = intruder->Patch(kube::kPods, env.ns(), "gpu-a", {{"metadata", {{"labels", {{"team", "ml"}}}}}});
  EXPECT_TRUE(label.ok()) << label.error().ToString();
  EXPECT_TRUE(patch(*intruder, "gpu-a", {{"note", "anything else"}}).ok());
  auto down = patch(*intruder, "gpu-a", {{kube::kAnnoDevices, "[[]]"}});
  ASSERT_FALSE(down.ok());
  EXPECT_NE(down.error().message.find("failed calling webhook"), std::string::npos) << down.error().message;
}

}  // namespace
}  // namespace tessera::itest
