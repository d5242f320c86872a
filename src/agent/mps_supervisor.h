// MpsSupervisor: the node agent's MPS control daemons, one per GPU that holds spatial slices.
//
// Spatial mode (docs/compute.md): the containers of spatial slices on a GPU run as clients of one MPS
// server that Tessera starts for that GPU with its own pipe and log directories under
// <base>/<gpu-uuid>/{pipe,log} (the shim's layout, src/shim/mps.h; the host path is mounted at the same
// path into each client container). The supervisor
//  - starts the daemon the first time a slice on the GPU needs it (Acquire) and returns its pipe dir;
//  - checks every daemon it runs (Check, called by its own thread every `check_period`): one that no
//    longer answers `get_server_list` is started again, counted in restarts(), and reported through
//    `on_restart` (the agent logs it);
//  - stops the daemon and removes its directories once the last slice on the GPU is gone (Release);
//  - after an agent restart, Adopt()s the slices that already run so their daemons stay supervised;
//  - keeps <base>/<gpu-uuid>/client holding one hard link, `control`, to the daemon's control socket
//    (refreshed whenever the daemon's socket changes). That directory, not the pipe directory, is what
//    containers get, read-only: the pipe directory also holds `control_privileged`, through which a
//    process running as root could quit the daemon or change its settings for every tenant on the GPU,
//    while `control` alone serves clients and refuses those commands ("Not enough privilege"; measured
//    on driver 580, docs/compute.md).
// The daemon is nvidia-cuda-mps-control from PATH; tests put a fake one there
// (src/agent/testing/fake-nvidia-cuda-mps-control), so the whole path runs without a GPU.
// Thread-safe.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <thread>

#include "gpu/status.h"

namespace tessera::agent {

class MpsSupervisor {
 public:
  struct Options {
    std::string base_dir = "/run/tessera/mps";
    std::chrono::milliseconds check_period{2000};
    std::function<void(const std::string& uuid, const std::string& why)> on_restart;
  };
  explicit MpsSupervisor(Options opts);
  ~MpsSupervisor();
  MpsSupervisor(const MpsSupervisor&) = delete;
  MpsSupervisor& operator=(const MpsSupervisor&) = delete;

  // Starts the checker thread.
  void Start();
  void Stop();

  // Slice `slice` runs on GPU `uuid` in spatial mode: makes sure the GPU's daemon runs; *pipe_dir gets
  // the directory clients use (CUDA_MPS_PIPE_DIRECTORY).
  gpu::Status Acquire(const std::string& uuid, const std::string& slice, std::string* pipe_dir);
  // Records a running spatial slice without starting anything (after an agent restart).
  void Adopt(const std::string& uuid, const std::string& slice);
  // The slice is gone; the GPU's daemon stops when it was the last one there.
  void Release(const std::string& slice);
  // One health pass over every supervised daemon now (the thread calls it every check_period).
  void Check();

  std::string PipeDir(const std::string& uuid) const;
  // The directory mounted read-only into client containers at PipeDir(uuid) (see above).
  std::string ClientDir(const std::string& uuid) const;
  // GPUs with a supervised daemon, and the slices on each.
  std::map<std::string, std::set<std::string>> Users() const;
  uint64_t restarts() const { return restarts_.load(); }

 private:
  // Points <client dir>/control at the daemon's current control socket (mu_ held).
  gpu::Status LinkClientDir(const std::string& uuid);

  Options opts_;
  mutable std::mutex mu_;
  std::map<std::string, std::set<std::string>> users_;  // uuid -> slices
  std::atomic<uint64_t> restarts_{0};
  std::atomic<bool> stopping_{false};
  std::mutex stop_mu_;
  std::condition_variable stop_cv_;
  std::thread thread_;
};

}  // namespace tessera::agent
