#include "agent/matcher.h"

#include <algorithm>
#include <map>
#include <tuple>

namespace tessera::agent {

std::string GpuOfDevice(const std::string& id) {
  auto pos = id.find("::");
  return pos == std::string::npos ? id : id.substr(0, pos);
}

std::vector<std::string> GpusOfDevices(const std::vector<std::string>& ids) {
  std::set<std::string> s;
  for (const auto& id : ids) s.insert(GpuOfDevice(id));
  return {s.begin(), s.end()};
}

bool KubeletOrder(const ContainerAssignment& a, const ContainerAssignment& b) {
  auto key = [](const ContainerAssignment& c) {
    return std::make_tuple(c.bind_time_ns, c.creation_time_ns, c.namespace_, c.pod_name, c.pod_uid,
                           c.init ? 0 : 1, c.index);
  };
  return key(a) < key(b);
}

namespace {

std::vector<std::string> AssignedGpus(const ContainerAssignment& c) {
  std::set<std::string> s;
  for (const auto& g : c.grants) s.insert(g.uuid);
  return {s.begin(), s.end()};
}

std::vector<const ContainerAssignment*> Open(const std::vector<ContainerAssignment>& candidates,
                                             const std::set<std::string>& claimed, size_t count) {
  std::vector<const ContainerAssignment*> out;
  for (const auto& c : candidates) {
    if (c.state == kube::kAllocationAllocated || claimed.count(c.Key())) continue;
    if (static_cast<size_t>(c.device_count) != count) continue;
    out.push_back(&c);
  }
  std::sort(out.begin(), out.end(),
            [](const ContainerAssignment* a, const ContainerAssignment* b) { return KubeletOrder(*a, *b); });
  return out;
}

}  // namespace

MatchResult MatchAllocate(const std::vector<ContainerAssignment>& candidates,
                          const std::set<std::string>& claimed, const std::vector<std::string>& device_ids) {
  MatchResult r;
  auto open = Open(candidates, claimed, device_ids.size());
  if (open.empty()) {
    r.reason = "no pod bound to this node is waiting for " + std::to_string(device_ids.size()) +
               " device(s): was it scheduled by tessera-scheduler (annotation tessera.dev/devices)?";
    return r;
  }
  const auto gpus = GpusOfDevices(device_ids);
  std::vector<const ContainerAssignment*> pool;
  for (const auto* c : open) {
    if (AssignedGpus(*c) == gpus) pool.push_back(c);
  }
  r.gpu_set_matched = !pool.empty();
  if (pool.empty()) pool = open;  // the kubelet ignored our preference: count is all we have
  r.chosen = *pool.front();
  r.found = true;
  const std::string sig = r.chosen.Signature();
  for (const auto* c : pool) {
    if (c->Signature() != sig) r.ambiguous = true;
  }
  return r;
}

std::vector<ContainerAssignment> NarrowToAdmitting(const std::vector<ContainerAssignment>& candidates,
                                                   const PodResourcesView& view) {
  std::vector<ContainerAssignment> out;
  for (const auto& c : candidates) {
    auto pod = view.find(c.namespace_ + "/" + c.pod_name);
    if (pod == view.end()) continue;
    auto ctr = pod->second.find(c.container);
    if (ctr == pod->second.end() || ctr->second.empty()) out.push_back(c);
  }
  return out.empty() ? candidates : out;
}

std::vector<std::string> PreferDevices(const std::vector<ContainerAssignment>& candidates,
                                       const std::set<std::string>& claimed,
                                       const std::vector<std::string>& available,
                                       const std::vector<std::string>& must_include, int size) {
  std::vector<std::string> out(must_include.begin(), must_include.end());
  std::set<std::string> used(out.begin(), out.end());
  std::set<std::string> gpus_taken;
  for (const auto& id : out) gpus_taken.insert(GpuOfDevice(id));
  auto take_on = [&](const std::string& gpu) {
    for (const auto& id : available) {
      if (static_cast<int>(out.size()) >= size) return;
      if (!used.count(id) && GpuOfDevice(id) == gpu) {
        out.push_back(id);
        used.insert(id);
        gpus_taken.insert(gpu);
        return;
      }
    }
  };
  auto open = Open(candidates, claimed, static_cast<size_t>(size));
  if (!open.empty()) {
    for (const auto& g : AssignedGpus(*open.front())) {
      if (!gpus_taken.count(g)) take_on(g);
    }
  }
  // Fill up: distinct GPUs first (a container's devices should not share a card), then anything.
  for (const auto& id : available) {
    if (static_cast<int>(out.size()) >= size) break;
    if (!used.count(id) && !gpus_taken.count(GpuOfDevice(id))) {
      out.push_back(id);
      used.insert(id);
      gpus_taken.insert(GpuOfDevice(id));
    }
  }
  for (const auto& id : available) {
    if (static_cast<int>(out.size()) >= size) break;
    if (!used.count(id)) {
      out.push_back(id);
      used.insert(id);
    }
  }
  return out;
}

}  // namespace tessera::agent
