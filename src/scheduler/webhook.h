// The admission webhook for pods (AdmissionReview v1), mutating and validating, plus the webhook
// configurations the scheduler registers.
//
// Only pods that ask for one of our resources reach it (matchConditions in the configurations), and for
// those failurePolicy is Fail: with the webhook down, a GPU pod is refused with the API server's
// "failed calling webhook" reason rather than admitted without isolation.
//  - mutate: sets spec.schedulerName to ours (replacing hami-scheduler, default-scheduler or anything
//    else) and adds nvidia.com/gpu=1 to containers that ask for GPU memory or cores without it.
//  - validate: rejects impossible requests (a message naming the container, the field, the value and the
//    allowed range) and pods that set Tessera's own allocation annotations.
// Thread-safe (stateless apart from the ClusterView it reads for the largest GPU).
#pragma once

#include <functional>
#include <string>

#include <nlohmann/json.hpp>

#include "kube/client.h"
#include "scheduler/metrics.h"
#include "scheduler/request.h"
#include "scheduler/view.h"

namespace tessera::scheduler {

struct WebhookOptions {
  ParseOptions parse;
  std::string scheduler_name = "tessera-scheduler";
};

class Webhook {
 public:
  // max_gpu_memory() returns the largest GPU memory (MiB) in the cluster, 0 if unknown.
  Webhook(WebhookOptions opts, std::function<int64_t()> max_gpu_memory, Metrics* metrics);
  nlohmann::json Mutate(const nlohmann::json& review) const;
  nlohmann::json Validate(const nlohmann::json& review) const;

 private:
  WebhookOptions opts_;
  std::function<int64_t()> max_gpu_memory_;
  Metrics* metrics_;
};

// JSON patch (RFC 6902) for the mutations above; empty array when nothing changes.
nlohmann::json MutationPatch(const nlohmann::json& pod, const WebhookOptions& opts);
// The validation verdict: empty when allowed, else the reason.
std::string ValidationError(const nlohmann::json& pod, const WebhookOptions& opts, int64_t max_gpu_memory_mib);

// The CEL match condition that selects pods asking for any of `names`.
std::string GpuPodMatchCondition(const ResourceNames& names);

struct WebhookRegistration {
  std::string name = "tessera-scheduler";  // of both configurations
  std::string url;                          // https://host:port (clientConfig.url) ...
  std::string service_namespace, service_name;  // ... or an in-cluster Service
  int service_port = 443;
  std::string ca_bundle_pem;
  std::string namespace_selector;  // "key=value": only namespaces with this label (empty: all)
};
nlohmann::json MutatingConfiguration(const WebhookRegistration& reg, const ResourceNames& names);
nlohmann::json ValidatingConfiguration(const WebhookRegistration& reg, const ResourceNames& names);
// Creates or updates both configurations (the caBundle follows the current certificate).
kube::Status RegisterWebhooks(kube::Client& client, const WebhookRegistration& reg, const ResourceNames& names);

}  // namespace tessera::scheduler
