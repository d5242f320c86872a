#include "scheduler/view.h"

#include <algorithm>
#include <mutex>

#include "kube/quantity.h"
#include "placement/spatial.h"
#include "placement/topology.h"

namespace tessera::scheduler {

using nlohmann::json;

namespace {

int64_t QuantityField(const json& obj, const char* a, const char* b, const char* key, bool mib) {
  if (!obj.contains(a) || !obj[a].contains(b) || !obj[a][b].is_object() || !obj[a][b].contains(key)) return 0;
  const json& v = obj[a][b][key];
  if (!v.is_string()) return 0;
  auto q = kube::Quantity::Parse(v.get<std::string>());
  if (!q) return 0;
  return mib ? q->Value() >> 20 : q->MilliValue();
}

}  // namespace

bool Holding::HasGpu() const {
  for (const auto* l : {&devices, &init_devices})
    for (const auto& c : *l)
      if (!c.empty()) return true;
  return false;
}

bool Holding::HasSequentialInitSlice() const {
  for (size_t i = 0; i < init_devices.size(); ++i)
    if (!init_devices[i].empty() && !(i < init_sidecar.size() && init_sidecar[i])) return true;
  return false;
}

std::map<std::string, GpuUse> Holding::Use() const {
  auto add = [](GpuUse& u, const kube::DeviceSlice& s) {
    u.memory_mib += s.memory_mib;
    u.cores += s.cores;
    u.sharers += 1;
    u.max_slice_cores = std::max(u.max_slice_cores, s.cores);
  };
  std::map<std::string, GpuUse> running, sidecars, peak;
  for (const auto& c : devices)
    for (const auto& s : c) add(running[s.uuid], s);
  for (size_t i = 0; i < init_devices.size(); ++i) {
    bool sidecar = i < init_sidecar.size() && init_sidecar[i];
    for (const auto& s : init_devices[i]) {
      if (sidecar) {
        add(running[s.uuid], s);
        add(sidecars[s.uuid], s);
        continue;
      }
      GpuUse u = sidecars[s.uuid];
      add(u, s);
      GpuUse& p = peak[s.uuid];
      p.memory_mib = std::max(p.memory_mib, u.memory_mib);
      p.cores = std::max(p.cores, u.cores);
      p.sharers = std::max(p.sharers, u.sharers);
      p.max_slice_cores = std::max(p.max_slice_cores, u.max_slice_cores);
    }
  }
  for (const auto& [uuid, p] : peak) {
    GpuUse& r = running[uuid];
    r.memory_mib = std::max(r.memory_mib, p.memory_mib);
    r.cores = std::max(r.cores, p.cores);
    r.sharers = std::max(r.sharers, p.sharers);
    r.max_slice_cores = std::max(r.max_slice_cores, p.max_slice_cores);
  }
  return running;
}

bool Holding::operator==(const Holding& o) const {
  return node == o.node && cpu_milli == o.cpu_milli && memory_mib == o.memory_mib && devices == o.devices &&
         init_devices == o.init_devices && init_sidecar == o.init_sidecar && unstated_mib == o.unstated_mib &&
         unstated_cores == o.unstated_cores &&
         mode == o.mode && share_tenants == o.share_tenants;
}

int64_t PodQuotaMib(const std::vector<QuotaPart>& parts, bool stated_only, bool cores) {
  int64_t app = 0, sidecars = 0, init = 0;
  for (const auto& p : parts) {
    int64_t m = !stated_only || (cores ? p.cores_stated : p.stated) ? (cores ? p.cores : p.mib) : 0;
    if (p.init && !p.sidecar) {
      init = std::max(init, m + sidecars);
    } else {
      app += m;
      if (p.init) sidecars += m;
    }
  }
  return std::max(app, init);
}

namespace {
int64_t Unstated(const std::vector<QuotaPart>& parts, bool cores = false) {
  return PodQuotaMib(parts, false, cores) - PodQuotaMib(parts, true, cores);
}
// The container states `resource` (a limit or a request), so Kubernetes' quota counts it.
bool States(const json& c, const std::string& resource) {
  if (!c.is_object() || !c.contains("resources") || !c["resources"].is_object()) return false;
  for (const char* kind : {"limits", "requests"})
    if (c["resources"].contains(kind) && c["resources"][kind].is_object() && c["resources"][kind].contains(resource))
      return true;
  return false;
}
}  // namespace

NodeRecord ParseNode(const json& node) {
  NodeRecord r;
  r.name = kube::Name(node);
  if (node.contains("metadata") && node["metadata"].contains("labels") && node["metadata"]["labels"].is_object()) {
    for (auto it = node["metadata"]["labels"].begin(); it != node["metadata"]["labels"].end(); ++it)
      if (it->is_string()) r.labels.emplace_back(it.key(), it->get<std::string>());
  }
  r.cpu_milli = QuantityField(node, "status", "allocatable", "cpu", false);
  r.memory_mib = QuantityField(node, "status", "allocatable", "memory", true);
  if (kube::Annotation(node, kube::kAnnoComputeMode) == kube::kModeSpatial)
    r.default_mode = placement::ComputeMode::kSpatial;
  std::string inv = kube::Annotation(node, kube::kAnnoGpus);
  if (!inv.empty()) {
    auto g = kube::DecodeGpus(inv);
    if (g) r.gpus = std::move(*g);
    else r.inventory_error = g.error().message;
  }
  return r;
}

ClusterView::ClusterView(ParseOptions parse_options) : parse_(std::move(parse_options)) {}

// ---------------------------------------------------------------- nodes

void ClusterView::SetNodeLocked(NodeRecord rec) {
  auto it = nodes_.find(rec.name);
  if (it != nodes_.end() && it->second == rec) return;  // heartbeats and unrelated fields: no rebuild
  nodes_[rec.name] = std::move(rec);
  dirty_ = true;
}

void ClusterView::RemoveNodeLocked(const std::string& name) {
  if (nodes_.erase(name)) dirty_ = true;
}

void ClusterView::ReplaceNodes(const std::vector<json>& items) {
  std::map<std::string, NodeRecord> fresh;
  for (const auto& n : items) {
    auto r = ParseNode(n);
    fresh[r.name] = std::move(r);
  }
  std::unique_lock l(mu_);
  if (fresh != nodes_) {
    nodes_ = std::move(fresh);
    dirty_ = true;
  }
}

void ClusterView::OnNode(kube::EventType t, const json& node) {
  if (t == kube::EventType::kDeleted) {
    std::string name = kube::Name(node);
    std::unique_lock l(mu_);
    RemoveNodeLocked(name);
    return;
  }
  NodeRecord rec = ParseNode(node);
  std::unique_lock l(mu_);
  SetNodeLocked(std::move(rec));
}

// ---------------------------------------------------------------- pods

void ClusterView::ChangeHoldingLocked(const std::string& ns, const Holding& before, const Holding& after) {
  if (before == after) return;
  ns_unstated_mib_[ns] += after.unstated_mib - before.unstated_mib;
  ns_unstated_cores_[ns] += after.unstated_cores - before.unstated_cores;
  if (before.empty() && !dirty_ && snap_) {
    if (!CommitLocked(after)) dirty_ = true;
  } else {
    dirty_ = true;  // something was released or moved: recompute from the records
  }
}

namespace {
// The compute mode of a held slice as the placement engine counts it.
void SetModeOf(const Holding& h, placement::ContainerRequest* cr) {
  cr->mode = h.mode;
  cr->tenant = NamespaceId(h.ns);
  cr->share_tenants = h.share_tenants;
}
}  // namespace

bool ClusterView::CommitLocked(const Holding& h) {
  if (h.empty()) return true;
  if (h.HasSequentialInitSlice()) return false;  // not a plain sum of slices: rebuild from Use()
  auto idx = snap_->Find(h.node);
  if (!idx) return true;  // not a GPU node: the snapshot doesn't track it
  const placement::Node& n = snap_->node(*idx);
  placement::PodRequest req;
  placement::Assignment a;
  req.cpu_milli = h.cpu_milli;
  req.memory_mib = h.memory_mib;
  for (const auto* l : {&h.devices, &h.init_devices}) {
    for (const auto& c : *l) {
      if (c.empty()) continue;
      placement::ContainerRequest cr;
      cr.gpus = static_cast<int>(c.size());
      SetModeOf(h, &cr);
      std::vector<placement::GpuGrant> grants;
      for (const auto& s : c) {
        auto g = std::find_if(n.gpus.begin(), n.gpus.end(), [&](const placement::Gpu& x) { return x.uuid == s.uuid; });
        if (g == n.gpus.end()) return false;
        placement::GpuGrant gr;
        gr.gpu = static_cast<uint16_t>(g - n.gpus.begin());
        gr.memory_mib = s.memory_mib;
        gr.cores = s.cores;
        gr.exclusive = s.cores >= g->cores;
        cr.memory_mib = s.memory_mib;
        cr.cores = s.cores;
        cr.exclusive = gr.exclusive;
        grants.push_back(gr);
      }
      req.containers.push_back(cr);
      a.containers.push_back(std::move(grants));
    }
  }
  snap_->Commit(*idx, req, a);
  return true;
}

PodRecord ParsePodRecord(const json& pod, const ResourceNames& names) {
  PodRecord fresh;
  fresh.uid = kube::Uid(pod);
  fresh.ns = kube::Namespace(pod);
  fresh.name = kube::Name(pod);
  fresh.resource_version = kube::ResourceVersionOf(pod);
  if (pod.contains("spec")) fresh.node_name = pod["spec"].value("nodeName", "");
  std::string phase = pod.contains("status") ? pod["status"].value("phase", "") : "";
  fresh.terminal = phase == "Succeeded" || phase == "Failed";
  fresh.allocation_state = kube::Annotation(pod, kube::kAnnoAllocationState);
  Holding h;
  PodCpuMemory(pod, &h.cpu_milli, &h.memory_mib);
  std::string assigned = kube::Annotation(pod, kube::kAnnoAssignedNode);
  std::string devs = kube::Annotation(pod, kube::kAnnoDevices);
  if (!assigned.empty() && !devs.empty()) {
    auto d = kube::DecodeDevices(devs);
    if (d) {
      fresh.assigned = true;
      h.devices = std::move(*d);
      std::string init = kube::Annotation(pod, kube::kAnnoInitDevices);
      if (!init.empty()) {
        if (auto di = kube::DecodeDevices(init)) h.init_devices = std::move(*di);
      }
      if (pod.contains("spec") && pod["spec"].is_object() && pod["spec"].contains("initContainers") &&
          pod["spec"]["initContainers"].is_array())
        for (const auto& c : pod["spec"]["initContainers"])
          h.init_sidecar.push_back(c.is_object() && c.value("restartPolicy", "") == "Always");
    }
  }
  // A pod bound elsewhere than its annotation says holds its GPU slices nowhere; trust the binding.
  h.node = fresh.assigned && (fresh.node_name.empty() || fresh.node_name == assigned) ? assigned : fresh.node_name;
  if (h.node != assigned) {
    h.devices.clear();
    h.init_devices.clear();
  }
  if (fresh.terminal || h.node.empty()) h = Holding{};
  h.ns = fresh.ns;
  if (kube::Annotation(pod, kube::kAnnoComputeMode) == kube::kModeSpatial) h.mode = placement::ComputeMode::kSpatial;
  h.share_tenants = kube::Annotation(pod, kube::kAnnoSpatialShare) == "true";
  if (h.HasGpu() && pod.contains("spec") && pod["spec"].is_object()) {
    std::vector<QuotaPart> parts;
    for (bool init : {true, false}) {
      const char* list = init ? "initContainers" : "containers";
      const auto& slices = init ? h.init_devices : h.devices;
      if (!pod["spec"].contains(list) || !pod["spec"][list].is_array()) continue;
      for (size_t i = 0; i < pod["spec"][list].size() && i < slices.size(); ++i) {
        if (slices[i].empty()) continue;
        const json& c = pod["spec"][list][i];
        parts.push_back({init, init && c.is_object() && c.value("restartPolicy", "") == "Always",
                         States(c, names.memory), slices[i][0].memory_mib, States(c, names.cores),
                         slices[i][0].cores});
      }
    }
    h.unstated_mib = Unstated(parts);
    h.unstated_cores = Unstated(parts, true);
  }
  fresh.from_api = std::move(h);
  return fresh;
}

void ClusterView::UpsertPodLocked(PodRecord fresh) {
  if (fresh.uid.empty()) return;
  std::string uid = fresh.uid;
  auto it = pods_.find(uid);
  Holding before;
  if (it != pods_.end()) {
    before = it->second.effective();
    // Keep our assumption until the API server's copy carries an assignment (ours or a newer one) or the
    // pod is finished; an event from before our patch must not free the slice.
    if (it->second.assumed && !fresh.terminal && !fresh.assigned) fresh.assumed = it->second.assumed;
  }
  pod_keys_[fresh.ns + "/" + fresh.name] = uid;
  Holding after = fresh.effective();
  std::string ns = fresh.ns;
  pods_[uid] = std::move(fresh);
  ChangeHoldingLocked(ns, before, after);
}

void ClusterView::RemovePodLocked(const std::string& uid) {
  auto it = pods_.find(uid);
  if (it == pods_.end()) return;
  Holding before = it->second.effective();
  std::string ns = it->second.ns;
  auto k = pod_keys_.find(ns + "/" + it->second.name);
  if (k != pod_keys_.end() && k->second == uid) pod_keys_.erase(k);
  pods_.erase(it);
  ChangeHoldingLocked(ns, before, Holding{});
}

void ClusterView::ReplacePods(const std::vector<json>& items) {
  std::vector<PodRecord> fresh;
  fresh.reserve(items.size());
  std::unordered_map<std::string, bool> seen;
  for (const auto& p : items) {
    fresh.push_back(ParsePodRecord(p, parse_.names));
    seen[fresh.back().uid] = true;
  }
  std::unique_lock l(mu_);
  for (auto& r : fresh) UpsertPodLocked(std::move(r));
  std::vector<std::string> gone;
  for (const auto& [uid, rec] : pods_)
    if (!seen.count(uid)) gone.push_back(uid);
  for (const auto& uid : gone) RemovePodLocked(uid);
}

void ClusterView::OnPod(kube::EventType t, const json& pod) {
  if (t == kube::EventType::kDeleted) {
    std::string uid = kube::Uid(pod);
    std::unique_lock l(mu_);
    RemovePodLocked(uid);
    return;
  }
  PodRecord fresh = ParsePodRecord(pod, parse_.names);
  std::unique_lock l(mu_);
  UpsertPodLocked(std::move(fresh));
}

// ---------------------------------------------------------------- quotas

namespace {
std::vector<QuotaRecord> ParseQuota(const json& q, const ResourceNames& names) {
  std::vector<QuotaRecord> out;
  if (!q.contains("spec") || !q["spec"].contains("hard") || !q["spec"]["hard"].is_object()) return out;
  // Kubernetes' quota controller publishes status.hard and status.used (what pods state); before it has,
  // spec.hard with nothing used.
  auto status = [&](const char* field, const std::string& key) -> std::optional<int64_t> {
    if (!q.contains("status") || !q["status"].is_object() || !q["status"].contains(field)) return std::nullopt;
    const json& m = q["status"][field];
    if (!m.is_object() || !m.contains(key) || !m[key].is_string()) return std::nullopt;
    auto v = kube::Quantity::Parse(m[key].get<std::string>());
    if (!v) return std::nullopt;
    return v->Value();
  };
  for (bool cores : {false, true}) {
    const std::string& resource = cores ? names.cores : names.memory;
    for (const std::string& key : {"requests." + resource, "limits." + resource, resource}) {
      const json& hard = q["spec"]["hard"];
      if (!hard.contains(key) || !hard[key].is_string()) continue;
      auto v = kube::Quantity::Parse(hard[key].get<std::string>());
      if (!v) continue;
      out.push_back({kube::Namespace(q), kube::Name(q), key, resource, cores,
                     status("hard", key).value_or(v->Value()), status("used", key).value_or(0)});
    }
  }
  return out;
}
}  // namespace

void ClusterView::ReplaceQuotas(const std::vector<json>& items) {
  std::unique_lock l(mu_);
  quotas_.clear();
  for (const auto& q : items)
    for (auto& r : ParseQuota(q, parse_.names)) quotas_[r.ns].push_back(std::move(r));
}

void ClusterView::OnQuota(kube::EventType t, const json& q) {
  std::unique_lock l(mu_);
  std::string ns = kube::Namespace(q), name = kube::Name(q);
  auto& list = quotas_[ns];
  std::erase_if(list, [&](const QuotaRecord& r) { return r.name == name; });
  if (t != kube::EventType::kDeleted)
    for (auto& r : ParseQuota(q, parse_.names)) list.push_back(std::move(r));
}

int64_t ClusterView::UnstatedLocked(const std::string& ns, bool cores) const {
  const auto& m = cores ? ns_unstated_cores_ : ns_unstated_mib_;
  auto u = m.find(ns);
  return u == m.end() ? 0 : u->second;
}

std::optional<std::string> ClusterView::QuotaErrorLocked(const std::string& ns, int64_t add_mib, int64_t add_cores,
                                                         const std::string& detail) const {
  auto it = quotas_.find(ns);
  if (it == quotas_.end()) return std::nullopt;
  for (const auto& q : it->second) {
    // All stated: Kubernetes' own quota admission counted it at creation.
    const int64_t add = q.cores ? add_cores : add_mib;
    if (add <= 0) continue;
    const int64_t used = q.used + UnstatedLocked(ns, q.cores);
    if (used + add > q.hard) {
      return "exceeded quota: " + q.name + ", requested: " + q.key + "=" + std::to_string(add) +
             (q.cores ? "" : detail) + ", used: " + q.key + "=" + std::to_string(used) + ", limited: " + q.key + "=" +
             std::to_string(q.hard) + (q.cores ? " (percent of a GPU's cores)" : " (MiB of GPU memory)");
    }
  }
  return std::nullopt;
}

// ---------------------------------------------------------------- snapshot

namespace {
// The published links as the engine's rank matrix (empty when no GPU published any).
std::vector<uint8_t> LinkRanks(const std::vector<kube::GpuInfo>& gpus) {
  const size_t n = gpus.size();
  std::vector<uint8_t> out(n * n, 0);
  bool any = false;
  for (size_t i = 0; i < n; ++i) {
    for (size_t j = 0; j < n; ++j) {
      auto it = gpus[i].links.find(gpus[j].uuid);
      if (i == j || it == gpus[i].links.end()) continue;
      out[i * n + j] = placement::LinkRank(it->second);
      any = any || out[i * n + j] > 0;
    }
  }
  if (!any) out.clear();
  return out;
}
}  // namespace

void ClusterView::EnsureSnapshotLocked() {
  if (!dirty_ && snap_) return;
  std::vector<placement::Node> nodes;
  std::unordered_map<std::string, size_t> index;
  for (const auto& [name, rec] : nodes_) {
    if (rec.gpus.empty()) continue;
    placement::Node n;
    n.name = name;
    n.labels = rec.labels;
    n.cpu_milli = rec.cpu_milli;
    n.memory_mib = rec.memory_mib;
    for (const auto& g : rec.gpus) {
      placement::Gpu pg;
      pg.uuid = g.uuid;
      pg.model = g.model;
      pg.memory_mib = g.memory_mib;
      pg.cores = g.cores;
      pg.numa = g.numa;
      pg.healthy = g.healthy;
      n.gpus.push_back(std::move(pg));
    }
    n.default_mode = rec.default_mode;
    n.links = LinkRanks(rec.gpus);
    index[name] = nodes.size();
    nodes.push_back(std::move(n));
  }
  for (const auto& [uid, rec] : pods_) {
    const Holding& h = rec.effective();
    if (h.empty()) continue;
    auto it = index.find(h.node);
    if (it == index.end()) continue;
    placement::Node& n = nodes[it->second];
    n.cpu_used_milli += h.cpu_milli;
    n.memory_used_mib += h.memory_mib;
    for (const auto& [uuid, u] : h.Use()) {
      for (auto& g : n.gpus) {
        if (g.uuid != uuid) continue;
        g.used.memory_mib += u.memory_mib;
        g.used.cores += u.cores;
        g.used.sharers += u.sharers;
        if (u.max_slice_cores >= g.cores) g.used.exclusive = true;
        placement::ContainerRequest cr;
        SetModeOf(h, &cr);
        for (int k = 0; k < u.sharers; ++k) placement::ApplyMode(n.default_mode, cr, &g.used.mode);
      }
    }
  }
  snap_ = std::make_unique<placement::Snapshot>(std::move(nodes));
  dirty_ = false;
  ++rebuilds_;
}

namespace {

using Grants = std::vector<std::vector<placement::GpuGrant>>;  // parallel to ParsedPod::request.containers

// The pod's slices as a Holding on node `n` (containers without grants hold nothing).
Holding HoldingOf(const ParsedPod& pod, const placement::Node& n, const Grants& grants, const std::string& node) {
  Holding h;
  h.node = node;
  h.cpu_milli = pod.request.cpu_milli;
  h.memory_mib = pod.request.memory_mib;
  h.devices.assign(pod.num_containers, {});
  if (!pod.refs.empty() && std::any_of(pod.refs.begin(), pod.refs.end(), [](const ContainerRef& r) { return r.init; }))
    h.init_devices.assign(pod.num_init_containers, {});
  h.init_sidecar = pod.init_sidecar;
  h.ns = pod.ns;
  if (!pod.request.containers.empty()) {
    h.mode = placement::EffectiveMode(n.default_mode, pod.request.containers[0]);
    h.share_tenants = pod.request.containers[0].share_tenants;
  }
  std::vector<QuotaPart> parts;
  for (size_t k = 0; k < grants.size() && k < pod.refs.size(); ++k) {
    auto& dst = pod.refs[k].init ? h.init_devices[pod.refs[k].index] : h.devices[pod.refs[k].index];
    for (const auto& g : grants[k]) dst.push_back({n.gpus[g.gpu].uuid, g.memory_mib, g.cores});
  }
  // Quota parts in spec order (init containers first), as ParsePodRecord reads them back.
  for (bool init : {true, false}) {
    for (size_t k = 0; k < grants.size() && k < pod.refs.size(); ++k) {
      if (pod.refs[k].init != init || grants[k].empty()) continue;
      parts.push_back({init, pod.refs[k].sidecar, pod.request.containers[k].memory_mib != 0, grants[k][0].memory_mib,
                       pod.refs[k].cores_stated, grants[k][0].cores});
    }
  }
  h.unstated_mib = Unstated(parts);
  h.unstated_cores = Unstated(parts, true);
  return h;
}

// Run-once init container k on GPUs the pod already holds: each chosen GPU must have, after the sidecars
// declared before it, a hold at least as large as the container's slice (nothing more to take), or enough
// free capacity to grow the hold to that size (only the excess is taken). False if no such GPUs.
bool FitInHold(const ParsedPod& pod, const placement::Node& n, const Grants& grants, size_t k,
               std::vector<placement::GpuGrant>* out) {
  const placement::ContainerRequest& r = pod.request.containers[k];
  Grants others = grants;
  others[k].clear();
  auto hold = HoldingOf(pod, n, others, n.name).Use();
  std::map<std::string, GpuUse> side;  // sidecars started before this init container
  for (size_t j = 0; j < pod.refs.size(); ++j) {
    if (!pod.refs[j].sidecar || pod.refs[j].index >= pod.refs[k].index) continue;
    for (const auto& g : grants[j]) {
      side[n.gpus[g.gpu].uuid].memory_mib += g.memory_mib;
      side[n.gpus[g.gpu].uuid].cores += g.cores;
    }
  }
  struct Option {
    int rank;  // 0: inside the hold, 1: grows it
    uint16_t gpu;
    int64_t mem;
    int cores;
  };
  std::vector<Option> opts;
  for (size_t i = 0; i < n.gpus.size(); ++i) {
    const placement::Gpu& g = n.gpus[i];
    auto h = hold.find(g.uuid);
    if (h == hold.end() || !g.healthy) continue;
    const GpuUse& s = side[g.uuid];
    int64_t mem = r.exclusive ? g.memory_mib
                  : r.memory_mib ? r.memory_mib
                                 : int64_t(r.memory_percent) * g.memory_mib / 100;
    int cores = r.exclusive ? g.cores : r.cores;
    if (mem + s.memory_mib <= h->second.memory_mib && cores + s.cores <= h->second.cores) {
      opts.push_back({0, static_cast<uint16_t>(i), mem, cores});
    } else if (!g.used.exclusive && !(r.exclusive && g.used.sharers > 0) &&
               mem + s.memory_mib <= g.memory_mib - g.used.memory_mib && cores + s.cores <= g.cores - g.used.cores) {
      opts.push_back({1, static_cast<uint16_t>(i), mem, cores});
    }
  }
  std::stable_sort(opts.begin(), opts.end(), [](const Option& a, const Option& b) { return a.rank < b.rank; });
  for (int numa = -1; numa < 64; ++numa) {  // numa_bind: all on one NUMA node (-1: any)
    if ((numa == -1) == (r.numa_bind && r.gpus > 1)) continue;
    out->clear();
    for (const auto& o : opts) {
      if (numa >= 0 && n.gpus[o.gpu].numa != numa) continue;
      if (static_cast<int>(out->size()) < r.gpus) out->push_back({o.gpu, o.mem, o.cores, r.exclusive});
    }
    if (static_cast<int>(out->size()) == r.gpus) return true;
  }
  out->clear();
  return false;
}

// Where the pod's GPU containers go on node `idx`: the app containers and sidecars through the engine;
// each run-once init container inside what the pod holds (FitInHold), or, when that cannot be, placed by
// the engine beside everything the pod holds. Null when placed, else the reason. Pure.
const char* PlaceOnNode(const placement::Snapshot& snap, const ParsedPod& pod, uint32_t idx,
                        const placement::Engine& engine, Grants* out) {
  const auto& reqs = pod.request.containers;
  std::vector<bool> summed(reqs.size());
  for (size_t k = 0; k < reqs.size(); ++k) summed[k] = k >= pod.refs.size() || pod.refs[k].concurrent();
  const placement::Node& n = snap.node(idx);
  for (size_t round = 0; round <= reqs.size(); ++round) {
    placement::PodRequest sub = pod.request;
    sub.containers.clear();
    std::vector<size_t> map;
    for (size_t k = 0; k < reqs.size(); ++k) {
      if (!summed[k]) continue;
      sub.containers.push_back(reqs[k]);
      map.push_back(k);
    }
    placement::Assignment a;
    const char* why = nullptr;
    if (!engine.Assign(snap, sub, idx, &a, &why)) return why ? why : "does not fit";
    out->assign(reqs.size(), {});
    for (size_t j = 0; j < map.size() && j < a.containers.size(); ++j) (*out)[map[j]] = a.containers[j];
    bool redo = false;
    for (size_t k = 0; k < reqs.size() && !redo; ++k) {
      if (summed[k]) continue;
      std::vector<placement::GpuGrant> g;
      if (FitInHold(pod, n, *out, k, &g)) {
        (*out)[k] = std::move(g);
      } else {
        summed[k] = true;  // give it its own slice next round
        redo = true;
      }
    }
    if (!redo) return nullptr;
  }
  return "does not fit";
}

// " (30% of a 10000 MiB T4)": how a percentage became MiB, for the quota message ("" when all stated).
std::string QuotaDetail(const ParsedPod& pod, const placement::Node& n, const Grants& grants) {
  for (size_t k = 0; k < grants.size(); ++k) {
    if (grants[k].empty() || pod.request.containers[k].memory_mib != 0) continue;
    const placement::Gpu& gpu = n.gpus[grants[k][0].gpu];
    return " (" + std::to_string(pod.request.containers[k].memory_percent) + "% of a " +
           std::to_string(gpu.memory_mib) + " MiB " + gpu.model + ")";
  }
  return "";
}

}  // namespace

void ClusterView::Evaluate(const ParsedPod& pod, const std::vector<std::string>& candidates,
                           const placement::Engine& engine, const Verdict& verdict) {
  std::shared_lock l(mu_);
  while (dirty_ || !snap_) {  // rare (a node changed, a slice was released): rebuild under the writer lock
    l.unlock();
    {
      std::unique_lock w(mu_);
      EnsureSnapshotLocked();
    }
    l.lock();
  }
  static const char* const kNoInventory =
      "node has no GPUs published by tessera agent (annotation tessera.dev/gpus missing)";
  // A pod whose earlier bind reserved a slice but never completed keeps that node (its own reservation
  // would otherwise make the node look full to it).
  std::string reserved_on;
  if (auto it = pods_.find(pod.uid); it != pods_.end() && it->second.node_name.empty() &&
                                     it->second.effective().HasGpu())
    reserved_on = it->second.effective().node;
  // Scratch reused across calls on this thread: no allocation per call once warm.
  thread_local std::vector<uint32_t> idx;
  thread_local std::vector<uint32_t> pos;  // candidate position of each idx entry
  thread_local placement::Evaluation ev;
  idx.clear();
  pos.clear();
  idx.reserve(candidates.size());
  pos.reserve(candidates.size());
  for (size_t i = 0; i < candidates.size(); ++i) {
    auto f = snap_->Find(candidates[i]);
    if (f) {
      idx.push_back(*f);
      pos.push_back(static_cast<uint32_t>(i));
    } else {
      auto n = nodes_.find(candidates[i]);
      if (n != nodes_.end() && !n->second.inventory_error.empty()) {
        std::string why = "GPU inventory unreadable: " + n->second.inventory_error;
        verdict(i, why.c_str(), 0);
      } else {
        verdict(i, kNoInventory, 0);
      }
    }
  }
  if (idx.empty()) return;
  const bool sequential_init = pod.HasSequentialInitGpu();
  if (sequential_init) {
    // Run-once init containers reuse the app containers' slices: score on what runs together, then place
    // each node's init containers (PlaceOnNode) before saying yes.
    placement::PodRequest concurrent = pod.request;
    concurrent.containers.clear();
    for (size_t k = 0; k < pod.request.containers.size(); ++k)
      if (pod.refs[k].concurrent()) concurrent.containers.push_back(pod.request.containers[k]);
    engine.Evaluate(*snap_, concurrent, idx, &ev);
  } else {
    engine.Evaluate(*snap_, pod.request, idx, &ev);
  }
  bool has_quota = quotas_.count(pod.ns) && !quotas_.at(pod.ns).empty();
  for (size_t k = 0; k < ev.verdicts.size(); ++k) {
    const auto& v = ev.verdicts[k];
    size_t c = pos[k];
    if (!reserved_on.empty() && candidates[c] == reserved_on) {
      verdict(c, nullptr, 100);
      continue;
    }
    if (v.reason) {
      verdict(c, v.reason, 0);
      continue;
    }
    if (has_quota || sequential_init) {
      Grants grants;
      if (const char* why = PlaceOnNode(*snap_, pod, idx[k], engine, &grants)) {
        verdict(c, why, 0);
        continue;
      }
      const placement::Node& n = snap_->node(idx[k]);
      const Holding h = HoldingOf(pod, n, grants, candidates[c]);
      if (has_quota) {
        if (auto q = QuotaErrorLocked(pod.ns, h.unstated_mib, h.unstated_cores, QuotaDetail(pod, n, grants))) {
          verdict(c, q->c_str(), 0);
          continue;
        }
      }
    }
    verdict(c, nullptr, v.score);
  }
}

kube::Result<Reservation> ClusterView::Reserve(const ParsedPod& pod, const std::string& node,
                                               const placement::Engine& engine) {
  std::unique_lock l(mu_);
  auto it = pods_.find(pod.uid);
  if (it != pods_.end()) {
    const Holding& h = it->second.effective();
    if (!it->second.node_name.empty())
      return kube::Error{409, "AlreadyBound", "pod is already bound to " + it->second.node_name};
    if (h.HasGpu()) {
      if (h.node == node) {
        Reservation kept{node, h.devices, h.init_devices};
        kept.spatial = h.mode == placement::ComputeMode::kSpatial;
        kept.reused = true;
        return kept;
      }
      Holding before = h;
      it->second.assumed = Holding{};  // release the stale reservation on the other node
      ChangeHoldingLocked(it->second.ns, before, Holding{});
    }
  }
  EnsureSnapshotLocked();
  auto idx = snap_->Find(node);
  if (!idx) return kube::Error{0, "Unschedulable", "node " + node + " has no GPUs published by tessera agent"};
  Grants grants;
  if (const char* why = PlaceOnNode(*snap_, pod, *idx, engine, &grants))
    return kube::Error{0, "Unschedulable", std::string("node ") + node + ": " + why};
  const placement::Node& n = snap_->node(*idx);
  Holding after = HoldingOf(pod, n, grants, node);
  Reservation r;
  r.node = node;
  r.devices = after.devices;
  r.init_devices = after.init_devices;
  r.spatial = after.mode == placement::ComputeMode::kSpatial;
  if (auto q = QuotaErrorLocked(pod.ns, after.unstated_mib, after.unstated_cores, QuotaDetail(pod, n, grants)))
    return kube::Error{403, "Forbidden", *q};
  PodRecord& rec = pods_[pod.uid];
  if (rec.uid.empty()) {
    rec.uid = pod.uid;
    rec.ns = pod.ns;
    rec.name = pod.name;
    pod_keys_[pod.ns + "/" + pod.name] = pod.uid;
  }
  Holding before = rec.effective();
  rec.assumed = after;
  ChangeHoldingLocked(rec.ns, before, after);
  return r;
}

void ClusterView::Forget(const std::string& uid) {
  std::unique_lock l(mu_);
  auto it = pods_.find(uid);
  if (it == pods_.end() || !it->second.assumed) return;
  Holding before = it->second.effective();
  it->second.assumed.reset();
  ChangeHoldingLocked(it->second.ns, before, it->second.effective());
}

std::optional<PodRecord> ClusterView::FindPod(const std::string& ns, const std::string& name) const {
  std::shared_lock l(mu_);
  auto k = pod_keys_.find(ns + "/" + name);
  if (k == pod_keys_.end()) return std::nullopt;
  auto it = pods_.find(k->second);
  if (it == pods_.end()) return std::nullopt;
  return it->second;
}

int64_t ClusterView::MaxGpuMemoryMib() const {
  std::shared_lock l(mu_);
  int64_t m = 0;
  for (const auto& [name, n] : nodes_)
    for (const auto& g : n.gpus) m = std::max(m, g.memory_mib);
  return m;
}

size_t ClusterView::node_count() const {
  std::shared_lock l(mu_);
  return nodes_.size();
}

size_t ClusterView::pod_count() const {
  std::shared_lock l(mu_);
  return pods_.size();
}

std::vector<GpuAllocation> ClusterView::GpuAllocations() const {
  std::shared_lock l(mu_);
  std::vector<GpuAllocation> out;
  std::unordered_map<std::string, size_t> by_uuid;
  for (const auto& [name, n] : nodes_) {
    for (size_t i = 0; i < n.gpus.size(); ++i) {
      by_uuid[name + "/" + n.gpus[i].uuid] = out.size();
      out.push_back({name, static_cast<int>(i), n.gpus[i], 0, 0, 0});
    }
  }
  for (const auto& [uid, rec] : pods_) {
    const Holding& h = rec.effective();
    for (const auto& [uuid, u] : h.Use()) {
      auto it = by_uuid.find(h.node + "/" + uuid);
      if (it == by_uuid.end()) continue;
      out[it->second].memory_mib += u.memory_mib;
      out[it->second].cores += u.cores;
      out[it->second].sharers += u.sharers;
    }
  }
  return out;
}

std::vector<SliceAllocation> ClusterView::SliceAllocations() const {
  std::shared_lock l(mu_);
  std::vector<SliceAllocation> out;
  for (const auto& [uid, rec] : pods_) {
    const Holding& h = rec.effective();
    for (int init = 0; init < 2; ++init) {
      const auto& list = init ? h.init_devices : h.devices;
      for (size_t i = 0; i < list.size(); ++i)
        for (const auto& s : list[i])
          out.push_back({rec.ns, rec.name, h.node, s.uuid, (init ? "init-" : "") + std::to_string(i), s.memory_mib,
                         s.cores});
    }
  }
  return out;
}

std::vector<ClusterView::QuotaUse> ClusterView::QuotaUsage() const {
  std::shared_lock l(mu_);
  std::vector<QuotaUse> out;
  for (const auto& [ns, list] : quotas_) {
    for (const auto& q : list) out.push_back({q, q.used + UnstatedLocked(ns, q.cores)});
  }
  return out;
}

}  // namespace tessera::scheduler
