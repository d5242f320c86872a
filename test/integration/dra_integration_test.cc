// The DRA path end to end on the real control plane: `tessera agent --mode dra` publishes ResourceSlices,
// the real kube-scheduler allocates ResourceClaims against their consumable capacity, and the kubelet's own
// DRA manager (test/kube harness kubelet-dramanager) prepares them through the agent's gRPC plugin; each
// container's slice (read through its CDI device's mounts) must equal what its claim was allocated.
#include <gtest/gtest.h>

#include <chrono>
#include <cstdlib>
#include <cstdio>
#include <fstream>
#include <functional>
#include <map>
#include <random>
#include <thread>

#include "dra_sim_node.h"
#include "kube/config.h"
#include "kube/quantity.h"
#include "kube/resource_slice.h"

namespace {

using tessera::itest::DraSimGpu;
using tessera::itest::DraSimNode;
using tessera::kube::Client;
using Json = tessera::kube::Json;
namespace kube = tessera::kube;

std::string Env(const char* k) {
  const char* v = std::getenv(k);
  return v ? v : "";
}

std::string Id() {
  std::random_device rd;
  std::mt19937_64 rng(rd());
  const char* hex = "0123456789abcdef";
  std::string s;
  for (int i = 0; i < 6; ++i) s += hex[rng() % 16];
  return s;
}

bool Poll(double timeout_s, const std::function<bool()>& cond) {
  auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(timeout_s);
  while (std::chrono::steady_clock::now() < deadline) {
    if (cond()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return cond();
}

struct ClaimSpec {
  std::string memory;  // "" = the policy's default (whole card)
  std::string cores;   // "" = default (100)
  std::vector<std::string> selectors;
  int priority = -1;  // -1: no opaque config
};

class DraIntegration : public ::testing::Test {
 protected:
  void SetUp() override {
    if (Env("TESSERA_KUBECONFIG").empty()) GTEST_SKIP() << "needs the ctest fixture 'kube'";
    auto cfg = kube::LoadKubeconfig(Env("TESSERA_KUBECONFIG"));
    ASSERT_TRUE(cfg.ok()) << cfg.error().ToString();
    auto c = Client::Create(*cfg);
    ASSERT_TRUE(c.ok()) << c.error().ToString();
    kube_ = *c;
    id_ = Id();
    class_ = "dra-it-" + id_;
    Json dc = {{"apiVersion", "resource.k8s.io/v1"},
               {"kind", "DeviceClass"},
               {"metadata", {{"name", class_}}},
               {"spec", {{"selectors", Json::array({{{"cel", {{"expression", "device.driver == \"gpu.tessera.io\""}}}}})}}}};
    auto r = kube_->Create(kube::kDeviceClasses, "", dc);
    ASSERT_TRUE(r.ok()) << r.error().ToString();
  }
  void TearDown() override {
    if (!kube_) return;
    for (const auto& p : pods_) kube_->Request("DELETE", "/api/v1/namespaces/default/pods/" + p + "?gracePeriodSeconds=0");
    for (const auto& c : claims_) kube_->Delete(kube::kResourceClaims, "default", c);
    kube_->Delete(kube::kDeviceClasses, "", class_);
  }

  void CreateClaim(const std::string& name, const ClaimSpec& s) {
    Json exactly = {{"deviceClassName", class_}};
    if (!s.memory.empty()) exactly["capacity"]["requests"]["memory"] = s.memory;
    if (!s.cores.empty()) exactly["capacity"]["requests"]["cores"] = s.cores;
    for (const auto& sel : s.selectors) exactly["selectors"].push_back({{"cel", {{"expression", sel}}}});
    Json spec = {{"devices", {{"requests", Json::array({{{"name", "gpu"}, {"exactly", exactly}}})}}}};
    if (s.priority >= 0) {
      spec["devices"]["config"] = Json::array(
          {{{"requests", {"gpu"}},
            {"opaque", {{"driver", "gpu.tessera.io"}, {"parameters", {{"apiVersion", "gpu.tessera.io/v1"}, {"kind", "SliceConfig"}, {"priority", s.priority}}}}}}});
    }
    Json claim = {{"apiVersion", "resource.k8s.io/v1"}, {"kind", "ResourceClaim"}, {"metadata", {{"name", name}}}, {"spec", spec}};
    auto r = kube_->Create(kube::kResourceClaims, "default", claim);
    ASSERT_TRUE(r.ok()) << name << ": " << r.error().ToString();
    claims_.push_back(name);
  }
  // A pod on `node` whose container "main" uses claim `claim`.
  void CreatePod(const std::string& name, const std::string& node, const std::string& claim) {
    Json pod = {
        {"apiVersion", "v1"},
        {"kind", "Pod"},
        {"metadata", {{"name", name}}},
        {"spec",
         {{"nodeSelector", {{"kubernetes.io/hostname", node}}},
          {"tolerations", Json::array({{{"key", "dra-it.tessera.dev/test"}, {"operator", "Exists"}, {"effect", "NoSchedule"}}})},
          {"resourceClaims", Json::array({{{"name", "gpu"}, {"resourceClaimName", claim}}})},
          {"containers", Json::array({{{"name", "main"}, {"image", "cuda-app"}, {"resources", {{"claims", Json::array({{{"name", "gpu"}}})}}}}})}}}};
    auto r = kube_->Create(kube::kPods, "default", pod);
    ASSERT_TRUE(r.ok()) << name << ": " << r.error().ToString();
    pods_.push_back(name);
  }
  bool WaitBound(const std::string& pod, double timeout_s = 60) {
    return Poll(timeout_s, [&] {
      auto p = kube_->Get(kube::kPods, "default", pod);
      return p.ok() && !(*p)["spec"].value("nodeName", "").empty();
    });
  }
  // The scheduler tried and found no room (PodScheduled=False, Unschedulable).
  bool WaitUnschedulable(const std::string& pod, double timeout_s = 60) {
    return Poll(timeout_s, [&] {
      auto p = kube_->Get(kube::kPods, "default", pod);
      if (!p.ok() || !(*p).contains("status")) return false;
      for (const auto& c : (*p)["status"].value("conditions", Json::array())) {
        if (c.value("type", "") == "PodScheduled" && c.value("status", "") == "False" &&
            c.value("reason", "") == "Unschedulable")
          return true;
      }
      return false;
    });
  }
  Json Claim(const std::string& name) {
    auto c = kube_->Get(kube::kResourceClaims, "default", name);
    return c.ok() ? *c : Json::object();
  }
  // Admits the pod on the node and checks its container's slice equals the claim's allocation.
  Json AdmitAndCheck(DraSimNode& node, const std::string& pod, const std::string& claim, const std::string& uuid,
                     int64_t memory_bytes, int cores, int priority) {
    int status = 0;
    Json a;
    // Like the kubelet's pod workers, retry while the plugin is unreachable (it may be restarting).
    Poll(30, [&] {
      a = node.Admit("default", pod, &status);
      const std::string e = a.value("error", "");
      return status != 422 ||
             (e.find("code = Unavailable") == std::string::npos && e.find("is not registered") == std::string::npos);
    });
    EXPECT_EQ(status, 200) << pod << ": " << a.dump() << "\n" << node.AgentLogTail();
    tessera::slice::SliceConfig cfg;
    std::string err;
    if (!node.SliceOf(a, "main", &cfg, &err)) {
      ADD_FAILURE() << pod << ": " << err;
      return a;
    }
    EXPECT_EQ(cfg.gpu_count, 1) << pod;
    EXPECT_EQ(std::string(cfg.gpus[0].uuid), uuid) << pod;
    EXPECT_EQ(cfg.gpus[0].memory_bytes, static_cast<uint64_t>(memory_bytes)) << pod;
    EXPECT_EQ(cfg.gpus[0].cores, cores) << pod;
    EXPECT_EQ(cfg.priority, priority) << pod;
    // And the claim's own record of what it consumes says the same.
    Json r = Claim(claim)["status"]["allocation"]["devices"]["results"][0];
    EXPECT_EQ(r.value("device", ""), kube::DraDeviceName(uuid)) << pod;
    auto mem = kube::Quantity::Parse(r["consumedCapacity"].value("memory", "0"));
    EXPECT_TRUE(mem.ok() && mem->Value() == memory_bytes) << pod << ": " << r.dump();
    bool env_ok = false;
    const Json& all = a["containers"][0]["edits"];
    for (auto it = all.begin(); it != all.end(); ++it) {
      if (!it->contains("env")) continue;
      for (const auto& e : (*it)["env"]) env_ok |= e == "NVIDIA_VISIBLE_DEVICES=" + uuid;
    }
    EXPECT_TRUE(env_ok) << pod << ": " << a.dump();
    return a;
  }

  std::shared_ptr<Client> kube_;
  std::string id_, class_;
  std::vector<std::string> pods_, claims_;
};

constexpr int64_t kGiB = 1ll << 30;

TEST_F(DraIntegration, ClaimsShareOneGpuUpToItsMemoryAndCoresAndNoFurther) {
  const std::string uuid = "GPU-dra" + id_ + "-0";
  DraSimNode node(kube_, "dra-share-" + id_, {{uuid, "NVIDIA A100-SXM4-80GB", 16384, 0}});
  ASSERT_EQ(node.error(), "");
  ASSERT_TRUE(node.WaitRegistered(60)) << node.AgentLogTail();
  ASSERT_TRUE(node.WaitSlice(30, [](const Json& s) { return s["spec"]["devices"].size() == 1; }));

  CreateClaim("a-" + id_, {"6Gi", "30", {}, 0});
  CreatePod("a-" + id_, node.name(), "a-" + id_);
  ASSERT_TRUE(WaitBound("a-" + id_));
  CreateClaim("b-" + id_, {"6Gi", "30", {}, -1});
  CreatePod("b-" + id_, node.name(), "b-" + id_);
  ASSERT_TRUE(WaitBound("b-" + id_));
  // 18 GiB of 16: memory is full.
  CreateClaim("c-" + id_, {"6Gi", "10", {}, -1});
  CreatePod("c-" + id_, node.name(), "c-" + id_);
  // 110 cores of 100: compute is full.
  CreateClaim("d-" + id_, {"2Gi", "50", {}, -1});
  CreatePod("d-" + id_, node.name(), "d-" + id_);
  EXPECT_TRUE(WaitUnschedulable("c-" + id_));
  EXPECT_TRUE(WaitUnschedulable("d-" + id_));
  // Exactly the rest of both fits.
  CreateClaim("e-" + id_, {"4Gi", "40", {}, -1});
  CreatePod("e-" + id_, node.name(), "e-" + id_);
  ASSERT_TRUE(WaitBound("e-" + id_));
  // Nothing is left: a claim that names no capacity wants the whole card and stays pending.
  CreateClaim("f-" + id_, {"", "", {}, -1});
  CreatePod("f-" + id_, node.name(), "f-" + id_);
  EXPECT_TRUE(WaitUnschedulable("f-" + id_));
  for (const char* p : {"c-", "d-", "f-"}) {
    auto pod = kube_->Get(kube::kPods, "default", p + id_);
    ASSERT_TRUE(pod.ok());
    EXPECT_EQ((*pod)["spec"].value("nodeName", ""), "") << p;
  }

  AdmitAndCheck(node, "a-" + id_, "a-" + id_, uuid, 6 * kGiB, 30, 0);
  AdmitAndCheck(node, "b-" + id_, "b-" + id_, uuid, 6 * kGiB, 30, 1);
  AdmitAndCheck(node, "e-" + id_, "e-" + id_, uuid, 4 * kGiB, 40, 1);

  // The pod ends: the claim is unprepared, its slice and CDI spec go.
  const Json a = Claim("a-" + id_);
  const std::string uid = a["metadata"].value("uid", "");
  EXPECT_TRUE(std::filesystem::exists(node.root() / "state" / "slices" / ("claim-" + uid)));
  EXPECT_EQ(node.Remove("default", "a-" + id_), 200);
  EXPECT_FALSE(std::filesystem::exists(node.root() / "state" / "slices" / ("claim-" + uid)));
  EXPECT_FALSE(std::filesystem::exists(node.root() / "cdi" / ("gpu.tessera.io-" + uid + ".json")));
}

TEST_F(DraIntegration, CelSelectorsPickTheGpuAndAnUnhealthyGpuIsTaintedOutOfScheduling) {
  const std::string a100 = "GPU-dra" + id_ + "-a", t4 = "GPU-dra" + id_ + "-t";
  std::vector<DraSimGpu> gpus = {{a100, "NVIDIA A100-SXM4-80GB", 81920, 0}, {t4, "Tesla T4", 15360, 1}};
  DraSimNode node(kube_, "dra-sel-" + id_, gpus);
  ASSERT_EQ(node.error(), "");
  ASSERT_TRUE(node.WaitRegistered(60)) << node.AgentLogTail();
  ASSERT_TRUE(node.WaitSlice(30, [](const Json& s) { return s["spec"]["devices"].size() == 2; }));

  CreateClaim("model-" + id_, {"1Gi", "10", {"device.attributes[\"gpu.tessera.io\"].model == \"Tesla T4\""}, -1});
  CreatePod("model-" + id_, node.name(), "model-" + id_);
  CreateClaim("mem-" + id_, {"1Gi", "10", {"device.capacity[\"gpu.tessera.io\"].memory.compareTo(quantity(\"40Gi\")) >= 0"}, -1});
  CreatePod("mem-" + id_, node.name(), "mem-" + id_);
  CreateClaim("uuid-" + id_, {"1Gi", "10", {"device.attributes[\"gpu.tessera.io\"].uuid == \"" + t4 + "\" && device.attributes[\"gpu.tessera.io\"].numaNode == 1 && device.attributes[\"gpu.tessera.io\"].computeCapability == \"8.0\""}, -1});
  CreatePod("uuid-" + id_, node.name(), "uuid-" + id_);
  for (const char* p : {"model-", "mem-", "uuid-"}) ASSERT_TRUE(WaitBound(p + id_)) << p;
  AdmitAndCheck(node, "model-" + id_, "model-" + id_, t4, kGiB, 10, 1);
  AdmitAndCheck(node, "mem-" + id_, "mem-" + id_, a100, kGiB, 10, 1);
  AdmitAndCheck(node, "uuid-" + id_, "uuid-" + id_, t4, kGiB, 10, 1);

  // The T4 fails: its device is republished with a NoSchedule taint and takes no new claim.
  gpus[1].healthy = false;
  node.SetGpus(gpus);
  ASSERT_TRUE(node.WaitSlice(30, [&](const Json& s) {
    for (const auto& d : s["spec"]["devices"]) {
      if (d.value("name", "") == kube::DraDeviceName(t4)) return d.contains("taints");
    }
    return false;
  })) << node.AgentLogTail();
  CreateClaim("late-" + id_, {"1Gi", "10", {"device.attributes[\"gpu.tessera.io\"].model == \"Tesla T4\""}, -1});
  CreatePod("late-" + id_, node.name(), "late-" + id_);
  EXPECT_TRUE(WaitUnschedulable("late-" + id_));
  // It recovers: the taint goes and the waiting claim is placed.
  gpus[1].healthy = true;
  node.SetGpus(gpus);
  EXPECT_TRUE(WaitBound("late-" + id_, 90)) << node.AgentLogTail();
}

TEST_F(DraIntegration, PreparedClaimsSurviveKubeletAndAgentRestarts) {
  const std::string uuid = "GPU-dra" + id_ + "-r";
  DraSimNode node(kube_, "dra-restart-" + id_, {{uuid, "NVIDIA A100-SXM4-80GB", 40960, 0}});
  ASSERT_EQ(node.error(), "");
  ASSERT_TRUE(node.WaitRegistered(60)) << node.AgentLogTail();
  CreateClaim("x-" + id_, {"8Gi", "25", {}, 0});
  CreatePod("x-" + id_, node.name(), "x-" + id_);
  ASSERT_TRUE(WaitBound("x-" + id_));
  Json before = AdmitAndCheck(node, "x-" + id_, "x-" + id_, uuid, 8 * kGiB, 25, 0);

  // The kubelet restarts: the plugin is found again through its registration socket.
  node.RestartKubelet();
  ASSERT_TRUE(node.WaitRegistered(60)) << node.AgentLogTail();
  // The agent is killed and restarted: it answers from its checkpoint.
  node.KillAgent(SIGKILL);
  node.StartAgent();
  ASSERT_TRUE(node.WaitRegistered(60)) << node.AgentLogTail();

  CreateClaim("y-" + id_, {"16Gi", "50", {}, -1});
  CreatePod("y-" + id_, node.name(), "y-" + id_);
  ASSERT_TRUE(WaitBound("y-" + id_));
  AdmitAndCheck(node, "y-" + id_, "y-" + id_, uuid, 16 * kGiB, 50, 1);
  // The pod prepared before both restarts is unprepared by the new agent.
  const std::string uid = Claim("x-" + id_)["metadata"].value("uid", "");
  EXPECT_TRUE(Poll(30, [&] { return node.Remove("default", "x-" + id_) == 200; }));
  EXPECT_FALSE(std::filesystem::exists(node.root() / "state" / "slices" / ("claim-" + uid))) << node.AgentLogTail();
  EXPECT_TRUE(node.WaitSlice(5, [](const Json& s) { return s["spec"]["pool"].value("generation", 0) == 1; }));
}

}  // namespace

namespace {

// 1,000 pods with claims of random size onto 50 simulated nodes (4 GPUs of 16 GiB each), through a
// kube-scheduler of their own that is restarted mid-burst while five agents are killed and restarted;
// every bound pod is admitted by its node's kubelet DRA manager. At the end no GPU's memory or cores are
// over-committed and every container's slice equals its claim's consumed capacity.
TEST_F(DraIntegration, ThousandPodsFiftyNodesSchedulerAndAgentRestarts) {
  constexpr int kNodes = 50, kGpus = 4, kPods = 1000;
  const std::string sched = "dra-burst-" + id_;
  const std::string state = Env("TESSERA_KUBE_STATE");
  const std::string start = Env("TESSERA_SOURCE_DIR") + "/test/kube/start-scheduler --state " + state;
  const std::string config = "/tmp/" + sched + ".yaml";
  {
    std::ofstream f(config);
    f << "apiVersion: kubescheduler.config.k8s.io/v1\nkind: KubeSchedulerConfiguration\n"
         "clientConnection: {kubeconfig: \"@KUBECONFIG@\", qps: 500, burst: 1000}\n"
         "leaderElection: {leaderElect: false}\nprofiles:\n- schedulerName: "
      << sched << "\n";
  }
  ASSERT_EQ(std::system((start + " --name " + sched + " --config " + config + " >/dev/null").c_str()), 0);
  std::vector<std::unique_ptr<DraSimNode>> nodes;
  std::map<std::string, DraSimNode*> by_name;
  for (int n = 0; n < kNodes; ++n) {
    std::vector<DraSimGpu> gpus;
    for (int g = 0; g < kGpus; ++g) {
      gpus.push_back({"GPU-b" + id_ + "-" + std::to_string(n) + "-" + std::to_string(g), "NVIDIA A100-SXM4-80GB",
                      16384, g / 2});
    }
    nodes.push_back(std::make_unique<DraSimNode>(kube_, "dra-b" + id_ + "-" + std::to_string(n), gpus, sched));
    ASSERT_EQ(nodes.back()->error(), "");
    by_name[nodes.back()->name()] = nodes.back().get();
  }
  for (auto& n : nodes) ASSERT_TRUE(n->WaitRegistered(120)) << n->name() << n->AgentLogTail();

  std::mt19937 rng(42);
  std::vector<std::string> names;
  auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < kPods; ++i) {
    const std::string name = "b" + id_ + "-" + std::to_string(i);
    // 1..4 GiB and 5..20 % each: the 200 GPUs (3,200 GiB, 20,000 %) hold them all, with room to spare.
    CreateClaim(name, {std::to_string(1 + rng() % 4) + "Gi", std::to_string(5 + rng() % 16), {}, -1});
    Json pod = {{"apiVersion", "v1"},
                {"kind", "Pod"},
                {"metadata", {{"name", name}}},
                {"spec",
                 {{"schedulerName", sched},
                  {"nodeSelector", {{"dra-it.tessera.dev/group", sched}}},
                  {"tolerations", Json::array({{{"key", "dra-it.tessera.dev/test"}, {"operator", "Exists"}}})},
                  {"resourceClaims", Json::array({{{"name", "gpu"}, {"resourceClaimName", name}}})},
                  {"containers", Json::array({{{"name", "main"}, {"image", "x"}, {"resources", {{"claims", Json::array({{{"name", "gpu"}}})}}}}})}}}};
    auto r = kube_->Create(kube::kPods, "default", pod);
    ASSERT_TRUE(r.ok()) << r.error().ToString();
    pods_.push_back(name);
    names.push_back(name);
    if (i == kPods / 3) {
      // Mid-burst: the scheduler restarts, five agents are killed (SIGKILL) and started again.
      ASSERT_EQ(std::system((start + " --stop " + sched + " >/dev/null").c_str()), 0);
      for (int k = 0; k < 5; ++k) nodes[k * 10]->KillAgent(SIGKILL);
      ASSERT_EQ(std::system((start + " --name " + sched + " --config " + config + " >/dev/null").c_str()), 0);
      for (int k = 0; k < 5; ++k) nodes[k * 10]->StartAgent();
    }
  }
  std::map<std::string, std::string> bound;  // pod → node
  ASSERT_TRUE(Poll(300, [&] {
    kube::ListOptions lo;
    lo.label_selector = "";
    auto list = kube_->List(kube::kPods, "default");
    if (!list.ok()) return false;
    for (const auto& p : list->items) {
      const std::string node = p["spec"].value("nodeName", "");
      if (!node.empty() && by_name.count(node)) bound[kube::Name(p)] = node;
    }
    return bound.size() == names.size();
  })) << bound.size() << " of " << names.size() << " bound";
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::fprintf(stderr, "dra burst: %d pods bound in %.1f s (%.0f pods/s, scheduler restarted once)\n", kPods, secs,
               kPods / secs);

  // No over-commit: per device, the claims' consumed capacity fits.
  std::map<std::string, std::pair<int64_t, int64_t>> used;  // "<pool>/<device>" → memory bytes, cores
  for (const auto& name : names) {
    Json r = Claim(name)["status"]["allocation"]["devices"]["results"][0];
    auto mem = kube::Quantity::Parse(r["consumedCapacity"].value("memory", "0"));
    auto cores = kube::Quantity::Parse(r["consumedCapacity"].value("cores", "0"));
    ASSERT_TRUE(mem.ok() && cores.ok()) << r.dump();
    auto& u = used[r.value("pool", "") + "/" + r.value("device", "")];
    u.first += mem->Value();
    u.second += cores->Value();
  }
  for (const auto& [dev, u] : used) {
    EXPECT_LE(u.first, 16 * kGiB) << dev;
    EXPECT_LE(u.second, 100) << dev;
  }
  // Every pod admitted on its node; its slice equals its claim.
  int admitted = 0;
  for (const auto& name : names) {
    DraSimNode& node = *by_name[bound[name]];
    Json r = Claim(name)["status"]["allocation"]["devices"]["results"][0];
    auto mem = kube::Quantity::Parse(r["consumedCapacity"].value("memory", "0"));
    auto cores = kube::Quantity::Parse(r["consumedCapacity"].value("cores", "0"));
    std::string uuid;
    for (int g = 0; g < kGpus; ++g) {
      std::string u = "GPU-b" + id_ + "-" + node.name().substr(node.name().rfind('-') + 1) + "-" + std::to_string(g);
      if (kube::DraDeviceName(u) == r.value("device", "")) uuid = u;
    }
    ASSERT_FALSE(uuid.empty()) << r.dump();
    AdmitAndCheck(node, name, name, uuid, mem->Value(), static_cast<int>(cores->Value()), 1);
    ++admitted;
    if (HasFailure()) break;
  }
  EXPECT_EQ(admitted, kPods);
  std::system((start + " --stop " + sched + " >/dev/null").c_str());
  std::remove(config.c_str());
}

}  // namespace
