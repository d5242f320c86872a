#include "scheduler_env.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <httplib.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <thread>

#include <gtest/gtest.h>

#ifndef TESSERA_BINARY
#define TESSERA_BINARY ""
#endif
#ifndef TESSERA_SOURCE_DIR
#define TESSERA_SOURCE_DIR ""
#endif

namespace tessera::itest {

std::string RandomId() {
  std::random_device rd;
  const char* hex = "0123456789abcdef";
  std::string s;
  for (int i = 0; i < 6; ++i) s.push_back(hex[rd() % 16]);
  return s;
}

std::vector<kube::DeviceSlice> Slices(const Json& pod, size_t container) {
  auto d = kube::DecodeDevices(kube::Annotation(pod, kube::kAnnoDevices));
  if (!d || d->size() <= container) return {};
  return (*d)[container];
}

namespace {
// Phase timings on stderr, so a slow CI run shows where the time went.
void Phase(const std::string& what) {
  static auto t0 = std::chrono::steady_clock::now();
  std::fprintf(stderr, "[%7.2fs] %s\n", std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(),
               what.c_str());
}
std::string Env(const char* k) {
  const char* v = std::getenv(k);
  return v ? v : "";
}
}  // namespace

SchedulerEnv::SchedulerEnv() {
  std::string kubeconfig = Env("TESSERA_KUBECONFIG");
  if (kubeconfig.empty()) return;
  tessera_bin_ = Env("TESSERA_BINARY").empty() ? TESSERA_BINARY : Env("TESSERA_BINARY");
  source_dir_ = TESSERA_SOURCE_DIR;
  state_dir_ = Env("TESSERA_KUBE_STATE");
  auto cfg = kube::LoadKubeconfig(kubeconfig);
  if (!cfg) return;
  auto c = kube::Client::Create(*cfg);
  if (!c) return;
  client_ = *c;
  id_ = RandomId();
  ns_ = "sched-" + id_;
  tmp_ = (std::filesystem::temp_directory_path() / ("tessera-sched-" + id_)).string();
  std::filesystem::create_directories(tmp_);
  Json ns = {{"apiVersion", "v1"},
             {"kind", "Namespace"},
             {"metadata", {{"name", ns_}, {"labels", {{"tessera.dev/test", id_}}}}}};
  auto r = client_->Create(kube::kNamespaces, "", ns);
  if (!r) ADD_FAILURE() << "create namespace: " << r.error().ToString();
  auto me = client_->Request("POST", "/apis/authentication.k8s.io/v1/selfsubjectreviews",
                             R"({"apiVersion":"authentication.k8s.io/v1","kind":"SelfSubjectReview"})");
  if (me.ok() && (*me)["status"]["userInfo"].contains("username"))
    self_user_ = (*me)["status"]["userInfo"]["username"];
  else
    ADD_FAILURE() << "SelfSubjectReview: " << (me.ok() ? me->dump() : me.error().ToString());
}

SchedulerEnv::~SchedulerEnv() {
  if (!client_) return;
  Phase("tear-down " + id_);
  if (kube_scheduler_started_) {
    std::string cmd = source_dir_ + "/test/kube/start-scheduler --state " + state_dir_ + " --stop ks-" + id_;
    if (std::system(cmd.c_str()) != 0) std::fprintf(stderr, "stopping kube-scheduler failed\n");
  }
  Phase("kube-scheduler stopped");
  KillTessera(SIGTERM);
  Phase("tessera scheduler stopped");
  // No kubelet confirms deletions here: remove our pods at once (grace period 0).
  if (auto pods = client_->List(kube::kPods, ns_); pods.ok()) {
    for (const auto& p : pods->items)
      (void)client_->Request("DELETE", kube::ResourcePath(kube::kPods, ns_, kube::Name(p)), R"({"gracePeriodSeconds":0})");
  }
  (void)client_->Delete(kube::kMutatingWebhooks, "", "tessera-" + id_);
  (void)client_->Delete(kube::kValidatingWebhooks, "", "tessera-" + id_);
  (void)client_->Delete(kube::kNamespaces, "", ns_);
  for (const auto& n : nodes_) (void)client_->Delete(kube::kNodes, "", n);
  Phase("objects deleted");
  if (!::testing::Test::HasFailure()) std::filesystem::remove_all(tmp_);
  else std::fprintf(stderr, "scheduler logs kept in %s\n", tmp_.c_str());
}

void SchedulerEnv::StartTessera(const std::string& identity) {
  std::vector<std::string> args = {tessera_bin_,
                                   "scheduler",
                                   "--kubeconfig=" + Env("TESSERA_KUBECONFIG"),
                                   "--listen=127.0.0.1:" + std::to_string(https_port_),
                                   "--extender-listen=127.0.0.1:" + std::to_string(extender_port_),
                                   "--metrics-address=127.0.0.1",
                                   "--metrics-port=" + std::to_string(metrics_port_),
                                   "--tls-cert=" + tmp_ + "/tls.crt",
                                   "--tls-key=" + tmp_ + "/tls.key",
                                   "--ca-bundle-out=" + tmp_ + "/ca.pem",
                                   "--scheduler-name=" + scheduler_name(),
                                   "--node-policy=" + opts_.node_policy,
                                   "--gpu-policy=" + opts_.gpu_policy,
                                   "--lease-namespace=" + ns_,
                                   "--lease-name=tessera-scheduler",
                                   "--leader-id=" + identity,
                                   "--lease-duration=" + std::to_string(opts_.lease_duration_s),
                                   "--renew-deadline=" + std::to_string(opts_.lease_duration_s * 0.75),
                                   "--retry-period=0.25",
                                   "--register-webhooks",
                                   "--webhook-name=tessera-" + id_,
                                   "--webhook-url=https://127.0.0.1:" + std::to_string(https_port_),
                                   "--webhook-namespace-selector=tessera.dev/test=" + id_,
                                   "--node-label-selector=tessera.dev/test=" + id_,
                                   "--webhook-trusted-users=" + self_user_,
                                   "--threads=16"};
  for (const auto& a : opts_.extra_args) args.push_back(a);
  std::string log = tmp_ + "/tessera-" + identity + ".log";
  pid_t pid = fork();
  if (pid == 0) {
    int fd = open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    dup2(fd, 1);
    dup2(fd, 2);
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    execv(argv[0], argv.data());
    _exit(127);
  }
  tessera_pid_ = pid;
  // Ready = listening with a synced view. A restart in the middle of the 1,000-pod burst lists 2,000 pods
  // from an API server that is itself starved of CPU on a 2-core CI machine: allow it a minute and a half.
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(90);
  while (std::chrono::steady_clock::now() < deadline) {
    httplib::Client c("127.0.0.1", metrics_port_);
    c.set_connection_timeout(1, 0);
    auto r = c.Get("/healthz");
    if (r && r->status == 200) return;
    int st = 0;
    if (waitpid(pid, &st, WNOHANG) == pid) {
      tessera_pid_ = -1;
      ADD_FAILURE() << "tessera scheduler exited during start-up; see " << log;
      return;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  ADD_FAILURE() << "tessera scheduler not ready after 90 s; see " << log;
}

void SchedulerEnv::KillTessera(int sig) {
  if (tessera_pid_ <= 0) return;
  kill(tessera_pid_, sig);
  int st = 0;
  waitpid(tessera_pid_, &st, 0);
  tessera_pid_ = -1;
}

namespace {
// The NUL-separated fields of /proc/<pid>/<file>.
std::vector<std::string> ProcFields(pid_t pid, const char* file) {
  std::ifstream f("/proc/" + std::to_string(pid) + "/" + file, std::ios::binary);
  std::vector<std::string> out;
  std::string field;
  while (std::getline(f, field, '\0')) out.push_back(field);
  return out;
}
}  // namespace

bool SchedulerEnv::RestartKubeApiServer(double ready_timeout_s, std::string* error) {
  const std::string pid_file = state_dir_ + "/run/kube-apiserver.pid";
  pid_t old_pid = 0;
  {
    std::ifstream f(pid_file);
    f >> old_pid;
  }
  if (old_pid <= 0 || kill(old_pid, 0) != 0) {
    *error = "no running kube-apiserver recorded in " + pid_file;
    return false;
  }
  std::vector<std::string> argv = ProcFields(old_pid, "cmdline"), envp = ProcFields(old_pid, "environ");
  std::error_code ec;
  std::string cwd = std::filesystem::read_symlink("/proc/" + std::to_string(old_pid) + "/cwd", ec).string();
  if (argv.empty() || ec) {
    *error = "cannot read kube-apiserver's command line or working directory";
    return false;
  }
  kill(old_pid, SIGKILL);
  for (int i = 0; i < 200 && kill(old_pid, 0) == 0; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  if (kill(old_pid, 0) == 0) {
    *error = "kube-apiserver (pid " + std::to_string(old_pid) + ") survived SIGKILL for 10 s";
    return false;
  }
  const std::string log = state_dir_ + "/logs/kube-apiserver.log";
  pid_t pid = fork();
  if (pid == 0) {
    setsid();
    int fd = open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    dup2(fd, 1);
    dup2(fd, 2);
    int null = open("/dev/null", O_RDONLY);
    dup2(null, 0);
    if (chdir(cwd.c_str()) != 0) _exit(126);
    std::vector<char*> a, e;
    for (auto& s : argv) a.push_back(s.data());
    a.push_back(nullptr);
    for (auto& s : envp) e.push_back(s.data());
    e.push_back(nullptr);
    execve(a[0], a.data(), e.data());
    _exit(127);
  }
  {
    std::ofstream f(pid_file, std::ios::trunc);
    f << pid << "\n";
  }
  auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(ready_timeout_s);
  while (std::chrono::steady_clock::now() < deadline) {
    // Serving again: a read that goes to etcd (/readyz answers text, which the client does not decode).
    auto r = client_->Get(kube::kNamespaces, "", ns_);
    if (r.ok()) return true;
    int st = 0;
    if (waitpid(pid, &st, WNOHANG) == pid) {
      *error = "the restarted kube-apiserver exited; see " + log;
      return false;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  *error = "the restarted kube-apiserver was not ready within " + std::to_string(ready_timeout_s) + " s; see " + log;
  return false;
}

std::string SchedulerEnv::metrics_url() const { return "http://127.0.0.1:" + std::to_string(metrics_port_) + "/metrics"; }

std::string SchedulerEnv::Metrics() const {
  httplib::Client c("127.0.0.1", metrics_port_);
  auto r = c.Get("/metrics");
  return r && r->status == 200 ? r->body : "";
}

bool SchedulerEnv::WaitMetricLine(const std::string& line, double timeout_s) {
  auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(timeout_s);
  while (std::chrono::steady_clock::now() < deadline) {
    if (Metrics().find("\n" + line + "\n") != std::string::npos) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return false;
}

bool SchedulerEnv::WaitLeader(double timeout_s) { return WaitMetricLine("tessera_scheduler_leader 1", timeout_s); }

void SchedulerEnv::Start(const Options& o) {
  opts_ = o;
  Phase("start " + id_);
  https_port_ = https_reserved_.port();
  metrics_port_ = metrics_reserved_.port();
  extender_port_ = extender_reserved_.port();
  ASSERT_TRUE(https_port_ > 0 && metrics_port_ > 0 && extender_port_ > 0) << "cannot reserve ports on 127.0.0.1";
  StartTessera("replica-a");
  ASSERT_TRUE(WaitLeader(15)) << "tessera scheduler never became leader";
  Phase("tessera scheduler leading");
  if (!o.kube_scheduler) return;
  std::string cfg = tmp_ + "/kube-scheduler.yaml";
  std::ofstream f(cfg);
  f << "apiVersion: kubescheduler.config.k8s.io/v1\n"
       "kind: KubeSchedulerConfiguration\n"
       "clientConnection:\n  kubeconfig: @KUBECONFIG@\n  qps: 500\n  burst: 1000\n"
       "leaderElection:\n  leaderElect: false\n"
       "profiles:\n- schedulerName: " << scheduler_name() << "\n"
       "  plugins:\n    score:\n      disabled:\n      - name: '*'\n"
       "podInitialBackoffSeconds: 1\npodMaxBackoffSeconds: 2\n"
       "extenders:\n- urlPrefix: https://127.0.0.1:" << extender_port_ << "\n"
       "  filterVerb: filter\n  prioritizeVerb: prioritize\n  bindVerb: bind\n  weight: 1\n"
       "  enableHTTPS: true\n  nodeCacheCapable: true\n  httpTimeout: 10s\n"
       "  tlsConfig:\n    caFile: " << tmp_ << "/ca.pem\n"
       "  managedResources:\n"
       "  - {name: nvidia.com/gpu, ignoredByScheduler: false}\n"
       "  - {name: nvidia.com/gpumem, ignoredByScheduler: true}\n"
       "  - {name: nvidia.com/gpumem-percentage, ignoredByScheduler: true}\n"
       "  - {name: nvidia.com/gpucores, ignoredByScheduler: true}\n"
       "  - {name: nvidia.com/priority, ignoredByScheduler: true}\n";
  f.close();
  std::string cmd = source_dir_ + "/test/kube/start-scheduler --state " + state_dir_ + " --name ks-" + id_ +
                    " --config " + cfg + " >" + tmp_ + "/start-scheduler.log 2>&1";
  ASSERT_EQ(std::system(cmd.c_str()), 0) << "start-scheduler failed; see " << tmp_ << "/start-scheduler.log";
  kube_scheduler_started_ = true;
  Phase("kube-scheduler started");
}

std::string SchedulerEnv::AddNode(const std::string& name, const std::vector<SimGpu>& gpus, int split) {
  std::string full = id_ + "-" + name;
  std::vector<kube::GpuInfo> inv;
  for (size_t i = 0; i < gpus.size(); ++i)
    inv.push_back({"GPU-" + full + "-" + std::to_string(i), gpus[i].model, gpus[i].memory_mib, 100, gpus[i].numa, true});
  Json node = {{"apiVersion", "v1"},
               {"kind", "Node"},
               {"metadata",
                {{"name", full},
                 {"labels", {{"tessera.dev/test", id_}, {"kubernetes.io/hostname", full}, {kube::kLabelGpuNode, "true"}}},
                 {"annotations", {{kube::kAnnoGpus, kube::EncodeGpus(inv)}}}}}};
  auto c = client_->Create(kube::kNodes, "", node);
  EXPECT_TRUE(c.ok()) << c.error().ToString();
  nodes_.push_back(full);
  std::string count = std::to_string(gpus.size() * split);
  Json res = {{"cpu", "64"}, {"memory", "256Gi"}, {"pods", "500"}, {"nvidia.com/gpu", count}};
  Json status = {{"status",
                  {{"capacity", res},
                   {"allocatable", res},
                   {"conditions", Json::array({{{"type", "Ready"},
                                                {"status", "True"},
                                                {"reason", "KubeletReady"},
                                                {"message", "simulated"},
                                                {"lastHeartbeatTime", "2026-01-01T00:00:00Z"},
                                                {"lastTransitionTime", "2026-01-01T00:00:00Z"}}})}}}};
  auto p = client_->PatchStatus(kube::kNodes, "", full, status);
  EXPECT_TRUE(p.ok()) << p.error().ToString();
  return full;
}

Json SchedulerEnv::GpuPod(const std::string& name, const Json& limits, const Json& annotations,
                          const std::string& scheduler) {
  Json pod = {{"apiVersion", "v1"},
              {"kind", "Pod"},
              {"metadata", {{"name", name}}},
              {"spec",
               {{"containers", Json::array({{{"name", "gpu-worker"},
                                             {"image", "pytorch/pytorch:2.2.0-cuda12.1-cudnn8-runtime"},
                                             {"command", {"python3", "-u", "-c", "print('hi')"}},
                                             {"resources", {{"limits", limits}}}}})}}}};
  if (!scheduler.empty()) pod["spec"]["schedulerName"] = scheduler;
  if (!annotations.empty()) pod["metadata"]["annotations"] = annotations;
  return pod;
}

kube::Result<Json> SchedulerEnv::CreatePod(const Json& pod) { return client_->Create(kube::kPods, ns_, pod); }

bool SchedulerEnv::WaitPods(const std::function<bool(const std::vector<Json>&)>& pred, double timeout_s,
                            std::vector<Json>* last) {
  auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(timeout_s);
  for (;;) {
    auto l = client_->List(kube::kPods, ns_);
    if (l.ok()) {
      if (last) *last = l->items;
      if (pred(l->items)) return true;
    }
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
}

bool SchedulerEnv::WaitBound(const std::vector<std::string>& names, double timeout_s, std::vector<Json>* pods) {
  std::vector<Json> items;
  bool ok = WaitPods(
      [&](const std::vector<Json>& ps) {
        size_t bound = 0;
        for (const auto& n : names)
          for (const auto& p : ps)
            if (kube::Name(p) == n && !p["spec"].value("nodeName", "").empty()) ++bound;
        return bound == names.size();
      },
      timeout_s, &items);
  if (pods) {
    pods->clear();
    for (const auto& n : names)
      for (const auto& p : items)
        if (kube::Name(p) == n) pods->push_back(p);
  }
  return ok;
}

Json SchedulerEnv::GetPod(const std::string& name) {
  auto p = client_->Get(kube::kPods, ns_, name);
  return p ? *p : Json::object();
}

std::string SchedulerEnv::SchedulingMessage(const std::string& pod) {
  Json p = GetPod(pod);
  if (!p.contains("status") || !p["status"].contains("conditions")) return "";
  for (const auto& c : p["status"]["conditions"])
    if (c.value("type", "") == "PodScheduled" && c.value("status", "") == "False") return c.value("message", "");
  return "";
}

}  // namespace tessera::itest
