// `tessera agent` against the kubelet's own device manager (test/kube harness) and a real API server.
//
// Each test starts its own harness(es) and agent process(es) on simulated GPUs, creates Nodes and
// Pods (bound directly, annotated as tessera-scheduler does at bind time), admits the pods through the
// harness exactly as a kubelet would, and checks what each container would receive.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <gtest/gtest.h>
#include <httplib.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <future>
#include <random>
#include <sstream>
#include <thread>

#include "kube/client.h"
#include "kube/config.h"
#include "slice/config.h"

extern char** environ;

namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using tessera::kube::Client;

std::string Env(const char* k) {
  const char* v = std::getenv(k);
  return v ? v : "";
}

std::string RandomId() {
  std::random_device rd;
  std::mt19937_64 rng(rd());
  // Hex only: the ids also make up simulated GPU UUIDs.
  const char* a = "0123456789abcdef";
  std::string s;
  for (int i = 0; i < 6; ++i) s += a[rng() % 16];
  return s;
}

bool Eventually(const std::function<bool()>& cond, std::chrono::milliseconds timeout = std::chrono::seconds(30)) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    if (cond()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return cond();
}

int FreePort() {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(addr);
  int port = 0;
  if (bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0 &&
      getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0) {
    port = ntohs(addr.sin_port);
  }
  close(fd);
  return port;
}

// A child process; stdout to a pipe (read line by line), stderr to a log file.
class Proc {
 public:
  Proc(std::vector<std::string> argv, const fs::path& log) {
    int out[2];
    EXPECT_EQ(pipe(out), 0);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, out[1], 1);
    posix_spawn_file_actions_addclose(&fa, out[0]);
    posix_spawn_file_actions_addopen(&fa, 2, log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    std::vector<char*> args;
    for (auto& a : argv) args.push_back(a.data());
    args.push_back(nullptr);
    int rc = posix_spawnp(&pid_, args[0], &fa, nullptr, args.data(), environ);
    EXPECT_EQ(rc, 0) << "cannot start " << argv[0];
    posix_spawn_file_actions_destroy(&fa);
    close(out[1]);
    out_ = fdopen(out[0], "r");
  }
  ~Proc() { Kill(SIGTERM); }
  std::string ReadLine() {
    char buf[1024];
    if (!out_ || !fgets(buf, sizeof(buf), out_)) return "";
    std::string s(buf);
    while (!s.empty() && (s.back() == '\n' || s.back() == '\r')) s.pop_back();
    return s;
  }
  void Kill(int sig) {
    if (pid_ <= 0) return;
    kill(pid_, sig);
    int status;
    waitpid(pid_, &status, 0);
    pid_ = -1;
    if (out_) fclose(out_);
    out_ = nullptr;
  }
  bool Alive() const { return pid_ > 0 && kill(pid_, 0) == 0; }

 private:
  pid_t pid_ = -1;
  FILE* out_ = nullptr;
};

json HttpJson(httplib::Client& c, const std::string& method, const std::string& path, const json& body = nullptr,
              int* status = nullptr) {
  httplib::Result r = method == "GET" ? c.Get(path.c_str())
                      : method == "POST" ? c.Post(path.c_str(), body.is_null() ? "" : body.dump(), "application/json")
                                         : c.Delete(path.c_str());
  if (status) *status = r ? r->status : 0;
  if (!r) return json{{"error", "no response"}};
  return json::parse(r->body, nullptr, false);
}

// One simulated GPU node: a Node object, a device-manager harness playing its kubelet, and an agent.
class SimNode {
 public:
  SimNode(std::shared_ptr<Client> kube, const std::string& name, const std::string& gpus_yaml, int split)
      : kube_(std::move(kube)), name_(name), split_(split) {
    root_ = fs::path("/tmp") / ("tdm-" + RandomId());  // short: unix socket paths are limited
    fs::create_directories(root_);
    std::ofstream(root_ / "gpus.yaml") << gpus_yaml;
    std::ofstream(root_ / "libtessera.so") << "placeholder for the shim";
    json node = {{"apiVersion", "v1"},
                 {"kind", "Node"},
                 {"metadata", {{"name", name_}, {"labels", {{"agent-it", "true"}}}}},
                 {"spec", {{"taints", json::array({{{"key", "agent-it.tessera.dev/test"}, {"value", name_},
                                                    {"effect", "NoSchedule"}}})}}}};
    auto r = kube_->Create(tessera::kube::kNodes, "", node);
    EXPECT_TRUE(r.ok()) << r.error().ToString();
    StartHarness();
    StartAgent();
  }
  ~SimNode() {
    agent_.reset();
    harness_.reset();
    kube_->Delete(tessera::kube::kNodes, "", name_);
    if (::testing::Test::HasFailure()) {
      std::ifstream in(root_ / "agent.log");
      std::stringstream ss;
      ss << in.rdbuf();
      std::string log = ss.str();
      if (log.size() > 6000) log = log.substr(log.size() - 6000);
      std::fprintf(stderr, "---- agent log of %s ----\n%s\n", name_.c_str(), log.c_str());
    }
    fs::remove_all(root_);
  }

  void StartHarness() {
    harness_ = std::make_unique<Proc>(
        std::vector<std::string>{Env("TESSERA_KUBE_BIN") + "/kubelet-devicemanager", "--root", root_.string(),
                                 "--kubeconfig", Env("TESSERA_KUBECONFIG"), "--node-name", name_},
        root_ / "harness.log");
    std::string line = harness_->ReadLine();
    ASSERT_EQ(line.rfind("ready http://", 0), 0u) << "harness said: " << line;
    url_ = line.substr(6);
    http_ = std::make_unique<httplib::Client>(url_);
    http_->set_read_timeout(60, 0);
  }
  void StartAgent() {
    metrics_port_ = FreePort();
    agent_ = std::make_unique<Proc>(
        std::vector<std::string>{Env("TESSERA_BINARY_DIR") + "/src/cli/tessera", "agent", "--node", name_,
                                 "--kubeconfig", Env("TESSERA_KUBECONFIG"), "--backend", "sim", "--sim-config",
                                 (root_ / "gpus.yaml").string(), "--kubelet-dir", root_.string(), "--state-dir",
                                 (root_ / "state").string(), "--shim", (root_ / "libtessera.so").string(),
                                 "--node-region-dir", (root_ / "node").string(), "--split",
                                 std::to_string(split_), "--metrics-port", std::to_string(metrics_port_),
                                 "--metrics-address", "127.0.0.1"},
        root_ / "agent.log");
  }
  void KillAgent() { agent_->Kill(SIGKILL); }

  json Resources() { return HttpJson(*http_, "GET", "/resources"); }
  json GpuResource() {
    for (const auto& r : Resources().value("resources", json::array())) {
      if (r["name"] == "nvidia.com/gpu") return r;
    }
    return json::object();
  }
  // Admits a pod from the API server, as the kubelet does once it sees the pod bound to it.
  json Admit(const std::string& ns, const std::string& pod, int* status) {
    return HttpJson(*http_, "POST", "/pods", {{"namespace", ns}, {"name", pod}, {"from_api", true}}, status);
  }
  json Restart() { return HttpJson(*http_, "POST", "/restart"); }
  std::string Metrics() {
    httplib::Client c("127.0.0.1", metrics_port_);
    auto r = c.Get("/metrics");
    return r && r->status == 200 ? r->body : "";
  }
  json NodeObj() {
    auto r = kube_->Get(tessera::kube::kNodes, "", name_);
    return r.ok() ? *r : json::object();
  }

  const std::string& name() const { return name_; }
  const fs::path& root() const { return root_; }

 private:
  std::shared_ptr<Client> kube_;
  std::string name_;
  int split_;
  fs::path root_;
  std::string url_;
  std::unique_ptr<httplib::Client> http_;
  std::unique_ptr<Proc> harness_, agent_;
  int metrics_port_ = 0;
};

std::string Gpus(const std::string& prefix, std::initializer_list<int> numas, int mib = 81920) {
  std::string y = "gpus:\n";
  int i = 0;
  for (int n : numas) {
    char uuid[64];
    std::snprintf(uuid, sizeof(uuid), "GPU-%s-0000-4000-8000-%012d", prefix.c_str(), i++);
    y += "  - {uuid: " + std::string(uuid) + ", model: NVIDIA A100-SXM4-80GB, memory_mib: " +
         std::to_string(mib) + ", numa: " + std::to_string(n) + "}\n";
  }
  return y;
}

std::string Uuid(const std::string& prefix, int i) {
  char uuid[64];
  std::snprintf(uuid, sizeof(uuid), "GPU-%s-0000-4000-8000-%012d", prefix.c_str(), i);
  return uuid;
}

// A pod as tessera-scheduler leaves it after bind: bound, annotated, allocation pending.
json BoundPod(const std::string& name, const std::string& node, const std::vector<std::vector<json>>& ctr_grants) {
  json containers = json::array();
  json devices = json::array();
  for (size_t i = 0; i < ctr_grants.size(); ++i) {
    json limits = json::object();
    if (!ctr_grants[i].empty()) limits["nvidia.com/gpu"] = std::to_string(ctr_grants[i].size());
    containers.push_back({{"name", "c" + std::to_string(i)}, {"image", "pause"}, {"resources", {{"limits", limits}}}});
    devices.push_back(ctr_grants[i]);
  }
  auto now = std::chrono::system_clock::to_time_t(std::chrono::system_clock::now());
  char ts[40];
  std::strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&now));
  return {{"apiVersion", "v1"},
          {"kind", "Pod"},
          {"metadata",
           {{"name", name},
            {"namespace", "default"},
            {"annotations",
             {{"tessera.dev/assigned-node", node},
              {"tessera.dev/devices", devices.dump()},
              {"tessera.dev/bind-time", ts},
              {"tessera.dev/allocation-state", "pending"},
              {"hami.io/bind-phase", "allocating"}}}}},
          {"spec",
           {{"nodeName", node},
            {"schedulerName", "tessera-scheduler"},
            {"tolerations", json::array({{{"operator", "Exists"}}})},
            {"containers", containers}}}};
}

json Grant(const std::string& uuid, int64_t mib, int cores) {
  return {{"uuid", uuid}, {"memory_mib", mib}, {"cores", cores}};
}

class AgentIntegration : public ::testing::Test {
 protected:
  void SetUp() override {
    signal(SIGPIPE, SIG_IGN);  // a killed agent must not take the test down with it
    if (Env("TESSERA_KUBECONFIG").empty()) GTEST_SKIP() << "needs the ctest fixture 'kube'";
    auto cfg = tessera::kube::LoadKubeconfig(Env("TESSERA_KUBECONFIG"));
    ASSERT_TRUE(cfg.ok()) << cfg.error().ToString();
    auto c = Client::Create(*cfg);
    ASSERT_TRUE(c.ok()) << c.error().ToString();
    kube_ = *c;
  }
  void TearDown() override {
    for (const auto& p : pods_) kube_->Request("DELETE", "/api/v1/namespaces/default/pods/" + p + "?gracePeriodSeconds=0");
  }
  void CreatePod(const json& pod) {
    auto r = kube_->Create(tessera::kube::kPods, "default", pod);
    ASSERT_TRUE(r.ok()) << r.error().ToString();
    pods_.push_back(pod["metadata"]["name"]);
  }
  std::string Annotation(const std::string& pod, const std::string& key) {
    auto r = kube_->Get(tessera::kube::kPods, "default", pod);
    return r.ok() ? tessera::kube::Annotation(*r, key) : "";
  }
  // The slice config a container was given, read through the host path of its mount.
  static bool ContainerSlice(const json& ctr, tessera::slice::SliceConfig* cfg) {
    for (const auto& m : ctr.value("mounts", json::array())) {
      if (m["container_path"] == "/run/tessera/slice.conf") {
        char err[256];
        return tessera::slice::LoadSliceConfig(m["host_path"].get<std::string>().c_str(), false, cfg, err, sizeof(err));
      }
    }
    return false;
  }
  // Every container of every admitted pod got exactly the slice its pod was assigned.
  void ExpectAllocationsMatch(const std::vector<std::pair<json, json>>& admitted) {
    for (const auto& [pod, answer] : admitted) {
      auto devices = json::parse(pod["metadata"]["annotations"]["tessera.dev/devices"].get<std::string>());
      ASSERT_TRUE(answer.contains("containers")) << answer.dump();
      for (size_t i = 0; i < answer["containers"].size(); ++i) {
        const auto& ctr = answer["containers"][i];
        const auto& want = devices[i];
        if (want.empty()) continue;
        tessera::slice::SliceConfig cfg;
        ASSERT_TRUE(ContainerSlice(ctr, &cfg)) << ctr.dump();
        ASSERT_EQ(cfg.gpu_count, static_cast<int>(want.size())) << pod["metadata"]["name"];
        std::string uuids;
        for (size_t g = 0; g < want.size(); ++g) {
          EXPECT_EQ(std::string(cfg.gpus[g].uuid), want[g]["uuid"]) << pod["metadata"]["name"];
          EXPECT_EQ(cfg.gpus[g].memory_bytes, want[g]["memory_mib"].get<uint64_t>() << 20) << pod["metadata"]["name"];
          EXPECT_EQ(cfg.gpus[g].cores, want[g]["cores"].get<int>()) << pod["metadata"]["name"];
          uuids += (g ? "," : "") + want[g]["uuid"].get<std::string>();
        }
        EXPECT_EQ(ctr["envs"]["NVIDIA_VISIBLE_DEVICES"], uuids);
      }
    }
  }

  std::shared_ptr<Client> kube_;
  std::vector<std::string> pods_;
};

TEST_F(AgentIntegration, RegistersAllocatesSurvivesKubeletRestartAndFollowsHealth) {
  const std::string id = RandomId();
  SimNode node(kube_, "agent-it-" + id, Gpus("aaaa" + id.substr(0, 4), {0, 1}), 4);
  if (HasFatalFailure()) return;
  const std::string g0 = Uuid("aaaa" + id.substr(0, 4), 0), g1 = Uuid("aaaa" + id.substr(0, 4), 1);

  // Registered: the kubelet sees 2 GPUs × 4.
  ASSERT_TRUE(Eventually([&] { return node.GpuResource().value("capacity", 0) == 8; })) << node.Resources().dump();
  EXPECT_EQ(node.GpuResource()["registrations"], 1);
  int numa1 = 0;
  const json resource = node.GpuResource();
  for (const auto& d : resource["devices"]) {
    if (d["id"].get<std::string>().rfind(g1, 0) == 0) {
      EXPECT_EQ(d["numa_nodes"], json::array({1})) << d.dump();
      ++numa1;
    }
  }
  EXPECT_EQ(numa1, 4);
  // Published on the Node.
  ASSERT_TRUE(Eventually([&] { return !tessera::kube::Annotation(node.NodeObj(), "tessera.dev/gpus").empty(); }));
  json n = node.NodeObj();
  auto gpus = json::parse(tessera::kube::Annotation(n, "tessera.dev/gpus"));
  ASSERT_EQ(gpus.size(), 2u);
  EXPECT_EQ(gpus[0]["uuid"], g0);
  EXPECT_EQ(gpus[1]["numa"], 1);
  EXPECT_EQ(gpus[1]["memory_mib"], 81920);
  EXPECT_EQ(n["metadata"]["labels"]["nvidia.com/gpu.present"], "true");
  EXPECT_EQ(n["status"]["capacity"]["nvidia.com/gpu"], "8");

  // Allocate: worker A of the seed (25 cores, 20 % of 80 GiB).
  auto pod = BoundPod("worker-a-" + id, node.name(), {{Grant(g1, 16384, 25)}});
  CreatePod(pod);
  int status = 0;
  json answer = node.Admit("default", pod["metadata"]["name"], &status);
  ASSERT_EQ(status, 200) << answer.dump();
  const json& ctr = answer["containers"][0];
  EXPECT_EQ(ctr["envs"]["NVIDIA_VISIBLE_DEVICES"], g1);
  EXPECT_EQ(ctr["envs"]["CUDA_VISIBLE_DEVICES"], g1);
  std::map<std::string, std::pair<std::string, bool>> mounts;
  for (const auto& m : ctr["mounts"]) mounts[m["container_path"]] = {m["host_path"], m["read_only"]};
  EXPECT_EQ(mounts.size(), 5u);
  EXPECT_TRUE(mounts["/run/tessera/slice.conf"].second);
  EXPECT_FALSE(mounts["/run/tessera/region"].second);
  EXPECT_EQ(mounts["/usr/local/lib/tessera/libtessera.so"],
            std::make_pair((node.root() / "libtessera.so").string(), true));
  EXPECT_TRUE(mounts["/etc/ld.so.preload"].second);
  EXPECT_FALSE(mounts["/run/tessera/node"].second);
  EXPECT_FALSE(ctr.contains("device_specs"));
  std::ifstream pre(mounts["/etc/ld.so.preload"].first);
  std::string line;
  std::getline(pre, line);
  EXPECT_EQ(line, "/usr/local/lib/tessera/libtessera.so");
  ExpectAllocationsMatch({{pod, answer}});
  EXPECT_EQ(Annotation(pod["metadata"]["name"], "tessera.dev/allocation-state"), "allocated");
  EXPECT_EQ(Annotation(pod["metadata"]["name"], "hami.io/bind-phase"), "success");

  // Verified through PodResources.
  const fs::path slice_dir = fs::path(mounts["/run/tessera/slice.conf"].first).parent_path();
  ASSERT_TRUE(Eventually([&] {
    std::ifstream in(slice_dir / "owner.json");
    std::stringstream ss;
    ss << in.rdbuf();
    auto j = json::parse(ss.str(), nullptr, false);
    return !j.is_discarded() && j.value("verified", false);
  }));

  // Metrics: HAMi's names with their labels, and ours.
  std::string metrics = node.Metrics();
  EXPECT_NE(metrics.find("vGPU_device_memory_limit_in_bytes{podnamespace=\"default\",podname=\"worker-a-" + id +
                         "\",ctrname=\"c0\",vdeviceid=\"0\",deviceuuid=\"" + g1 + "\"} 17179869184"),
            std::string::npos)
      << metrics;
  EXPECT_NE(metrics.find("tessera_slice_compute_cap_ratio{namespace=\"default\",pod=\"worker-a-" + id), std::string::npos);
  EXPECT_NE(metrics.find("HostGPUMemoryUsage{nodeid=\"" + node.name() + "\""), std::string::npos);

  // Kubelet restart: the agent registers again and keeps serving.
  json after = node.Restart();
  EXPECT_EQ(after["generation"], 2);
  ASSERT_TRUE(Eventually([&] {
    auto r = node.GpuResource();
    return r.value("registered_since_restart", false) && r.value("registrations", 0) == 2;
  })) << node.Resources().dump();
  auto pod2 = BoundPod("worker-b-" + id, node.name(), {{Grant(g0, 24576, 40)}});
  CreatePod(pod2);
  json answer2;
  ASSERT_TRUE(Eventually([&] {
    answer2 = node.Admit("default", pod2["metadata"]["name"], &status);
    return status == 200;
  })) << answer2.dump();
  ExpectAllocationsMatch({{pod2, answer2}});

  // Health: the simulator file marks GPU 1 unhealthy; the kubelet withdraws its devices.
  {
    std::ofstream out(node.root() / "gpus.yaml", std::ios::trunc);
    out << "gpus:\n  - {uuid: " << g0 << ", model: NVIDIA A100-SXM4-80GB, memory_mib: 81920, numa: 0}\n"
        << "  - {uuid: " << g1 << ", model: NVIDIA A100-SXM4-80GB, memory_mib: 81920, numa: 1, healthy: false}\n";
  }
  ASSERT_TRUE(Eventually([&] { return node.GpuResource().value("allocatable", 0) == 4; })) << node.Resources().dump();
  ASSERT_TRUE(Eventually([&] {
    auto g = json::parse(tessera::kube::Annotation(node.NodeObj(), "tessera.dev/gpus"), nullptr, false);
    return !g.is_discarded() && g.size() == 2 && g[1]["healthy"] == false;
  }));
  EXPECT_NE(node.Metrics().find("tessera_gpu_healthy{node=\"" + node.name() + "\",gpu_uuid=\"" + g1 + "\",gpu_index=\"1\","),
            std::string::npos);
}

// Two simulated nodes with four GPUs each on two NUMA nodes; a burst of mixed pods onto each, with the
// agent of one node killed half-way; every container gets exactly its pod's slice, no node-wide lock.
TEST_F(AgentIntegration, TwoNumaNodesBurstWithAgentKilledOnce) {
  const std::string id = RandomId();
  const std::string pa = "bbbb" + id.substr(0, 4), pb = "cccc" + id.substr(0, 4);
  SimNode a(kube_, "agent-it-a-" + id, Gpus(pa, {0, 0, 1, 1}), 10);
  if (HasFatalFailure()) return;
  SimNode b(kube_, "agent-it-b-" + id, Gpus(pb, {0, 0, 1, 1}), 10);
  if (HasFatalFailure()) return;
  ASSERT_TRUE(Eventually([&] { return a.GpuResource().value("capacity", 0) == 40; }));
  ASSERT_TRUE(Eventually([&] { return b.GpuResource().value("capacity", 0) == 40; }));
  for (SimNode* n : {&a, &b}) {
    ASSERT_TRUE(Eventually([&] { return !tessera::kube::Annotation(n->NodeObj(), "tessera.dev/gpus").empty(); }));
    auto gpus = json::parse(tessera::kube::Annotation(n->NodeObj(), "tessera.dev/gpus"));
    ASSERT_EQ(gpus.size(), 4u);
    EXPECT_EQ(gpus[0]["numa"], 0);
    EXPECT_EQ(gpus[3]["numa"], 1);
  }

  // Mixed requests: single-GPU slices of several sizes (identical ones too), a two-GPU container on
  // NUMA 1, a pod with two GPU containers and a CPU-only sidecar.
  auto make = [&](const std::string& prefix, const std::string& node, int i) {
    const std::string name = "burst-" + node.substr(node.size() - 8) + "-" + std::to_string(i);
    switch (i % 5) {
      case 0: return BoundPod(name, node, {{Grant(Uuid(prefix, i % 4), 8192, 25)}});
      case 1: return BoundPod(name, node, {{Grant(Uuid(prefix, (i + 1) % 4), 4096 * (1 + i % 3), 10 + i)}});
      case 2: return BoundPod(name, node, {{Grant(Uuid(prefix, 2), 2048, 5), Grant(Uuid(prefix, 3), 2048, 5)}});
      case 3: return BoundPod(name, node, {{Grant(Uuid(prefix, 0), 1024, 20)}, {}, {Grant(Uuid(prefix, 1), 3072, 30)}});
      default: return BoundPod(name, node, {{Grant(Uuid(prefix, i % 4), 8192, 25)}});
    }
  };
  const int per_node = 20;  // uses 28 of each node's 40 devices
  std::vector<json> pods_a, pods_b;
  for (int i = 0; i < per_node; ++i) {
    pods_a.push_back(make(pa, a.name(), i));
    pods_b.push_back(make(pb, b.name(), i));
  }
  for (const auto& p : pods_a) CreatePod(p);
  for (const auto& p : pods_b) CreatePod(p);

  // Node b's pods are admitted concurrently with node a's; node a's agent is killed half-way and
  // restarted, as a DaemonSet would.
  auto started = std::chrono::steady_clock::now();
  auto admit_all = [](SimNode* n, const std::vector<json>& pods, size_t from, size_t to) {
    std::vector<std::pair<json, json>> out;
    for (size_t i = from; i < to; ++i) {
      int status = 0;
      json ans;
      // While the agent is down the kubelet refuses the pod; it retries, as the kubelet's pod workers do.
      bool ok = Eventually([&] {
        ans = n->Admit("default", pods[i]["metadata"]["name"], &status);
        return status == 200;
      }, std::chrono::seconds(60));
      EXPECT_TRUE(ok) << pods[i]["metadata"]["name"] << ": " << ans.dump();
      out.emplace_back(pods[i], ans);
    }
    return out;
  };
  auto fut_b = std::async(std::launch::async, admit_all, &b, pods_b, 0, pods_b.size());
  auto first_a = admit_all(&a, pods_a, 0, per_node / 2);
  a.KillAgent();
  a.StartAgent();
  auto second_a = admit_all(&a, pods_a, per_node / 2, per_node);
  auto all_b = fut_b.get();
  double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  std::printf("admitted %d pods on two nodes (agent of one killed once) in %.2f s\n", 2 * per_node, seconds);

  for (SimNode* n : {&a, &b}) {
    std::istringstream lines(n->Metrics());
    std::string line;
    while (std::getline(lines, line)) {
      if (line.rfind("tessera_agent_", 0) == 0) std::printf("%s\n", line.c_str());
    }
  }
  ExpectAllocationsMatch(first_a);
  ExpectAllocationsMatch(second_a);
  ExpectAllocationsMatch(all_b);
  for (const auto* list : {&pods_a, &pods_b}) {
    for (const auto& p : *list) {
      EXPECT_EQ(Annotation(p["metadata"]["name"], "tessera.dev/allocation-state"), "allocated") << p["metadata"]["name"];
    }
  }
}

}  // namespace
