// Watchdog: the node agent's check of what each slice really holds on its GPUs, from the driver's own
// per-process figures, against the slice's memory wall. The shim's wall stops allocations it sees; a
// process that drops the shim (static binary, cleared preload, a driver call the shim cannot hook,
// graphics memory) is stopped here instead.
//
// Every poll (WatchdogOptions::period_s) it lists the processes of every GPU (gpu::Backend::Processes,
// host pids), finds each one's slice and sums per slice and GPU:
//   - a process in a pod: its cgroup (/proc/<pid>/cgroup) names the pod UID and the container's runtime
//     id. Those the tenant cannot change. The pod's slices come from the agent (owner.json); when the pod
//     has several, the container name behind the runtime id (WatchdogHooks::container_name, from the pod's
//     status) picks one, else the slice whose region row carries the process's host pid, else the only
//     one on that GPU;
//   - a process of no pod: the slice one of whose roots (slice/roots.h, written by `tessera run`) is the
//     process or one of its ancestors, else the slice whose region row names it;
//   - anything else belongs to no slice.
// A slice whose processes hold more than its wall plus slack on a GPU (a GPU outside the slice has a wall
// of 0) is over its limit. With action kKill the processes the shim does not account (no region row)
// are killed first, largest first, then the others, until the rest fits; each kill is a log line, an
// event on the pod, and a counter. With kReport the same is said once per excursion, nothing killed.
// Processes of no slice on a shared GPU (WatchdogOptions::all_gpus_shared, or a GPU that hosts any
// slice) are reported (log once per process, gauge per GPU) and, only with unknown = kKill, killed.
// Other slices are never touched: a kill targets only processes counted in the over-limit slice.
//
// A kill pins the process with pidfd_open and re-checks its start time first, so a reused pid is never
// signalled. Thread-safe: Start() runs PollOnce() on its own thread; Stats() may be read from any thread.
// Depends on src/gpu and src/slice only (the GPU test programs build it without gRPC or JSON).
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "gpu/backend.h"

namespace tessera::agent {

enum class WatchdogAction { kOff, kReport, kKill };
// "off" / "report" / "kill" → action; false for anything else.
bool ParseWatchdogAction(const std::string& text, WatchdogAction* out);
const char* WatchdogActionName(WatchdogAction a);

struct WatchdogOptions {
  WatchdogAction over_limit = WatchdogAction::kKill;  // slices over their wall
  WatchdogAction unknown = WatchdogAction::kReport;   // processes of no slice on a shared GPU
  double period_s = 0.1;                              // 0.01 .. 10
  uint64_t slack_bytes = 0;                           // allowed above the wall before acting
  std::string proc_root = "/proc";                    // the host's /proc (the agent runs with hostPID)
  bool all_gpus_shared = true;                        // false: only GPUs hosting a slice count as shared
};

// Checks ranges; the message names the flag and the allowed range.
gpu::Status ValidateWatchdogOptions(const WatchdogOptions& o);

// One slice as the watchdog sees it.
struct WatchedSlice {
  std::string name;                 // slice name
  std::filesystem::path region;     // its accounting region file (may not exist yet)
  // The pod and container it serves; empty pod_uid: a standalone slice (`tessera run`).
  std::string namespace_, pod, pod_uid, container;
  std::map<std::string, uint64_t> limits;        // GPU UUID → memory wall
  std::vector<std::pair<int, uint64_t>> roots;   // standalone: (host pid, start ticks) of its roots
};

// Standalone slices under `dir` (each <dir>/<name>/slice.conf, with roots). Unreadable ones are skipped.
std::vector<WatchedSlice> ListStandaloneSlices(const std::filesystem::path& dir);

// What a process's cgroup file says about its pod: "" when it is in no pod's cgroup. Understands the
// cgroupfs and systemd layouts of cgroup v1 and v2 (".../pod<uid>/<id>",
// ".../kubepods-burstable-pod<uid_with_underscores>.slice/cri-containerd-<id>.scope").
struct PodCgroup {
  std::string pod_uid;       // with dashes
  std::string container_id;  // the runtime's id (hex), "" when the process sits in the pod's cgroup
};
PodCgroup ParsePodCgroup(const std::string& cgroup_file_text);

// What the watchdog needs from whoever runs it.
struct WatchdogHooks {
  std::function<std::vector<WatchedSlice>()> slices;
  // Name of the container with this runtime id in the pod ("" unknown). Optional.
  std::function<std::string(const std::string& pod_uid, const std::string& container_id)> container_name;
  // An event on the slice's pod (Kubernetes slices only). Optional.
  std::function<void(const WatchedSlice&, const std::string& reason, const std::string& message)> event;
  // Sends SIGKILL to pid if it is still the process that started at start_ticks. Default: KillProcess.
  std::function<bool(int pid, uint64_t start_ticks, std::string* why)> kill;
  // One log line. Default: stderr.
  std::function<void(const std::string&)> log;
};

// SIGKILL through a pidfd after re-checking the start time under proc_root; why says what went wrong.
bool KillProcess(const std::string& proc_root, int pid, uint64_t start_ticks, std::string* why);

struct WatchdogFinding {
  enum Kind { kOverLimit, kUnknown } kind = kOverLimit;
  std::string slice;  // empty for kUnknown
  std::string gpu_uuid;
  int pid = 0;
  uint64_t process_bytes = 0;
  uint64_t slice_bytes = 0;  // kOverLimit: the slice's total on the GPU before any kill
  uint64_t limit_bytes = 0;
  bool killed = false;
};

// Per slice and GPU, the driver's figure (for the metrics).
struct MeasuredSliceGpu {
  std::string slice, gpu_uuid;
  uint64_t bytes = 0;
};

struct WatchdogStats {
  uint64_t polls = 0;
  uint64_t poll_failures = 0;  // GPUs whose process list could not be read
  double last_poll_seconds = 0;
  uint64_t over_limit_kills = 0, over_limit_reports = 0;  // processes killed / excursions reported
  uint64_t kill_failures = 0;
  uint64_t unknown_kills = 0, unknown_reports = 0;
  std::map<std::string, std::pair<int, uint64_t>> unknown_now;  // GPU UUID → (processes, bytes)
  std::vector<MeasuredSliceGpu> measured;                       // from the last poll
};

class Watchdog {
 public:
  Watchdog(WatchdogOptions opts, gpu::Backend* backend, WatchdogHooks hooks);
  ~Watchdog();
  Watchdog(const Watchdog&) = delete;
  Watchdog& operator=(const Watchdog&) = delete;

  // GPUs to watch (UUIDs); may change while running.
  void SetGpus(std::vector<std::string> uuids);
  void Start();
  void Stop();
  // One poll now; returns what it found (and did).
  std::vector<WatchdogFinding> PollOnce();
  WatchdogStats Stats() const;

 private:
  struct Proc;
  bool ReadProc(int pid, Proc* out) const;
  void Log(const std::string& line) const;

  WatchdogOptions opts_;
  gpu::Backend* backend_;
  WatchdogHooks hooks_;

  mutable std::mutex mu_;  // guards gpus_, stats_
  std::vector<std::string> gpus_;
  WatchdogStats stats_;

  std::mutex poll_mu_;  // one poll at a time; guards the memory below
  std::set<std::string> reported_over_;                  // "slice/gpu" excursions already reported
  std::set<std::pair<int, uint64_t>> reported_unknown_;  // (pid, start) already reported

  std::atomic<bool> stopping_{false};
  std::mutex stop_mu_;
  std::condition_variable stop_cv_;
  std::thread thread_;
};

}  // namespace tessera::agent
