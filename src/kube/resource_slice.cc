#include "kube/resource_slice.h"

#include <cctype>
#include <cstdio>
#include <functional>

#include "kube/quantity.h"

namespace tessera::kube {

namespace {

constexpr uint64_t kMiB = 1ull << 20;

Error Invalid(const std::string& message) { return Error{0, "Invalid", message}; }

Json Attr(const std::string& s) { return Json{{"string", s}}; }
Json AttrInt(int64_t v) { return Json{{"int", v}}; }

std::string Bytes(uint64_t b) { return Quantity::FromInt(static_cast<int64_t>(b), Quantity::Format::kBinarySI).ToString(); }

}  // namespace

std::string DraDeviceName(const std::string& uuid) {
  std::string out;
  for (char ch : uuid) {
    char c = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
    out += ((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9')) ? c : '-';
  }
  while (!out.empty() && out.back() == '-') out.pop_back();
  size_t start = 0;
  while (start < out.size() && out[start] == '-') ++start;
  out = out.substr(start);
  if (out.empty()) out = "gpu";
  if (out.size() > 63) out = out.substr(out.size() - 63);
  while (!out.empty() && out.front() == '-') out.erase(out.begin());
  return out;
}

std::string DraSliceName(const std::string& node) {
  std::string name = node + "-" + kDraDriver;
  if (name.size() <= 253) return name;
  char hash[17];
  std::snprintf(hash, sizeof(hash), "%016zx", std::hash<std::string>{}(node));
  return node.substr(0, 253 - 1 - 16 - 1 - std::string(kDraDriver).size()) + "-" + hash + "-" + kDraDriver;
}

Json BuildResourceSlice(const std::string& node, const std::string& node_uid, const std::vector<DraGpu>& gpus,
                        int64_t generation) {
  Json devices = Json::array();
  for (const auto& g : gpus) {
    const uint64_t memory = g.memory_bytes / kMiB * kMiB;  // whole MiB: the slice config's unit
    Json attrs = {{"uuid", Attr(g.uuid)},
                  {"model", Attr(g.model)},
                  {"index", AttrInt(g.index)},
                  {"memoryMiB", AttrInt(static_cast<int64_t>(memory / kMiB))}};
    if (g.numa_node >= 0) attrs["numaNode"] = AttrInt(g.numa_node);
    if (!g.pci_bus_id.empty()) attrs["pciBusID"] = Attr(g.pci_bus_id);
    if (!g.compute_capability.empty()) attrs["computeCapability"] = Attr(g.compute_capability);
    if (!g.driver_version.empty()) attrs["driverVersion"] = Attr(g.driver_version);
    Json capacity = {
        {"memory",
         {{"value", Bytes(memory)},
          {"requestPolicy", {{"default", Bytes(memory)}, {"validRange", {{"min", "1Mi"}, {"step", "1Mi"}}}}}}},
        {"cores",
         {{"value", "100"},
          {"requestPolicy", {{"default", "100"}, {"validRange", {{"min", "0"}, {"max", "100"}, {"step", "1"}}}}}}}};
    Json dev = {{"name", DraDeviceName(g.uuid)},
                {"allowMultipleAllocations", true},
                {"attributes", attrs},
                {"capacity", capacity}};
    if (!g.healthy) {
      std::string reason = g.health_reason.empty() ? "unhealthy" : g.health_reason;
      // A taint value is a label value: at most 63 characters of [A-Za-z0-9_.-], alphanumeric at both ends.
      std::string value;
      for (char c : reason) {
        value += (std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '.' || c == '-') ? c : '_';
        if (value.size() == 63) break;
      }
      while (!value.empty() && !std::isalnum(static_cast<unsigned char>(value.back()))) value.pop_back();
      while (!value.empty() && !std::isalnum(static_cast<unsigned char>(value.front()))) value.erase(value.begin());
      Json taint = {{"key", kDraUnhealthyTaint}, {"effect", "NoSchedule"}};
      if (!value.empty()) taint["value"] = value;
      dev["taints"] = Json::array({taint});
    }
    devices.push_back(std::move(dev));
  }
  Json meta = {{"name", DraSliceName(node)}, {"labels", {{"app.kubernetes.io/managed-by", "tessera-agent"}}}};
  if (!node_uid.empty()) {
    meta["ownerReferences"] =
        Json::array({{{"apiVersion", "v1"}, {"kind", "Node"}, {"name", node}, {"uid", node_uid}, {"controller", true}}});
  }
  return Json{{"apiVersion", "resource.k8s.io/v1"},
              {"kind", "ResourceSlice"},
              {"metadata", meta},
              {"spec",
               {{"driver", kDraDriver},
                {"nodeName", node},
                {"pool", {{"name", node}, {"generation", generation}, {"resourceSliceCount", 1}}},
                {"devices", devices}}}};
}

bool SameSliceDevices(const Json& a, const Json& b) {
  auto part = [](const Json& s, const char* key) {
    const Json& spec = s.contains("spec") ? s["spec"] : Json::object();
    return spec.contains(key) ? spec[key] : Json();
  };
  auto strip_time = [](Json devices) {  // the API server stamps taints with timeAdded
    if (!devices.is_array()) return devices;
    for (auto& d : devices) {
      if (!d.contains("taints")) continue;
      for (auto& t : d["taints"]) t.erase("timeAdded");
    }
    return devices;
  };
  auto canon_capacity = [](Json devices) {  // compare quantities by value, not spelling
    if (!devices.is_array()) return devices;
    for (auto& d : devices) {
      if (!d.contains("capacity") || !d["capacity"].is_object()) continue;
      for (auto& [name, c] : d["capacity"].items()) {
        std::function<void(Json&)> canon = [&](Json& j) {
          if (j.is_string()) {
            auto q = Quantity::Parse(j.get<std::string>());
            if (q.ok()) j = q->ToString() == "0" ? "0" : std::to_string(q->MilliValue()) + "m";
          } else if (j.is_object()) {
            for (auto& [k, v] : j.items()) canon(v);
          }
        };
        canon(c);
      }
    }
    return devices;
  };
  return canon_capacity(strip_time(part(a, "devices"))) == canon_capacity(strip_time(part(b, "devices"))) &&
         part(a, "nodeName") == part(b, "nodeName") && part(a, "pool").value("name", "") == part(b, "pool").value("name", "");
}

DraSliceConfig DraClaimAllocation::ConfigFor(const std::string& request) const {
  // A firstAvailable subrequest "req/sub" also takes config aimed at "req".
  const std::string parent = request.substr(0, request.find('/'));
  DraSliceConfig cfg;
  for (const auto& entry : config) {
    bool applies = entry.requests.empty();
    for (const auto& r : entry.requests) applies |= r == request || r == parent;
    if (!applies) continue;
    Status st = ParseDraSliceConfig(entry.parameters, "config", &cfg);  // validated when parsed
    (void)st;
  }
  return cfg;
}

Status ParseDraSliceConfig(const Json& params, const std::string& where, DraSliceConfig* cfg) {
  if (!params.is_object()) return Invalid(where + ": must be an object");
  for (const auto& [key, v] : params.items()) {
    if (key == "apiVersion") {
      if (v != "gpu.tessera.io/v1") return Invalid(where + ".apiVersion: must be gpu.tessera.io/v1");
    } else if (key == "kind") {
      if (v != "SliceConfig") return Invalid(where + ".kind: must be SliceConfig");
    } else if (key == "priority") {
      if (!v.is_number_integer() || v.get<int64_t>() < 0 || v.get<int64_t>() > 1) {
        return Invalid(where + ".priority: must be 0 (high) or 1 (best effort)");
      }
      cfg->priority = v.get<int>();
    } else if (key == "capMode") {
      if (v != "hard" && v != "burst") return Invalid(where + ".capMode: must be hard or burst");
      cfg->burst = v == "burst";
    } else {
      return Invalid(where + "." + key + ": unknown field (allowed: apiVersion, kind, priority, capMode)");
    }
  }
  return Ok{};
}

namespace {

Result<DraClaimAllocation> ReadClaimAllocation(const Json& claim) {
  const std::string who = "ResourceClaim " + Namespace(claim) + "/" + Name(claim);
  const Json* alloc = nullptr;
  if (claim.contains("status") && claim["status"].is_object() && claim["status"].contains("allocation")) {
    alloc = &claim["status"]["allocation"];
  }
  if (alloc == nullptr || !alloc->is_object()) return Invalid(who + ": status.allocation: not allocated");
  DraClaimAllocation out;
  const Json devices = alloc->value("devices", Json::object());
  const Json results = devices.value("results", Json::array());
  if (!results.is_array()) return Invalid(who + ": status.allocation.devices.results: must be a list");
  for (size_t i = 0; i < results.size(); ++i) {
    const Json& r = results[i];
    const std::string where = who + ": status.allocation.devices.results[" + std::to_string(i) + "]";
    if (!r.is_object()) return Invalid(where + ": must be an object");
    if (r.value("driver", "") != kDraDriver) continue;
    DraAllocatedDevice d;
    d.request = r.value("request", "");
    d.pool = r.value("pool", "");
    d.device = r.value("device", "");
    if (d.pool.empty()) return Invalid(where + ".pool: required");
    if (d.device.empty()) return Invalid(where + ".device: required");
    if (r.contains("shareID") && r["shareID"].is_string()) d.share_id = r["shareID"].get<std::string>();
    if (r.contains("consumedCapacity")) {
      const Json& cc = r["consumedCapacity"];
      if (!cc.is_object()) return Invalid(where + ".consumedCapacity: must be a map");
      for (const auto& [key, v] : cc.items()) {
        // Keys may be qualified with our domain.
        std::string name = key;
        const std::string prefix = std::string(kDraDriver) + "/";
        if (name.rfind(prefix, 0) == 0) name = name.substr(prefix.size());
        if (!v.is_string()) return Invalid(where + ".consumedCapacity." + key + ": must be a quantity string");
        auto q = Quantity::Parse(v.get<std::string>());
        if (!q.ok()) return Invalid(where + ".consumedCapacity." + key + ": " + q.error().message);
        if (name == "memory") {
          if (q->IsNegative() || q->IsZero()) return Invalid(where + ".consumedCapacity.memory: must be > 0");
          d.memory_bytes = q->Value();
        } else if (name == "cores") {
          if (q->IsNegative() || q->Value() > 100) {
            return Invalid(where + ".consumedCapacity.cores: must be 0..100");
          }
          d.cores = static_cast<int>(q->Value());
        }
      }
    }
    out.devices.push_back(std::move(d));
  }
  const Json config = devices.value("config", Json::array());
  if (!config.is_array()) return Invalid(who + ": status.allocation.devices.config: must be a list");
  // The API lists class config before claim config, in order; later entries override earlier ones.
  for (size_t i = 0; i < config.size(); ++i) {
    const Json& c = config[i];
    const std::string where = who + ": status.allocation.devices.config[" + std::to_string(i) + "]";
    if (!c.is_object() || !c.contains("opaque") || !c["opaque"].is_object() ||
        c["opaque"].value("driver", "") != kDraDriver) {
      continue;
    }
    DraConfigEntry entry;
    entry.parameters = c["opaque"].value("parameters", Json::object());
    DraSliceConfig scratch;
    Status st = ParseDraSliceConfig(entry.parameters, where + ".opaque.parameters", &scratch);
    if (!st.ok()) return st.error();
    if (c.contains("requests") && c["requests"].is_array()) {
      for (const auto& r : c["requests"]) {
        if (r.is_string()) entry.requests.push_back(r.get<std::string>());
      }
    }
    out.config.push_back(std::move(entry));
  }
  return out;
}

}  // namespace

Result<DraClaimAllocation> ParseClaimAllocation(const Json& claim) {
  try {
    return ReadClaimAllocation(claim);
  } catch (const Json::exception& e) {
    // A field of another type than the API's (a driver that is a number, ...).
    return Invalid(std::string("ResourceClaim of an unexpected shape: ") + e.what());
  }
}

}  // namespace tessera::kube
