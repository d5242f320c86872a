#include "scheduler/webhook.h"

#include <openssl/evp.h>

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

// JSON pointer escaping of one path segment (RFC 6901): "nvidia.com/gpu" -> "nvidia.com~1gpu".
std::string Ptr(const std::string& s) {
  std::string o;
  for (char c : s) {
    if (c == '~') o += "~0";
    else if (c == '/') o += "~1";
    else o += c;
  }
  return o;
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

const char* kOwnAnnotations[] = {kube::kAnnoAssignedNode,  kube::kAnnoDevices,      kube::kAnnoInitDevices,
                                 kube::kAnnoBindTime,      kube::kAnnoAllocationState, kube::kAnnoHamiDevices,
                                 kube::kAnnoHamiBindPhase, kube::kAnnoHamiNode};

}  // namespace

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
      if (in_limits) patch.push_back({{"op", "add"}, {"path", base + "/limits/" + Ptr(n.gpu)}, {"value", "1"}});
      else patch.push_back({{"op", "add"}, {"path", base + "/limits"}, {"value", {{n.gpu, "1"}}}});
      if (in_requests) patch.push_back({{"op", "add"}, {"path", base + "/requests/" + Ptr(n.gpu)}, {"value", "1"}});
    }
  }
  return patch;
}

std::string ValidationError(const json& pod, const WebhookOptions& opts, int64_t max_gpu_memory_mib) {
  if (!WantsGpu(pod, opts.parse.names)) return "";
  for (const char* a : kOwnAnnotations) {
    if (!kube::Annotation(pod, a).empty() || (pod.contains("metadata") && pod["metadata"].contains("annotations") &&
                                               pod["metadata"]["annotations"].is_object() &&
                                               pod["metadata"]["annotations"].contains(a)))
      return std::string("annotation ") + a + " is set by the Tessera scheduler at bind time and may not be set by a pod";
  }
  auto p = ParsePod(pod, opts.parse, max_gpu_memory_mib);
  if (!p) return p.error().message;
  return "";
}

Webhook::Webhook(WebhookOptions opts, std::function<int64_t()> max_gpu_memory, Metrics* metrics)
    : opts_(std::move(opts)), max_gpu_memory_(std::move(max_gpu_memory)), metrics_(metrics) {}

json Webhook::Mutate(const json& review) const {
  metrics_->CountAdmission(true);
  return Review(review, true, "", MutationPatch(PodOf(review), opts_));
}

json Webhook::Validate(const json& review) const {
  std::string op = review.contains("request") ? review["request"].value("operation", "CREATE") : "CREATE";
  std::string err = op == "CREATE" ? ValidationError(PodOf(review), opts_, max_gpu_memory_()) : "";
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
  return {{"apiVersion", "admissionregistration.k8s.io/v1"},
          {"kind", "MutatingWebhookConfiguration"},
          {"metadata", {{"name", reg.name}}},
          {"webhooks", json::array({h})}};
}

json ValidatingConfiguration(const WebhookRegistration& reg, const ResourceNames& names) {
  return {{"apiVersion", "admissionregistration.k8s.io/v1"},
          {"kind", "ValidatingWebhookConfiguration"},
          {"metadata", {{"name", reg.name}}},
          {"webhooks", json::array({Hook(reg, names, "validate.tessera.dev", "/validate")})}};
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
