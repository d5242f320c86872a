// Cluster: what the node agent needs from the API server, behind a small interface.
//
// The agent reads the pods bound to its node (at every Allocate, so a pod the kubelet already saw is
// never missed because a watch lagged), reads one pod, patches pod annotations, and publishes its GPUs
// on its Node. KubeCluster does that through src/kube; unit tests use an in-memory fake. Implementations
// are thread-safe.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "kube/client.h"

namespace tessera::agent {

class Cluster {
 public:
  virtual ~Cluster() = default;
  // Every pod with spec.nodeName == node (a quorum read).
  virtual kube::Result<std::vector<nlohmann::json>> PodsOnNode(const std::string& node) = 0;
  virtual kube::Result<nlohmann::json> GetPod(const std::string& ns, const std::string& name) = 0;
  // Merge patch of metadata.annotations.
  virtual kube::Status AnnotatePod(const std::string& ns, const std::string& name,
                                   const nlohmann::json& annotations) = 0;
  // Merge patches of the Node object and of its status.
  virtual kube::Status PatchNode(const std::string& node, const nlohmann::json& patch,
                                 const nlohmann::json& status_patch) = 0;
  // Best-effort Event on a pod (repairs, failures), so `kubectl describe pod` shows them.
  virtual void PodEvent(const nlohmann::json& pod, const std::string& type, const std::string& reason,
                        const std::string& message) = 0;
};

std::shared_ptr<Cluster> MakeKubeCluster(std::shared_ptr<kube::Client> client);

}  // namespace tessera::agent
