// ClusterView: the scheduler's picture of the cluster, rebuilt from the API server (Nodes, Pods,
// ResourceQuotas through reflectors) plus the assignments this process has made but not yet seen come
// back through the watch ("assumed"), and the placement Snapshot derived from both.
//
// The API server stays the source of truth: every piece of state here can be recomputed from a relist
// (pods carry their assignment in annotations), which is what makes a leader takeover lossless.
// Reserve() is the one place where a GPU slice is taken: under the view's writer lock it re-checks fit
// on the live snapshot, asks the placement engine for GPUs, checks the namespace's GPU memory and cores
// quotas and commits, so concurrent binds to one node each get a distinct, fitting slice without any node lock.
// Thread-safe: reflector callbacks, extender and webhook threads and the metrics scraper call in
// concurrently.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <shared_mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include <nlohmann/json.hpp>

#include "kube/annotations.h"
#include "kube/client.h"
#include "placement/engine.h"
#include "scheduler/request.h"

namespace tessera::scheduler {

struct NodeRecord {
  std::string name;
  std::vector<std::pair<std::string, std::string>> labels;
  int64_t cpu_milli = 0;
  int64_t memory_mib = 0;
  std::vector<kube::GpuInfo> gpus;
  placement::ComputeMode default_mode = placement::ComputeMode::kTimeSliced;  // node's tessera.dev/compute-mode
  std::string inventory_error;  // the tessera.dev/gpus annotation was present but unreadable
  bool operator==(const NodeRecord&) const = default;
};

// What one pod takes of one GPU.
struct GpuUse {
  int64_t memory_mib = 0;
  int cores = 0;
  int sharers = 0;        // containers of the pod that hold a slice of it at the same time
  int max_slice_cores = 0;  // a slice with the card's cores is exclusive
  bool operator==(const GpuUse&) const = default;
};

// What a pod holds on a node (cpu/memory for any bound pod; GPU slices once assigned).
struct Holding {
  std::string node;
  std::string ns;  // the pod's namespace (spatial tenants)
  int64_t cpu_milli = 0;
  int64_t memory_mib = 0;
  kube::ContainerDevices devices;       // per spec.containers index
  kube::ContainerDevices init_devices;  // per spec.initContainers index
  std::vector<bool> init_sidecar;       // per spec.initContainers index: restartPolicy Always
  // GPU memory this pod counts against a ResourceQuota on nvidia.com/gpumem beyond what Kubernetes itself
  // counts: Kubernetes charges the MiB a container states; percentages and whole cards become MiB only on
  // the chosen card. Per container the MiB per GPU (as a stated nvidia.com/gpumem is), combined over the
  // pod as Kubernetes does: max(largest init container, sum of app containers). See PodQuotaMib().
  int64_t unstated_mib = 0;
  // The same for a ResourceQuota on nvidia.com/gpucores: the cores per GPU its slices reserve where the
  // container states no gpucores (a whole card alone reserves 100; a share without cores reserves none).
  int64_t unstated_cores = 0;
  // How its slices compute (resolved at bind into tessera.dev/compute-mode) and, for spatial ones,
  // whether other namespaces may share their GPUs (placement/spatial.h).
  placement::ComputeMode mode = placement::ComputeMode::kTimeSliced;
  bool share_tenants = false;
  bool empty() const { return node.empty(); }
  bool HasGpu() const;
  // A run-once init container holds a slice (its GPU use is then not the plain sum of the slices).
  bool HasSequentialInitSlice() const;
  // Per GPU uuid, Kubernetes' rule: app containers and sidecars run together; each run-once init
  // container runs alone beside the sidecars declared before it; the pod holds the larger of the two.
  std::map<std::string, GpuUse> Use() const;
  bool operator==(const Holding& o) const;
};

struct PodRecord {
  std::string uid, ns, name;
  std::string node_name;      // spec.nodeName
  std::string resource_version;
  bool terminal = false;      // Succeeded/Failed: holds nothing
  bool assigned = false;      // carries tessera.dev/assigned-node + devices
  std::string allocation_state;
  Holding from_api;           // what the API server's copy says it holds
  std::optional<Holding> assumed;  // set by Reserve() until the watch confirms it
  const Holding& effective() const { return assumed ? *assumed : from_api; }
};

// One hard limit of a ResourceQuota on GPU memory (MiB) or GPU cores (percent of a card).
struct QuotaRecord {
  std::string ns, name;
  std::string key;       // the hard key, e.g. "requests.nvidia.com/gpumem" or "requests.nvidia.com/gpucores"
  std::string resource;  // the resource it limits, "nvidia.com/gpumem" or "nvidia.com/gpucores"
  bool cores = false;    // limits cores (percent) rather than memory (MiB)
  int64_t hard = 0;      // status.hard (Kubernetes' quota controller), else spec.hard
  int64_t used = 0;      // status.used: what pods state, as Kubernetes counts it
};

// One container's part in a pod's quota charge (see Holding::unstated_mib and unstated_cores).
struct QuotaPart {
  bool init = false, sidecar = false;
  bool stated = false;        // the container states nvidia.com/gpumem (Kubernetes counts it)
  int64_t mib = 0;            // its GPU memory per GPU
  bool cores_stated = false;  // the container states nvidia.com/gpucores
  int64_t cores = 0;          // the cores per GPU its slices reserve
};
// Kubernetes' pod request over `parts` (init containers first, in order): max(each run-once init container
// plus the sidecars before it, sum of app containers and sidecars); only stated parts when `stated_only`;
// of the cores rather than the memory when `cores`.
int64_t PodQuotaMib(const std::vector<QuotaPart>& parts, bool stated_only, bool cores = false);

struct Reservation {
  std::string node;
  kube::ContainerDevices devices, init_devices;
  bool spatial = false;  // the slices run as MPS clients (the bind writes tessera.dev/compute-mode)
  bool reused = false;  // an earlier (unbound) reservation of this pod on this node was kept
};

// Per-GPU allocation, for metrics.
struct GpuAllocation {
  std::string node;
  int index = 0;
  kube::GpuInfo gpu;
  int64_t memory_mib = 0;
  int cores = 0;
  int sharers = 0;
};
struct SliceAllocation {
  std::string ns, pod, node, uuid, container;
  int64_t memory_mib = 0;
  int cores = 0;
};

class ClusterView {
 public:
  explicit ClusterView(ParseOptions parse_options);

  // Reflector hooks.
  void ReplaceNodes(const std::vector<nlohmann::json>& items);
  void OnNode(kube::EventType t, const nlohmann::json& node);
  void ReplacePods(const std::vector<nlohmann::json>& items);
  void OnPod(kube::EventType t, const nlohmann::json& pod);
  void ReplaceQuotas(const std::vector<nlohmann::json>& items);
  void OnQuota(kube::EventType t, const nlohmann::json& quota);

  // Filter + prioritize over `candidates` (node names). Nodes unknown to the view come back infeasible
  // with a reason. `verdict(candidate index, reason-or-null, score 0..100)` is called once per candidate;
  // the reason is valid only during the call. Runs under the reader lock: writers (watch events, binds)
  // wait for it, it waits only for a writer already inside (their parsing happens before the lock).
  using Verdict = std::function<void(size_t candidate, const char* reason, int score)>;
  void Evaluate(const ParsedPod& pod, const std::vector<std::string>& candidates, const placement::Engine& engine,
                const Verdict& verdict);

  // Takes a slice for `pod` on `node` (see the class comment). Errors explain why the node can't.
  kube::Result<Reservation> Reserve(const ParsedPod& pod, const std::string& node, const placement::Engine& engine);
  // Drops an assumption that never reached the API server (patch or binding failed).
  void Forget(const std::string& uid);
  std::optional<PodRecord> FindPod(const std::string& ns, const std::string& name) const;

  int64_t MaxGpuMemoryMib() const;
  size_t node_count() const;
  size_t pod_count() const;
  uint64_t rebuilds() const { return rebuilds_; }

  std::vector<GpuAllocation> GpuAllocations() const;
  std::vector<SliceAllocation> SliceAllocations() const;
  struct QuotaUse {
    QuotaRecord quota;
    int64_t used = 0;  // MiB or percent, as the quota counts
  };
  std::vector<QuotaUse> QuotaUsage() const;

 private:
  void SetNodeLocked(NodeRecord rec);
  void RemoveNodeLocked(const std::string& name);
  void UpsertPodLocked(PodRecord fresh);
  void RemovePodLocked(const std::string& uid);
  void ChangeHoldingLocked(const std::string& ns, const Holding& before, const Holding& after);
  void EnsureSnapshotLocked();
  bool CommitLocked(const Holding& h);
  // What the namespace's pods hold without stating it: MiB of GPU memory, or cores when `cores`.
  int64_t UnstatedLocked(const std::string& ns, bool cores) const;
  std::optional<std::string> QuotaErrorLocked(const std::string& ns, int64_t add_mib, int64_t add_cores,
                                              const std::string& detail) const;

  ParseOptions parse_;
  mutable std::shared_mutex mu_;
  std::map<std::string, NodeRecord> nodes_;
  std::unordered_map<std::string, PodRecord> pods_;  // by uid
  std::unordered_map<std::string, std::string> pod_keys_;  // ns/name -> uid
  std::map<std::string, std::vector<QuotaRecord>> quotas_;  // by namespace
  std::unordered_map<std::string, int64_t> ns_unstated_mib_;  // per namespace: sum of Holding::unstated_mib
  std::unordered_map<std::string, int64_t> ns_unstated_cores_;  // per namespace: sum of Holding::unstated_cores
  std::unique_ptr<placement::Snapshot> snap_;
  bool dirty_ = true;
  uint64_t rebuilds_ = 0;
};

// Parses the parts of a Node the scheduler needs.
NodeRecord ParseNode(const nlohmann::json& node);
// Parses what the view keeps of a Pod (no lock needed; the view's writers call it before locking).
PodRecord ParsePodRecord(const nlohmann::json& pod, const ResourceNames& names = ResourceNames{});

}  // namespace tessera::scheduler
