// The admission webhook for pods (AdmissionReview v1), mutating and validating, plus the webhook
// configurations the scheduler registers.
//
// Only pods that ask for one of our resources reach it (matchConditions in the configurations), and for
// those failurePolicy is Fail: with the webhook down, a GPU pod is refused with the API server's
// "failed calling webhook" reason rather than admitted without isolation.
//  - mutate: sets spec.schedulerName to ours (replacing hami-scheduler, default-scheduler or anything
//    else) and adds nvidia.com/gpu=1 to containers that ask for GPU memory or cores without it.
//  - validate: on CREATE, rejects impossible requests (a message naming the container, the field, the value
//    and the allowed range) and pods that set Tessera's own allocation annotations. On UPDATE, rejects a
//    change to those annotations (set, changed or removed) or to a container's GPU resources unless the
//    request comes from one of Tessera's own identities (AdmissionReview request.userInfo.username in
//    WebhookOptions::trusted_users: the scheduler writes the assignment at bind, the agent patches
//    allocation-state), through the pod, pods/status or pods/ephemeralcontainers alike. The validating
//    configuration's matchConditions send an UPDATE to the webhook only when someone else changes those
//    annotations, so other pod updates never depend on the webhook. Any pod (GPU or not) that sets
//    NVIDIA_VISIBLE_DEVICES, CUDA_VISIBLE_DEVICES, LD_PRELOAD or TESSERA_* itself is refused, on CREATE and
//    when it adds an ephemeral container.
// Thread-safe (stateless apart from the ClusterView it reads for the largest GPU).
#pragma once

#include <functional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "kube/client.h"
#include "scheduler/dra_claims.h"
#include "scheduler/metrics.h"
#include "scheduler/request.h"
#include "scheduler/view.h"

namespace tessera::scheduler {

// The identities of a default Helm install (release "tessera" in namespace "tessera-system"); the chart
// passes its own service accounts (--webhook-trusted-users).
inline const std::vector<std::string> kDefaultTrustedUsers = {
    "system:serviceaccount:tessera-system:tessera-scheduler", "system:serviceaccount:tessera-system:tessera-agent"};

// Tessera's own annotations on a pod (the allocation contract, src/kube/annotations.h).
const std::vector<std::string>& OwnAnnotations();

// Environment variables a pod may not set (exact names), and the prefix it may not use: they decide which
// GPUs a container sees and what is preloaded into it, so only Tessera's device plugin sets them.
const std::vector<std::string>& ForbiddenEnvNames();
inline constexpr const char* kForbiddenEnvPrefix = "TESSERA_";

struct WebhookOptions {
  ParseOptions parse;
  std::string scheduler_name = "tessera-scheduler";
  // Pods in this namespace may set the forbidden variables (Tessera's own agent sets NVIDIA_VISIBLE_DEVICES
  // for NVML; its pods must not depend on the webhook that they run). Empty: no exemption.
  std::string exempt_namespace;
  // Usernames (as the API server authenticates them, e.g. system:serviceaccount:<ns>:<name>) that may
  // change Tessera's annotations on UPDATE.
  std::vector<std::string> trusted_users = kDefaultTrustedUsers;
  // DRA mode (Helm mode dra): Mutate turns a GPU pod's requests into ResourceClaims of driver
  // gpu.tessera.io (dra_claims.h) instead of handing it to our extender; it refuses, with the reason, a
  // request that ParsePod or the translation rejects (the validating webhook no longer sees GPU resources).
  bool dra = false;
  DraTranslateOptions dra_options;
};

// What DRA mode needs from the cluster: the GPU kinds published in ResourceSlices, and a way to create a
// ResourceClaimTemplate in a namespace (an existing one of the same name is fine: names hash the spec).
struct DraHooks {
  std::function<std::vector<DraGpuKind>()> gpu_kinds;
  std::function<kube::Status(const std::string& ns, const nlohmann::json& tmpl)> ensure_template;
};

class Webhook {
 public:
  // max_gpu_memory() returns the largest GPU memory (MiB) in the cluster, 0 if unknown.
  Webhook(WebhookOptions opts, std::function<int64_t()> max_gpu_memory, Metrics* metrics, DraHooks dra = {});
  nlohmann::json Mutate(const nlohmann::json& review) const;
  nlohmann::json Validate(const nlohmann::json& review) const;

 private:
  // DRA mode's mutation of a GPU pod: the JSON patch, or *err (the refusal's reason).
  nlohmann::json DraMutation(const nlohmann::json& pod, const std::string& ns, bool dry_run, std::string* err) const;
  WebhookOptions opts_;
  std::function<int64_t()> max_gpu_memory_;
  Metrics* metrics_;
  DraHooks dra_;
};

// JSON patch (RFC 6902) for the mutations above; empty array when nothing changes.
nlohmann::json MutationPatch(const nlohmann::json& pod, const WebhookOptions& opts);
// The validation verdict: empty when allowed, else the reason.
std::string ValidationError(const nlohmann::json& pod, const WebhookOptions& opts, int64_t max_gpu_memory_mib);
// The verdict on an UPDATE from `username`: empty when allowed, else the reason (naming the annotation or
// the container and resource, the user, and who may).
std::string UpdateValidationError(const nlohmann::json& old_pod, const nlohmann::json& pod,
                                  const std::string& username, const WebhookOptions& opts);
// The first environment variable of any container (containers, initContainers, ephemeralContainers; env,
// and envFrom prefixes) that a pod may not set: empty when none, else the reason naming container and
// variable. envFrom without a prefix is not checkable here (the ConfigMap or Secret may change later).
std::string ForbiddenEnvError(const nlohmann::json& pod);
// Usernames must be CEL string literals in the matchConditions: empty when fine, else why not.
std::string TrustedUsersError(const std::vector<std::string>& users);

// The CEL match condition that selects pods asking for any of `names`.
std::string GpuPodMatchCondition(const ResourceNames& names);
// CEL: some container in `lists` (e.g. {"containers"}) sets a forbidden variable (ForbiddenEnvError).
std::string ForbiddenEnvCondition(const std::vector<std::string>& lists);
// The validating webhook's CEL match condition: a CREATE of a pod that asks for a GPU, sets one of our
// annotations or sets a forbidden variable (outside `exempt_namespace`); an UPDATE (of the pod, its status
// or its ephemeral containers) by anyone not in `trusted_users` that sets, changes or removes one of our
// annotations; an ephemeral container that sets a forbidden variable.
std::string ValidatingMatchCondition(const ResourceNames& names, const std::vector<std::string>& trusted_users,
                                     const std::string& exempt_namespace = "");

struct WebhookRegistration {
  std::string name = "tessera-scheduler";  // of both configurations
  std::string url;                          // https://host:port (clientConfig.url) ...
  std::string service_namespace, service_name;  // ... or an in-cluster Service
  int service_port = 443;
  std::string ca_bundle_pem;
  std::string namespace_selector;  // "key=value": only namespaces with this label (empty: all)
  std::vector<std::string> trusted_users = kDefaultTrustedUsers;  // see WebhookOptions
  std::string exempt_namespace;                                    // see WebhookOptions
  bool dra = false;  // the mutating webhook creates ResourceClaimTemplates: sideEffects NoneOnDryRun
};
nlohmann::json MutatingConfiguration(const WebhookRegistration& reg, const ResourceNames& names);
nlohmann::json ValidatingConfiguration(const WebhookRegistration& reg, const ResourceNames& names);
// Creates or updates both configurations (the caBundle follows the current certificate).
kube::Status RegisterWebhooks(kube::Client& client, const WebhookRegistration& reg, const ResourceNames& names);

}  // namespace tessera::scheduler
