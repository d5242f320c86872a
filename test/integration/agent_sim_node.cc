#include "agent_sim_node.h"

#include <fcntl.h>
#include <httplib.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <map>
#include <random>
#include <sstream>
#include <thread>

#include "kube/annotations.h"
#include "slice/config.h"

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

}  // namespace

bool Poll(double timeout_s, const std::function<bool()>& cond) {
  auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(timeout_s);
  while (std::chrono::steady_clock::now() < deadline) {
    if (cond()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return cond();
}

std::string AgentRandomId() {
  std::random_device rd;
  std::mt19937_64 rng(rd());
  const char* hex = "0123456789abcdef";
  std::string s;
  for (int i = 0; i < 6; ++i) s += hex[rng() % 16];
  return s;
}

AgentSimNode::AgentSimNode(std::shared_ptr<kube::Client> kube, std::string node,
                           std::vector<AgentSimGpu> gpus, Options opts)
    : kube_(std::move(kube)), node_(std::move(node)), gpus_(std::move(gpus)), opts_(opts) {
  signal(SIGPIPE, SIG_IGN);  // a killed agent must not take the test down with it
  root_ = fs::path("/tmp") / ("tdm-" + AgentRandomId());  // short: unix socket paths are limited
  fs::create_directories(root_);
  std::ofstream y(root_ / "gpus.yaml");
  y << "gpus:\n";
  for (const auto& g : gpus_) {
    y << "  - {uuid: " << g.uuid << ", model: \"" << g.model << "\", memory_mib: " << g.memory_mib
      << ", numa: " << g.numa << "}\n";
  }
  y.close();
  std::ofstream(root_ / "libtessera.so") << "placeholder: the agent only mounts this path\n";
  if (opts_.create_node) {
    Json node_obj = {{"apiVersion", "v1"}, {"kind", "Node"}, {"metadata", {{"name", node_}}}};
    if (opts_.taint) {
      node_obj["spec"]["taints"] =
          Json::array({{{"key", "agent-it.tessera.dev/test"}, {"value", node_}, {"effect", "NoSchedule"}}});
    }
    auto r = kube_->Create(kube::kNodes, "", node_obj);
    if (!r.ok()) {
      error_ = "create node " + node_ + ": " + r.error().ToString();
      return;
    }
  }
  StartHarness();
  if (error_.empty()) StartAgent();
}

AgentSimNode::~AgentSimNode() {
  Reap(&agent_, SIGTERM);
  Reap(&harness_, SIGTERM);
  if (opts_.create_node) kube_->Delete(kube::kNodes, "", node_);
  std::error_code ec;
  if (!std::getenv("AGENT_ITEST_KEEP")) fs::remove_all(root_, ec);
}

void AgentSimNode::StartHarness() {
  harness_ = Spawn({Env("TESSERA_KUBE_BIN") + "/kubelet-devicemanager", "--root", root_.string(),
                    "--kubeconfig", Env("TESSERA_KUBECONFIG"), "--node-name", node_},
                   root_ / "harness.out", root_ / "harness.log");
  if (harness_ <= 0) {
    error_ = "cannot start kubelet-devicemanager (TESSERA_KUBE_BIN=" + Env("TESSERA_KUBE_BIN") + ")";
    return;
  }
  if (!Poll(60, [&] { return ReadFile(root_ / "harness.out").rfind("ready http://", 0) == 0; })) {
    error_ = "harness not ready: " + ReadFile(root_ / "harness.log");
    return;
  }
  std::string line = ReadFile(root_ / "harness.out");
  line = line.substr(6, line.find('\n') - 6);
  harness_url_ = line;
}

void AgentSimNode::StartAgent() {
  if (metrics_port_.port() == 0) {
    error_ = "cannot reserve a metrics port on 127.0.0.1";
    return;
  }
  std::vector<std::string> args = {Env("TESSERA_BINARY_DIR") + "/src/cli/tessera",
                  "agent",
                  "--node",
                  node_,
                  "--kubeconfig",
                  Env("TESSERA_KUBECONFIG"),
                  "--backend",
                  "sim",
                  "--sim-config",
                  (root_ / "gpus.yaml").string(),
                  "--kubelet-dir",
                  root_.string(),
                  "--state-dir",
                  (root_ / "state").string(),
                  "--shim",
                  (root_ / "libtessera.so").string(),
                  "--node-region-dir",
                  (root_ / "node").string(),
                  "--split",
                  std::to_string(opts_.split),
                  "--metrics-port",
                  std::to_string(metrics_port_.port()),
                  "--metrics-address",
                  "127.0.0.1"};
  if (!opts_.metrics_token.empty()) {
    std::ofstream(root_ / "metrics-token") << opts_.metrics_token << "\n";
    args.push_back("--metrics-token-file");
    args.push_back((root_ / "metrics-token").string());
  }
  agent_ = Spawn(args, "/dev/null", root_ / "agent.log");
  if (agent_ <= 0)
    error_ = "cannot start tessera agent (TESSERA_BINARY_DIR=" + Env("TESSERA_BINARY_DIR") + ")";
}

void AgentSimNode::KillAgent(int sig) { Reap(&agent_, sig); }
bool AgentSimNode::AgentAlive() {
  if (agent_ <= 0) return false;
  int status = 0;
  if (waitpid(agent_, &status, WNOHANG) == 0) return true;  // 0: still running
  agent_ = -1;                                              // exited (now reaped) or not our child any more
  return false;
}

std::string AgentSimNode::Http(const std::string& method, const std::string& path, const std::string& body,
                               int* status) {
  httplib::Client c(harness_url_);
  c.set_read_timeout(60, 0);
  httplib::Result r = method == "GET"    ? c.Get(path.c_str())
                      : method == "POST" ? c.Post(path.c_str(), body, "application/json")
                                         : c.Delete(path.c_str());
  if (status) *status = r ? r->status : 0;
  return r ? r->body : "";
}

Json AgentSimNode::Resources() { return Json::parse(Http("GET", "/resources", "", nullptr), nullptr, false); }

Json AgentSimNode::GpuResource() {
  Json all = Resources();
  if (all.is_object() && all.contains("resources")) {
    for (const auto& r : all["resources"]) {
      if (r.value("name", "") == "nvidia.com/gpu") return r;
    }
  }
  return Json::object();
}

bool AgentSimNode::WaitRegistered(double timeout_s) {
  const int want = static_cast<int>(gpus_.size()) * opts_.split;
  return Poll(timeout_s, [&] { return GpuResource().value("capacity", 0) == want; });
}

Json AgentSimNode::RestartKubelet() {
  return Json::parse(Http("POST", "/restart", "", nullptr), nullptr, false);
}

Json AgentSimNode::Admit(const std::string& ns, const std::string& pod, int* status) {
  Json body = {{"namespace", ns}, {"name", pod}, {"from_api", true}};
  Json answer = Json::parse(Http("POST", "/pods", body.dump(), status), nullptr, false);
  if (*status == 200) admitted_[ns + "/" + pod] = answer;
  return answer;
}

int AgentSimNode::AdmitBound(double timeout_s, std::string* error) {
  error->clear();
  kube::ListOptions lo;
  lo.field_selector = "spec.nodeName=" + node_;
  auto pods = kube_->List(kube::kPods, "", lo);
  if (!pods.ok()) {
    *error = pods.error().ToString();
    return 0;
  }
  std::vector<Json> todo;
  for (const auto& p : pods->items) {
    if (!admitted_.count(kube::Namespace(p) + "/" + kube::Name(p))) todo.push_back(p);
  }
  // The kubelet admits pods in creation order.
  std::stable_sort(todo.begin(), todo.end(), [](const Json& a, const Json& b) {
    return a["metadata"].value("creationTimestamp", "") < b["metadata"].value("creationTimestamp", "");
  });
  int n = 0;
  for (const auto& p : todo) {
    int status = 0;
    Json last;
    bool ok = Poll(timeout_s, [&] {
      last = Admit(kube::Namespace(p), kube::Name(p), &status);
      return status == 200 || status == 409;
    });
    if (!ok) {
      *error = kube::Namespace(p) + "/" + kube::Name(p) + ": " + last.dump();
      return n;
    }
    ++n;
  }
  return n;
}

std::vector<std::string> AgentSimNode::Mismatches() {
  std::vector<std::string> out;
  // The agent marks pods allocated right after Allocate, off the kubelet's path: give it a moment. One
  // list of the node's pods per poll (not a GET per pod), so a thousand pods on fifty nodes cost fifty
  // requests a round, and the wait is bounded once for the node, not once per pod.
  kube::ListOptions lo;
  lo.field_selector = "spec.nodeName=" + node_;
  std::map<std::string, Json> listed;
  std::string list_error;
  auto unmarked = [&] {
    size_t n = 0;
    for (const auto& [key, answer] : admitted_) {
      auto it = listed.find(key);
      n += it == listed.end() ||
           kube::Annotation(it->second, kube::kAnnoAllocationState) != kube::kAllocationAllocated;
    }
    return n;
  };
  Poll(30, [&] {
    auto pods = kube_->List(kube::kPods, "", lo);
    if (!pods.ok()) {
      list_error = pods.error().ToString();
      return false;
    }
    list_error.clear();
    listed.clear();
    for (auto& p : pods->items) {
      const std::string key = kube::Namespace(p) + "/" + kube::Name(p);  // before p is moved from
      listed[key] = std::move(p);
    }
    return unmarked() == 0;
  });
  if (!list_error.empty()) return {"list pods on " + node_ + ": " + list_error};
  for (const auto& [key, answer] : admitted_) {
    auto slash = key.find('/');
    auto found = listed.find(key);
    if (found == listed.end()) {
      out.push_back(key + ": not among the pods bound to " + node_);
      continue;
    }
    const Json* pod = &found->second;
    if (kube::Annotation(*pod, kube::kAnnoAllocationState) != kube::kAllocationAllocated) {
      // What the agent said about this pod: the reason it was never marked.
      std::string said;
      std::istringstream log(ReadFile(root_ / "agent.log"));
      for (std::string line; std::getline(log, line);) {
        if (line.find(key.substr(slash + 1)) != std::string::npos) said += "\n  agent: " + line;
      }
      out.push_back(key + ": allocation-state is '" + kube::Annotation(*pod, kube::kAnnoAllocationState) + "'" +
                    said);
    }
    auto devices = kube::DecodeDevices(kube::Annotation(*pod, kube::kAnnoDevices));
    if (!devices.ok()) {
      out.push_back(key + ": " + devices.error().message);
      continue;
    }
    const Json& ctrs = (*pod)["spec"]["containers"];
    for (size_t i = 0; i < ctrs.size() && i < devices->size(); ++i) {
      const auto& want = (*devices)[i];
      if (want.empty()) continue;
      const std::string ctr_name = ctrs[i].value("name", "");
      const Json* got = nullptr;
      if (answer.contains("containers") && answer["containers"].is_array()) {
        for (const auto& c : answer["containers"]) {
          if (c.value("name", "") == ctr_name) got = &c;
        }
      }
      const std::string where = key + "/" + ctr_name + ": ";
      std::string conf;
      if (got) {
        for (const auto& m : got->value("mounts", Json::array())) {
          if (m.value("container_path", "") == "/run/tessera/slice.conf") conf = m.value("host_path", "");
        }
      }
      if (conf.empty()) {
        out.push_back(where + "no slice.conf mount");
        continue;
      }
      slice::SliceConfig cfg;
      char err[256];
      if (!slice::LoadSliceConfig(conf.c_str(), false, &cfg, err, sizeof(err))) {
        out.push_back(where + err);
        continue;
      }
      std::string uuids;
      bool same = cfg.gpu_count == static_cast<int>(want.size());
      for (size_t g = 0; same && g < want.size(); ++g) {
        same = want[g].uuid == cfg.gpus[g].uuid &&
               (want[g].memory_mib == 0 ||
                static_cast<uint64_t>(want[g].memory_mib) << 20 == cfg.gpus[g].memory_bytes) &&
               (want[g].cores == 0 ? cfg.gpus[g].cores == 100 : want[g].cores == cfg.gpus[g].cores);
        uuids += (g ? "," : "") + want[g].uuid;
      }
      if (!same) out.push_back(where + "slice.conf differs from tessera.dev/devices");
      if (got->value("envs", Json::object()).value("NVIDIA_VISIBLE_DEVICES", "") != uuids) {
        out.push_back(where + "NVIDIA_VISIBLE_DEVICES is not " + uuids);
      }
    }
  }
  return out;
}

std::string AgentSimNode::Metrics() {
  httplib::Client c("127.0.0.1", metrics_port_.port());
  if (!opts_.metrics_token.empty()) c.set_bearer_token_auth(opts_.metrics_token.c_str());
  auto r = c.Get("/metrics");
  return r && r->status == 200 ? r->body : "";
}

int AgentSimNode::MetricsStatus(const std::string& path, const std::string& token) {
  httplib::Client c("127.0.0.1", metrics_port_.port());
  if (!token.empty()) c.set_bearer_token_auth(token.c_str());
  auto r = c.Get(path.c_str());
  return r ? r->status : -1;
}

std::string AgentSimNode::AgentLogTail(size_t bytes) const {
  std::string log = ReadFile(root_ / "agent.log");
  return log.size() > bytes ? log.substr(log.size() - bytes) : log;
}

void Progress(const char* fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  std::vprintf(fmt, ap);
  va_end(ap);
  std::printf("\n");
  std::fflush(stdout);
}

}  // namespace tessera::itest
