#include "agent/assignment.h"

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <optional>
#include <ctime>
#include <sstream>

#include "kube/annotations.h"

namespace tessera::agent {

std::string ContainerAssignment::Signature() const {
  std::vector<std::string> parts;
  for (const auto& g : grants) {
    parts.push_back(g.uuid + ":" + std::to_string(g.memory_mib) + ":" + std::to_string(g.cores));
  }
  std::sort(parts.begin(), parts.end());
  std::string out = std::to_string(device_count) + (spatial ? "s" : "");
  for (const auto& p : parts) out += "|" + p;
  return out;
}

bool ParseRfc3339(const std::string& s, int64_t* ns) {
  int y, mo, d, h, mi, sec;
  int consumed = 0;
  if (std::sscanf(s.c_str(), "%4d-%2d-%2dT%2d:%2d:%2d%n", &y, &mo, &d, &h, &mi, &sec, &consumed) != 6 ||
      consumed != 19) {
    return false;
  }
  size_t pos = 19;
  int64_t frac_ns = 0;
  if (pos < s.size() && s[pos] == '.') {
    ++pos;
    int digits = 0;
    while (pos < s.size() && s[pos] >= '0' && s[pos] <= '9') {
      if (digits < 9) frac_ns = frac_ns * 10 + (s[pos] - '0');
      ++digits;
      ++pos;
    }
    if (digits == 0) return false;
    for (int i = std::min(digits, 9); i < 9; ++i) frac_ns *= 10;
  }
  int64_t offset_s = 0;
  if (pos < s.size() && (s[pos] == 'Z' || s[pos] == 'z')) {
    ++pos;
  } else if (pos + 6 == s.size() && (s[pos] == '+' || s[pos] == '-') && s[pos + 3] == ':') {
    int oh = 0, om = 0;
    if (std::sscanf(s.c_str() + pos + 1, "%2d:%2d", &oh, &om) != 2) return false;
    offset_s = (oh * 3600 + om * 60) * (s[pos] == '+' ? 1 : -1);
    pos += 6;
  } else {
    return false;
  }
  if (pos != s.size() || mo < 1 || mo > 12 || d < 1 || d > 31 || h < 0 || h > 23 || mi < 0 || mi > 59 ||
      sec < 0 || sec > 60) {
    return false;
  }
  std::tm tm{};
  tm.tm_year = y - 1900;
  tm.tm_mon = mo - 1;
  tm.tm_mday = d;
  tm.tm_hour = h;
  tm.tm_min = mi;
  tm.tm_sec = sec;
  int64_t secs = static_cast<int64_t>(timegm(&tm)) - offset_s;
  // Nanoseconds since 1970 in 64 bits reach the years 1677..2262: anything else is no time of ours.
  if (secs <= INT64_MIN / 1000000000ll || secs >= INT64_MAX / 1000000000ll) return false;
  *ns = secs * 1000000000ll + frac_ns;
  return true;
}

namespace {

int64_t DeviceCount(const nlohmann::json& container, const std::string& resource) {
  const auto* res = &container;
  for (const char* k : {"resources", "limits"}) {
    if (!res->is_object() || !res->contains(k)) return 0;
    res = &(*res)[k];
  }
  if (!res->is_object() || !res->contains(resource)) return 0;
  const auto& v = (*res)[resource];
  if (v.is_number_integer()) return v.get<int64_t>();
  if (v.is_string()) {
    const std::string& s = v.get_ref<const std::string&>();
    if (s.empty() || s.size() > 6 || !std::all_of(s.begin(), s.end(), ::isdigit)) return -1;
    return std::stoll(s);
  }
  return -1;
}

std::vector<ContainerAssignment> Parse(const nlohmann::json& pod, const std::string& node,
                                       const std::string& resource, std::string* error) {
  std::vector<ContainerAssignment> out;
  if (!pod.is_object() || !pod.contains("metadata") || !pod["metadata"].is_object()) return out;
  const auto& meta = pod["metadata"];
  const auto ann = meta.value("annotations", nlohmann::json::object());
  if (!ann.is_object()) return out;
  auto get = [&](const char* key) -> std::string {
    return ann.contains(key) && ann[key].is_string() ? ann[key].get<std::string>() : "";
  };
  std::string spec_node;
  if (pod.contains("spec") && pod["spec"].is_object()) spec_node = pod["spec"].value("nodeName", "");
  std::string assigned = get(kube::kAnnoAssignedNode);
  if (assigned.empty()) assigned = spec_node;
  if (assigned != node || (get(kube::kAnnoDevices).empty() && get(kube::kAnnoInitDevices).empty())) return out;

  const std::string ns = meta.value("namespace", ""), name = meta.value("name", "");
  const std::string where = "pod " + ns + "/" + name + ": ";
  kube::ContainerDevices devices, init_devices;
  for (auto [key, target] :
       {std::pair{kube::kAnnoDevices, &devices}, std::pair{kube::kAnnoInitDevices, &init_devices}}) {
    if (get(key).empty()) continue;
    auto decoded = kube::DecodeDevices(get(key));
    if (!decoded.ok()) {
      *error = where + key + ": " + decoded.error().message;
      return out;
    }
    *target = std::move(*decoded);
  }
  // The scheduler's resolved settings. A pod bound before they were written (an older scheduler) has
  // none: then the pod's own cap-mode annotation and nvidia.com/priority limit are read, as that
  // scheduler's agent did.
  std::optional<kube::PodSettings> settings;
  if (!get(kube::kAnnoSettings).empty()) {
    auto decoded = kube::DecodeSettings(get(kube::kAnnoSettings));
    if (!decoded.ok()) {
      *error = where + decoded.error().message;
      return out;
    }
    settings = std::move(*decoded);
  }
  int64_t bind_ns = 0, created_ns = 0;
  if (!get(kube::kAnnoBindTime).empty() && !ParseRfc3339(get(kube::kAnnoBindTime), &bind_ns)) {
    *error = where + kube::kAnnoBindTime + ": '" + get(kube::kAnnoBindTime) + "' is not an RFC 3339 time";
    return out;
  }
  ParseRfc3339(meta.value("creationTimestamp", ""), &created_ns);

  if (!pod.contains("spec") || !pod["spec"].is_object()) return out;
  const auto& spec = pod["spec"];
  for (int pass = 0; pass < 2; ++pass) {
    const bool init = pass == 0;
    const char* field = init ? "initContainers" : "containers";
    if (!spec.contains(field) || !spec[field].is_array()) continue;
    const auto& ctrs = spec[field];
    for (size_t i = 0; i < ctrs.size(); ++i) {
      int64_t count = DeviceCount(ctrs[i], resource);
      if (count < 0) {
        *error = where + field + "[" + std::to_string(i) + "]: " + resource + " is not a whole number";
        return {};
      }
      if (count == 0) continue;
      const char* key = init ? kube::kAnnoInitDevices : kube::kAnnoDevices;
      const kube::ContainerDevices& table = init ? init_devices : devices;
      const std::string at = std::string(key) + "[" + std::to_string(i) + "]";
      ContainerAssignment a;
      a.pod_uid = meta.value("uid", "");
      a.namespace_ = ns;
      a.pod_name = name;
      a.container = ctrs[i].value("name", "");
      a.init = init;
      a.index = static_cast<int>(i);
      a.device_count = static_cast<int>(count);
      a.bind_time_ns = bind_ns;
      a.creation_time_ns = created_ns;
      a.state = get(kube::kAnnoAllocationState);
      a.spatial = get(kube::kAnnoComputeMode) == kube::kModeSpatial;
      if (settings) {
        const auto& list = init ? settings->init_containers : settings->containers;
        if (i >= list.size()) {
          *error = where + kube::kAnnoSettings + "." + field + "[" + std::to_string(i) + "]: missing";
          return {};
        }
        a.priority = list[i].priority;
        a.burst = list[i].burst;
      } else {
        a.burst = get(kube::kAnnoCapMode) == kube::kCapBurst;
        int64_t prio = DeviceCount(ctrs[i], "nvidia.com/priority");
        if (prio < 0 || prio > 1) {
          *error = where + field + "[" + std::to_string(i) + "]: nvidia.com/priority must be 0 or 1";
          return {};
        }
        a.priority = ctrs[i].contains("resources") && ctrs[i]["resources"].contains("limits") &&
                             ctrs[i]["resources"]["limits"].contains("nvidia.com/priority")
                         ? static_cast<int>(prio)
                         : 1;
      }
      if (i >= table.size()) {
        *error = where + at + ": missing: container '" + a.container + "' asks for " + std::to_string(count) +
                 " " + resource;
        return {};
      }
      a.grants = table[i];
      if (static_cast<int64_t>(a.grants.size()) != count) {
        *error = where + at + ": " + std::to_string(a.grants.size()) +
                 " GPUs assigned but the container asks for " + std::to_string(count);
        return {};
      }
      out.push_back(std::move(a));
    }
  }
  return out;
}

}  // namespace

std::vector<ContainerAssignment> ParseAssignments(const nlohmann::json& pod, const std::string& node,
                                                  const std::string& resource, std::string* error) {
  error->clear();
  try {
    return Parse(pod, node, resource, error);
  } catch (const nlohmann::json::exception& e) {
    // A field of another type than the API's (a name that is a number, ...): skip the pod, say why.
    *error = std::string("pod of an unexpected shape: ") + e.what();
    return {};
  }
}

}  // namespace tessera::agent
