#include "agent/cluster.h"

#include <map>
#include <mutex>

#include "kube/reflector.h"

namespace tessera::agent {
namespace {

class KubeCluster : public Cluster {
 public:
  KubeCluster(std::shared_ptr<kube::Client> c, const std::string& node) : c_(std::move(c)), node_(node) {
    if (node_.empty()) return;
    kube::ReflectorOptions ro;
    ro.field_selector = "spec.nodeName=" + node_;
    kube::ReflectorHandler h;
    h.on_replace = [this](const std::vector<nlohmann::json>& items) {
      std::lock_guard<std::mutex> lock(mu_);
      pods_.clear();
      for (const auto& p : items) pods_[kube::Uid(p)] = p;
    };
    h.on_event = [this](kube::EventType type, const nlohmann::json& p) {
      std::lock_guard<std::mutex> lock(mu_);
      if (type == kube::EventType::kDeleted) {
        pods_.erase(kube::Uid(p));
      } else {
        pods_[kube::Uid(p)] = p;
      }
    };
    reflector_ = std::make_unique<kube::Reflector>(c_, kube::kPods, ro, h);
    reflector_->Start();
  }
  ~KubeCluster() override {
    if (reflector_) reflector_->Stop();
  }

  kube::Result<std::vector<nlohmann::json>> PodsOnNode(const std::string& node, bool fresh) override {
    if (!fresh && reflector_ && node == node_ && reflector_->Synced()) {
      std::lock_guard<std::mutex> lock(mu_);
      std::vector<nlohmann::json> out;
      out.reserve(pods_.size());
      for (const auto& [uid, p] : pods_) out.push_back(p);
      return out;
    }
    kube::ListOptions opts;
    opts.field_selector = "spec.nodeName=" + node;
    if (!fresh) opts.resource_version = "0";
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

  kube::Result<nlohmann::json> GetNode(const std::string& node) override { return c_->Get(kube::kNodes, "", node); }
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
    nlohmann::json involved = {
        {"apiVersion", "v1"}, {"kind", "Pod"}, {"metadata", pod.value("metadata", nlohmann::json::object())}};
    c_->RecordEvent(involved, type, reason, message, "tessera-agent");
  }

 private:
  std::shared_ptr<kube::Client> c_;
  std::string node_;
  std::mutex mu_;
  std::map<std::string, nlohmann::json> pods_;  // uid → pod, fed by the reflector
  std::unique_ptr<kube::Reflector> reflector_;
};

}  // namespace

std::shared_ptr<Cluster> MakeKubeCluster(std::shared_ptr<kube::Client> client, const std::string& node) {
  return std::make_shared<KubeCluster>(std::move(client), node);
}

}  // namespace tessera::agent
