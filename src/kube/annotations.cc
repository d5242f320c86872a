#include "kube/annotations.h"

#include <climits>
#include <cstdint>

#include <nlohmann/json.hpp>

namespace tessera::kube {

using nlohmann::json;

std::string EncodeGpus(const std::vector<GpuInfo>& gpus) {
  json a = json::array();
  for (const auto& g : gpus) {
    json e = {{"uuid", g.uuid},         {"model", g.model},   {"memory_mib", g.memory_mib},
              {"cores", g.cores},       {"numa", g.numa},     {"healthy", g.healthy}};
    if (g.cordoned) e["cordoned"] = true;
    if (!g.links.empty()) e["links"] = g.links;
    a.push_back(std::move(e));
  }
  return a.dump();
}

Result<std::vector<GpuInfo>> DecodeGpus(const std::string& text) {
  auto bad = [](const std::string& m) { return Error{0, "Invalid", std::string(kAnnoGpus) + m}; };
  json a;
  try {
    a = json::parse(text);
  } catch (const std::exception& e) {
    return bad(std::string(": not JSON: ") + e.what());
  }
  if (!a.is_array()) return bad(": must be a JSON array");
  std::vector<GpuInfo> out;
  for (size_t i = 0; i < a.size(); ++i) {
    const json& e = a[i];
    std::string at = "[" + std::to_string(i) + "]";
    if (!e.is_object()) return bad(at + ": must be an object");
    GpuInfo g;
    if (!e.contains("uuid") || !e["uuid"].is_string() || e["uuid"].get<std::string>().empty())
      return bad(at + ".uuid: required string");
    g.uuid = e["uuid"];
    if (e.contains("model") && e["model"].is_string()) g.model = e["model"];
    if (!e.contains("memory_mib") || !e["memory_mib"].is_number_integer() || e["memory_mib"].get<int64_t>() <= 0)
      return bad(at + ".memory_mib: required integer > 0");
    g.memory_mib = e["memory_mib"];
    if (e.contains("cores")) {
      if (!e["cores"].is_number_integer() || e["cores"].get<int64_t>() <= 0 ||
          e["cores"].get<int64_t>() > 10000)
        return bad(at + ".cores: integer in 1..10000");
      g.cores = e["cores"];
    }
    if (e.contains("numa")) {
      if (!e["numa"].is_number_integer() || e["numa"].get<int64_t>() < INT_MIN ||
          e["numa"].get<int64_t>() > INT_MAX)
        return bad(at + ".numa: integer");
      g.numa = e["numa"];
    }
    if (e.contains("healthy")) {
      if (!e["healthy"].is_boolean()) return bad(at + ".healthy: boolean");
      g.healthy = e["healthy"];
    }
    if (e.contains("cordoned")) {
      if (!e["cordoned"].is_boolean()) return bad(at + ".cordoned: boolean");
      g.cordoned = e["cordoned"];
    }
    if (e.contains("links")) {
      if (!e["links"].is_object()) return bad(at + ".links: object of GPU uuid to link");
      for (auto it = e["links"].begin(); it != e["links"].end(); ++it) {
        if (!it->is_string()) return bad(at + ".links." + it.key() + ": string (NV<n>, PIX, PXB, PHB, NODE, SYS)");
        g.links[it.key()] = it->get<std::string>();
      }
    }
    out.push_back(std::move(g));
  }
  return out;
}

std::string EncodeDevices(const ContainerDevices& d) {
  json a = json::array();
  for (const auto& c : d) {
    json l = json::array();
    for (const auto& s : c) l.push_back({{"uuid", s.uuid}, {"memory_mib", s.memory_mib}, {"cores", s.cores}});
    a.push_back(std::move(l));
  }
  return a.dump();
}

Result<ContainerDevices> DecodeDevices(const std::string& text) {
  auto bad = [](const std::string& m) { return Error{0, "Invalid", std::string(kAnnoDevices) + m}; };
  json a;
  try {
    a = json::parse(text);
  } catch (const std::exception& e) {
    return bad(std::string(": not JSON: ") + e.what());
  }
  if (!a.is_array()) return bad(": must be a JSON array");
  ContainerDevices out;
  for (size_t i = 0; i < a.size(); ++i) {
    if (!a[i].is_array()) return bad("[" + std::to_string(i) + "]: must be an array");
    std::vector<DeviceSlice> c;
    for (size_t j = 0; j < a[i].size(); ++j) {
      const json& e = a[i][j];
      std::string at = "[" + std::to_string(i) + "][" + std::to_string(j) + "]";
      if (!e.is_object() || !e.contains("uuid") || !e["uuid"].is_string()) return bad(at + ".uuid: required string");
      if (!e.contains("memory_mib") || !e["memory_mib"].is_number_integer() || e["memory_mib"].get<int64_t>() < 0)
        return bad(at + ".memory_mib: required integer >= 0");
      if (!e.contains("cores") || !e["cores"].is_number_integer() || e["cores"].get<int64_t>() < 0 ||
          e["cores"].get<int64_t>() > INT_MAX)
        return bad(at + ".cores: required integer >= 0");
      c.push_back({e["uuid"], e["memory_mib"], e["cores"]});
    }
    out.push_back(std::move(c));
  }
  return out;
}

std::string EncodeSettings(const PodSettings& s) {
  json out = json::object();
  for (auto [key, list] : {std::pair{"containers", &s.containers}, std::pair{"initContainers", &s.init_containers}}) {
    json a = json::array();
    for (const auto& c : *list) a.push_back({{"priority", c.priority}, {"cap_mode", c.burst ? kCapBurst : kCapHard}});
    out[key] = std::move(a);
  }
  return out.dump();
}

Result<PodSettings> DecodeSettings(const std::string& text) {
  auto bad = [](const std::string& m) { return Error{0, "Invalid", std::string(kAnnoSettings) + m}; };
  json o = json::parse(text, nullptr, false);
  if (o.is_discarded()) return bad(": not JSON");
  if (!o.is_object()) return bad(": must be a JSON object");
  PodSettings out;
  for (auto [key, list] : {std::pair{"containers", &out.containers}, std::pair{"initContainers", &out.init_containers}}) {
    if (!o.contains(key)) continue;
    const json& a = o[key];
    if (!a.is_array()) return bad(std::string(".") + key + ": must be an array");
    for (size_t i = 0; i < a.size(); ++i) {
      const std::string at = std::string(".") + key + "[" + std::to_string(i) + "]";
      if (!a[i].is_object()) return bad(at + ": must be an object");
      ContainerSettings c;
      if (a[i].contains("priority")) {
        const json& p = a[i]["priority"];
        if (!p.is_number_integer() || (p.get<int64_t>() != 0 && p.get<int64_t>() != 1))
          return bad(at + ".priority: must be 0 or 1");
        c.priority = static_cast<int>(p.get<int64_t>());
      }
      if (a[i].contains("cap_mode")) {
        const json& m = a[i]["cap_mode"];
        if (!m.is_string() || (m != kCapHard && m != kCapBurst)) return bad(at + ".cap_mode: must be hard or burst");
        c.burst = m == kCapBurst;
      }
      list->push_back(c);
    }
  }
  return out;
}

std::string EncodeHamiDevices(const ContainerDevices& d) {
  std::string s;
  for (const auto& c : d) {
    for (const auto& g : c)
      s += g.uuid + ",NVIDIA," + std::to_string(g.memory_mib) + "," + std::to_string(g.cores) + ":";
    s += ";";
  }
  return s;
}

}  // namespace tessera::kube
