#include "scheduler/extender.h"

#include <chrono>
#include <cmath>
#include <cctype>
#include <cstdio>
#include <cstring>
#include <ctime>

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
  if (parsed) Remember(*pod);
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
  view_->Evaluate(*parsed, names, engine_, [&](const std::string& node, const std::string* reason, int) {
    if (reason) res["FailedNodes"][node] = *reason;
    else {
      res["NodeNames"].push_back(node);
      ok[node] = true;
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
  view_->Evaluate(*parsed, names, engine_, [&](const std::string& node, const std::string* reason, int score) {
    // The engine scores 0..100; kube-scheduler's extender range is 0..10 (it multiplies by the weight).
    res.push_back({{"Host", node}, {"Score", reason ? 0 : static_cast<int>(std::lround(score / 10.0))}});
  });
  return res;
}

namespace {

void AppendJsonString(std::string& out, const std::string& s) {
  out.push_back('"');
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
  out.push_back('"');
}

// Pulls the pod's uid and the candidate node names out of ExtenderArgs without building the pod's DOM.
class ArgsSax : public nlohmann::json_sax<json> {
 public:
  std::string uid;
  std::vector<std::string> names;
  bool has_names = false;

  bool null() override { return true; }
  bool boolean(bool) override { return true; }
  bool number_integer(number_integer_t) override { return true; }
  bool number_unsigned(number_unsigned_t) override { return true; }
  bool number_float(number_float_t, const string_t&) override { return true; }
  bool binary(binary_t&) override { return true; }
  bool string(string_t& v) override {
    if (in_names_ && keys_.size() == 2) names.push_back(v);
    else if (keys_.size() == 3 && Is(keys_[0], "pod") && keys_[1] == "metadata" && keys_[2] == "uid") uid = v;
    return true;
  }
  bool start_object(std::size_t) override {
    keys_.emplace_back();
    return true;
  }
  bool key(string_t& k) override {
    keys_.back() = k;
    return true;
  }
  bool end_object() override {
    keys_.pop_back();
    return true;
  }
  bool start_array(std::size_t) override {
    if (keys_.size() == 1 && Is(keys_[0], "nodenames")) {
      in_names_ = true;
      has_names = true;
    }
    keys_.emplace_back("[]");
    return true;
  }
  bool end_array() override {
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
  bool in_names_ = false;
  std::vector<std::string> keys_;  // one entry per open object/array: its current key ("[]" for arrays)
};

}  // namespace

std::string Extender::FilterBody(const std::string& body) {
  json args;
  try {
    args = json::parse(body);
  } catch (const std::exception& e) {
    return json{{"Error", std::string("ExtenderArgs is not JSON: ") + e.what()}}.dump();
  }
  const json* pod = Field(args, "Pod");
  const json* names_json = Field(args, "NodeNames");
  if (!pod || !names_json) return Filter(args).dump();  // full Node objects or malformed: the general path
  auto parsed = ParsePod(*pod, opts_.parse);
  if (!parsed || !parsed->wants_gpu || parsed->request.containers.empty()) return Filter(args).dump();
  Remember(*pod);
  auto names = Candidates(args);
  std::string ok = "{\"NodeNames\":[", failed = "\"FailedNodes\":{";
  bool first_ok = true, first_failed = true;
  std::unordered_map<std::string, int> scores;
  view_->Evaluate(*parsed, names, engine_, [&](const std::string& node, const std::string* reason, int score) {
    if (reason) {
      if (!first_failed) failed.push_back(',');
      first_failed = false;
      AppendJsonString(failed, node);
      failed.push_back(':');
      AppendJsonString(failed, *reason);
    } else {
      if (!first_ok) ok.push_back(',');
      first_ok = false;
      AppendJsonString(ok, node);
      scores[node] = static_cast<int>(std::lround(score / 10.0));
    }
  });
  if (!parsed->uid.empty()) {
    std::lock_guard<std::mutex> l(cache_mu_);
    if (score_cache_.emplace(parsed->uid, std::move(scores)).second) score_order_.push_back(parsed->uid);
    while (score_order_.size() > 1024) {
      score_cache_.erase(score_order_.front());
      score_order_.pop_front();
    }
  }
  return ok + "]," + failed + "},\"Error\":\"\"}";
}

std::string Extender::PrioritizeBody(const std::string& body) {
  ArgsSax sax;
  bool parsed_ok = json::sax_parse(body, &sax);
  std::unordered_map<std::string, int> scores;
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
  std::string out = "[";
  for (size_t i = 0; i < sax.names.size(); ++i) {
    if (i) out.push_back(',');
    out += "{\"Host\":";
    AppendJsonString(out, sax.names[i]);
    auto it = scores.find(sax.names[i]);
    out += ",\"Score\":" + std::to_string(it == scores.end() ? 0 : it->second) + "}";
  }
  return out + "]";
}

kube::Status Extender::BindWithAssignment(const std::string& ns, const std::string& name, const std::string& uid,
                                          std::string rv, const Reservation& r) {
  json anno = {{kube::kAnnoAssignedNode, r.node},
               {kube::kAnnoDevices, kube::EncodeDevices(r.devices)},
               {kube::kAnnoBindTime, NowRfc3339()},
               {kube::kAnnoAllocationState, kube::kAllocationPending},
               {kube::kAnnoHamiNode, r.node},
               {kube::kAnnoHamiDevices, kube::EncodeHamiDevices(r.devices)},
               {kube::kAnnoHamiBindPhase, "allocating"}};
  if (!r.init_devices.empty()) anno[kube::kAnnoInitDevices] = kube::EncodeDevices(r.init_devices);
  for (int attempt = 0; attempt < 4; ++attempt) {
    auto st = client_->Bind(ns, name, uid, r.node, anno, rv);
    if (st) return st;
    if (!st.error().Conflict()) return st.error();
    // Changed since we read it (labels, status, another writer): look again. Already bound or assigned
    // elsewhere means someone else won; otherwise retry on the fresh resourceVersion.
    auto fresh = client_->Get(kube::kPods, ns, name);
    if (!fresh) return fresh.error();
    if (!(*fresh)["spec"].value("nodeName", "").empty())
      return kube::Error{409, "AlreadyBound", "pod was bound meanwhile to " + (*fresh)["spec"].value("nodeName", "")};
    std::string other = kube::Annotation(*fresh, kube::kAnnoAssignedNode);
    if (!other.empty() && other != r.node)
      return kube::Error{409, "Conflict", "pod was assigned to " + other + " by another writer"};
    rv = kube::ResourceVersionOf(*fresh);
  }
  return kube::Error{409, "Conflict", "pod kept changing while binding it"};
}

void Extender::Remember(const json& pod) {
  std::string uid = kube::Uid(pod);
  if (uid.empty()) return;
  std::lock_guard<std::mutex> l(cache_mu_);
  if (pod_cache_.emplace(uid, pod).second) cache_order_.push_back(uid);
  else pod_cache_[uid] = pod;
  while (cache_order_.size() > 2000) {
    pod_cache_.erase(cache_order_.front());
    cache_order_.pop_front();
  }
}

std::optional<json> Extender::Recall(const std::string& uid) {
  std::lock_guard<std::mutex> l(cache_mu_);
  auto it = pod_cache_.find(uid);
  if (it == pod_cache_.end()) return std::nullopt;
  json pod = std::move(it->second);
  pod_cache_.erase(it);
  return pod;
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
  kube::Result<json> pod = kube::Error{};
  if (auto cached = Recall(uid); cached && kube::Name(*cached) == name) pod = std::move(*cached);
  else pod = client_->Get(kube::kPods, ns, name);
  if (!pod) return fail("PodGet", "get pod " + ns + "/" + name + ": " + pod.error().ToString());
  if (!uid.empty() && kube::Uid(*pod) != uid) return fail("PodGone", "pod " + ns + "/" + name + " was replaced");
  auto parsed = ParsePod(*pod, opts_.parse);
  if (!parsed) return fail("InvalidRequest", parsed.error().message);
  if (parsed->wants_gpu && !parsed->request.containers.empty()) {
    auto r = view_->Reserve(*parsed, node, engine_);
    if (!r) return fail(r.error().reason.empty() ? "Unschedulable" : r.error().reason, r.error().message);
    auto st = BindWithAssignment(ns, name, parsed->uid, kube::ResourceVersionOf(*pod), *r);
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
