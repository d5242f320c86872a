#include "scheduler/request.h"

#include <algorithm>
#include <mutex>
#include <sstream>
#include <unordered_map>

#include "kube/annotations.h"

#include "kube/quantity.h"

namespace tessera::scheduler {
namespace {

using nlohmann::json;
using kube::Error;
using kube::Quantity;

Error Invalid(const std::string& msg) { return Error{0, "Invalid", msg}; }

std::vector<std::string> SplitList(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ',')) {
    auto b = item.find_first_not_of(" \t");
    auto e = item.find_last_not_of(" \t");
    if (b != std::string::npos) out.push_back(item.substr(b, e - b + 1));
  }
  return out;
}


// The resource value from limits, else requests; nullopt if absent. Validates: a non-negative integer.
kube::Result<std::optional<int64_t>> ReadInt(const json& c, const std::string& name, const std::string& where) {
  const json* val = nullptr;
  if (c.contains("resources")) {
    const json& r = c["resources"];
    if (r.contains("limits") && r["limits"].is_object() && r["limits"].contains(name)) val = &r["limits"][name];
    else if (r.contains("requests") && r["requests"].is_object() && r["requests"].contains(name))
      val = &r["requests"][name];
  }
  if (!val) return std::optional<int64_t>();
  std::string text = val->is_string() ? val->get<std::string>() : val->dump();
  auto q = Quantity::Parse(text);
  if (!q) return Invalid(where + ": " + name + "=" + text + " is not a quantity (expected a whole number)");
  if (q->IsNegative()) return Invalid(where + ": " + name + "=" + text + " is negative (must be >= 0)");
  if (!q->IsInteger()) return Invalid(where + ": " + name + "=" + text + " is not a whole number");
  return std::optional<int64_t>(q->Value());
}

int64_t MilliOf(const json& c, const char* res, bool memory) {
  if (!c.contains("resources") || !c["resources"].contains("requests")) return 0;
  const json& r = c["resources"]["requests"];
  if (!r.is_object() || !r.contains(res) || !r[res].is_string()) return 0;
  auto q = Quantity::Parse(r[res].get<std::string>());
  if (!q) return 0;
  // The API server accepts quantities up to the int64 limit; one container counts for at most 2^40 (a
  // billion cores, an EiB), so rounding up and the sums over containers cannot overflow.
  constexpr int64_t kMax = int64_t{1} << 40;
  const int64_t v = memory ? q->Value() / (1 << 20) + (q->Value() % (1 << 20) > 0 ? 1 : 0) : q->MilliValue();
  return std::clamp<int64_t>(v, 0, kMax);
}

kube::Result<PolicyChoice> PolicyAnnotation(const json& pod, const char* key, PolicyLevel level, PolicyChoice def) {
  return ParsePolicyChoice(std::string("annotation ") + key, PodAnnotation(pod, key), level, def);
}

}  // namespace

std::string PodAnnotation(const json& pod, const char* key) {
  const json* a = nullptr;
  if (pod.contains("metadata") && pod["metadata"].contains("annotations") && pod["metadata"]["annotations"].is_object())
    a = &pod["metadata"]["annotations"];
  if (!a) return "";
  auto it = a->find(key);
  return it != a->end() && it->is_string() ? it->get<std::string>() : "";
}

std::string JsonPointerEscape(const std::string& segment) {
  std::string o;
  for (char c : segment) {
    if (c == '~') o += "~0";
    else if (c == '/') o += "~1";
    else o += c;
  }
  return o;
}

int32_t NamespaceId(const std::string& ns) {
  static std::mutex mu;
  static std::unordered_map<std::string, int32_t> ids;
  std::lock_guard<std::mutex> l(mu);
  return ids.emplace(ns, static_cast<int32_t>(ids.size())).first->second;
}

void PodCpuMemory(const json& pod, int64_t* cpu_milli, int64_t* memory_mib) {
  int64_t app_cpu = 0, app_mem = 0, init_cpu = 0, init_mem = 0;
  if (pod.contains("spec")) {
    for (bool init : {true, false}) {
      const char* list = init ? "initContainers" : "containers";
      if (!pod["spec"].contains(list) || !pod["spec"][list].is_array()) continue;
      for (const auto& c : pod["spec"][list]) {
        // Kubernetes: sidecars (restartPolicy Always) add up with the app containers; a run-once init
        // container needs its own request plus the sidecars started before it.
        if (init && !(c.is_object() && c.value("restartPolicy", "") == "Always")) {
          init_cpu = std::max(init_cpu, MilliOf(c, "cpu", false) + app_cpu);
          init_mem = std::max(init_mem, MilliOf(c, "memory", true) + app_mem);
        } else {
          app_cpu += MilliOf(c, "cpu", false);
          app_mem += MilliOf(c, "memory", true);
        }
      }
    }
  }
  *cpu_milli = std::max(app_cpu, init_cpu);
  *memory_mib = std::max(app_mem, init_mem);
}

bool WantsGpu(const json& pod, const ResourceNames& names) {
  if (!pod.contains("spec")) return false;
  for (const char* list : {"containers", "initContainers"}) {
    if (!pod["spec"].contains(list) || !pod["spec"][list].is_array()) continue;
    for (const auto& c : pod["spec"][list]) {
      if (!c.contains("resources")) continue;
      for (const char* kind : {"limits", "requests"}) {
        if (!c["resources"].contains(kind) || !c["resources"][kind].is_object()) continue;
        for (auto it = c["resources"][kind].begin(); it != c["resources"][kind].end(); ++it)
          if (names.IsOurs(it.key())) return true;
      }
    }
  }
  return false;
}

kube::Result<ParsedPod> ParsePod(const json& pod, const ParseOptions& opts, int64_t max_gpu_memory_mib) {
  ParsedPod out;
  if (pod.contains("metadata")) {
    out.ns = pod["metadata"].value("namespace", "");
    out.name = pod["metadata"].value("name", "");
    if (out.name.empty()) out.name = pod["metadata"].value("generateName", "");
    out.uid = pod["metadata"].value("uid", "");
  }
  if (!pod.contains("spec") || !pod["spec"].is_object()) return Invalid("pod has no spec");
  const json& spec = pod["spec"];
  const ResourceNames& n = opts.names;

  auto node_policy =
      PolicyAnnotation(pod, "hami.io/node-scheduler-policy", PolicyLevel::kNode, opts.default_node_policy);
  if (!node_policy) return node_policy.error();
  auto gpu_policy = PolicyAnnotation(pod, "hami.io/gpu-scheduler-policy", PolicyLevel::kGpu, opts.default_gpu_policy);
  if (!gpu_policy) return gpu_policy.error();
  out.request.node_policy = node_policy->base;
  out.request.node_topology_aware = node_policy->topology_aware;
  out.request.node_numa = node_policy->numa;
  placement::ComputeMode mode = placement::ComputeMode::kNodeDefault;
  if (std::string m = PodAnnotation(pod, kube::kAnnoComputeMode); !m.empty()) {
    if (m == kube::kModeSpatial) mode = placement::ComputeMode::kSpatial;
    else if (m == kube::kModeTimeSliced) mode = placement::ComputeMode::kTimeSliced;
    else
      return Invalid(std::string("annotation ") + kube::kAnnoComputeMode + "=" + m +
                     " is not allowed (time-sliced or spatial; absent: the node's default)");
  }
  if (std::string m = PodAnnotation(pod, kube::kAnnoCapMode); !m.empty()) {
    if (m != kube::kCapHard && m != kube::kCapBurst)
      return Invalid(std::string("annotation ") + kube::kAnnoCapMode + "=" + m +
                     " is not allowed (hard or burst; absent: hard)");
    out.burst = m == kube::kCapBurst;
  }
  bool share = opts.spatial_share_namespaces;
  if (std::string v = PodAnnotation(pod, kube::kAnnoSpatialShare); !v.empty()) {
    if (v != "true" && v != "false")
      return Invalid(std::string("annotation ") + kube::kAnnoSpatialShare + "=" + v + " is not allowed (true or false)");
    share = v == "true";
  }
  const int32_t tenant = NamespaceId(out.ns);
  std::string numa = PodAnnotation(pod, "nvidia.com/numa-bind");
  if (!numa.empty() && numa != "true" && numa != "false")
    return Invalid("annotation nvidia.com/numa-bind=" + numa + " is not allowed (true or false)");
  auto types_in = SplitList(PodAnnotation(pod, "nvidia.com/use-gputype"));
  auto types_out = SplitList(PodAnnotation(pod, "nvidia.com/nouse-gputype"));
  auto uuids_in = SplitList(PodAnnotation(pod, "nvidia.com/use-gpuuuid"));
  auto uuids_out = SplitList(PodAnnotation(pod, "nvidia.com/nouse-gpuuuid"));

  int64_t app_cpu = 0, app_mem = 0, init_cpu = 0, init_mem = 0;
  for (bool init : {true, false}) {
    const char* list = init ? "initContainers" : "containers";
    if (!spec.contains(list) || !spec[list].is_array()) continue;
    int idx = 0;
    for (const auto& c : spec[list]) {
      std::string cname = c.value("name", std::to_string(idx));
      std::string where = std::string(init ? "init container \"" : "container \"") + cname + "\"";
      const bool sidecar = init && c.is_object() && c.value("restartPolicy", "") == "Always";
      if (init) out.init_sidecar.push_back(sidecar);
      if (init && !sidecar) {  // as PodCpuMemory
        init_cpu = std::max(init_cpu, MilliOf(c, "cpu", false) + app_cpu);
        init_mem = std::max(init_mem, MilliOf(c, "memory", true) + app_mem);
      } else {
        app_cpu += MilliOf(c, "cpu", false);
        app_mem += MilliOf(c, "memory", true);
      }
      auto gpus = ReadInt(c, n.gpu, where);
      if (!gpus) return gpus.error();
      auto mem = ReadInt(c, n.memory, where);
      if (!mem) return mem.error();
      auto pct = ReadInt(c, n.memory_percent, where);
      if (!pct) return pct.error();
      auto cores = ReadInt(c, n.cores, where);
      if (!cores) return cores.error();
      auto prio = ReadInt(c, n.priority, where);
      if (!prio) return prio.error();
      bool any = gpus->has_value() || mem->has_value() || pct->has_value() || cores->has_value() || prio->has_value();
      if (any) out.wants_gpu = true;
      if (prio->has_value() && **prio > 1)
        return Invalid(where + ": " + n.priority + "=" + std::to_string(**prio) + " is out of range (0 or 1)");
      if (pct->has_value() && (**pct < 1 || **pct > 100))
        return Invalid(where + ": " + n.memory_percent + "=" + std::to_string(**pct) + " is out of range (1..100)");
      if (cores->has_value() && **cores > 100)
        return Invalid(where + ": " + n.cores + "=" + std::to_string(**cores) + " is out of range (0..100)");
      if (mem->has_value() && **mem < 1)
        return Invalid(where + ": " + n.memory + "=" + std::to_string(**mem) + " is out of range (1.." +
                       (max_gpu_memory_mib > 0 ? std::to_string(max_gpu_memory_mib) : "GPU memory") + " MiB)");
      if (mem->has_value() && max_gpu_memory_mib > 0 && **mem > max_gpu_memory_mib)
        return Invalid(where + ": " + n.memory + "=" + std::to_string(**mem) +
                       " MiB is larger than any GPU in the cluster (1.." + std::to_string(max_gpu_memory_mib) + " MiB)");
      if (gpus->has_value() && **gpus > placement::kMaxGpusPerNode)
        return Invalid(where + ": " + n.gpu + "=" + std::to_string(**gpus) + " is out of range (1.." +
                       std::to_string(placement::kMaxGpusPerNode) + ")");
      bool shares = mem->has_value() || pct->has_value() || cores->has_value();
      if (gpus->has_value() && **gpus == 0) {
        if (shares)
          return Invalid(where + ": " + n.gpu + "=0 together with GPU memory or cores (" + n.gpu + " must be >= 1)");
        ++idx;
        continue;
      }
      if (!gpus->has_value() && !shares) {  // no GPU (maybe only a priority)
        ++idx;
        continue;
      }
      placement::ContainerRequest cr;
      cr.gpus = gpus->has_value() ? static_cast<int>(**gpus) : 1;
      if (mode == placement::ComputeMode::kSpatial && cr.gpus > 1)
        return Invalid(where + ": " + n.gpu + "=" + std::to_string(cr.gpus) + " with " + kube::kAnnoComputeMode +
                       "=spatial is out of range (1: a process is the client of one GPU's MPS server)");
      if (!gpus->has_value()) out.gpu_defaulted = true;
      if (!shares) {
        cr.memory_percent = 100;
        cr.cores = 100;
        cr.exclusive = true;
      } else {
        if (mem->has_value()) cr.memory_mib = **mem;
        else if (pct->has_value()) cr.memory_percent = static_cast<int>(**pct);
        else cr.memory_percent = 100;
        cr.cores = cores->has_value() ? static_cast<int>(**cores) : 0;
        cr.exclusive = cr.cores >= 100;
      }
      cr.type_include = types_in;
      cr.type_exclude = types_out;
      cr.uuid_include = uuids_in;
      cr.uuid_exclude = uuids_out;
      cr.numa_bind = numa == "true";
      cr.gpu_policy = gpu_policy->base;
      cr.topology_aware = gpu_policy->topology_aware;
      cr.numa_prefer = gpu_policy->numa;
      cr.mode = mode;
      cr.tenant = tenant;
      cr.share_tenants = share;
      out.request.containers.push_back(std::move(cr));
      out.refs.push_back({init, sidecar, idx, cores->has_value(), prio->has_value() ? static_cast<int>(**prio) : -1});
      ++idx;
    }
    (init ? out.num_init_containers : out.num_containers) = idx;
  }
  out.request.cpu_milli = std::max(app_cpu, init_cpu);
  out.request.memory_mib = std::max(app_mem, init_mem);
  return out;
}

kube::PodSettings ParsedPod::Settings() const {
  kube::PodSettings s;
  s.containers.resize(static_cast<size_t>(num_containers), kube::ContainerSettings{1, burst});
  s.init_containers.resize(static_cast<size_t>(num_init_containers), kube::ContainerSettings{1, burst});
  for (const auto& r : refs) {
    auto& list = r.init ? s.init_containers : s.containers;
    if (r.index >= 0 && static_cast<size_t>(r.index) < list.size() && r.priority >= 0) list[r.index].priority = r.priority;
  }
  return s;
}

}  // namespace tessera::scheduler
