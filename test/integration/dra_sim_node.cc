#include "dra_sim_node.h"

#include <fcntl.h>
#include <httplib.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <random>
#include <sstream>
#include <thread>

#include "kube/resource_slice.h"

extern char** environ;

namespace tessera::itest {

namespace fs = std::filesystem;
using kube::Json;

namespace {

std::string Env(const char* k) {
  const char* v = std::getenv(k);
  return v ? v : "";
}

pid_t Spawn(const std::vector<std::string>& argv, const fs::path& out, const fs::path& err) {
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 1, out.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  posix_spawn_file_actions_addopen(&fa, 2, err.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  pid_t pid = -1;
  if (posix_spawnp(&pid, args[0], &fa, nullptr, args.data(), environ) != 0) pid = -1;
  posix_spawn_file_actions_destroy(&fa);
  return pid;
}

void Reap(pid_t* pid, int sig) {
  if (*pid <= 0) return;
  kill(*pid, sig);
  int status;
  waitpid(*pid, &status, 0);
  *pid = -1;
}

std::string ReadFile(const fs::path& p) {
  std::ifstream in(p);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

bool Poll(double timeout_s, const std::function<bool()>& cond) {
  auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(timeout_s);
  while (std::chrono::steady_clock::now() < deadline) {
    if (cond()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return cond();
}

std::string RandomId() {
  std::random_device rd;
  std::mt19937_64 rng(rd());
  const char* hex = "0123456789abcdef";
  std::string s;
  for (int i = 0; i < 6; ++i) s += hex[rng() % 16];
  return s;
}

}  // namespace

DraSimNode::DraSimNode(std::shared_ptr<kube::Client> kube, std::string node, std::vector<DraSimGpu> gpus,
                       const std::string& group)
    : kube_(std::move(kube)), node_(std::move(node)), gpus_(std::move(gpus)) {
  signal(SIGPIPE, SIG_IGN);
  root_ = fs::path("/tmp") / ("tdr-" + RandomId());  // short: unix socket paths are limited
  fs::create_directories(root_ / "cdi");
  WriteGpus();
  std::ofstream(root_ / "libtessera.so") << "placeholder: the agent only mounts this path\n";
  Json node_obj = {{"apiVersion", "v1"},
                   {"kind", "Node"},
                   {"metadata", {{"name", node_}, {"labels", {{"kubernetes.io/hostname", node_}}}}},
                   {"spec",
                    {{"taints", Json::array({{{"key", "dra-it.tessera.dev/test"}, {"value", node_},
                                              {"effect", "NoSchedule"}}})}}}};
  if (!group.empty()) node_obj["metadata"]["labels"]["dra-it.tessera.dev/group"] = group;
  auto r = kube_->Create(kube::kNodes, "", node_obj);
  if (!r.ok()) {
    error_ = "create node " + node_ + ": " + r.error().ToString();
    return;
  }
  // Pods need a Ready node with room for pods; no kubelet reports that here.
  Json status = {{"status",
                  {{"capacity", {{"cpu", "64"}, {"memory", "256Gi"}, {"pods", "500"}}},
                   {"allocatable", {{"cpu", "64"}, {"memory", "256Gi"}, {"pods", "500"}}},
                   {"conditions", Json::array({{{"type", "Ready"}, {"status", "True"}}})}}}};
  kube_->PatchStatus(kube::kNodes, "", node_, status);
  harness_ = Spawn({Env("TESSERA_KUBE_BIN") + "/kubelet-dramanager", "--root", root_.string(), "--cdi-dir",
                    (root_ / "cdi").string(), "--kubeconfig", Env("TESSERA_KUBECONFIG"), "--node-name", node_},
                   root_ / "harness.out", root_ / "harness.log");
  if (harness_ <= 0) {
    error_ = "cannot start kubelet-dramanager (TESSERA_KUBE_BIN=" + Env("TESSERA_KUBE_BIN") + ")";
    return;
  }
  if (!Poll(60, [&] { return ReadFile(root_ / "harness.out").rfind("ready http://", 0) == 0; })) {
    error_ = "harness not ready: " + ReadFile(root_ / "harness.log");
    return;
  }
  std::string line = ReadFile(root_ / "harness.out");
  harness_url_ = line.substr(6, line.find('\n') - 6);
  StartAgent();
}

DraSimNode::~DraSimNode() {
  Reap(&agent_, SIGTERM);
  Reap(&harness_, SIGTERM);
  kube_->Delete(kube::kResourceSlices, "", kube::DraSliceName(node_));
  kube_->Delete(kube::kNodes, "", node_);
  std::error_code ec;
  if (!std::getenv("AGENT_ITEST_KEEP")) fs::remove_all(root_, ec);
}

void DraSimNode::WriteGpus() {
  std::ofstream y(root_ / "gpus.yaml.tmp");
  y << "gpus:\n";
  for (const auto& g : gpus_) {
    y << "  - {uuid: " << g.uuid << ", model: \"" << g.model << "\", memory_mib: " << g.memory_mib
      << ", numa: " << g.numa << ", healthy: " << (g.healthy ? "true" : "false")
      << ", compute_capability: \"8.0\", driver_version: \"570.86.15\"}\n";
  }
  y.close();
  fs::rename(root_ / "gpus.yaml.tmp", root_ / "gpus.yaml");
}

void DraSimNode::SetGpus(std::vector<DraSimGpu> gpus) {
  gpus_ = std::move(gpus);
  WriteGpus();
}

void DraSimNode::StartAgent() {
  agent_ = Spawn({Env("TESSERA_BINARY_DIR") + "/src/cli/tessera", "agent", "--mode", "dra", "--node", node_,
                  "--kubeconfig", Env("TESSERA_KUBECONFIG"), "--backend", "sim", "--sim-config",
                  (root_ / "gpus.yaml").string(), "--kubelet-dir", root_.string(), "--cdi-dir",
                  (root_ / "cdi").string(), "--state-dir", (root_ / "state").string(), "--shim",
                  (root_ / "libtessera.so").string(), "--node-region-dir", (root_ / "node").string(),
                  "--metrics-port", "0"},
                 "/dev/null", root_ / "agent.log");
  if (agent_ <= 0) error_ = "cannot start tessera agent (TESSERA_BINARY_DIR=" + Env("TESSERA_BINARY_DIR") + ")";
}

void DraSimNode::KillAgent(int sig) { Reap(&agent_, sig); }

std::string DraSimNode::Http(const std::string& method, const std::string& path, const std::string& body,
                             int* status) {
  httplib::Client c(harness_url_);
  c.set_read_timeout(60, 0);
  httplib::Result r = method == "GET"    ? c.Get(path.c_str())
                      : method == "POST" ? c.Post(path.c_str(), body, "application/json")
                                         : c.Delete(path.c_str());
  if (status) *status = r ? r->status : 0;
  return r ? r->body : "";
}

bool DraSimNode::WaitRegistered(double timeout_s) {
  return Poll(timeout_s, [&] {
    Json j = Json::parse(Http("GET", std::string("/plugins/") + kube::kDraDriver, "", nullptr), nullptr, false);
    return j.is_object() && j.value("registered", false);
  });
}

bool DraSimNode::WaitSlice(double timeout_s, const std::function<bool(const Json&)>& cond) {
  return Poll(timeout_s, [&] {
    auto s = kube_->Get(kube::kResourceSlices, "", kube::DraSliceName(node_));
    return s.ok() && cond(*s);
  });
}

Json DraSimNode::RestartKubelet() { return Json::parse(Http("POST", "/restart", "", nullptr), nullptr, false); }

Json DraSimNode::Admit(const std::string& ns, const std::string& pod, int* status) {
  Json body = {{"namespace", ns}, {"name", pod}};
  return Json::parse(Http("POST", "/pods", body.dump(), status), nullptr, false);
}

int DraSimNode::Remove(const std::string& ns, const std::string& pod) {
  int status = 0;
  Http("DELETE", "/pods/" + ns + "/" + pod, "", &status);
  return status;
}

bool DraSimNode::SliceOf(const Json& admitted, const std::string& container, slice::SliceConfig* cfg,
                         std::string* error) const {
  if (!admitted.is_object() || !admitted.contains("containers")) {
    *error = "not admitted: " + admitted.dump();
    return false;
  }
  for (const auto& c : admitted["containers"]) {
    if (c.value("name", "") != container) continue;
    std::string conf;
    if (!c.contains("edits") || !c["edits"].is_object()) continue;
    for (auto it = c["edits"].begin(); it != c["edits"].end(); ++it) {
      if (!it->contains("mounts")) continue;
      for (const auto& m : (*it)["mounts"]) {
        if (m.value("containerPath", "") == "/run/tessera/slice.conf") conf = m.value("hostPath", "");
      }
    }
    if (conf.empty()) {
      *error = container + ": no CDI device mounts /run/tessera/slice.conf: " + c.dump();
      return false;
    }
    char err[256] = {};
    if (!slice::LoadSliceConfig(conf.c_str(), false, cfg, err, sizeof(err))) {
      *error = container + ": " + err;
      return false;
    }
    return true;
  }
  *error = "no container " + container + " in " + admitted.dump();
  return false;
}

std::string DraSimNode::AgentLogTail(size_t bytes) const {
  std::string log = ReadFile(root_ / "agent.log");
  return log.size() > bytes ? log.substr(log.size() - bytes) : log;
}

}  // namespace tessera::itest
