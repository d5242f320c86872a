// Test harness for the scheduler integration tests: a `tessera scheduler` process plus a kube-scheduler
// whose extender points at it, both against the shared local control plane (ctest fixture `kube`), and
// helpers to create simulated GPU nodes (Node objects with the inventory annotation and extended-resource
// capacity, as `tessera agent` would publish them) and pods, and to wait for bindings.
//
// Every environment gets its own id: scheduler name tessera-<id>, Lease, webhook configurations scoped to
// namespaces labelled tessera.dev/test=<id>, and nodes labelled likewise, so tests of other components on
// the same control plane never see our webhooks or our nodes. Not thread-safe except where noted.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "kube/annotations.h"
#include "kube/client.h"
#include "reserved_port.h"

namespace tessera::itest {

using Json = kube::Json;

struct SimGpu {
  std::string model = "T4";
  int64_t memory_mib = 16384;
  int numa = 0;
};

class SchedulerEnv {
 public:
  struct Options {
    std::string node_policy = "binpack";
    std::string gpu_policy = "spread";
    double lease_duration_s = 4;
    std::vector<std::string> extra_args;
    bool kube_scheduler = true;  // false: only tessera scheduler (a test calls the extender itself)
  };
  SchedulerEnv();  // skips the test (GTEST_SKIP in callers) when TESSERA_KUBECONFIG is unset
  ~SchedulerEnv();

  bool available() const { return client_ != nullptr; }
  // Starts tessera scheduler (waits until it is ready and leader) and the kube-scheduler.
  void Start(const Options& o);
  void Start() { Start(Options{}); }
  // Starts (again) only the tessera scheduler, with `identity` as its leader id.
  void StartTessera(const std::string& identity);
  void KillTessera(int sig);  // and waits for the process to go
  // SIGKILLs the fixture's kube-apiserver and starts it again with the same command line, environment and
  // working directory (its pid file updated, so kube-down stops the new one); returns once /readyz answers
  // ok. The shared control plane goes down meanwhile: only for SERIAL tests. Returns false, with *error,
  // when it could not.
  bool RestartKubeApiServer(double ready_timeout_s, std::string* error);
  bool WaitLeader(double timeout_s);
  // Polls /metrics every 50 ms until it holds `line` as a whole line, or the timeout.
  bool WaitMetricLine(const std::string& line, double timeout_s);

  kube::Client& client() { return *client_; }
  // For helpers that keep the client (AgentSimNode in the burst test).
  std::shared_ptr<kube::Client> shared_client() const { return client_; }
  const std::string& id() const { return id_; }
  // Who the API server says we are (SelfSubjectReview): the identity the tessera scheduler and the test's
  // agents run with here, hence passed to the scheduler as --webhook-trusted-users.
  const std::string& self_user() const { return self_user_; }
  const std::string& ns() const { return ns_; }
  std::string scheduler_name() const { return "tessera-" + id_; }
  std::string metrics_url() const;
  int webhook_port() const { return https_port_; }    // tessera scheduler --listen (127.0.0.1)
  int extender_port() const { return extender_port_; }  // --extender-listen (127.0.0.1)
  std::string ca_file() const { return tmp_ + "/ca.pem"; }  // the serving certificate (its own CA)
  pid_t tessera_pid() const { return tessera_pid_; }
  std::string Metrics() const;  // GET /metrics, "" on failure

  // A simulated GPU node named <id>-<name>; returns its full name.
  std::string AddNode(const std::string& name, const std::vector<SimGpu>& gpus, int split = 10);
  // Creates a pod in our namespace; containers' limits given as JSON objects. Returns the API error, if any.
  kube::Result<Json> CreatePod(const Json& pod);
  static Json GpuPod(const std::string& name, const Json& limits, const Json& annotations = Json::object(),
                     const std::string& scheduler = "hami-scheduler");
  // Polls every 50 ms until `pred(pods)` holds for the pods in our namespace, or the timeout.
  bool WaitPods(const std::function<bool(const std::vector<Json>&)>& pred, double timeout_s,
                std::vector<Json>* last = nullptr);
  bool WaitBound(const std::vector<std::string>& names, double timeout_s, std::vector<Json>* pods = nullptr);
  Json GetPod(const std::string& name);
  // The FailedScheduling message kube-scheduler recorded for a pod ("" if none yet).
  std::string SchedulingMessage(const std::string& pod);

 private:
  std::string tessera_bin_, source_dir_, state_dir_, tmp_;
  std::shared_ptr<kube::Client> client_;
  std::string id_, ns_, self_user_;
  // Held for the environment's life, so a restarted tessera scheduler binds the same ports (kube-scheduler's
  // extender URL and the webhook URL name them) and nothing else takes them in between.
  ReservedPort https_reserved_, extender_reserved_, metrics_reserved_;
  int https_port_ = 0, extender_port_ = 0, metrics_port_ = 0;
  pid_t tessera_pid_ = -1;
  bool kube_scheduler_started_ = false;
  Options opts_;
  std::vector<std::string> nodes_;
};

std::string RandomId();

// Devices assigned to container 0 of a pod (from tessera.dev/devices).
std::vector<kube::DeviceSlice> Slices(const Json& pod, size_t container = 0);

}  // namespace tessera::itest
