// The checks of `tessera doctor`: each looks at a snapshot of the cluster (and, with --node, of this host's
// processes) and names every problem it finds together with the fix.
//
// The checks are pure functions of a DoctorInput, so they are table-tested without a cluster;
// doctor_collect.h fills the input from the API server and /proc. One Finding per broken object. Check
// names are stable (scripts match on them): gpu-node-without-agent, gpu-pod-not-isolated,
// bound-not-allocated, container-without-shim, version-skew, webhook-unreachable. Thread-safe (no state).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace tessera::cli {

using Json = nlohmann::json;

struct DoctorOptions {
  std::vector<std::string> scheduler_names{"tessera-scheduler", "hami-scheduler"};
  std::vector<std::string> gpu_resources{"nvidia.com/gpu", "nvidia.com/gpumem", "nvidia.com/gpumem-percentage",
                                         "nvidia.com/gpucores", "nvidia.com/priority"};
  // Standard labels that mark a GPU node (the chart's agent.gpuNodeLabels defaults).
  std::vector<std::pair<std::string, std::string>> gpu_node_labels{
      {"nvidia.com/gpu.present", "true"}, {"feature.node.kubernetes.io/pci-10de.present", "true"}};
  int64_t allocation_grace_s = 60;  // how long a bound pod may wait for its allocation
};

// A process on this host that uses a GPU (has a GPU device open).
struct GpuProcess {
  int pid = 0;
  std::string comm;
  bool shim_loaded = false;  // libtessera.so is mapped
  std::string pod_uid;       // from its cgroup, when it runs in a Kubernetes pod
  std::string container_id;
};

struct DoctorInput {
  std::vector<Json> nodes, pods, daemonsets, deployments;
  std::vector<Json> mutating_webhooks, validating_webhooks, services;
  // Result of creating a GPU pod with dryRun=All (the API server calls the webhooks): empty = admitted.
  bool webhook_probed = false;
  std::string webhook_probe_error;
  // Processes seen on this host (only with --node).
  bool scanned_processes = false;
  std::vector<GpuProcess> gpu_processes;
  int64_t now_unix = 0;
};

struct Finding {
  std::string check;     // stable name, see above
  std::string severity;  // "error" or "warning"
  std::string object;    // "node/gpu-3", "pod/default/worker-a", "mutatingwebhookconfiguration/x"
  std::string problem;
  std::string fix;
};

std::vector<Finding> RunChecks(const DoctorInput& in, const DoctorOptions& opt);

// Pieces the checks share, exposed for the tests and the collector.
bool PodAsksForGpu(const Json& pod, const DoctorOptions& opt);
bool IsGpuNode(const Json& node, const DoctorOptions& opt);
bool IsTesseraComponent(const Json& obj, const std::string& component);  // "agent" or "scheduler"
// Tag of an image reference ("repo/x:1.2@sha256:..." -> "1.2"), "" when none.
std::string ImageTag(const std::string& image);

}  // namespace tessera::cli
