// The checks /bind makes on the pod and node it re-read from the API server, before it reserves anything.
//
// kube-scheduler calls /bind only after its own filters passed, but /bind is an HTTP endpoint: whoever can
// reach it could name any pod and any node. So the extender trusts nothing in the request beyond the pod's
// name, uid and the node's name, re-reads both objects, and refuses unless the pod is one this scheduler
// serves (spec.schedulerName), still pending (no nodeName, not being deleted), has the uid the caller
// named, and may run on that node: its nodeSelector and required node affinity match the node, and it
// tolerates every NoSchedule / NoExecute taint. The requests placed are the re-read pod's. Pure functions.
#pragma once

#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace tessera::scheduler {

// "" when `pod` may be bound to `node` by a scheduler serving `scheduler_names`, else the reason (naming
// the field: the scheduler name, the uid, the taint, the selector term).
std::string BindRefusal(const nlohmann::json& pod, const std::string& expected_uid, const nlohmann::json& node,
                        const std::vector<std::string>& scheduler_names);

// Kubernetes' toleration semantics: does one of `tolerations` tolerate `taint`?
bool Tolerates(const nlohmann::json& tolerations, const nlohmann::json& taint);
// Does `node` satisfy one nodeSelectorTerm (matchExpressions on labels, matchFields on metadata.name)?
bool MatchesTerm(const nlohmann::json& term, const nlohmann::json& node);

}  // namespace tessera::scheduler
