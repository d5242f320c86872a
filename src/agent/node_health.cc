// Node and GPU health: publishing the GPUs on the Node object and following the backend's health events.
#include <chrono>
#include <optional>

#include "agent/agent.h"
#include "agent/agent_internal.h"
#include "agent/inventory.h"

namespace tessera::agent {

using gpu::Status;

void Agent::PublishNode() {
  std::vector<gpu::GpuInfo> gpus;
  NodeSettings settings;
  {
    std::lock_guard<std::mutex> lock(mu_);
    settings = settings_;
    gpus = OfferedGpus(gpus_, settings);
  }
  auto st = cluster_->PatchNode(opts_.node, NodeMetadataPatch(gpus, settings.split, opts_.version, &settings),
                                NodeStatusPatch(gpus, settings.split, opts_.resource));
  published_ = st.ok();
  last_publish_ns_ = NowNs();
  if (!st.ok()) Log("cannot publish GPUs on node %s: %s", opts_.node.c_str(), st.error().ToString().c_str());
}

void Agent::FollowHealth() {
  while (!stopping_) {
    std::optional<gpu::HealthEvent> ev;
    Status st = backend_->WaitHealthEvent(std::chrono::milliseconds(500), &ev);
    if (!st.ok()) {
      Log("health: %s", st.message().c_str());
      std::unique_lock<std::mutex> lock(stop_mu_);
      stop_cv_.wait_for(lock, std::chrono::seconds(1), [this] { return stopping_.load(); });
      continue;
    }
    if (!ev) continue;
    bool changed = false;
    {
      std::lock_guard<std::mutex> lock(mu_);
      for (auto& g : gpus_) {
        if (g.uuid == ev->uuid && g.healthy != ev->healthy) {
          g.healthy = ev->healthy;
          g.health_reason = ev->healthy ? "" : ev->reason;
          changed = true;
        }
      }
      if (changed) {
        ++devices_version_;
        ++counters_.health_events;
      }
    }
    if (!changed) continue;
    Log("GPU %s is now %s%s%s", ev->uuid.c_str(), ev->healthy ? "healthy" : "UNHEALTHY",
        ev->reason.empty() ? "" : ": ", ev->reason.c_str());
    devices_cv_.notify_all();
    PublishNode();
  }
}

}  // namespace tessera::agent
