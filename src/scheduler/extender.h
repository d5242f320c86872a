// The kube-scheduler extender verbs (filter, prioritize, bind) over JSON, independent of HTTP.
//
// kube-scheduler calls these with nodeCacheCapable=true (node names only) for pods that ask for one of
// the managed resources. Filter and prioritize are read-only evaluations of the ClusterView through the
// placement engine; bind reserves a slice in the view (re-checking fit on the live state), writes the
// assignment annotations on the pod with an optimistic-concurrency precondition (its resourceVersion),
// then creates the Binding. Only the leader binds; any replica filters and prioritizes. Bind trusts only the
// names and uid it is given: it re-reads the pod and the node and refuses what bind_check.h refuses.
// The annotations travel in the Binding itself (the API server applies them to the pod in the same write,
// preconditioned on the pod's resourceVersion): a pod is never bound without its assignment, and a
// concurrent change to the pod fails the bind with 409 instead of interleaving.
// Thread-safe: the HTTP server calls these from many threads.
#pragma once

#include <functional>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include <nlohmann/json.hpp>

#include "kube/client.h"
#include "placement/engine.h"
#include "scheduler/metrics.h"
#include "scheduler/request.h"
#include "scheduler/view.h"

namespace tessera::scheduler {

struct ExtenderOptions {
  ParseOptions parse;
  std::string component = "tessera-scheduler";  // source of Events
  // spec.schedulerName values whose pods bind accepts (bind_check.h).
  std::vector<std::string> scheduler_names = {"tessera-scheduler"};
};

class Extender {
 public:
  Extender(ExtenderOptions opts, ClusterView* view, std::shared_ptr<kube::Client> client, Metrics* metrics,
           std::function<bool()> is_leader);

  // ExtenderArgs -> ExtenderFilterResult.
  nlohmann::json Filter(const nlohmann::json& args);
  // ExtenderArgs -> HostPriorityList (scores 0..10, kube-scheduler's MaxExtenderPriority).
  nlohmann::json Prioritize(const nlohmann::json& args);
  // ExtenderBindingArgs -> ExtenderBindingResult.
  nlohmann::json Bind(const nlohmann::json& args);

  // The HTTP server's entry points: raw bodies in and out. Same answers as the JSON forms, but the request
  // is parsed without a DOM of the node names (filter builds the pod's alone), the responses are written
  // directly, and prioritize reuses the scores filter just computed for the same pod (kube-scheduler calls
  // them back to back), parsing only the pod's uid and the node names.
  std::string FilterBody(const std::string& body);
  std::string PrioritizeBody(const std::string& body);

 private:
  std::vector<std::string> Candidates(const nlohmann::json& args) const;
  kube::Status BindWithAssignment(const std::string& ns, const std::string& name, const std::string& uid,
                                  std::string resource_version, const Reservation& r,
                                  const kube::PodSettings& settings);

  ExtenderOptions opts_;
  ClusterView* view_;
  std::shared_ptr<kube::Client> client_;
  Metrics* metrics_;
  std::function<bool()> is_leader_;
  placement::Engine engine_;

  // Scores (0..10) of the nodes the last filter of a pod passed, in its order; consumed by its prioritize.
  struct FilterScores {
    std::vector<std::string> names;
    std::vector<int> scores;
  };
  std::unordered_map<std::string, FilterScores> score_cache_;
  std::deque<std::string> score_order_;
  std::mutex cache_mu_;
};

// Current time as RFC 3339 UTC.
std::string NowRfc3339();

}  // namespace tessera::scheduler
