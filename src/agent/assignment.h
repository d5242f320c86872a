// Reading the scheduler's handoff from a pod: which GPUs, how much memory and how many cores each
// container was given, and whether the node agent has served it yet.
//
// The contract (field names, JSON shapes) lives in src/kube/annotations.h, shared with the scheduler:
// tessera.dev/devices and tessera.dev/init-devices (per container index: [{uuid, memory_mib, cores}]),
// tessera.dev/assigned-node, tessera.dev/bind-time, tessera.dev/allocation-state (pending → allocated).
// tessera.dev/container-settings (each container's priority and cap mode, resolved by the scheduler at
// bind) and tessera.dev/compute-mode time-sliced|spatial (also resolved at bind). Pods bound without
// container-settings (by an older scheduler) fall back to the pod's tessera.dev/cap-mode annotation and
// nvidia.com/priority limit.
// Pure functions over the pod's JSON; no I/O. Thread-safe.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "kube/annotations.h"  // the handoff's names and states, shared with the scheduler

namespace tessera::agent {

// One GPU of a container's slice: the handoff's own type (kube/annotations.h), not a copy of it.
using Grant = kube::DeviceSlice;

// One container of a pod that holds GPUs through this node's device plugin.
struct ContainerAssignment {
  std::string pod_uid;
  std::string namespace_;
  std::string pod_name;
  std::string container;  // container name
  bool init = false;
  int index = 0;         // position within spec.initContainers or spec.containers
  int device_count = 0;  // the container's limit of the plugin's resource (device IDs it gets)
  std::vector<Grant> grants;
  int64_t bind_time_ns = 0;      // from tessera.dev/bind-time; 0 when absent
  int64_t creation_time_ns = 0;  // metadata.creationTimestamp
  std::string state;             // allocation-state
  int priority = 1;              // 0 high, 1 best effort (default)
  bool burst = false;            // cap mode burst (default hard)
  bool spatial = false;          // annotation tessera.dev/compute-mode: spatial (the scheduler resolves it)

  std::string Key() const { return pod_uid + "/" + container; }
  // Two containers with equal signatures would get identical slices: interchangeable.
  std::string Signature() const;
};

// Parses an RFC 3339 timestamp ("2026-11-25T16:02:58Z", "…58.123456Z", "…58+01:00") to ns since
// the epoch. Returns false on anything else.
bool ParseRfc3339(const std::string& text, int64_t* ns);

// The GPU containers of `pod` assigned to `node` for `resource` (e.g. "nvidia.com/gpu"), in the order
// the kubelet allocates them (init containers first). Empty when the pod is not ours. Errors (a
// malformed devices annotation, a grant count that differs from the container's device count) go to
// *error with the pod and field named; the pod is then skipped rather than half-used.
std::vector<ContainerAssignment> ParseAssignments(const nlohmann::json& pod, const std::string& node,
                                                  const std::string& resource, std::string* error);

}  // namespace tessera::agent
