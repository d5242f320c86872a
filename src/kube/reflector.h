// Reflector: keeps a caller's view of one resource in step with the API server (list, then watch from the
// list's resourceVersion; on 410 Gone or a broken stream, relist and hand over the full set again).
//
// The scheduler runs one for Pods and one for Nodes; the agent one for pods on its node. Callbacks run on
// the reflector's own thread, one at a time, in the order the API server sent them. Start()/Stop() may be
// called from any thread; Stop() joins the thread. Synced() turns true after the first full list.
#pragma once

#include <atomic>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "kube/client.h"

namespace tessera::kube {

struct ReflectorHandler {
  // The full current set (after the first list and after every relist). Objects not in `items` are gone.
  std::function<void(const std::vector<Json>& items)> on_replace;
  // One change. type is kAdded, kModified or kDeleted.
  std::function<void(EventType type, const Json& object)> on_event;
};

struct ReflectorOptions {
  std::string ns;  // empty: all namespaces
  std::string label_selector;
  std::string field_selector;
  int watch_timeout_seconds = 300;
  int64_t page_size = 500;
  double retry_backoff_s = 0.5;  // after a failed list/watch, doubled up to 8 s
};

class Reflector {
 public:
  Reflector(std::shared_ptr<Client> client, Resource resource, ReflectorOptions opts, ReflectorHandler handler);
  ~Reflector();
  void Start();
  void Stop();
  bool Synced() const { return synced_.load(); }
  // Blocks until Synced() or the timeout; returns Synced().
  bool WaitSynced(double timeout_s);
  uint64_t relists() const { return relists_.load(); }      // lists after the first (410, broken stream)
  std::string last_resource_version() const;

 private:
  void Loop();
  // One full list. On failure, *retry_now says whether to list again without backing off (the server
  // already waited: 504 "Too large resource version").
  bool ListOnce(bool* retry_now);
  std::shared_ptr<Client> client_;
  std::shared_ptr<Client> watch_client_;  // its own pool so StopWatches() touches only this reflector
  Resource resource_;
  ReflectorOptions opts_;
  ReflectorHandler handler_;
  std::thread thread_;
  std::atomic<bool> stop_{false};
  std::atomic<bool> synced_{false};
  std::atomic<uint64_t> relists_{0};
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::string rv_;
  bool done_ = false;  // guarded by mu_: Loop() has returned
};

}  // namespace tessera::kube
