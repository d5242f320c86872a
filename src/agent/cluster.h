// Cluster: what the node agent needs from the API server, behind a small interface.
//
// The agent reads the pods bound to its node (at every Allocate, from the API server's watch cache and,
// when that does not know the pod yet, with a quorum read: a pod the kubelet already saw is never missed),
// reads one pod, patches pod annotations, and publishes its GPUs on its Node. KubeCluster does that through
// src/kube; unit tests use an in-memory fake. Implementations are thread-safe.
#pragma once

#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "kube/client.h"

namespace tessera::agent {

class Cluster {
 public:
  virtual ~Cluster() = default;
  // Every pod with spec.nodeName == node. fresh: a quorum read from etcd; otherwise from the API server's
  // watch cache, which already holds every pod the kubelet (a watcher of the same cache) has seen.
  virtual kube::Result<std::vector<nlohmann::json>> PodsOnNode(const std::string& node, bool fresh) = 0;
  virtual kube::Result<nlohmann::json> GetPod(const std::string& ns, const std::string& name) = 0;
  // Merge patch of metadata.annotations.
  virtual kube::Status AnnotatePod(const std::string& ns, const std::string& name,
                                   const nlohmann::json& annotations) = 0;
  // Merge patches of the Node object and of its status.
  virtual kube::Status PatchNode(const std::string& node, const nlohmann::json& patch,
                                 const nlohmann::json& status_patch) = 0;
  // The Node object (the agent reads its tessera.dev/cordon annotation). Fakes may leave it unsupported.
  virtual kube::Result<nlohmann::json> GetNode(const std::string& node) {
    return kube::Error{501, "NotImplemented", "this cluster cannot read nodes"};
  }
  // Best-effort Event on a pod (repairs, failures), so `kubectl describe pod` shows them.
  virtual void PodEvent(const nlohmann::json& pod, const std::string& type, const std::string& reason,
                        const std::string& message) = 0;
};

// With a non-empty `node`, pods bound to it are kept in a watch-fed cache (kube::Reflector) that
// PodsOnNode(node, false) answers from once synced.
std::shared_ptr<Cluster> MakeKubeCluster(std::shared_ptr<kube::Client> client, const std::string& node = "");

}  // namespace tessera::agent
