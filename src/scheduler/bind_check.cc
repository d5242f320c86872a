#include "scheduler/bind_check.h"

#include <algorithm>
#include <cstdlib>

namespace tessera::scheduler {

using nlohmann::json;

namespace {

const json& Get(const json& j, const char* key) {
  static const json kNull;
  if (!j.is_object()) return kNull;
  auto it = j.find(key);
  return it == j.end() ? kNull : *it;
}

std::string Str(const json& j, const char* key) {
  const json& v = Get(j, key);
  return v.is_string() ? v.get<std::string>() : "";
}

bool InValues(const json& values, const std::string& v) {
  if (!values.is_array()) return false;
  return std::any_of(values.begin(), values.end(), [&](const json& x) { return x.is_string() && x == v; });
}

// One NodeSelectorRequirement against `have` (the label's or field's value; has = present).
bool Requirement(const json& req, bool has, const std::string& have) {
  std::string op = Str(req, "operator");
  const json& values = Get(req, "values");
  if (op == "In") return has && InValues(values, have);
  if (op == "NotIn") return !has || !InValues(values, have);
  if (op == "Exists") return has;
  if (op == "DoesNotExist") return !has;
  if (op == "Gt" || op == "Lt") {
    if (!has || !values.is_array() || values.size() != 1 || !values[0].is_string()) return false;
    char* end = nullptr;
    long long a = std::strtoll(have.c_str(), &end, 10);
    if (end == have.c_str() || *end) return false;
    std::string w = values[0];
    long long b = std::strtoll(w.c_str(), &end, 10);
    if (end == w.c_str() || *end) return false;
    return op == "Gt" ? a > b : a < b;
  }
  return false;  // unknown operator: never matches (as the API server's validation would refuse it)
}

std::string Join(const std::vector<std::string>& v) {
  std::string o;
  for (const auto& s : v) o += (o.empty() ? "" : ", ") + s;
  return o;
}

}  // namespace

bool Tolerates(const json& tolerations, const json& taint) {
  if (!tolerations.is_array()) return false;
  std::string key = Str(taint, "key"), value = Str(taint, "value"), effect = Str(taint, "effect");
  for (const auto& t : tolerations) {
    std::string te = Str(t, "effect");
    if (!te.empty() && te != effect) continue;
    std::string tk = Str(t, "key"), op = Str(t, "operator");
    if (op.empty()) op = "Equal";
    if (tk.empty()) {
      if (op == "Exists") return true;  // empty key + Exists tolerates everything
      continue;
    }
    if (tk != key) continue;
    if (op == "Exists") return true;
    if (op == "Equal" && Str(t, "value") == value) return true;
  }
  return false;
}

bool MatchesTerm(const json& term, const json& node) {
  const json& labels = Get(Get(node, "metadata"), "labels");
  const json& exprs = Get(term, "matchExpressions");
  const json& fields = Get(term, "matchFields");
  if ((!exprs.is_array() || exprs.empty()) && (!fields.is_array() || fields.empty())) return false;  // empty term
  if (exprs.is_array())
    for (const auto& r : exprs) {
      std::string k = Str(r, "key");
      bool has = labels.is_object() && labels.contains(k) && labels[k].is_string();
      if (!Requirement(r, has, has ? labels[k].get<std::string>() : "")) return false;
    }
  if (fields.is_array())
    for (const auto& r : fields) {
      if (Str(r, "key") != "metadata.name") return false;
      if (!Requirement(r, true, Str(Get(node, "metadata"), "name"))) return false;
    }
  return true;
}

std::string BindRefusal(const json& pod, const std::string& expected_uid, const json& node,
                        const std::vector<std::string>& scheduler_names) {
  const json& meta = Get(pod, "metadata");
  const json& spec = Get(pod, "spec");
  std::string who = "pod " + Str(meta, "namespace") + "/" + Str(meta, "name");
  std::string node_name = Str(Get(node, "metadata"), "name");
  if (expected_uid.empty()) return "ExtenderBindingArgs.PodUID is empty: /bind needs the uid of the pod it binds";
  if (Str(meta, "uid") != expected_uid)
    return who + " has uid " + Str(meta, "uid") + ", not " + expected_uid + " (replaced since it was scheduled)";
  std::string sn = Str(spec, "schedulerName");
  if (sn.empty()) sn = "default-scheduler";
  if (std::find(scheduler_names.begin(), scheduler_names.end(), sn) == scheduler_names.end())
    return who + " has spec.schedulerName " + sn + "; this scheduler binds only pods of " + Join(scheduler_names);
  if (!Str(spec, "nodeName").empty()) return who + " is already bound to " + Str(spec, "nodeName");
  if (!Get(meta, "deletionTimestamp").is_null()) return who + " is being deleted";
  if (node_name.empty()) return "node object has no name";
  // Taints the pod must tolerate to be placed (PreferNoSchedule only steers scoring).
  const json& taints = Get(Get(node, "spec"), "taints");
  if (taints.is_array())
    for (const auto& t : taints) {
      std::string effect = Str(t, "effect");
      if (effect != "NoSchedule" && effect != "NoExecute") continue;
      if (!Tolerates(Get(spec, "tolerations"), t))
        return who + " does not tolerate node " + node_name + "'s taint " + Str(t, "key") +
               (Str(t, "value").empty() ? "" : "=" + Str(t, "value")) + ":" + effect;
    }
  const json& labels = Get(Get(node, "metadata"), "labels");
  const json& sel = Get(spec, "nodeSelector");
  if (sel.is_object())
    for (auto it = sel.begin(); it != sel.end(); ++it) {
      const json& have = Get(labels, it.key().c_str());
      if (!have.is_string() || have != *it)
        return who + "'s nodeSelector " + it.key() + "=" + (it->is_string() ? it->get<std::string>() : it->dump()) +
               " does not match node " + node_name;
    }
  const json& terms =
      Get(Get(Get(Get(spec, "affinity"), "nodeAffinity"), "requiredDuringSchedulingIgnoredDuringExecution"),
          "nodeSelectorTerms");
  if (terms.is_array() && !terms.empty()) {
    bool any = std::any_of(terms.begin(), terms.end(), [&](const json& t) { return MatchesTerm(t, node); });
    if (!any) return who + "'s required node affinity matches no term on node " + node_name;
  }
  return "";
}

}  // namespace tessera::scheduler
