// Agent: the node-config thread (per-node ConfigMap file + tessera.dev/cordon) and the spatial-mode Event.
// Split from agent.cc so node settings stay one concern; see agent.h and node_config.h.
#include <cstdio>
#include <fstream>
#include <sstream>

#include "agent/agent.h"
#include "kube/annotations.h"

namespace tessera::agent {

namespace {
void NodeLog(const std::string& msg) { std::fprintf(stderr, "tessera-agent: %s\n", msg.c_str()); }
constexpr size_t kMaxNodeConfigBytes = size_t{1} << 20;
}  // namespace

void SpatialEvent(Cluster& cluster, const ContainerAssignment& a) {
  nlohmann::json pod = {{"metadata", {{"name", a.pod_name}, {"namespace", a.namespace_}, {"uid", a.pod_uid}}}};
  cluster.PodEvent(pod, "Normal", "TesseraSpatialMode",
                   "container " + a.container + " runs as an MPS client of GPU " +
                       (a.grants.empty() ? std::string("?") : a.grants[0].uuid) +
                       " (spatial mode): its own SM partition and memory wall, but a fatal GPU fault in any "
                       "client of this MPS server can end every client on the GPU, this one included");
}

NodeSettings Agent::settings() const {
  std::lock_guard<std::mutex> lock(mu_);
  return settings_;
}

bool Agent::ReloadNodeConfigNow() {
  NodeSettings base;
  base.split = opts_.split;
  base.memory_scaling = opts_.memory_scaling;
  base.core_scaling = opts_.core_scaling;
  base.spatial = opts_.spatial_default;
  // The cordon annotation; when the node cannot be read, the cordon stays as it was.
  {
    std::lock_guard<std::mutex> lock(mu_);
    base.cordon = settings_.cordon;
  }
  if (auto node = cluster_->GetNode(opts_.node); node.ok())
    base.cordon = ParseCordon(kube::Annotation(*node, kube::kAnnoCordon));
  NodeSettings next = base;
  std::string text;
  bool too_large = false;
  if (!opts_.node_config.empty()) {
    // A ConfigMap holds at most 1 MiB: read no more than that (a device named by mistake cannot fill memory).
    std::ifstream in(opts_.node_config, std::ios::binary);
    char buf[1 << 16];
    while (!too_large && (in.read(buf, sizeof(buf)) || in.gcount() > 0)) {
      text.append(buf, static_cast<size_t>(in.gcount()));
      too_large = text.size() > kMaxNodeConfigBytes;
    }
  }
  bool refused = false;
  if (!text.empty()) {
    bool matched = false;
    gpu::Status st = too_large ? gpu::Status::Error("larger than 1 MiB, the most a ConfigMap holds")
                               : ApplyNodeConfig(text, opts_.node, base, &next, &matched);
    if (!st.ok()) {
      refused = true;
      std::lock_guard<std::mutex> lock(mu_);
      if (text != node_config_text_) NodeLog(opts_.node_config.string() + ": " + st.message() + " (settings kept)");
      node_config_text_ = text;
    }
  }
  bool changed = false;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (refused) {
      next = settings_;  // nothing half-applied: the last good file stays, only the cordon follows the node
      next.cordon = base.cordon;
    } else {
      node_config_text_ = text;
    }
    if (!(next == settings_)) {
      settings_ = next;
      ++devices_version_;
      changed = true;
    }
  }
  if (changed) {
    std::ostringstream m;
    m << "node settings: split " << next.split << ", memory scaling " << next.memory_scaling << ", core scaling "
      << next.core_scaling << ", mode " << (next.spatial ? "spatial" : "time-sliced") << ", cordoned "
      << next.cordon.size();
    NodeLog(m.str());
    devices_cv_.notify_all();
  }
  return changed;
}

void Agent::NodeConfigLoop() {
  while (!stopping_) {
    {
      std::unique_lock<std::mutex> lock(stop_mu_);
      stop_cv_.wait_for(lock, std::chrono::duration<double>(opts_.node_config_period_s),
                        [this] { return stopping_.load(); });
    }
    if (stopping_) break;
    if (ReloadNodeConfigNow()) PublishNode();
  }
}

}  // namespace tessera::agent
