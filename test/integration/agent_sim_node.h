// AgentSimNode: one simulated GPU node for integration tests — a `tessera agent` on the simulated backend,
// registered with the kubelet's own device manager (the test/kube harness playing this node's kubelet).
//
// Tests that need pods to really go through the node side (Allocate, slices, PodResources) use it: the
// agent's own tests, and the scheduler's burst test (1,000 pods, agent killed once). AdmitBound() plays the
// kubelet: it admits every pod bound to the node, in creation order, retrying refusals the way the
// kubelet's pod workers do; Mismatches() checks that every container's slice config equals its pod's
// assignment (tessera.dev/devices). Needs the ctest fixture `kube` (TESSERA_KUBECONFIG, TESSERA_KUBE_BIN,
// TESSERA_BINARY_DIR). Not thread-safe: one thread drives one node (different nodes may run in parallel).
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <functional>
#include <vector>

#include "kube/client.h"
#include "reserved_port.h"

namespace tessera::itest {

// One line of a long test's progress on stdout, flushed at once: when ctest stops a test at its TIMEOUT,
// the output it shows then says which phase the test had reached.
void Progress(const char* fmt, ...) __attribute__((format(printf, 1, 2)));

// Calls `cond` every 50 ms until it holds or `timeout_s` passes; true when it held (checked once more at the end).
bool Poll(double timeout_s, const std::function<bool()>& cond);

struct AgentSimGpu {
  std::string uuid;  // "GPU-" + letters/digits/dashes
  std::string model = "NVIDIA A100-SXM4-80GB";
  int64_t memory_mib = 81920;
  int numa = 0;
};

class AgentSimNode {
 public:
  struct Options {
    bool create_node = true;  // false: the Node object exists already (e.g. made by another helper)
    int split = 10;
    bool taint = true;  // NoSchedule taint agent-it.tessera.dev/test=<node> (pods must tolerate it)
    std::string metrics_token;  // non-empty: the agent runs with --metrics-token-file holding this token
  };
  AgentSimNode(std::shared_ptr<kube::Client> kube, std::string node, std::vector<AgentSimGpu> gpus,
               Options opts);
  AgentSimNode(std::shared_ptr<kube::Client> kube, std::string node, std::vector<AgentSimGpu> gpus)
      : AgentSimNode(std::move(kube), std::move(node), std::move(gpus), Options{}) {}
  ~AgentSimNode();  // stops both processes, deletes the Node if it created it, removes its directory

  // Empty when the harness and the agent started; else why not.
  const std::string& error() const { return error_; }
  const std::string& name() const { return node_; }
  const std::filesystem::path& root() const { return root_; }

  bool WaitRegistered(double timeout_s);  // the harness reports capacity gpus × split
  void StartAgent();
  void KillAgent(int sig);  // and waits for it
  // The agent process is running (an exited one is reaped, so a zombie does not count as alive).
  bool AgentAlive();
  kube::Json RestartKubelet();  // harness POST /restart

  kube::Json Resources();    // harness GET /resources
  kube::Json GpuResource();  // the nvidia.com/gpu entry of Resources()
  // Admits one pod from the API server; *status is the HTTP status (200 admitted, 422 refused, ...).
  kube::Json Admit(const std::string& ns, const std::string& pod, int* status);
  // Admits every pod bound to this node and not yet admitted, oldest first, retrying refusals until
  // `timeout_s`. Returns how many were admitted; *error says which pod failed, if any.
  int AdmitBound(double timeout_s, std::string* error);
  // One line per container whose slice (read through the host path of its /run/tessera/slice.conf
  // mount) differs from its pod's current assignment, or whose pod is not marked allocated.
  std::vector<std::string> Mismatches();
  std::string Metrics();  // agent GET /metrics ("" on failure), with the token of Options when set
  // The agent's HTTP status for GET `path` sent with `Authorization: Bearer <token>` ("" sends none);
  // -1 when no answer came.
  int MetricsStatus(const std::string& path, const std::string& token);
  std::string AgentLogTail(size_t bytes = 6000) const;

  // Admission answers, "<ns>/<pod>" → harness answer.
  const std::map<std::string, kube::Json>& admitted() const { return admitted_; }

 private:
  std::string Http(const std::string& method, const std::string& path, const std::string& body, int* status);
  void StartHarness();

  std::shared_ptr<kube::Client> kube_;
  std::string node_;
  std::vector<AgentSimGpu> gpus_;
  Options opts_;
  std::filesystem::path root_;
  std::string harness_url_;
  pid_t harness_ = -1, agent_ = -1;
  ReservedPort metrics_port_;  // held for the node's life: the agent binds it at every start
  std::string error_;
  std::map<std::string, kube::Json> admitted_;
};

// Hex-only random id: usable in node names and simulated GPU UUIDs alike.
std::string AgentRandomId();

}  // namespace tessera::itest
