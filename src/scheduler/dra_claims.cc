#include "scheduler/dra_claims.h"

#include <algorithm>
#include <cstdio>
#include <set>

#include "kube/annotations.h"
#include "kube/resource_slice.h"

namespace tessera::scheduler {

using nlohmann::json;

namespace {

constexpr int kMaxSubrequests = 8;

kube::Error Invalid(const std::string& msg) { return kube::Error{0, "Invalid", msg}; }  // resource.k8s.io/v1: firstAvailable holds at most 8

std::string Lower(std::string s) {
  for (auto& c : s) c = static_cast<char>(c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c);
  return s;
}

// A CEL string literal, or "" (with *err set) when `v` holds a control character.
std::string CelString(const std::string& v, const std::string& field, std::string* err) {
  std::string out = "\"";
  for (char c : v) {
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) {
      *err = "annotation " + field + ": value \"" + v + "\" contains a control character";
      return "";
    }
    if (c == '"' || c == '\\') out += '\\';
    out += c;
  }
  return out + "\"";
}

kube::Result<std::string> CelList(const std::vector<std::string>& v, bool lower, const std::string& field) {
  std::string out = "[";
  for (size_t i = 0; i < v.size(); ++i) {
    std::string err;
    std::string lit = CelString(lower ? Lower(v[i]) : v[i], field, &err);
    if (!err.empty()) return Invalid(err);
    out += (i ? ", " : "") + lit;
  }
  return out + "]";
}

// Case-insensitive substring, the placement engine's model filter (placement::ModelMatches).
bool Matches(const std::string& model, const placement::ContainerRequest& c) {
  bool ok = c.type_include.empty();
  for (const auto& t : c.type_include) ok = ok || placement::ModelMatches(model, t);
  for (const auto& t : c.type_exclude) ok = ok && !placement::ModelMatches(model, t);
  return ok;
}

std::string Hex64(uint64_t h) {
  char b[17];
  std::snprintf(b, sizeof b, "%016llx", static_cast<unsigned long long>(h));
  return b;
}

uint64_t Fnv1a(const std::string& s) {
  uint64_t h = 1469598103934665603ull;
  for (unsigned char c : s) {
    h ^= c;
    h *= 1099511628211ull;
  }
  return h;
}

}  // namespace

std::vector<DraGpuKind> DraGpuKinds(const std::vector<json>& resource_slices) {
  std::set<DraGpuKind> kinds;
  for (const auto& s : resource_slices) {
    if (!s.is_object() || !s.contains("spec") || !s["spec"].is_object()) continue;
    const json& spec = s["spec"];
    if (spec.value("driver", "") != kube::kDraDriver || !spec.contains("devices") || !spec["devices"].is_array()) continue;
    for (const auto& d : spec["devices"]) {
      if (!d.is_object() || !d.contains("attributes") || !d["attributes"].is_object()) continue;
      const json& a = d["attributes"];
      auto str = [&](const char* k) -> std::string {
        for (const std::string& key : {std::string(kube::kDraDriver) + "/" + k, std::string(k)}) {
          if (a.contains(key) && a[key].is_object() && a[key].contains("string") && a[key]["string"].is_string())
            return a[key]["string"].get<std::string>();
        }
        return "";
      };
      auto num = [&](const char* k) -> int64_t {
        for (const std::string& key : {std::string(kube::kDraDriver) + "/" + k, std::string(k)}) {
          if (a.contains(key) && a[key].is_object() && a[key].contains("int") && a[key]["int"].is_number_integer())
            return a[key]["int"].get<int64_t>();
        }
        return 0;
      };
      DraGpuKind k{str("model"), num("memoryMiB")};
      if (k.memory_mib > 0) kinds.insert(k);
    }
  }
  return {kinds.begin(), kinds.end()};
}

kube::Result<DraTranslation> TranslateToClaims(const json& pod, const ParsedPod& parsed,
                                               const std::vector<DraGpuKind>& kinds, const DraTranslateOptions& o,
                                               const ResourceNames& names) {
  DraTranslation out;
  const json& spec = pod.value("spec", json::object());
  const std::string attr = std::string("device.attributes[\"") + kube::kDraDriver + "\"]";
  const bool burst = parsed.burst;  // tessera.dev/cap-mode, validated by ParsePod

  std::set<std::string> claim_names;
  if (spec.contains("resourceClaims") && spec["resourceClaims"].is_array())
    for (const auto& c : spec["resourceClaims"]) claim_names.insert(c.is_object() ? c.value("name", "") : "");

  json pod_claims = json::array();
  std::set<std::string> seen_templates;
  for (size_t i = 0; i < parsed.request.containers.size(); ++i) {
    const placement::ContainerRequest& cr = parsed.request.containers[i];
    const ContainerRef& ref = parsed.refs[i];
    const char* list = ref.init ? "initContainers" : "containers";
    const json& c = spec[list][ref.index];
    const std::string where = std::string(ref.init ? "init container \"" : "container \"") + c.value("name", "") + "\"";
    if (cr.mode == placement::ComputeMode::kSpatial)
      return Invalid(where + ": " + kube::kAnnoComputeMode +
                           "=spatial is not available on the DRA path (time-sliced only; see docs/dra.md)");

    // Selectors shared by every (sub)request.
    json selectors = json::array();
    auto add_cel = [&](const std::string& e) { selectors.push_back({{"cel", {{"expression", e}}}}); };
    if (!cr.type_include.empty()) {
      auto l = CelList(cr.type_include, true, "nvidia.com/use-gputype");
      if (!l) return l.error();
      add_cel(*l + ".exists(t, " + attr + ".model.lowerAscii().contains(t))");
    }
    if (!cr.type_exclude.empty()) {
      auto l = CelList(cr.type_exclude, true, "nvidia.com/nouse-gputype");
      if (!l) return l.error();
      add_cel("!" + *l + ".exists(t, " + attr + ".model.lowerAscii().contains(t))");
    }
    if (!cr.uuid_include.empty()) {
      auto l = CelList(cr.uuid_include, false, "nvidia.com/use-gpuuuid");
      if (!l) return l.error();
      add_cel(attr + ".uuid in " + *l);
    }
    if (!cr.uuid_exclude.empty()) {
      auto l = CelList(cr.uuid_exclude, false, "nvidia.com/nouse-gpuuuid");
      if (!l) return l.error();
      add_cel("!(" + attr + ".uuid in " + *l + ")");
    }

    // memory_mib 0: the device's default (the whole card). A whole exclusive card states nothing.
    const bool whole = cr.exclusive && cr.memory_mib == 0 && cr.memory_percent == 100 && cr.cores >= 100;
    auto base_request = [&](json sel, int64_t memory_mib) {
      json r = {{"deviceClassName", o.device_class}, {"allocationMode", "ExactCount"}, {"count", cr.gpus}};
      if (!whole) r["capacity"]["requests"]["cores"] = std::to_string(cr.cores);
      if (memory_mib > 0) r["capacity"]["requests"]["memory"] = std::to_string(memory_mib) + "Mi";
      if (!sel.empty()) r["selectors"] = std::move(sel);
      return r;
    };
    json request = {{"name", "gpu"}};
    if (cr.memory_mib > 0 || cr.memory_percent >= 100) {
      request["exactly"] = base_request(selectors, cr.memory_mib);
    } else {
      // A percentage of each kind of card that passes the type filters.
      std::vector<int64_t> sizes;
      for (const auto& k : kinds)
        if (Matches(k.model, cr) && std::find(sizes.begin(), sizes.end(), k.memory_mib) == sizes.end())
          sizes.push_back(k.memory_mib);
      std::sort(sizes.begin(), sizes.end());
      const std::string field = names.memory_percent + "=" + std::to_string(cr.memory_percent);
      if (sizes.empty())
        return Invalid(where + ": " + field + " needs the GPU sizes that nodes publish (ResourceSlices of " +
                             kube::kDraDriver + "), and none " +
                             (kinds.empty() ? std::string("is published yet") : "matches the pod's GPU type filters") +
                             "; state " + names.memory + " in MiB instead, or retry once a node runs the agent");
      if (static_cast<int>(sizes.size()) > kMaxSubrequests)
        return Invalid(where + ": " + field + ": the cluster publishes " + std::to_string(sizes.size()) +
                             " GPU sizes and a claim can offer at most " + std::to_string(kMaxSubrequests) +
                             " alternatives; narrow it with nvidia.com/use-gputype or state " + names.memory);
      json subs = json::array();
      for (int64_t size : sizes) {
        int64_t mib = cr.memory_percent * size / 100;
        if (mib < 1) mib = 1;
        json sel = selectors;
        sel.push_back({{"cel", {{"expression", attr + ".memoryMiB == " + std::to_string(size)}}}});
        json r = base_request(std::move(sel), mib);
        r["name"] = "m" + std::to_string(size);
        subs.push_back(std::move(r));
      }
      if (subs.size() == 1) {
        json r = subs[0];
        r.erase("name");
        request["exactly"] = std::move(r);
      } else {
        request["firstAvailable"] = std::move(subs);
      }
    }
    json devices = {{"requests", json::array({request})}};
    if (cr.gpus > 1) {
      devices["constraints"] = json::array({{{"requests", {"gpu"}}, {"distinctAttribute", std::string(kube::kDraDriver) + "/uuid"}}});
      if (cr.numa_bind)
        devices["constraints"].push_back({{"requests", {"gpu"}}, {"matchAttribute", std::string(kube::kDraDriver) + "/numaNode"}});
    }
    const int prio = ref.priority;
    if (prio >= 0 || burst) {
      json params = {{"apiVersion", "gpu.tessera.io/v1"}, {"kind", "SliceConfig"}};
      if (prio >= 0) params["priority"] = prio;
      if (burst) params["capMode"] = "burst";
      devices["config"] = json::array({{{"requests", {"gpu"}}, {"opaque", {{"driver", kube::kDraDriver}, {"parameters", params}}}}});
    }
    json tspec = {{"spec", {{"devices", devices}}}};
    const std::string tname = "tessera-gpu-" + Hex64(Fnv1a(tspec.dump()));
    if (seen_templates.insert(tname).second) {
      json t = {{"apiVersion", "resource.k8s.io/v1"},
                {"kind", "ResourceClaimTemplate"},
                {"metadata",
                 {{"name", tname},
                  {"labels", {{"app.kubernetes.io/managed-by", "tessera"}}},
                  {"annotations", {{"tessera.dev/translated-from", where + " of pod " + parsed.ns + "/" +
                                                                        (parsed.name.empty() ? "(generated name)" : parsed.name)}}}}},
                {"spec", tspec}};
      out.templates.push_back({tname, std::move(t)});
    }
    std::string cname = std::string("tessera-gpu-") + (ref.init ? "i" : "c") + std::to_string(ref.index);
    while (claim_names.count(cname)) cname += "x";
    claim_names.insert(cname);
    pod_claims.push_back({{"name", cname}, {"resourceClaimTemplateName", tname}});
    const std::string base = std::string("/spec/") + list + "/" + std::to_string(ref.index) + "/resources/claims";
    const json& res = c.value("resources", json::object());
    if (res.is_object() && res.contains("claims") && res["claims"].is_array())
      out.patch.push_back({{"op", "add"}, {"path", base + "/-"}, {"value", {{"name", cname}}}});
    else
      out.patch.push_back({{"op", "add"}, {"path", base}, {"value", json::array({{{"name", cname}}})}});
  }

  // Our extended resources leave every container: no node advertises them on this path.
  for (const char* list : {"initContainers", "containers"}) {
    if (!spec.contains(list) || !spec[list].is_array()) continue;
    for (size_t i = 0; i < spec[list].size(); ++i) {
      const json& c = spec[list][i];
      if (!c.is_object() || !c.contains("resources") || !c["resources"].is_object()) continue;
      for (const char* kind : {"limits", "requests"}) {
        const json& r = c["resources"].value(kind, json::object());
        if (!r.is_object()) continue;
        for (const auto* n : {&names.gpu, &names.memory, &names.memory_percent, &names.cores, &names.priority}) {
          if (!r.contains(*n)) continue;
          out.patch.push_back({{"op", "remove"},
                               {"path", std::string("/spec/") + list + "/" + std::to_string(i) + "/resources/" + kind +
                                            "/" + JsonPointerEscape(*n)}});
        }
      }
    }
  }
  if (spec.contains("resourceClaims") && spec["resourceClaims"].is_array()) {
    for (auto& pc : pod_claims) out.patch.push_back({{"op", "add"}, {"path", "/spec/resourceClaims/-"}, {"value", pc}});
  } else if (!pod_claims.empty()) {
    out.patch.push_back({{"op", "add"}, {"path", "/spec/resourceClaims"}, {"value", pod_claims}});
  }
  if (spec.value("schedulerName", "") != o.scheduler_name)
    out.patch.push_back({{"op", "add"}, {"path", "/spec/schedulerName"}, {"value", o.scheduler_name}});
  return out;
}

}  // namespace tessera::scheduler
