// The slice monitor: verifying each slice against the kubelet's PodResources answer (repairs, removal
// of slices whose pods are gone), publishing host pids into slice regions, and the metrics snapshot.
#include <algorithm>
#include <chrono>

#include "agent/agent.h"
#include "agent/agent_internal.h"
#include "agent/assignment.h"
#include "agent/proto/podresources_v1.grpc.pb.h"
#include "slice/config.h"
#include "slice/host_pid.h"
#include "slice/region.h"

namespace tessera::agent {

namespace fs = std::filesystem;
using gpu::Status;

bool Agent::ListPodResources(PodResourcesView* view) {
  const fs::path sock = opts_.kubelet_dir / "pod-resources" / "kubelet.sock";
  std::error_code ec;
  if (!fs::exists(sock, ec)) return false;
  std::shared_ptr<grpc::Channel> channel;
  {
    // One channel for the agent's life: it reconnects by itself when the kubelet restarts.
    std::lock_guard<std::mutex> lock(mu_);
    if (!podres_channel_) {
      podres_channel_ = grpc::CreateChannel("unix://" + sock.string(), grpc::InsecureChannelCredentials());
    }
    channel = podres_channel_;
  }
  auto stub = v1::PodResourcesLister::NewStub(channel);
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
  v1::ListPodResourcesRequest req;
  v1::ListPodResourcesResponse resp;
  if (!stub->List(&ctx, req, &resp).ok()) return false;
  view->clear();
  for (const auto& pod : resp.pod_resources()) {
    auto& ctrs = (*view)[pod.namespace_() + "/" + pod.name()];
    for (const auto& ctr : pod.containers()) {
      auto& ids = ctrs[ctr.name()];
      for (const auto& d : ctr.devices()) {
        if (d.resource_name() == opts_.resource)
          ids.insert(ids.end(), d.device_ids().begin(), d.device_ids().end());
      }
      std::sort(ids.begin(), ids.end());
      ids.erase(std::unique(ids.begin(), ids.end()), ids.end());
    }
  }
  return true;
}

void Agent::VerifyEntry(const std::string& ns, const std::string& pod, const std::string& container,
                        const std::vector<std::string>& ids) {
  const std::string name = SliceNameForDevices(ids);
  const fs::path dir = writer_.slices_dir() / name;
  SliceOwner owner;
  if (!SliceWriter::ReadOwner(dir, &owner).ok()) {
    Log("verify: %s/%s container %s holds %s but no slice was written for it", ns.c_str(), pod.c_str(),
        container.c_str(), ids.front().c_str());
    return;
  }
  if (owner.namespace_ == ns && owner.pod == pod && owner.container == container) {
    if (!owner.verified) {
      owner.verified = true;
      writer_.WriteOwner(dir, owner);
      std::lock_guard<std::mutex> lock(mu_);
      ++counters_.verified;
    }
    return;
  }
  // The kubelet gave this slice to another container than the one it was written for: rewrite it
  // with the assignment of the container that really holds it (same host path, so the mount the
  // kubelet already has is right).
  auto real = cluster_->GetPod(ns, pod);
  if (!real.ok()) {
    Log("verify: cannot read pod %s/%s: %s", ns.c_str(), pod.c_str(), real.error().ToString().c_str());
    return;
  }
  std::map<std::string, uint64_t> memory;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (const auto& g : gpus_) memory[g.uuid] = g.memory_bytes;
  }
  std::string err;
  auto assignments = ParseAssignments(*real, opts_.node, opts_.resource, &err);
  for (const auto& a : assignments) {
    if (a.container != container) continue;
    ContainerSlice out;
    Status st = writer_.Write(a, ids, memory, &out);
    if (!st.ok()) {
      Log("repair of slice %s failed: %s", name.c_str(), st.message().c_str());
      return;
    }
    SliceOwner fixed;
    SliceWriter::ReadOwner(dir, &fixed);
    fixed.verified = true;
    writer_.WriteOwner(dir, fixed);
    {
      std::lock_guard<std::mutex> lock(mu_);
      ++counters_.repairs;
      ++counters_.verified;
      claimed_.insert(a.Key());
      // The container the slice was first written for has not been served after all.
      claimed_.erase(owner.pod_uid + "/" + owner.container);
    }
    const std::string msg = "slice " + name + " was written for " + owner.namespace_ + "/" + owner.pod + "/" +
                            owner.container + "; rewritten for this container";
    Log("repair: %s/%s container %s: %s", ns.c_str(), pod.c_str(), container.c_str(), msg.c_str());
    cluster_->PodEvent(*real, "Warning", "TesseraSliceRepaired", msg);
    MarkAllocatedIfComplete(assignments, a.pod_uid);
    return;
  }
  Log("verify: cannot repair slice %s: pod %s/%s has no assignment for container %s", name.c_str(),
      ns.c_str(), pod.c_str(), container.c_str());
}

void Agent::PreStart(const std::vector<std::string>& request_ids) {
  TraceTimer trace("PreStart");
  std::vector<std::string> ids(request_ids);
  std::sort(ids.begin(), ids.end());
  std::lock_guard<std::mutex> alloc(alloc_mu_);
  PodResourcesView view;
  if (!ListPodResources(&view)) return;
  for (const auto& [pod, ctrs] : view) {
    for (const auto& [ctr, held] : ctrs) {
      if (held != ids) continue;
      auto slash = pod.find('/');
      VerifyEntry(pod.substr(0, slash), pod.substr(slash + 1), ctr, ids);
      return;
    }
  }
}

// A pod whose GPU containers all hold devices at the kubelet but that is still marked pending: the agent
// that served it died before its marker thread patched the pod (that queue lives only in memory), or
// the patch was lost. The kubelet's word is the truth, so mark it now.
void Agent::MarkHeldPods(const PodResourcesView& view) {
  Status st;
  auto candidates = Candidates(false, &st, nullptr);
  if (!st.ok()) return;
  std::set<std::string> done;  // pod uids looked at
  // "ns/name" queued, being patched, or marked in the last minute (the watch cache may still read pending).
  std::set<std::string> skip;
  {
    std::lock_guard<std::mutex> lock(mu_);
    const int64_t now = NowNs();
    for (const auto& [key, when] : mark_done_)
      if (now - when <= kRecentlyMarkedNs) skip.insert(key);
    skip.insert(mark_queued_.begin(), mark_queued_.end());
  }
  for (const auto& c : candidates) {
    if (c.state == kube::kAllocationAllocated || done.count(c.pod_uid) || skip.count(c.namespace_ + "/" + c.pod_name))
      continue;
    done.insert(c.pod_uid);
    auto held = [&view](const ContainerAssignment& d) {
      auto pod = view.find(d.namespace_ + "/" + d.pod_name);
      if (pod == view.end()) return false;
      auto ctr = pod->second.find(d.container);
      return ctr != pod->second.end() && !ctr->second.empty();
    };
    bool all_held = true;
    for (const auto& d : candidates) {
      if (d.pod_uid == c.pod_uid && !held(d)) {
        all_held = false;
        break;
      }
    }
    if (!all_held) continue;
    Log("verify: %s/%s holds its devices but is still %s: marking it allocated", c.namespace_.c_str(),
        c.pod_name.c_str(), c.state.empty() ? "unmarked" : c.state.c_str());
    std::lock_guard<std::mutex> lock(mu_);
    QueueMarkLocked(c.namespace_, c.pod_name);
  }
}

bool Agent::VerifyNow() {
  std::lock_guard<std::mutex> alloc(alloc_mu_);
  PodResourcesView view;
  if (!ListPodResources(&view)) return false;
  std::set<std::string> live_slices;
  for (const auto& [pod, ctrs] : view) {
    auto slash = pod.find('/');
    for (const auto& [ctr, ids] : ctrs) {
      if (ids.empty()) continue;
      live_slices.insert(SliceNameForDevices(ids));
      VerifyEntry(pod.substr(0, slash), pod.substr(slash + 1), ctr, ids);
    }
  }
  MarkHeldPods(view);
  // Slices nobody holds any more: remove them once their pod is gone from the API server.
  for (const auto& dir : writer_.ListSlices()) {
    if (live_slices.count(dir.filename().string())) continue;
    SliceOwner owner;
    if (!SliceWriter::ReadOwner(dir, &owner).ok()) continue;
    if (!owner.verified) {
      // Written by an Allocate whose admission the kubelet then abandoned: nobody ever held it.
      std::error_code ec;
      auto age = fs::file_time_type::clock::now() - fs::last_write_time(dir / "owner.json", ec);
      if (!ec && age > std::chrono::minutes(2)) writer_.Remove(dir);
      continue;
    }
    auto pod = cluster_->GetPod(owner.namespace_, owner.pod);
    bool gone = (!pod.ok() && pod.error().NotFound()) || (pod.ok() && kube::Uid(*pod) != owner.pod_uid);
    if (!gone) continue;
    writer_.Remove(dir);
    std::lock_guard<std::mutex> lock(mu_);
    claimed_.erase(owner.pod_uid + "/" + owner.container);
  }
  return true;
}

void Agent::VerifyLoop() {
  bool warned = false;
  while (!stopping_) {
    {
      std::unique_lock<std::mutex> lock(stop_mu_);
      stop_cv_.wait_for(lock, std::chrono::duration<double>(opts_.verify_period_s),
                        [this] { return stopping_.load(); });
    }
    if (stopping_) break;
    // Republish after a failure (the Node may not exist yet) and now and then, so a manual edit of the
    // annotation does not mislead the scheduler for long.
    if (!published_ || NowNs() - last_publish_ns_ > 60'000'000'000) PublishNode();
    bool ok = VerifyNow();
    if (!ok && !warned) {
      Log("the kubelet's PodResources API is unreachable: slices cannot be verified");
    }
    warned = !ok;
  }
}

int Agent::MapHostPidsNow() {
  std::lock_guard<std::mutex> guard(host_pid_mu_);
  const uint64_t own_ns = slice::SelfPidNamespace();
  const int64_t now = NowNs();
  int published = 0;
  std::set<uint64_t> still_missing;
  for (const auto& dir : writer_.ListSlices()) {
    slice::Region region;
    char err[256];
    const fs::path rpath = dir / "region" / "slice.region";
    if (!slice::OpenRegion(rpath.c_str(), true, &region, err, sizeof(err))) continue;  // no process yet
    const slice::HostPidPass pass = slice::PublishHostPids(region.hdr, opts_.proc_root.c_str(), own_ns);
    slice::CloseRegion(&region);
    published += pass.published;
    for (int k = 0; k < pass.unresolved_count; ++k) {
      const uint64_t owner = pass.unresolved[k];
      still_missing.insert(owner);
      auto& [since, warned] = host_pid_missing_.emplace(owner, std::make_pair(now, false)).first->second;
      // A process that stays unmapped: the agent does not see the host's pids (no hostPID), and the
      // driver's figure for this process's context cannot be matched.
      if (now - since > 5'000'000'000 && !warned) {
        warned = true;
        Log("slice %s: process %d of another pid namespace is not in %s after 5 s; its context is counted "
            "at the estimate, not measured (does the agent run with hostPID?)",
            dir.filename().c_str(), slice::OwnerPid(owner), opts_.proc_root.c_str());
      }
    }
  }
  for (auto it = host_pid_missing_.begin(); it != host_pid_missing_.end();) {
    it = still_missing.count(it->first) ? std::next(it) : host_pid_missing_.erase(it);
  }
  return published;
}

void Agent::HostPidLoop() {
  while (!stopping_) {
    MapHostPidsNow();
    std::unique_lock<std::mutex> lock(stop_mu_);
    stop_cv_.wait_for(lock, std::chrono::duration<double>(opts_.host_pid_period_s),
                      [this] { return stopping_.load(); });
  }
}

MetricsSnapshot Agent::Snapshot() {
  MetricsSnapshot s;
  s.node = opts_.node;
  std::vector<gpu::GpuInfo> gpus;
  {
    std::lock_guard<std::mutex> lock(mu_);
    gpus = gpus_;
    s.counters = counters_;
  }
  for (const auto& g : gpus) {
    GpuSample gs{g.uuid, g.index, g.model, g.healthy, g.memory_bytes, 0, -1};
    gpu::GpuUsage u;
    if (backend_->Usage(g.uuid, &u).ok()) {
      gs.memory_used_bytes = u.memory_used_bytes;
      gs.utilization_percent = u.utilization_percent;
    }
    s.gpus.push_back(gs);
  }
  std::map<std::pair<std::string, std::string>, uint64_t> measured;  // (slice, GPU) → the driver's bytes
  if (watchdog_) {
    WatchdogStats w = watchdog_->Stats();
    s.watchdog = {true,           w.polls,           w.poll_failures, w.last_poll_seconds, w.over_limit_kills,
                  w.over_limit_reports, w.unknown_kills, w.unknown_reports, w.kill_failures, w.unknown_now};
    for (const auto& m : w.measured) measured[{m.slice, m.gpu_uuid}] = m.bytes;
  }
  const int64_t now = NowNs();
  for (const auto& dir : writer_.ListSlices()) {
    SliceOwner owner;
    if (!SliceWriter::ReadOwner(dir, &owner).ok()) continue;
    slice::SliceConfig cfg;
    char err[256];
    if (!slice::LoadSliceConfig((dir / "slice.conf").c_str(), false, &cfg, err, sizeof(err))) continue;
    SliceSample sl{owner.namespace_, owner.pod, owner.container, dir.filename().string(), {}};
    slice::Region region;
    const fs::path rpath = dir / "region" / "slice.region";
    const bool have_region = slice::OpenRegion(rpath.c_str(), false, &region, err, sizeof(err));
    for (int g = 0; g < cfg.gpu_count; ++g) {
      SliceGpuSample x;
      x.uuid = cfg.gpus[g].uuid;
      x.vdevice = g;
      x.limit_bytes = cfg.gpus[g].memory_bytes;
      x.cap_ratio = cfg.gpus[g].cores / 100.0;
      if (watchdog_) {
        auto m = measured.find({sl.slice, x.uuid});
        x.measured_bytes = m == measured.end() ? 0 : static_cast<int64_t>(m->second);
      }
      int rg = have_region ? slice::FindRegionGpu(region.hdr, cfg.gpus[g].uuid) : -1;
      if (rg >= 0) {
        slice::GpuUsage u = slice::ReadGpuUsage(region.hdr, rg);
        const auto& rgpu = region.hdr->gpus[rg];
        x.used_bytes = u.used_bytes;
        x.wall_refusals = u.wall_refusals;
        x.throttled_seconds = rgpu.throttled_ns.load() / 1e9;
        x.priority_waits = rgpu.priority_waits.load();
        const uint64_t busy = rgpu.busy_ns.load();
        const std::string key = sl.slice + "/" + x.uuid;
        std::lock_guard<std::mutex> lock(mu_);
        auto it = busy_prev_.find(key);
        if (it != busy_prev_.end() && now > it->second.second && busy >= it->second.first) {
          x.share_ratio = std::min(1.0, double(busy - it->second.first) / double(now - it->second.second));
        }
        busy_prev_[key] = {busy, now};
      }
      sl.gpus.push_back(x);
    }
    if (have_region) slice::CloseRegion(&region);
    s.slices.push_back(std::move(sl));
  }
  return s;
}

std::string Agent::RenderMetricsNow() {
  return RenderMetrics(Snapshot(), RenderOptions{.hami_names = opts_.hami_metric_names});
}

}  // namespace tessera::agent
