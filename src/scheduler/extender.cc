#include "scheduler/extender.h"

#include "scheduler/bind_check.h"

#include <chrono>
#include <cmath>
#include <algorithm>
#include <cctype>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <string_view>

namespace tessera::scheduler {

using nlohmann::json;

std::string NowRfc3339() {
  std::time_t t = std::chrono::system_clock::to_time_t(std::chrono::system_clock::now());
  char b[32];
  std::strftime(b, sizeof b, "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&t));
  return b;
}

Extender::Extender(ExtenderOptions opts, ClusterView* view, std::shared_ptr<kube::Client> client, Metrics* metrics,
                   std::function<bool()> is_leader)
    : opts_(std::move(opts)), view_(view), client_(std::move(client)), metrics_(metrics), is_leader_(std::move(is_leader)) {}

namespace {

// kube-scheduler's extender types carry no JSON tags, so fields arrive as "Pod", "NodeNames", "PodName";
// Go decodes either case, and so do we.
const json* Field(const json& obj, const char* name) {
  if (!obj.is_object()) return nullptr;
  auto it = obj.find(name);
  if (it != obj.end() && !it->is_null()) return &*it;
  std::string lower = name;
  lower[0] = static_cast<char>(std::tolower(lower[0]));
  for (auto i = obj.begin(); i != obj.end(); ++i) {
    if (i->is_null()) continue;
    const std::string& k = i.key();
    if (k.size() == lower.size() &&
        std::equal(k.begin(), k.end(), lower.begin(), [](char a, char b) { return std::tolower(a) == std::tolower(b); }))
      return &*i;
  }
  return nullptr;
}

std::string StringField(const json& obj, const char* name) {
  const json* f = Field(obj, name);
  return f && f->is_string() ? f->get<std::string>() : "";
}

// The engine scores 0..100; kube-scheduler's extender range is 0..10 (it multiplies by the weight).
int ExtenderScore(int engine_score) { return static_cast<int>(std::lround(engine_score / 10.0)); }

}  // namespace

std::vector<std::string> Extender::Candidates(const json& args) const {
  std::vector<std::string> out;
  if (const json* names = Field(args, "NodeNames"); names && names->is_array()) {
    for (const auto& n : *names)
      if (n.is_string()) out.push_back(n.get<std::string>());
  } else if (const json* nodes = Field(args, "Nodes"); nodes && nodes->is_object() && nodes->contains("items")) {
    for (const auto& n : (*nodes)["items"]) out.push_back(kube::Name(n));
  }
  return out;
}

json Extender::Filter(const json& args) {
  json res = {{"NodeNames", json::array()}, {"FailedNodes", json::object()}, {"Error", ""}};
  const json* pod = Field(args, "Pod");
  if (!pod) {
    res["Error"] = "ExtenderArgs.Pod missing";
    return res;
  }
  auto names = Candidates(args);
  auto parsed = ParsePod(*pod, opts_.parse);
  if (!parsed) {
    // Nothing can fix the request by picking another node: say so on every node.
    for (const auto& n : names) res["FailedNodes"][n] = parsed.error().message;
    return res;
  }
  if (!parsed->wants_gpu || parsed->request.containers.empty()) {
    res["NodeNames"] = names;
    return res;
  }
  // Keep node objects when kube-scheduler sent them (nodeCacheCapable=false).
  const json* full_nodes = Field(args, "NodeNames") ? nullptr : Field(args, "Nodes");
  bool full = full_nodes && full_nodes->is_object();
  std::unordered_map<std::string, bool> ok;
  view_->Evaluate(*parsed, names, engine_, [&](size_t i, const char* reason, int) {
    if (reason) res["FailedNodes"][names[i]] = reason;
    else {
      res["NodeNames"].push_back(names[i]);
      ok[names[i]] = true;
    }
  });
  if (full) {
    json nodes = *full_nodes;
    json items = json::array();
    for (const auto& n : nodes["items"])
      if (ok.count(kube::Name(n))) items.push_back(n);
    nodes["items"] = std::move(items);
    res["Nodes"] = std::move(nodes);
    res.erase("NodeNames");
  }
  return res;
}

json Extender::Prioritize(const json& args) {
  json res = json::array();
  const json* pod = Field(args, "Pod");
  if (!pod) return res;
  auto names = Candidates(args);
  auto parsed = ParsePod(*pod, opts_.parse);
  if (!parsed || !parsed->wants_gpu || parsed->request.containers.empty()) {
    for (const auto& n : names) res.push_back({{"Host", n}, {"Score", 0}});
    return res;
  }
  std::vector<int> scores(names.size(), 0);
  view_->Evaluate(*parsed, names, engine_, [&](size_t i, const char* reason, int score) {
    if (!reason) scores[i] = ExtenderScore(score);
  });
  for (size_t i = 0; i < names.size(); ++i) res.push_back({{"Host", names[i]}, {"Score", scores[i]}});
  return res;
}

namespace {

void AppendJsonString(std::string& out, std::string_view s) {
  out.push_back('"');
  // Node names and reasons almost never need escaping: copy them whole when they don't.
  bool plain = std::none_of(s.begin(), s.end(), [](char c) {
    return c == '"' || c == '\\' || static_cast<unsigned char>(c) < 0x20;
  });
  if (plain) {
    out.append(s);
  } else {
    for (char c : s) {
      if (c == '"' || c == '\\') {
        out.push_back('\\');
        out.push_back(c);
      } else if (static_cast<unsigned char>(c) < 0x20) {
        char b[8];
        std::snprintf(b, sizeof b, "\\u%04x", c);
        out += b;
      } else {
        out.push_back(c);
      }
    }
  }
  out.push_back('"');
}

// ExtenderArgs without a DOM of the node names: collects NodeNames into a vector, and either builds the
// pod's DOM alone (filter needs it) or only picks out its uid (prioritize). Field names match in any case,
// as Go's decoder does. `has_nodes` says the full Nodes list came (nodeCacheCapable=false).
class ArgsSax : public nlohmann::json_sax<json> {
 public:
  explicit ArgsSax(bool want_pod) : want_pod_(want_pod) {}
  json pod;  // with want_pod
  std::string uid;
  std::vector<std::string> names;
  bool has_names = false;
  bool has_nodes = false;

  bool null() override { return dom_ ? dom_->null() : true; }
  bool boolean(bool v) override { return dom_ ? dom_->boolean(v) : true; }
  bool number_integer(number_integer_t v) override { return dom_ ? dom_->number_integer(v) : true; }
  bool number_unsigned(number_unsigned_t v) override { return dom_ ? dom_->number_unsigned(v) : true; }
  bool number_float(number_float_t v, const string_t& t) override { return dom_ ? dom_->number_float(v, t) : true; }
  bool binary(binary_t& v) override { return dom_ ? dom_->binary(v) : true; }
  bool string(string_t& v) override {
    if (dom_) return dom_->string(v);
    if (in_names_ && keys_.size() == 2) names.push_back(std::move(v));
    else if (keys_.size() == 3 && Is(keys_[0], "pod") && keys_[1] == "metadata" && keys_[2] == "uid") uid = v;
    return true;
  }
  bool start_object(std::size_t n) override {
    if (dom_) {
      ++dom_depth_;
      return dom_->start_object(n);
    }
    if (want_pod_ && keys_.size() == 1 && Is(keys_[0], "pod")) {
      dom_.emplace(pod, false);
      dom_depth_ = 1;
      return dom_->start_object(n);
    }
    if (keys_.size() == 1 && Is(keys_[0], "nodes")) has_nodes = true;
    keys_.emplace_back();
    return true;
  }
  bool key(string_t& k) override {
    if (dom_) return dom_->key(k);
    keys_.back() = k;
    return true;
  }
  bool end_object() override {
    if (dom_) {
      bool ok = dom_->end_object();
      if (--dom_depth_ == 0) dom_.reset();
      return ok;
    }
    keys_.pop_back();
    return true;
  }
  bool start_array(std::size_t n) override {
    if (dom_) {
      ++dom_depth_;
      return dom_->start_array(n);
    }
    if (keys_.size() == 1 && Is(keys_[0], "nodenames")) {
      in_names_ = true;
      has_names = true;
      if (n != static_cast<std::size_t>(-1)) names.reserve(n);
    }
    keys_.emplace_back("[]");
    return true;
  }
  bool end_array() override {
    if (dom_) {
      bool ok = dom_->end_array();
      if (--dom_depth_ == 0) dom_.reset();
      return ok;
    }
    keys_.pop_back();
    if (keys_.size() == 1) in_names_ = false;
    return true;
  }
  bool parse_error(std::size_t, const std::string&, const nlohmann::detail::exception&) override { return false; }

 private:
  static bool Is(const std::string& a, const char* lower) {
    if (a.size() != std::strlen(lower)) return false;
    for (size_t i = 0; i < a.size(); ++i)
      if (std::tolower(static_cast<unsigned char>(a[i])) != lower[i]) return false;
    return true;
  }
  bool want_pod_;
  std::optional<nlohmann::detail::json_sax_dom_parser<json>> dom_;  // while inside the pod object
  int dom_depth_ = 0;
  bool in_names_ = false;
  std::vector<std::string> keys_;  // one entry per open object/array: its current key ("[]" for arrays)
};

// {"NodeNames":[...],"FailedNodes":{...},"Error":""} with every name passing, or every name failing with
// `reason`.
std::string AllNodes(const std::vector<std::string>& names, const char* reason) {
  std::string out = reason ? "{\"NodeNames\":[],\"FailedNodes\":{" : "{\"NodeNames\":[";
  for (size_t i = 0; i < names.size(); ++i) {
    if (i) out.push_back(',');
    AppendJsonString(out, names[i]);
    if (reason) {
      out.push_back(':');
      AppendJsonString(out, reason);
    }
  }
  return out + (reason ? "},\"Error\":\"\"}" : "],\"FailedNodes\":{},\"Error\":\"\"}");
}

}  // namespace

std::string Extender::FilterBody(const std::string& body) {
  ArgsSax sax(/*want_pod=*/true);
  if (!json::sax_parse(body, &sax) || !sax.pod.is_object() || !sax.has_names || sax.has_nodes) {
    // Full Node objects, or not what kube-scheduler sends: the general path (which explains errors).
    try {
      return Filter(json::parse(body)).dump();
    } catch (const std::exception& e) {
      return json{{"Error", std::string("ExtenderArgs is not JSON: ") + e.what()}}.dump();
    }
  }
  auto parsed = ParsePod(sax.pod, opts_.parse);
  if (!parsed) return AllNodes(sax.names, parsed.error().message.c_str());
  if (!parsed->wants_gpu || parsed->request.containers.empty()) return AllNodes(sax.names, nullptr);
  const std::vector<std::string>& names = sax.names;
  std::string ok = "{\"NodeNames\":[", failed = "\"FailedNodes\":{";
  // Sized for every name in either list (plus a short reason each for the failed ones): no regrowth.
  size_t name_bytes = names.empty() ? 0 : names.size() * (names[0].size() + 4);
  ok.reserve(name_bytes * 2 + names.size() * 48 + 64);
  failed.reserve(name_bytes + names.size() * 48);
  bool first_ok = true, first_failed = true;
  FilterScores scores;
  std::vector<uint32_t> passed;
  std::vector<int> score_of;
  view_->Evaluate(*parsed, names, engine_, [&](size_t i, const char* reason, int score) {
    if (reason) {
      if (!first_failed) failed.push_back(',');
      first_failed = false;
      AppendJsonString(failed, names[i]);
      failed.push_back(':');
      AppendJsonString(failed, reason);
    } else {
      if (!first_ok) ok.push_back(',');
      first_ok = false;
      AppendJsonString(ok, names[i]);
      passed.push_back(static_cast<uint32_t>(i));
      score_of.push_back(ExtenderScore(score));
    }
  });
  ok += "],";
  ok += failed;
  ok += "},\"Error\":\"\"}";
  if (!parsed->uid.empty()) {
    // Prioritize gets the passing nodes, normally in this order: keep them with their scores.
    scores.names.reserve(passed.size());
    for (uint32_t i : passed) scores.names.push_back(std::move(sax.names[i]));
    scores.scores = std::move(score_of);
    std::lock_guard<std::mutex> l(cache_mu_);
    if (score_cache_.emplace(parsed->uid, std::move(scores)).second) score_order_.push_back(parsed->uid);
    while (score_order_.size() > 1024) {
      score_cache_.erase(score_order_.front());
      score_order_.pop_front();
    }
  }
  return ok;
}

std::string Extender::PrioritizeBody(const std::string& body) {
  ArgsSax sax(/*want_pod=*/false);
  bool parsed_ok = json::sax_parse(body, &sax);
  FilterScores scores;
  bool hit = false;
  if (parsed_ok && sax.has_names && !sax.uid.empty()) {
    std::lock_guard<std::mutex> l(cache_mu_);
    auto it = score_cache_.find(sax.uid);
    if (it != score_cache_.end()) {
      scores = std::move(it->second);
      score_cache_.erase(it);
      hit = true;
    }
  }
  if (!hit) {
    try {
      return Prioritize(json::parse(body)).dump();
    } catch (const std::exception&) {
      return "[]";
    }
  }
  // Walk both lists together; only if kube-scheduler reordered them, look names up.
  std::unordered_map<std::string_view, int> by_name;
  auto score = [&](const std::string& name, size_t& j) {
    if (j < scores.names.size() && scores.names[j] == name) return scores.scores[j++];
    if (by_name.empty())
      for (size_t k = 0; k < scores.names.size(); ++k) by_name.emplace(scores.names[k], scores.scores[k]);
    auto it = by_name.find(name);
    return it == by_name.end() ? 0 : it->second;
  };
  std::string out = "[";
  out.reserve(sax.names.size() * 40 + 2);
  size_t j = 0;
  for (size_t i = 0; i < sax.names.size(); ++i) {
    if (i) out.push_back(',');
    out += "{\"Host\":";
    AppendJsonString(out, sax.names[i]);
    out += ",\"Score\":";
    out += std::to_string(score(sax.names[i], j));
    out.push_back('}');
  }
  return out + "]";
}

kube::Status Extender::BindWithAssignment(const std::string& ns, const std::string& name, const std::string& uid,
                                          std::string rv, const Reservation& r, const kube::PodSettings& settings) {
  json anno = {{kube::kAnnoAssignedNode, r.node},
               {kube::kAnnoDevices, kube::EncodeDevices(r.devices)},
               {kube::kAnnoBindTime, NowRfc3339()},
               {kube::kAnnoAllocationState, kube::kAllocationPending},
               {kube::kAnnoHamiNode, r.node},
               {kube::kAnnoHamiDevices, kube::EncodeHamiDevices(r.devices)},
               {kube::kAnnoHamiBindPhase, "allocating"}};
  if (!r.init_devices.empty()) anno[kube::kAnnoInitDevices] = kube::EncodeDevices(r.init_devices);
  anno[kube::kAnnoSettings] = kube::EncodeSettings(settings);
  // The resolved mode (the pod's own or the node's default), so the agent and a relist agree on it.
  anno[kube::kAnnoComputeMode] = r.spatial ? kube::kModeSpatial : kube::kModeTimeSliced;
  for (int attempt = 0; attempt < 4; ++attempt) {
    auto st = client_->Bind(ns, name, uid, r.node, anno, rv);
    if (st) return st;
    if (!st.error().Conflict()) return st.error();
    // Changed since we read it (labels, status, another writer): look again. Already bound or assigned
    // elsewhere means someone else won; otherwise retry on the fresh resourceVersion.
    auto fresh = client_->Get(kube::kPods, ns, name);
    if (!fresh) return fresh.error();
    std::string bound_to = (*fresh)["spec"].value("nodeName", "");
    // Our own earlier attempt landed (its answer was lost with the connection): done.
    if (bound_to == r.node && kube::Annotation(*fresh, kube::kAnnoDevices) == anno[kube::kAnnoDevices].get<std::string>())
      return kube::Ok{};
    if (!bound_to.empty()) return kube::Error{409, "AlreadyBound", "pod was bound meanwhile to " + bound_to};
    std::string other = kube::Annotation(*fresh, kube::kAnnoAssignedNode);
    if (!other.empty() && other != r.node)
      return kube::Error{409, "Conflict", "pod was assigned to " + other + " by another writer"};
    rv = kube::ResourceVersionOf(*fresh);
  }
  return kube::Error{409, "Conflict", "pod kept changing while binding it"};
}

json Extender::Bind(const json& args) {
  auto fail = [&](const std::string& reason, const std::string& msg) {
    metrics_->CountBindFailure(reason);
    return json{{"Error", msg}};
  };
  std::string ns = StringField(args, "PodNamespace");
  std::string name = StringField(args, "PodName");
  std::string uid = StringField(args, "PodUID");
  std::string node = StringField(args, "Node");
  if (name.empty() || node.empty()) return fail("BadRequest", "ExtenderBindingArgs needs podName and node");
  if (!is_leader_()) return fail("NotLeader", "tessera scheduler: this replica is not the leader; retry");
  // Nothing of the request is trusted but the names and the uid: the pod and the node are read again from
  // the API server (a quorum read), so a caller who reached /bind cannot bind a pod with requests of its
  // choosing (say, a forged /filter body), another scheduler's pod, or onto a node the pod may not use.
  auto pod = client_->Get(kube::kPods, ns, name);
  if (!pod) return fail("PodGet", "get pod " + ns + "/" + name + ": " + pod.error().ToString());
  auto node_obj = client_->Get(kube::kNodes, "", node);
  if (!node_obj) return fail("NodeGet", "get node " + node + ": " + node_obj.error().ToString());
  if (std::string why = BindRefusal(*pod, uid, *node_obj, opts_.scheduler_names); !why.empty())
    return fail("Refused", "tessera scheduler refuses the binding: " + why);
  auto parsed = ParsePod(*pod, opts_.parse);
  if (!parsed) return fail("InvalidRequest", parsed.error().message);
  if (parsed->wants_gpu && !parsed->request.containers.empty()) {
    auto r = view_->Reserve(*parsed, node, engine_);
    if (!r) return fail(r.error().reason.empty() ? "Unschedulable" : r.error().reason, r.error().message);
    auto st = BindWithAssignment(ns, name, parsed->uid, kube::ResourceVersionOf(*pod), *r, parsed->Settings());
    if (!st) {
      view_->Forget(parsed->uid);
      return fail(st.error().reason.empty() ? "BindingFailed" : st.error().reason, "binding: " + st.error().ToString());
    }
  } else {
    auto b = client_->Bind(ns, name, parsed->uid, node);
    if (!b) return fail("BindingFailed", "binding: " + b.error().ToString());
  }
  metrics_->CountBind();
  return json{{"Error", ""}};
}

}  // namespace tessera::scheduler
