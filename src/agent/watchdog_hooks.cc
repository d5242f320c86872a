// The agent's side of the watchdog (watchdog.h): which slices it watches (those this agent wrote, with
// their pod from owner.json and their walls from slice.conf, plus the standalone slices of `tessera run`),
// the container name behind a runtime id (from the pod's status), and events on pods.
#include <string>
#include <vector>

#include "agent/agent.h"
#include "agent/agent_internal.h"
#include "slice/config.h"

namespace tessera::agent {

namespace fs = std::filesystem;

void Agent::StartWatchdog() {
  WatchdogOptions w = opts_.watchdog;
  if (w.over_limit == WatchdogAction::kOff && w.unknown == WatchdogAction::kOff) {
    Log("watchdog: off");
    return;
  }
  w.proc_root = opts_.proc_root;
  // Every GPU is offered in `split` devices: with more than one, any of them may be shared at any time.
  // The per-node config may set its own split (read before the watchdog starts); either one counts.
  w.all_gpus_shared = opts_.split > 1 || settings().split > 1;
  WatchdogHooks hooks;
  hooks.slices = [this] { return WatchedSlices(); };
  hooks.container_name = [this](const std::string& uid, const std::string& id) { return ContainerName(uid, id); };
  hooks.event = [this](const WatchedSlice& s, const std::string& reason, const std::string& message) {
    nlohmann::json pod = {{"metadata", {{"name", s.pod}, {"namespace", s.namespace_}, {"uid", s.pod_uid}}}};
    cluster_->PodEvent(pod, "Warning", reason, message);
  };
  hooks.log = [](const std::string& line) { Log("watchdog: %s", line.c_str()); };
  watchdog_ = std::make_unique<Watchdog>(w, backend_.get(), std::move(hooks));
  std::vector<std::string> uuids;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (const auto& g : gpus_) uuids.push_back(g.uuid);
  }
  watchdog_->SetGpus(std::move(uuids));
  Log("watchdog: every %.0f ms; over the wall: %s; processes of no slice: %s", w.period_s * 1000,
      WatchdogActionName(w.over_limit), WatchdogActionName(w.unknown));
  watchdog_->Start();
}

std::vector<WatchedSlice> Agent::WatchedSlices() {
  std::vector<WatchedSlice> out;
  for (const auto& dir : writer_.ListSlices()) {
    SliceOwner owner;
    if (!SliceWriter::ReadOwner(dir, &owner).ok()) continue;
    slice::SliceConfig cfg;
    char err[256];
    if (!slice::LoadSliceConfig((dir / "slice.conf").c_str(), false, &cfg, err, sizeof(err))) continue;
    WatchedSlice s;
    s.name = dir.filename().string();
    s.region = dir / "region" / "slice.region";
    s.namespace_ = owner.namespace_;
    s.pod = owner.pod;
    s.pod_uid = owner.pod_uid;
    s.container = owner.container;
    for (int g = 0; g < cfg.gpu_count; ++g) s.limits[cfg.gpus[g].uuid] = cfg.gpus[g].memory_bytes;
    out.push_back(std::move(s));
  }
  if (!opts_.standalone_slices_dir.empty()) {
    for (auto& s : ListStandaloneSlices(opts_.standalone_slices_dir)) out.push_back(std::move(s));
  }
  return out;
}

std::string Agent::ContainerName(const std::string& pod_uid, const std::string& container_id) {
  auto pods = cluster_->PodsOnNode(opts_.node, false);
  if (!pods.ok()) return "";
  for (const auto& pod : *pods) {
    if (kube::Uid(pod) != pod_uid || !pod.contains("status")) continue;
    for (const char* list : {"containerStatuses", "initContainerStatuses", "ephemeralContainerStatuses"}) {
      if (!pod["status"].contains(list) || !pod["status"][list].is_array()) continue;
      for (const auto& c : pod["status"][list]) {
        // "containerd://<id>", "cri-o://<id>", "docker://<id>"
        const std::string id = c.value("containerID", "");
        const size_t sep = id.find("://");
        if (sep != std::string::npos && id.substr(sep + 3) == container_id) return c.value("name", "");
      }
    }
  }
  return "";
}

}  // namespace tessera::agent
