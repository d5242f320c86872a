// HAMi's scheduler-policy values, parsed: hami.io/node-scheduler-policy and hami.io/gpu-scheduler-policy
// (and the scheduler's --node-policy / --gpu-policy defaults, which take the same values).
//
// A value is one name or a comma-separated list of names:
//  - at most one packing policy: GPU level binpack | spread; node level also bestfit, fgd, tessera, random
//    (src/placement/engine.h defines each). Without one, the default's packing policy stays.
//  - any of the modifiers topology-aware (multi-GPU containers take the GPU set with the best NVLink/PCIe
//    links the agent published; at node level, the node offering the best such set wins) and numa (GPUs
//    of one NUMA node when enough fit there; at node level, prefer the node where they do).
// Examples: "topology-aware", "binpack,numa", "spread, topology-aware, numa".
// Errors name the annotation (or flag), the value and the allowed names. Pure functions; thread-safe.
#pragma once

#include <string>
#include <string_view>

#include "kube/result.h"
#include "placement/engine.h"

namespace tessera::scheduler {

enum class PolicyLevel { kNode, kGpu };

struct PolicyChoice {
  placement::Policy base = placement::Policy::kBinpack;
  bool topology_aware = false;
  bool numa = false;
  bool operator==(const PolicyChoice&) const = default;
};

// `what` names the source in errors ("annotation hami.io/gpu-scheduler-policy", "--gpu-policy").
// An empty value gives `def`.
kube::Result<PolicyChoice> ParsePolicyChoice(std::string_view what, std::string_view value, PolicyLevel level,
                                             PolicyChoice def);

// The names a level accepts, for messages and --help ("binpack, spread, topology-aware, numa").
std::string AllowedPolicyNames(PolicyLevel level);

}  // namespace tessera::scheduler
