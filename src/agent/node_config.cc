#include "agent/node_config.h"

#include <nlohmann/json.hpp>
#include <sstream>

namespace tessera::agent {

using gpu::Status;
using nlohmann::json;

namespace {

Status ReadFilter(const json& v, const std::string& where, DeviceFilter* out) {
  if (!v.is_object()) return Status::Error(where + ": must be an object with uuid and/or index lists");
  for (auto it = v.begin(); it != v.end(); ++it) {
    if (it.key() != "uuid" && it.key() != "index")
      return Status::Error(where + "." + it.key() + ": unknown key (allowed: uuid, index)");
    if (!it->is_array()) return Status::Error(where + "." + it.key() + ": must be a list");
    for (const auto& e : *it) {
      if (it.key() == "uuid") {
        if (!e.is_string()) return Status::Error(where + ".uuid: entries must be GPU uuid strings");
        out->uuids.insert(e.get<std::string>());
      } else {
        if (!e.is_number_integer() || e.get<int64_t>() < 0 || e.get<int64_t>() > 1023)
          return Status::Error(where + ".index: entries must be GPU indexes 0..1023");
        out->indexes.insert(e.get<int>());
      }
    }
  }
  return Status::Ok();
}

Status ReadScale(const json& v, const std::string& where, double* out) {
  if (!v.is_number()) return Status::Error(where + ": must be a number (0.1..16)");
  double d = v.get<double>();
  if (!(d >= 0.1 && d <= 16)) return Status::Error(where + ": " + v.dump() + " is out of range (0.1..16)");
  *out = d;
  return Status::Ok();
}

}  // namespace

Status ApplyNodeConfig(const std::string& text, const std::string& node, const NodeSettings& base,
                       NodeSettings* out, bool* matched) {
  *matched = false;
  json root;
  try {
    root = json::parse(text);
  } catch (const std::exception& e) {
    return Status::Error(std::string("node config: not JSON: ") + e.what());
  }
  if (!root.is_object() || !root.contains("nodeconfig") || !root["nodeconfig"].is_array())
    return Status::Error("node config: expected {\"nodeconfig\": [ {\"name\": <node>, ...}, ... ]}");
  for (auto it = root.begin(); it != root.end(); ++it)
    if (it.key() != "nodeconfig") return Status::Error("node config: " + it.key() + ": unknown key (allowed: nodeconfig)");
  NodeSettings s = base;
  const json& list = root["nodeconfig"];
  for (size_t i = 0; i < list.size(); ++i) {
    const json& e = list[i];
    const std::string where = "node config: nodeconfig[" + std::to_string(i) + "]";
    if (!e.is_object() || !e.contains("name") || !e["name"].is_string())
      return Status::Error(where + ".name: required (the Node's name)");
    // Every entry is checked, not only this node's: a typo in any entry fails the same way on every node.
    NodeSettings tmp = base;
    for (auto it = e.begin(); it != e.end(); ++it) {
      const std::string& k = it.key();
      const std::string at = where + "." + k;
      Status st = Status::Ok();
      if (k == "name") continue;
      if (k == "devicesplitcount") {
        if (!it->is_number_integer() || it->get<int64_t>() < 1 || it->get<int64_t>() > 64)
          return Status::Error(at + ": " + it->dump() + " is out of range (1..64)");
        tmp.split = it->get<int>();
      } else if (k == "devicememoryscaling") {
        st = ReadScale(*it, at, &tmp.memory_scaling);
      } else if (k == "devicecorescaling") {
        st = ReadScale(*it, at, &tmp.core_scaling);
      } else if (k == "operatingmode") {
        std::string m = it->is_string() ? it->get<std::string>() : it->dump();
        if (m == "hami-core" || m == "time-sliced") tmp.spatial = false;
        else if (m == "mps" || m == "spatial") tmp.spatial = true;
        else
          return Status::Error(at + ": \"" + m + "\" is not allowed (time-sliced or hami-core; spatial or mps; " +
                               "Tessera does not partition with MIG)");
      } else if (k == "filterdevices") {
        st = ReadFilter(*it, at, &tmp.exclude);
      } else if (k == "includedevices") {
        st = ReadFilter(*it, at, &tmp.include);
      } else if (k == "migstrategy") {
        if (!it->is_string() || it->get<std::string>() != "none")
          return Status::Error(at + ": only \"none\" (Tessera does not partition with MIG)");
      } else {
        return Status::Error(at + ": unknown key (allowed: name, devicesplitcount, devicememoryscaling, "
                                  "devicecorescaling, operatingmode, filterdevices, includedevices, migstrategy)");
      }
      if (!st.ok()) return st;
    }
    if (e["name"].get<std::string>() == node) {
      if (*matched) return Status::Error(where + ".name: " + node + " has two entries");
      *matched = true;
      tmp.cordon = base.cordon;
      s = tmp;
    }
  }
  *out = s;
  return Status::Ok();
}

std::set<std::string> ParseCordon(const std::string& annotation) {
  std::set<std::string> out;
  std::stringstream ss(annotation);
  std::string item;
  while (std::getline(ss, item, ',')) {
    auto b = item.find_first_not_of(" \t");
    auto e = item.find_last_not_of(" \t");
    if (b != std::string::npos) out.insert(item.substr(b, e - b + 1));
  }
  return out;
}

std::vector<gpu::GpuInfo> OfferedGpus(const std::vector<gpu::GpuInfo>& all, const NodeSettings& s) {
  std::vector<gpu::GpuInfo> out;
  for (const auto& g : all) {
    if (!s.include.empty() && !s.include.Matches(g)) continue;
    if (s.exclude.Matches(g)) continue;
    gpu::GpuInfo o = g;
    if (s.cordon.count(g.uuid) || s.cordon.count(std::to_string(g.index))) {
      o.cordoned = true;
      o.healthy = false;
      o.health_reason = "cordoned (tessera.dev/cordon)";
    }
    out.push_back(std::move(o));
  }
  return out;
}

}  // namespace tessera::agent
