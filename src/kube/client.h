// Kubernetes API client: typed verbs on the handful of resources Tessera touches, plus list+watch.
//
// Objects travel as nlohmann::json (the API server's own JSON), so no field is lost when an object is read,
// patched and written back; `Resource` names the kind (path, namespaced or not). Callers: the scheduler
// (pods, nodes, bindings, leases, quotas, events), the node agent (its Node, pods on the node), `tessera
// doctor`. A Client is thread-safe: each call borrows a pooled keep-alive connection (one idle longer than
// Config::max_idle_s is dropped, not reused); a call that fails on a pooled socket is sent once more on a
// fresh one, since servers and load balancers close idle connections. Watch() blocks the
// calling thread until the stream ends, the callback returns false, or Stop() is called. Creating a Client
// sets SIGPIPE to ignored if it was at its default (a closed connection must fail a call, not the process).
#pragma once

#include <atomic>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "kube/config.h"
#include "kube/result.h"

namespace tessera::kube {

using Json = nlohmann::json;

struct Resource {
  const char* api_prefix;  // "/api/v1" or "/apis/coordination.k8s.io/v1"
  const char* plural;      // "pods"
  bool namespaced;
};
inline constexpr Resource kPods{"/api/v1", "pods", true};
inline constexpr Resource kNodes{"/api/v1", "nodes", false};
inline constexpr Resource kEvents{"/api/v1", "events", true};
inline constexpr Resource kResourceQuotas{"/api/v1", "resourcequotas", true};
inline constexpr Resource kNamespaces{"/api/v1", "namespaces", false};
inline constexpr Resource kLeases{"/apis/coordination.k8s.io/v1", "leases", true};
inline constexpr Resource kMutatingWebhooks{"/apis/admissionregistration.k8s.io/v1",
                                            "mutatingwebhookconfigurations", false};
inline constexpr Resource kValidatingWebhooks{"/apis/admissionregistration.k8s.io/v1",
                                              "validatingwebhookconfigurations", false};

// Path of a collection (name empty) or one object; ns ignored for cluster-scoped kinds, and empty ns on a
// namespaced kind means all namespaces (list/watch only).
std::string ResourcePath(const Resource& r, const std::string& ns, const std::string& name = "");

enum class PatchType { kMerge, kStrategicMerge, kJson };

struct ListOptions {
  std::string label_selector;
  std::string field_selector;
  std::string resource_version;  // "" = most recent (quorum read), "0" = any cached
  int64_t limit = 0;             // page size; List() follows `continue` and returns all pages
};

struct ListResult {
  std::vector<Json> items;
  std::string resource_version;  // of the list, to start a watch from
};

struct WatchOptions {
  std::string label_selector;
  std::string field_selector;
  std::string resource_version;
  bool allow_bookmarks = true;
  int timeout_seconds = 300;  // server closes the stream after this; callers re-watch
};

enum class EventType { kAdded, kModified, kDeleted, kBookmark, kError };
struct WatchEvent {
  EventType type;
  Json object;  // for kError: a Status object (code 410 = resourceVersion too old)
};
const char* EventTypeName(EventType t);

// Decodes one line of a watch stream ({"type":..., "object":...}).
Result<WatchEvent> DecodeWatchEvent(const std::string& line);

class Client {
 public:
  static Result<std::shared_ptr<Client>> Create(const Config& config);
  ~Client();
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  Result<Json> Get(const Resource& r, const std::string& ns, const std::string& name);
  Result<ListResult> List(const Resource& r, const std::string& ns, const ListOptions& opts = {});
  Result<Json> Create(const Resource& r, const std::string& ns, const Json& obj);
  // Full replace; the object's metadata.resourceVersion makes it conditional (409 Conflict on a race).
  Result<Json> Update(const Resource& r, const std::string& ns, const std::string& name, const Json& obj);
  Result<Json> UpdateStatus(const Resource& r, const std::string& ns, const std::string& name, const Json& obj);
  Result<Json> Patch(const Resource& r, const std::string& ns, const std::string& name, const Json& patch,
                     PatchType type = PatchType::kMerge);
  Result<Json> PatchStatus(const Resource& r, const std::string& ns, const std::string& name, const Json& patch,
                           PatchType type = PatchType::kMerge);
  Status Delete(const Resource& r, const std::string& ns, const std::string& name);

  // POST pods/<name>/binding with a v1 Binding to `node`. The API server copies the Binding's annotations onto
  // the pod in the same write, and a non-empty resource_version is a precondition (409 if the pod changed),
  // so an assignment and its binding land together or not at all.
  Status Bind(const std::string& ns, const std::string& pod, const std::string& pod_uid, const std::string& node,
              const Json& annotations = Json::object(), const std::string& resource_version = "");
  // Creates a core/v1 Event about `involved` (an object with apiVersion/kind/metadata). Best effort.
  Status RecordEvent(const Json& involved, const std::string& type, const std::string& reason,
                     const std::string& message, const std::string& component);

  // Streams events until the server ends the stream (Ok), the callback returns false (Ok), the stream
  // fails (Error), or Stop() is called. A 410 arrives as a kError event whose object.code is 410.
  Status Watch(const Resource& r, const std::string& ns, const WatchOptions& opts,
               const std::function<bool(const WatchEvent&)>& on_event);

  // Raw request for anything not covered above. body empty = no body.
  Result<Json> Request(const std::string& method, const std::string& path, const std::string& body = "",
                       const std::string& content_type = "application/json");

  // Aborts in-flight watches (their Watch() returns promptly). Other calls are unaffected.
  void StopWatches();

  const Config& config() const { return config_; }
  // Requests retried on a fresh socket after a pooled one failed (the server had closed it).
  uint64_t stale_retries() const { return retries_.load(std::memory_order_relaxed); }

 private:
  explicit Client(Config config);
  struct Conn;
  // A pooled connection idle at most config_.max_idle_s (*pooled = true), else a new one.
  std::unique_ptr<Conn> Borrow(bool* pooled);
  void Return(std::unique_ptr<Conn> c);
  void DropPool();
  std::unique_ptr<Conn> NewConn(bool for_watch);

  Config config_;
  std::string host_;
  int port_ = 0;
  bool tls_ = false;
  std::mutex mu_;
  std::vector<std::unique_ptr<Conn>> pool_;
  std::vector<Conn*> watches_;  // guarded by mu_
  std::atomic<uint64_t> stop_gen_{0};
  std::atomic<uint64_t> retries_{0};
};

// Helpers on object JSON.
std::string Name(const Json& obj);
std::string Namespace(const Json& obj);
std::string Uid(const Json& obj);
std::string ResourceVersionOf(const Json& obj);
// Annotation value, or empty.
std::string Annotation(const Json& obj, const std::string& key);

}  // namespace tessera::kube
