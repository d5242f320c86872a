// RowBroker: the node agent's side of agent rows (src/slice/agent_rows.h). It owns every slice's region
// directory, listens on each slice's agent.sock, hands each process of the slice its own row, and
// sweeps: rows of dead processes (any pid namespace: the agent judges host pids) are reclaimed within
// one sweep, and a region found corrupt or truncated is rebuilt.
//
// One thread serves every slice with poll(): a connection that does not send its request within
// kRequestDeadlineMs is dropped, and each slice has at most kMaxPendingPerSlice connections waiting, so a
// tenant that floods or stalls its socket delays no one else's registration. Add/Remove/Sweep are
// thread-safe; the slice writer calls Add when it writes a slice and Remove when it removes one.
#pragma once

#include <atomic>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "slice/config.h"
#include "slice/region.h"

namespace tessera::agent {

class RowBroker {
 public:
  static constexpr int kRequestDeadlineMs = 500;
  static constexpr int kMaxPendingPerSlice = 8;
  static constexpr int kSweepMs = 100;

  RowBroker() = default;
  ~RowBroker();
  RowBroker(const RowBroker&) = delete;
  RowBroker& operator=(const RowBroker&) = delete;

  // Serves the slice whose region directory (host path) is `dir`: makes the region match cfg (created or
  // rebuilt, see slice::PrepareAgentRegion) and listens on dir/agent.sock. Idempotent; a changed cfg is
  // applied in place. False with *err on failure.
  bool Add(const std::string& dir, const slice::SliceConfig& cfg, std::string* err);
  void Remove(const std::string& dir);
  // Starts the serving thread (Sweep every kSweepMs). Stop() joins it.
  void Start();
  void Stop();
  // One sweep over every slice: dead rows reclaimed, damaged regions rebuilt. Returns rows reclaimed.
  int Sweep();
  // Regions rebuilt since start (corrupt or truncated found by a sweep).
  uint64_t rebuilds() const { return rebuilds_.load(); }

 private:
  struct Slice {
    std::string dir;
    slice::SliceConfig cfg;
    slice::Region region{};
    int listen_fd = -1;
  };
  struct Pending {
    int fd;
    std::string dir;
    int64_t deadline_ms;
  };
  bool OpenLocked(Slice* s, std::string* err);
  void Serve(Pending* p);
  int SweepLocked(Slice* s);
  void Loop();

  std::mutex mu_;
  std::map<std::string, Slice> slices_;
  std::vector<Pending> pending_;
  std::thread thread_;
  std::atomic<bool> stop_{false};
  std::atomic<uint64_t> rebuilds_{0};
};

}  // namespace tessera::agent
