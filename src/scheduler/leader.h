// Leader election on a coordination.k8s.io/v1 Lease, the way Kubernetes components do it.
//
// One elector per scheduler process. Expiry is judged by this process's own clock from the moment it last
// saw the lease change (not by comparing timestamps written by another host), so clock skew between
// replicas cannot hand leadership to two of them. A leader that cannot renew within renew_deadline steps
// down before its lease can expire for the others. Stop() releases the lease (holder cleared) so a
// successor takes over at once after a clean shutdown. Thread-safe: IsLeader() from any thread.
//
// Follow mode (`follow`): the process does not compete. It only reads a Lease that another component holds —
// in the Helm chart, the kube-scheduler of the same pod, whose identity is "<hostname>_<uuid>" — and reports
// itself leader while that Lease is held (and not expired) by `identity` or "<identity>_*". It never writes
// the Lease, so it can never split leadership from the kube-scheduler that actually calls it.
#pragma once

#include <atomic>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "kube/client.h"

namespace tessera::scheduler {

struct LeaderOptions {
  std::string ns = "kube-system";
  std::string name = "tessera-scheduler";
  std::string identity;  // unique per replica (default: hostname)
  double lease_duration_s = 15;
  double renew_deadline_s = 10;
  double retry_period_s = 2;
  bool follow = false;  // read-only: mirror who holds the Lease (see above)
};

class LeaderElector {
 public:
  LeaderElector(std::shared_ptr<kube::Client> client, LeaderOptions opts,
                std::function<void(bool)> on_change = nullptr);
  ~LeaderElector();
  void Start();
  void Stop();  // releases the lease if held
  bool IsLeader() const { return leader_.load(); }
  std::string holder() const;
  // One acquire-or-renew round (exposed for tests). Returns whether we hold the lease afterwards.
  bool TryAcquireOrRenew();
  // Follow mode: one read of the Lease. Returns whether `identity` (or "<identity>_*") holds it unexpired.
  bool ObserveHeld();

 private:
  // Records the Lease's holder and renewTime as seen now and returns whether it has expired by this
  // process's clock: duration_s after the first sighting of that holder/renewTime pair.
  bool Observe(const std::string& holder, const std::string& renew, int duration_s);
  void Loop();
  void SetLeader(bool v);
  std::shared_ptr<kube::Client> client_;
  LeaderOptions opts_;
  std::function<void(bool)> on_change_;
  std::atomic<bool> leader_{false};
  std::atomic<bool> stop_{false};
  std::thread thread_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::string observed_holder_, observed_renew_, observed_rv_;
  std::chrono::steady_clock::time_point observed_at_{};
  std::chrono::steady_clock::time_point last_renew_{};
};

// MicroTime as the API server writes it: 2006-01-02T15:04:05.000000Z.
std::string NowMicroTime();

}  // namespace tessera::scheduler
