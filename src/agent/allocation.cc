// Allocation: which pod's container an Allocate (or GetPreferredAllocation) serves, writing its slice,
// and marking pods allocated on the API server once all their GPU containers are served.
#include <algorithm>
#include <chrono>

#include "agent/agent.h"
#include "agent/agent_internal.h"
#include "agent/assignment.h"
#include "agent/device_nodes.h"
#include "agent/inventory.h"
#include "agent/matcher.h"

namespace tessera::agent {

namespace fs = std::filesystem;
using gpu::Status;

std::vector<ContainerAssignment> Agent::Candidates(bool fresh, Status* st, std::set<std::string>* seen) {
  std::vector<ContainerAssignment> out;
  auto pods = cluster_->PodsOnNode(opts_.node, fresh);
  if (!pods.ok()) {
    *st = Status::Error("cannot list pods on node " + opts_.node + ": " + pods.error().ToString());
    return out;
  }
  for (const auto& pod : *pods) {
    if (seen) seen->insert(kube::Namespace(pod) + "/" + kube::Name(pod));
    const std::string phase = pod.contains("status") ? pod["status"].value("phase", "") : "";
    if (phase == "Succeeded" || phase == "Failed") continue;
    std::string err;
    auto a = ParseAssignments(pod, opts_.node, opts_.resource, &err);
    if (!err.empty()) Log("%s", err.c_str());
    for (auto& c : a) out.push_back(std::move(c));
  }
  *st = Status::Ok();
  return out;
}

std::vector<ContainerAssignment> Agent::CandidatesFor(const PodResourcesView* view, Status* st, bool* fresh) {
  std::set<std::string> seen;
  *fresh = false;
  auto candidates = Candidates(false, st, &seen);
  if (!st->ok() || !view) return candidates;
  for (const auto& [pod, ctrs] : *view) {
    if (!seen.count(pod)) {
      // The kubelet has a pod our cache has not seen yet: a watch lag. Read from etcd.
      *fresh = true;
      return Candidates(true, st, nullptr);
    }
  }
  return candidates;
}

Status Agent::Prefer(const v1beta1::PreferredAllocationRequest& req,
                     v1beta1::PreferredAllocationResponse* resp) {
  TraceTimer trace("Prefer");
  std::lock_guard<std::mutex> alloc(alloc_mu_);
  Status st;
  PodResourcesView view;
  const bool have_view = ListPodResources(&view);
  bool fresh = false;
  auto candidates = CandidatesFor(have_view ? &view : nullptr, &st, &fresh);
  if (!st.ok()) return st;
  if (have_view) candidates = NarrowToAdmitting(candidates, view);
  std::set<std::string> claimed;
  {
    std::lock_guard<std::mutex> lock(mu_);
    claimed = claimed_;
  }
  for (const auto& c : req.container_requests()) {
    std::vector<std::string> avail(c.available_deviceids().begin(), c.available_deviceids().end());
    std::vector<std::string> must(c.must_include_deviceids().begin(), c.must_include_deviceids().end());
    auto ids = PreferDevices(candidates, claimed, avail, must, c.allocation_size());
    auto* out = resp->add_container_responses();
    for (const auto& id : ids) out->add_deviceids(id);
  }
  return Status::Ok();
}

Status Agent::Allocate(const v1beta1::AllocateRequest& req, v1beta1::AllocateResponse* resp) {
  const int64_t t0 = NowNs();
  std::lock_guard<std::mutex> alloc(alloc_mu_);
  Status st;
  PodResourcesView view;
  const bool have_view = ListPodResources(&view);
  bool fresh = false;
  auto candidates = CandidatesFor(have_view ? &view : nullptr, &st, &fresh);
  auto fail = [&](const std::string& msg) {
    std::lock_guard<std::mutex> lock(mu_);
    ++counters_.allocation_failures;
    Log("Allocate failed: %s", msg.c_str());
    return Status::Error(msg);
  };
  if (!st.ok()) return fail(st.message());
  std::map<std::string, uint64_t> memory;
  std::set<std::string> known_devices, claimed;
  std::vector<gpu::GpuInfo> gpus;
  {
    std::lock_guard<std::mutex> lock(mu_);
    gpus = gpus_;
    for (const auto& g : gpus_) memory[g.uuid] = g.memory_bytes;
    for (const auto& d : PluginDevices(OfferedGpus(gpus_, settings_), settings_.split)) known_devices.insert(d.id);
    // A container the kubelet lists without devices is being (re)admitted: whatever an earlier
    // Allocate did for it did not stick (the kubelet dropped the pod after a later failure), so it is
    // not served, whatever our bookkeeping says.
    if (have_view) {
      for (const auto& c : candidates) {
        auto pod = view.find(c.namespace_ + "/" + c.pod_name);
        if (pod == view.end()) continue;
        auto ctr = pod->second.find(c.container);
        if (ctr != pod->second.end() && ctr->second.empty()) claimed_.erase(c.Key());
      }
    }
    claimed = claimed_;
  }
  std::set<std::string> touched_pods;
  std::vector<std::string> new_claims;
  bool ambiguous_any = false;
  for (const auto& creq : req.container_requests()) {
    std::vector<std::string> ids(creq.devices_ids().begin(), creq.devices_ids().end());
    for (const auto& id : ids) {
      if (!known_devices.count(id)) return fail("device " + id + " is not one of this node's devices");
    }
    MatchResult m = MatchAllocate(have_view ? NarrowToAdmitting(candidates, view) : candidates, claimed, ids);
    if (!m.found && !fresh) {
      // The watch cache may not have the pod yet: ask etcd.
      fresh = true;
      candidates = Candidates(true, &st, nullptr);
      if (!st.ok()) return fail(st.message());
      m = MatchAllocate(have_view ? NarrowToAdmitting(candidates, view) : candidates, claimed, ids);
    }
    if (!m.found) return fail(m.reason);
    ContainerSlice slice;
    st = writer_.Write(m.chosen, ids, memory, &slice);
    if (!st.ok()) return fail(st.message());
    auto* out = resp->add_container_responses();
    for (const auto& [k, v] : slice.envs) (*out->mutable_envs())[k] = v;
    for (const auto& mnt : slice.mounts) {
      auto* pm = out->add_mounts();
      pm->set_container_path(mnt.container_path);
      pm->set_host_path(mnt.host_path);
      pm->set_read_only(mnt.read_only);
    }
    // The GPUs as device nodes, not only named in NVIDIA_VISIBLE_DEVICES: the runtime creates these and no
    // other GPU's node, whatever the container's environment says.
    std::vector<std::string> uuids;
    for (const auto& g : m.chosen.grants) uuids.push_back(g.uuid);
    for (const auto& d : opts_.dev_root.empty() ? std::vector<DeviceNode>{}
                                                : DeviceNodesFor(uuids, gpus, opts_.dev_root, opts_.proc_root)) {
      auto* ds = out->add_devices();
      ds->set_container_path(d.container_path);
      ds->set_host_path(d.host_path);
      ds->set_permissions(d.permissions);
    }
    claimed.insert(m.chosen.Key());
    new_claims.push_back(m.chosen.Key());
    touched_pods.insert(m.chosen.pod_uid);
    ambiguous_any |= m.ambiguous;
    if (m.chosen.spatial) SpatialEvent(*cluster_, m.chosen);
    Log("Allocate %s → %s/%s container %s in %.1f ms (slice %s%s%s)", ids.front().c_str(),
        m.chosen.namespace_.c_str(), m.chosen.pod_name.c_str(), m.chosen.container.c_str(),
        (NowNs() - t0) / 1e6, slice.slice.c_str(),
        m.gpu_set_matched ? "" : ", kubelet devices off the assigned GPUs",
        m.ambiguous ? ", ambiguous: will verify" : "");
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (const auto& k : new_claims) claimed_.insert(k);
    counters_.allocations += new_claims.size();
    if (ambiguous_any) ++counters_.ambiguous_matches;
  }
  for (const auto& uid : touched_pods) MarkAllocatedIfComplete(candidates, uid);
  stop_cv_.notify_all();  // wake the verifier
  return Status::Ok();
}

void Agent::MarkAllocatedIfComplete(const std::vector<ContainerAssignment>& candidates,
                                    const std::string& pod_uid) {
  const ContainerAssignment* any = nullptr;
  std::lock_guard<std::mutex> lock(mu_);
  for (const auto& c : candidates) {
    if (c.pod_uid != pod_uid) continue;
    any = &c;
    if (!claimed_.count(c.Key())) return;  // more containers of this pod still to come
  }
  if (!any || any->state == kube::kAllocationAllocated) return;
  // Patched by the marker thread: the kubelet does not wait on it, so Allocate does not either.
  QueueMarkLocked(any->namespace_, any->pod_name);
}

size_t Agent::PendingMarks() const {
  std::lock_guard<std::mutex> lock(mu_);
  return mark_queue_.size();
}

bool Agent::QueueMarkLocked(const std::string& ns, const std::string& name) {
  if (!mark_queued_.insert(ns + "/" + name).second) return false;
  mark_queue_.push_back({ns, name});
  mark_cv_.notify_all();
  return true;
}

void Agent::MarkLoop() {
  std::unique_lock<std::mutex> lock(mu_);
  while (!stopping_) {
    if (mark_queue_.empty()) {
      mark_cv_.wait_for(lock, std::chrono::seconds(1));
      continue;
    }
    auto [ns, name] = mark_queue_.front();
    mark_queue_.pop_front();
    lock.unlock();
    auto st = cluster_->AnnotatePod(ns, name,
                                    {{kube::kAnnoAllocationState, kube::kAllocationAllocated}, {kube::kAnnoHamiBindPhase, "success"}});
    lock.lock();
    if (st.ok() || st.error().NotFound()) {
      if (st.ok()) Log("marked %s/%s allocated", ns.c_str(), name.c_str());
      else Log("not marking %s/%s allocated: the pod is gone", ns.c_str(), name.c_str());
      // Remembered for a minute (MarkHeldPods skips it meanwhile); older entries are forgotten here, so
      // the map stays bounded whether or not verification passes run.
      const int64_t now = NowNs();
      std::erase_if(mark_done_, [now](const auto& e) { return now - e.second > kRecentlyMarkedNs; });
      mark_queued_.erase(ns + "/" + name);
      mark_done_[ns + "/" + name] = now;
    } else {
      Log("cannot mark %s/%s allocated: %s (retrying)", ns.c_str(), name.c_str(),
          st.error().ToString().c_str());
      mark_queue_.push_back({ns, name});
      mark_cv_.wait_for(lock, std::chrono::seconds(1));
    }
  }
}

}  // namespace tessera::agent
