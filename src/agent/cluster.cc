#include "agent/cluster.h"

namespace tessera::agent {
namespace {

class KubeCluster : public Cluster {
 public:
  explicit KubeCluster(std::shared_ptr<kube::Client> c) : c_(std::move(c)) {}

  kube::Result<std::vector<nlohmann::json>> PodsOnNode(const std::string& node) override {
    kube::ListOptions opts;
    opts.field_selector = "spec.nodeName=" + node;
    auto r = c_->List(kube::kPods, "", opts);
    if (!r.ok()) return r.error();
    return std::move(r->items);
  }

  kube::Result<nlohmann::json> GetPod(const std::string& ns, const std::string& name) override {
    return c_->Get(kube::kPods, ns, name);
  }

  kube::Status AnnotatePod(const std::string& ns, const std::string& name,
                           const nlohmann::json& annotations) override {
    auto r = c_->Patch(kube::kPods, ns, name, {{"metadata", {{"annotations", annotations}}}});
    if (!r.ok()) return r.error();
    return kube::Ok{};
  }

  kube::Status PatchNode(const std::string& node, const nlohmann::json& patch,
                         const nlohmann::json& status_patch) override {
    auto r = c_->Patch(kube::kNodes, "", node, patch);
    if (!r.ok()) return r.error();
    if (!status_patch.is_null()) {
      auto s = c_->PatchStatus(kube::kNodes, "", node, status_patch);
      if (!s.ok()) return s.error();
    }
    return kube::Ok{};
  }

  void PodEvent(const nlohmann::json& pod, const std::string& type, const std::string& reason,
                const std::string& message) override {
    nlohmann::json involved = {{"apiVersion", "v1"},
                               {"kind", "Pod"},
                               {"metadata", pod.value("metadata", nlohmann::json::object())}};
    c_->RecordEvent(involved, type, reason, message, "tessera-agent");
  }

 private:
  std::shared_ptr<kube::Client> c_;
};

}  // namespace

std::shared_ptr<Cluster> MakeKubeCluster(std::shared_ptr<kube::Client> client) {
  return std::make_shared<KubeCluster>(std::move(client));
}

}  // namespace tessera::agent
