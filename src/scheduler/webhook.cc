#include "scheduler/webhook.h"

#include <openssl/evp.h>

#include <algorithm>
#include <map>

namespace tessera::scheduler {

using nlohmann::json;

namespace {

std::string Base64(const std::string& in) {
  std::string out(4 * ((in.size() + 2) / 3) + 1, '\0');
  int n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                          reinterpret_cast<const unsigned char*>(in.data()), static_cast<int>(in.size()));
  out.resize(n);
  return out;
}

json Review(const json& review, bool allowed, const std::string& message, const json& patch) {
  json resp = {{"uid", review.contains("request") ? review["request"].value("uid", "") : ""}, {"allowed", allowed}};
  if (!allowed) resp["status"] = {{"code", 400}, {"reason", "BadRequest"}, {"message", message}};
  if (allowed && patch.is_array() && !patch.empty()) {
    resp["patchType"] = "JSONPatch";
    resp["patch"] = Base64(patch.dump());
  }
  return {{"apiVersion", "admission.k8s.io/v1"}, {"kind", "AdmissionReview"}, {"response", resp}};
}

const json& PodOf(const json& review) {
  static const json kEmpty = json::object();
  if (!review.contains("request") || !review["request"].contains("object")) return kEmpty;
  return review["request"]["object"];
}

// The annotation's value, or nullptr when the pod does not have it.
const json* AnnotationOf(const json& pod, const std::string& key) {
  if (!pod.is_object() || !pod.contains("metadata") || !pod["metadata"].is_object()) return nullptr;
  const json& m = pod["metadata"];
  if (!m.contains("annotations") || !m["annotations"].is_object() || !m["annotations"].contains(key)) return nullptr;
  return &m["annotations"][key];
}

std::string Join(const std::vector<std::string>& v) {
  std::string out;
  for (const auto& s : v) out += (out.empty() ? "" : ", ") + s;
  return out.empty() ? "(none)" : out;
}

// "['a','b']": the caller made sure no element needs escaping (TrustedUsersError, resource names).
std::string CelList(const std::vector<std::string>& v) {
  std::string out = "[";
  for (size_t i = 0; i < v.size(); ++i) out += (i ? ",'" : "'") + v[i] + "'";
  return out + "]";
}

// One container's GPU resource fields, "limits nvidia.com/gpumem" -> quantity text.
std::map<std::string, std::string> GpuFields(const json& c, const ResourceNames& n) {
  std::map<std::string, std::string> out;
  if (!c.is_object() || !c.contains("resources") || !c["resources"].is_object()) return out;
  for (const char* kind : {"limits", "requests"}) {
    if (!c["resources"].contains(kind) || !c["resources"][kind].is_object()) continue;
    const json& r = c["resources"][kind];
    for (const auto* name : {&n.gpu, &n.memory, &n.memory_percent, &n.cores, &n.priority}) {
      if (r.contains(*name)) out[std::string(kind) + " " + *name] = r[*name].is_string() ? r[*name].get<std::string>()
                                                                                           : r[*name].dump();
    }
  }
  return out;
}

const json& ContainersOf(const json& pod, const char* list) {
  static const json kNone = json::array();
  if (!pod.is_object() || !pod.contains("spec") || !pod["spec"].is_object() || !pod["spec"].contains(list) ||
      !pod["spec"][list].is_array())
    return kNone;
  return pod["spec"][list];
}

}  // namespace

const std::vector<std::string>& ForbiddenEnvNames() {
  static const std::vector<std::string> k = {"NVIDIA_VISIBLE_DEVICES", "CUDA_VISIBLE_DEVICES", "LD_PRELOAD"};
  return k;
}

namespace {
bool ForbiddenName(const std::string& n) {
  const auto& names = ForbiddenEnvNames();
  return n.rfind(kForbiddenEnvPrefix, 0) == 0 || std::find(names.begin(), names.end(), n) != names.end();
}
// An envFrom prefix that could yield a forbidden name whatever the source's keys.
bool ForbiddenPrefix(const std::string& p) {
  if (p.empty()) return false;
  if (p.rfind(kForbiddenEnvPrefix, 0) == 0) return true;
  if (std::string(kForbiddenEnvPrefix).rfind(p, 0) == 0) return true;
  for (const auto& n : ForbiddenEnvNames())
    if (n.rfind(p, 0) == 0) return true;
  return false;
}
std::string CelQuoted(const std::vector<std::string>& v) {
  std::string out = "[";
  for (size_t i = 0; i < v.size(); ++i) out += (i ? ",'" : "'") + v[i] + "'";
  return out + "]";
}
}  // namespace

std::string ForbiddenEnvError(const json& pod) {
  const std::string rule = std::string("the GPUs a container sees and what is preloaded into it are set only by Tessera's device plugin: "
                           "pods may not set NVIDIA_VISIBLE_DEVICES, CUDA_VISIBLE_DEVICES, LD_PRELOAD or ") +
                           kForbiddenEnvPrefix + "*";
  for (const char* list : {"initContainers", "containers", "ephemeralContainers"}) {
    for (const auto& c : ContainersOf(pod, list)) {
      if (!c.is_object()) continue;
      std::string who = "spec." + std::string(list) + " \"" + c.value("name", "") + "\"";
      if (c.contains("env") && c["env"].is_array())
        for (const auto& e : c["env"]) {
          std::string n = e.is_object() ? e.value("name", "") : "";
          if (ForbiddenName(n)) return who + " sets env " + n + ": " + rule;
        }
      if (c.contains("envFrom") && c["envFrom"].is_array())
        for (const auto& f : c["envFrom"]) {
          std::string p = f.is_object() ? f.value("prefix", "") : "";
          if (ForbiddenPrefix(p)) return who + " sets envFrom prefix " + p + " (it can produce a forbidden name): " + rule;
        }
    }
  }
  return "";
}

std::string ForbiddenEnvCondition(const std::vector<std::string>& lists) {
  std::vector<std::string> with_prefix = ForbiddenEnvNames();
  with_prefix.push_back(kForbiddenEnvPrefix);
  const std::string names = CelQuoted(ForbiddenEnvNames());
  const std::string pre = kForbiddenEnvPrefix;
  std::string one = "(has(c.env) && c.env.exists(e, e.name in " + names + " || e.name.startsWith('" + pre +
                    "'))) || (has(c.envFrom) && c.envFrom.exists(f, has(f.prefix) && f.prefix != '' && "
                    "(f.prefix.startsWith('" + pre + "') || " + CelQuoted(with_prefix) +
                    ".exists(n, n.startsWith(f.prefix)))))";
  std::string out;
  for (const auto& l : lists)
    out += (out.empty() ? "" : " || ") + ("(has(object.spec." + l + ") && object.spec." + l + ".exists(c, " + one + "))");
  return "(" + out + ")";
}

const std::vector<std::string>& OwnAnnotations() {
  static const std::vector<std::string> k = {kube::kAnnoAssignedNode,  kube::kAnnoDevices,
                                             kube::kAnnoInitDevices,   kube::kAnnoBindTime,
                                             kube::kAnnoAllocationState, kube::kAnnoHamiDevices,
                                             kube::kAnnoHamiBindPhase, kube::kAnnoHamiNode,
                                             kube::kAnnoSettings};
  return k;
}

json MutationPatch(const json& pod, const WebhookOptions& opts) {
  json patch = json::array();
  if (!WantsGpu(pod, opts.parse.names)) return patch;
  const json& spec = pod.contains("spec") ? pod["spec"] : json::object();
  if (spec.value("schedulerName", "") != opts.scheduler_name)
    patch.push_back({{"op", "add"}, {"path", "/spec/schedulerName"}, {"value", opts.scheduler_name}});
  const ResourceNames& n = opts.parse.names;
  for (const char* list : {"initContainers", "containers"}) {
    if (!spec.contains(list) || !spec[list].is_array()) continue;
    for (size_t i = 0; i < spec[list].size(); ++i) {
      const json& c = spec[list][i];
      if (!c.contains("resources")) continue;
      const json& r = c["resources"];
      bool in_limits = r.contains("limits") && r["limits"].is_object();
      bool in_requests = r.contains("requests") && r["requests"].is_object();
      auto has = [&](const char* kind, const std::string& key) {
        return r.contains(kind) && r[kind].is_object() && r[kind].contains(key);
      };
      bool shares = false;
      for (const auto* k : {&n.memory, &n.memory_percent, &n.cores})
        shares |= has("limits", *k) || has("requests", *k);
      if (!shares || has("limits", n.gpu) || has("requests", n.gpu)) continue;
      std::string base = std::string("/spec/") + list + "/" + std::to_string(i) + "/resources";
      if (in_limits) patch.push_back({{"op", "add"}, {"path", base + "/limits/" + JsonPointerEscape(n.gpu)}, {"value", "1"}});
      else patch.push_back({{"op", "add"}, {"path", base + "/limits"}, {"value", {{n.gpu, "1"}}}});
      if (in_requests) patch.push_back({{"op", "add"}, {"path", base + "/requests/" + JsonPointerEscape(n.gpu)}, {"value", "1"}});
    }
  }
  return patch;
}

std::string ValidationError(const json& pod, const WebhookOptions& opts, int64_t max_gpu_memory_mib) {
  // Any pod, GPU or not: the scheduler's view counts every pod's assignment annotation against its GPUs.
  for (const auto& a : OwnAnnotations()) {
    if (AnnotationOf(pod, a))
      return "annotation " + a + " is set by the Tessera scheduler at bind time and may not be set by a pod";
  }
  if (!WantsGpu(pod, opts.parse.names)) return "";
  auto p = ParsePod(pod, opts.parse, max_gpu_memory_mib);
  if (!p) return p.error().message;
  return "";
}

std::string UpdateValidationError(const json& old_pod, const json& pod, const std::string& username,
                                  const WebhookOptions& opts) {
  const auto& trusted = opts.trusted_users;
  if (std::find(trusted.begin(), trusted.end(), username) != trusted.end()) return "";
  const std::string user = "user \"" + username + "\"";
  const std::string only = "only Tessera's own identities may (" + Join(trusted) + "; --webhook-trusted-users)";
  for (const auto& a : OwnAnnotations()) {
    const json* before = AnnotationOf(old_pod, a);
    const json* after = AnnotationOf(pod, a);
    if (!before && !after) continue;
    if (before && after && *before == *after) continue;
    const char* what = !before ? "set" : !after ? "remove" : "change";
    return "annotation " + a + " is written only by Tessera (the scheduler at bind, the agent after allocation): " +
           user + " may not " + what + " it; " + only;
  }
  for (const char* list : {"initContainers", "containers"}) {
    const json& olds = ContainersOf(old_pod, list);
    for (const auto& c : ContainersOf(pod, list)) {
      const std::string name = c.is_object() ? c.value("name", "") : "";
      json old_c = json::object();
      for (const auto& o : olds)
        if (o.is_object() && o.value("name", "") == name) old_c = o;
      auto before = GpuFields(old_c, opts.parse.names), after = GpuFields(c, opts.parse.names);
      if (before == after) continue;
      for (const auto* m : {&after, &before}) {
        for (const auto& [field, value] : *m) {
          auto b = before.find(field), f = after.find(field);
          std::string was = b == before.end() ? "unset" : b->second, now = f == after.end() ? "unset" : f->second;
          if (was == now) continue;
          return "container \"" + name + "\": resources." + field.substr(0, field.find(' ')) + "[" +
                 field.substr(field.find(' ') + 1) + "] may not change once the pod exists (" + was + " -> " + now +
                 "); " + user + " may not change it; " + only;
        }
      }
    }
  }
  return "";
}

std::string TrustedUsersError(const std::vector<std::string>& users) {
  for (const auto& u : users) {
    if (u.empty()) return "--webhook-trusted-users: an entry is empty (expected usernames, comma-separated)";
    for (char ch : u) {
      if (ch == '\'' || ch == '\\' || ch == '"' || static_cast<unsigned char>(ch) < 0x20)
        return "--webhook-trusted-users: \"" + u + "\" contains a quote, backslash or control character";
    }
  }
  return "";
}

Webhook::Webhook(WebhookOptions opts, std::function<int64_t()> max_gpu_memory, Metrics* metrics, DraHooks dra)
    : opts_(std::move(opts)), max_gpu_memory_(std::move(max_gpu_memory)), metrics_(metrics), dra_(std::move(dra)) {}

namespace {
const json& RequestOf(const json& review) {
  static const json kEmpty = json::object();
  return review.is_object() && review.contains("request") && review["request"].is_object() ? review["request"]
                                                                                             : kEmpty;
}
}  // namespace

json Webhook::Mutate(const json& review) const {
  // Only a new pod is mutated (schedulerName and resources are immutable afterwards).
  const json& req = RequestOf(review);
  bool create = req.value("operation", "CREATE") == "CREATE";
  if (opts_.dra && create && WantsGpu(PodOf(review), opts_.parse.names)) {
    std::string err;
    json patch = DraMutation(PodOf(review), req.value("namespace", ""), req.value("dryRun", false), &err);
    metrics_->CountAdmission(err.empty());
    return Review(review, err.empty(), err, patch);
  }
  metrics_->CountAdmission(true);
  return Review(review, true, "", create ? MutationPatch(PodOf(review), opts_) : json::array());
}

json Webhook::DraMutation(const json& pod, const std::string& ns, bool dry_run, std::string* err) const {
  json p = pod;
  if (!ns.empty()) p["metadata"]["namespace"] = ns;
  auto parsed = ParsePod(p, opts_.parse, max_gpu_memory_());
  if (!parsed) {
    *err = parsed.error().message;
    return json();
  }
  std::vector<DraGpuKind> kinds = dra_.gpu_kinds ? dra_.gpu_kinds() : std::vector<DraGpuKind>{};
  auto tr = TranslateToClaims(p, *parsed, kinds, opts_.dra_options, opts_.parse.names);
  if (!tr) {
    *err = tr.error().message;
    return json();
  }
  if (!dry_run) {
    for (const auto& t : tr->templates) {
      kube::Status st = dra_.ensure_template ? dra_.ensure_template(ns, t.object)
                                             : kube::Status(kube::Error{0, "Invalid", "no API client to create claim templates"});
      if (!st) {
        *err = "creating ResourceClaimTemplate " + ns + "/" + t.name + " for this pod's GPU request: " +
               st.error().ToString();
        return json();
      }
    }
  }
  return tr->patch;
}

json Webhook::Validate(const json& review) const {
  const json& req = RequestOf(review);
  std::string op = req.value("operation", "CREATE");
  std::string sub = req.value("subResource", "");
  bool exempt = !opts_.exempt_namespace.empty() && req.value("namespace", "") == opts_.exempt_namespace;
  std::string err;
  if (!exempt && (op == "CREATE" || sub == "ephemeralcontainers")) err = ForbiddenEnvError(PodOf(review));
  if (err.empty() && op == "CREATE") {
    err = ValidationError(PodOf(review), opts_, max_gpu_memory_());
  } else if (err.empty() && op == "UPDATE") {
    static const json kNone = json::object();
    const json& old_pod = req.contains("oldObject") ? req["oldObject"] : kNone;
    std::string user = req.contains("userInfo") && req["userInfo"].is_object() ? req["userInfo"].value("username", "")
                                                                               : "";
    err = UpdateValidationError(old_pod, PodOf(review), user, opts_);
  }
  metrics_->CountAdmission(err.empty());
  return Review(review, err.empty(), err, json());
}

std::string GpuPodMatchCondition(const ResourceNames& n) {
  std::string keys = "['" + n.gpu + "','" + n.memory + "','" + n.memory_percent + "','" + n.cores + "','" +
                     n.priority + "']";
  std::string any = "c, has(c.resources) && ((has(c.resources.limits) && c.resources.limits.exists(k, k in " + keys +
                    ")) || (has(c.resources.requests) && c.resources.requests.exists(k, k in " + keys + ")))";
  return "object.spec.containers.exists(" + any + ") || (has(object.spec.initContainers) && "
         "object.spec.initContainers.exists(" + any + "))";
}

std::string ValidatingMatchCondition(const ResourceNames& names, const std::vector<std::string>& trusted_users,
                                     const std::string& exempt_namespace) {
  const std::string own = CelList(OwnAnnotations());
  auto has = [](const std::string& obj) {
    return "(has(" + obj + ".metadata.annotations) && k in " + obj + ".metadata.annotations)";
  };
  std::string changed = own + ".exists(k, " + has("object") + " != " + has("oldObject") + " || (" + has("object") +
                        " && " + has("oldObject") +
                        " && object.metadata.annotations[k] != oldObject.metadata.annotations[k]))";
  std::string sets = "(has(object.metadata.annotations) && " + own + ".exists(k, k in object.metadata.annotations))";
  std::string outside = exempt_namespace.empty() ? "true" : "request.namespace != '" + exempt_namespace + "'";
  std::string env_create = "(" + outside + " && " + ForbiddenEnvCondition({"initContainers", "containers", "ephemeralContainers"}) + ")";
  std::string env_ephemeral = "(has(request.subResource) && request.subResource == 'ephemeralcontainers' && " + outside +
                              " && " + ForbiddenEnvCondition({"ephemeralContainers"}) + ")";
  return "request.operation == 'UPDATE' ? ((!(request.userInfo.username in " + CelList(trusted_users) + ") && " +
         changed + ") || " + env_ephemeral + ") : (" + GpuPodMatchCondition(names) + " || " + sets + " || " +
         env_create + ")";
}

namespace {
json Hook(const WebhookRegistration& reg, const ResourceNames& names, const std::string& hook_name,
          const std::string& path) {
  json cc;
  if (!reg.url.empty()) cc["url"] = reg.url + path;
  else cc["service"] = {{"namespace", reg.service_namespace}, {"name", reg.service_name}, {"path", path},
                        {"port", reg.service_port}};
  if (!reg.ca_bundle_pem.empty()) cc["caBundle"] = Base64(reg.ca_bundle_pem);
  json hook = {{"name", hook_name},
          {"clientConfig", cc},
          {"rules", json::array({{{"operations", {"CREATE"}},
                                  {"apiGroups", {""}},
                                  {"apiVersions", {"v1"}},
                                  {"resources", {"pods"}},
                                  {"scope", "Namespaced"}}})},
          {"matchConditions", json::array({{{"name", "asks-for-gpu"}, {"expression", GpuPodMatchCondition(names)}}})},
          {"failurePolicy", "Fail"},
          {"sideEffects", "None"},
          {"admissionReviewVersions", {"v1"}},
          {"timeoutSeconds", 5}};
  if (auto eq = reg.namespace_selector.find('='); eq != std::string::npos)
    hook["namespaceSelector"] = {{"matchLabels", {{reg.namespace_selector.substr(0, eq), reg.namespace_selector.substr(eq + 1)}}}};
  return hook;
}
}  // namespace

json MutatingConfiguration(const WebhookRegistration& reg, const ResourceNames& names) {
  json h = Hook(reg, names, "mutate.tessera.dev", "/mutate");
  h["reinvocationPolicy"] = "Never";
  // In DRA mode a (non-dry-run) admission creates the pod's ResourceClaimTemplates.
  if (reg.dra) h["sideEffects"] = "NoneOnDryRun";
  return {{"apiVersion", "admissionregistration.k8s.io/v1"},
          {"kind", "MutatingWebhookConfiguration"},
          {"metadata", {{"name", reg.name}}},
          {"webhooks", json::array({h})}};
}

json ValidatingConfiguration(const WebhookRegistration& reg, const ResourceNames& names) {
  json h = Hook(reg, names, "validate.tessera.dev", "/validate");
  h["rules"][0]["operations"] = {"CREATE", "UPDATE"};
  // The status subresource can rewrite annotations too; ephemeral containers can carry environment.
  h["rules"][0]["resources"] = {"pods", "pods/status", "pods/ephemeralcontainers"};
  h["matchConditions"] = json::array({{{"name", "asks-for-gpu-or-changes-allocation"},
                                       {"expression", ValidatingMatchCondition(names, reg.trusted_users,
                                                                               reg.exempt_namespace)}}});
  return {{"apiVersion", "admissionregistration.k8s.io/v1"},
          {"kind", "ValidatingWebhookConfiguration"},
          {"metadata", {{"name", reg.name}}},
          {"webhooks", json::array({h})}};
}

kube::Status RegisterWebhooks(kube::Client& client, const WebhookRegistration& reg, const ResourceNames& names) {
  for (int v = 0; v < 2; ++v) {
    const kube::Resource& r = v ? kube::kValidatingWebhooks : kube::kMutatingWebhooks;
    json obj = v ? ValidatingConfiguration(reg, names) : MutatingConfiguration(reg, names);
    auto existing = client.Get(r, "", reg.name);
    if (existing) {
      obj["metadata"]["resourceVersion"] = kube::ResourceVersionOf(*existing);
      auto u = client.Update(r, "", reg.name, obj);
      if (!u) return u.error();
    } else if (existing.error().NotFound()) {
      auto c = client.Create(r, "", obj);
      if (!c && !c.error().AlreadyExists()) return c.error();
    } else {
      return existing.error();
    }
  }
  return kube::Ok{};
}

}  // namespace tessera::scheduler
