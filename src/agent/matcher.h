// Matcher: which container an Allocate call serves.
//
// The device plugin API tells Allocate only the device IDs the kubelet picked, never the pod. The
// kubelet admits pods one at a time and, within a pod, allocates init containers then containers in
// order; pods reach it in bind order. So the matcher picks, among containers bound to this node and
// not yet served, the one whose request has the same device count (and, when GetPreferredAllocation
// steered the kubelet onto the assigned GPUs, the same GPU set), oldest bind time first.
// Containers with equal signatures (same count, GPUs, memory, cores) would get identical slices, so
// picking any of them is harmless; only when candidates differ is the choice a guess. The matcher says
// so (`ambiguous`), and the agent then verifies through the kubelet's PodResources API and repairs.
//
// Pure and deterministic; no locking (the caller holds its own lock around claim bookkeeping).
#pragma once

#include <map>
#include <set>
#include <string>
#include <vector>

#include "agent/assignment.h"

namespace tessera::agent {

// GPU UUID of a device ID "<uuid>::<k>" (the part before "::"); the ID itself when there is none.
std::string GpuOfDevice(const std::string& device_id);
// Sorted, de-duplicated GPU UUIDs of a set of device IDs.
std::vector<std::string> GpusOfDevices(const std::vector<std::string>& device_ids);

struct MatchResult {
  bool found = false;
  ContainerAssignment chosen;
  bool gpu_set_matched = false;  // the kubelet's devices lie on exactly the assigned GPUs
  bool ambiguous = false;        // other candidates with a different signature were possible
  std::string reason;            // why nothing matched, for the Allocate error
};

// candidates: every GPU container bound to this node whose pod is still pending allocation.
// claimed: Key()s already served by this agent (in flight or done).
MatchResult MatchAllocate(const std::vector<ContainerAssignment>& candidates,
                          const std::set<std::string>& claimed, const std::vector<std::string>& device_ids);

// Orders containers the way the kubelet serves them: bind time, creation time, namespace/name,
// init containers before containers, then index.
bool KubeletOrder(const ContainerAssignment& a, const ContainerAssignment& b);

// What the kubelet's PodResources API reports right now: "<namespace>/<pod>" → container → device IDs
// of the plugin's resource (an empty list when the container holds none yet).
using PodResourcesView = std::map<std::string, std::map<std::string, std::vector<std::string>>>;

// The kubelet lists a pod in PodResources from the moment it starts admitting it, before Allocate: so
// the pod being admitted is one that is listed while one of its GPU containers holds no devices yet.
// Returns the candidates in that state; when there are none (PodResources unreachable, or an older
// kubelet) it returns `candidates` unchanged so matching falls back to bind order.
std::vector<ContainerAssignment> NarrowToAdmitting(const std::vector<ContainerAssignment>& candidates,
                                                   const PodResourcesView& view);

// For GetPreferredAllocation: the container the next Allocate of `size` devices most likely serves
// (same rule as MatchAllocate without the GPU set), and the device IDs to prefer for it: one free ID
// on each assigned GPU, must_include first. Falls back to the first `size` available IDs on distinct
// GPUs when nothing matches.
std::vector<std::string> PreferDevices(const std::vector<ContainerAssignment>& candidates,
                                       const std::set<std::string>& claimed,
                                       const std::vector<std::string>& available,
                                       const std::vector<std::string>& must_include, int size);

}  // namespace tessera::agent
