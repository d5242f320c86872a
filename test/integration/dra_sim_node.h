// DraSimNode: one simulated GPU node on the DRA path for integration tests — a `tessera agent --mode dra`
// on the simulated backend, registered with the kubelet's own DRA manager and plugin watcher (the
// test/kube harness kubelet-dramanager playing this node's kubelet).
//
// Admit() plays the kubelet for one pod bound to the node (the manager reads the pod's ResourceClaims and
// calls the driver's NodePrepareResources; the answer lists each container's CDI devices with their edits
// as found in the CDI spec directory); Remove() ends the pod (NodeUnprepareResources). SliceOf() reads the
// slice config a container would load, through the host path of its /run/tessera/slice.conf CDI mount.
// Needs the ctest fixture `kube`. Not thread-safe: one thread drives one node.
#pragma once

#include <sys/types.h>

#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "kube/client.h"
#include "slice/config.h"

namespace tessera::itest {

struct DraSimGpu {
  std::string uuid;  // "GPU-" + letters/digits/dashes
  std::string model = "NVIDIA A100-SXM4-80GB";
  int64_t memory_mib = 81920;
  int numa = 0;
  bool healthy = true;
};

class DraSimNode {
 public:
  // Creates the Node (tainted dra-it.tessera.dev/test=<node>:NoSchedule), starts the harness and the agent.
  // `group`, when not empty, becomes the Node label dra-it.tessera.dev/group (for node selectors).
  DraSimNode(std::shared_ptr<kube::Client> kube, std::string node, std::vector<DraSimGpu> gpus,
             const std::string& group = "");
  ~DraSimNode();  // stops both processes, deletes the Node and its ResourceSlice, removes its directory

  const std::string& error() const { return error_; }
  const std::string& name() const { return node_; }
  const std::filesystem::path& root() const { return root_; }

  bool WaitRegistered(double timeout_s);    // the harness has a connected plugin of gpu.tessera.io
  bool WaitSlice(double timeout_s, const std::function<bool(const kube::Json&)>& cond);
  void StartAgent();
  void KillAgent(int sig);
  kube::Json RestartKubelet();
  // Rewrites the simulator file (the agent's sim backend re-reads it: health changes).
  void SetGpus(std::vector<DraSimGpu> gpus);

  kube::Json Admit(const std::string& ns, const std::string& pod, int* status);
  int Remove(const std::string& ns, const std::string& pod);  // HTTP status
  // The slice config of the container's CDI device; false (and *error) when there is none.
  bool SliceOf(const kube::Json& admitted, const std::string& container, slice::SliceConfig* cfg,
               std::string* error) const;
  std::string AgentLogTail(size_t bytes = 6000) const;

 private:
  std::string Http(const std::string& method, const std::string& path, const std::string& body, int* status);
  void WriteGpus();

  std::shared_ptr<kube::Client> kube_;
  std::string node_;
  std::vector<DraSimGpu> gpus_;
  std::filesystem::path root_;
  std::string harness_url_;
  pid_t harness_ = -1, agent_ = -1;
  std::string error_;
};

}  // namespace tessera::itest
