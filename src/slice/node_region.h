// NodeRegion: the host-wide files through which every Tessera process using one GPU coordinates
// latency priority, across slices and containers.
//
// Two small mmap'ed files per GPU under /run/tessera/node: <gpu-uuid> holds the best-effort participants'
// rows, <gpu-uuid>.high the high-priority participants'. Priority is where a row lives, never what a
// row says: under Kubernetes the node agent creates both files and mounts them one by one into each
// container, <uuid>.high read-write only into high-priority slices and read-only into the others, so a
// tenant cannot make itself high priority (Join(0) fails where the file is read-only). Each process that
// submits work to the GPU joins with a row: how many of its submissions are still running, when it last
// submitted, and a heartbeat its background thread refreshes every few milliseconds. Best-effort
// processes read the high-priority rows to learn whether high-priority work is pending.
//
// No locks a tenant could hold: rows are claimed with a compare-and-swap; a new file is set up by whoever
// swaps its magic first; a damaged one is rebuilt only under an flock taken without waiting (LOCK_NB),
// and a process that cannot use the files within 100 ms runs without priority coordination (Open
// fails with the reason) rather than wait. What a tenant can still do: write its own side's shared file
// (fake or hide activity of rows there), which affects participants of its own priority only.
//
// Crash safety: nothing is ever locked across a process's lifetime. A row whose heartbeat is older
// than `stale_ns` is ignored (a killed high-priority process stops holding best-effort work back after
// that long, whatever its counters say) and, once older than kReclaimNs, may be taken over by a new
// participant. Liveness is judged by heartbeat only, because pids of other containers are not visible.
// A file with a foreign magic or version is rebuilt (zeroed) at open, see above.
//
// Thread-safety: every member that reads or writes a row uses atomics and is safe from any thread of
// any process; none takes a lock.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

namespace tessera::slice {

inline constexpr const char* kNodeRegionDir = "/run/tessera/node";

inline constexpr int kNodeRecent = 32;

struct NodeRow {
  std::atomic<uint64_t> owner;          // 0 free; else a per-process nonce (never reused)
  std::atomic<int32_t> priority;        // 0 high, 1 best effort
  std::atomic<int32_t> inflight;        // submissions not yet seen complete
  std::atomic<int64_t> last_submit_ns;  // CLOCK_MONOTONIC
  std::atomic<int64_t> heartbeat_ns;    // CLOCK_MONOTONIC
  std::atomic<int64_t> pid;             // for people reading the file; never used for liveness
  std::atomic<uint64_t> submits;        // bumped by every submission, even untracked ones (no clock)
  // High priority only: when its latest burst of work began (a submission with nothing in flight) and
  // the smoothed interval between bursts, so best effort can leave the GPU free when the next is due.
  std::atomic<int64_t> burst_start_ns;
  std::atomic<int64_t> period_ns;
  char slice[64];
  // The participant's latest completed GPU busy intervals in CLOCK_MONOTONIC ns (single writer: the
  // owner's harvester). A time-sliced GPU runs one context at a time, so another participant's
  // interval that overlaps ours was partly GPU time we did not get (see OthersBusy).
  std::atomic<uint32_t> recent_pos;
  std::atomic<int64_t> recent_start[kNodeRecent];
  std::atomic<int64_t> recent_end[kNodeRecent];
  // Context-switch time that other participants found in their brackets and attributed to this one
  // (its switch-in when it preempted them; see Bill). Others add, the owner's harvester charges the
  // growth to its own slice. Reset when the row changes hands.
  std::atomic<int64_t> billed_ns;
  // Every busy interval of this participant that ended before this host time is published (0: it
  // publishes none). Others wait for it before judging a bracket that may hold its work.
  std::atomic<int64_t> published_through_ns;
};

class NodeRegion {
 public:
  static constexpr int kRows = 256;
  static constexpr int64_t kReclaimNs = 1'000'000'000;

  struct Header;
  // Opens (creating if needed, mode 0666) the best-effort file at `path` and the high-priority file at
  // `path`.high (read-only where it is mounted so). nullptr and *err on failure; never waits on a lock.
  static std::unique_ptr<NodeRegion> Open(const std::string& path, std::string* err);
  // The node agent: creates the file at `path` (0666) or rebuilds it when damaged. False and *err.
  static bool Prepare(const std::string& path, std::string* err);
  // The conventional paths for a GPU.
  static std::string PathFor(std::string_view gpu_uuid, std::string_view dir = kNodeRegionDir);
  static std::string HighPathFor(std::string_view gpu_uuid, std::string_view dir = kNodeRegionDir);
  ~NodeRegion();
  NodeRegion(const NodeRegion&) = delete;
  NodeRegion& operator=(const NodeRegion&) = delete;

  // Takes a free (or long-stale) row, in the high-priority file for priority 0. nullptr when all rows are
  // live, or for priority 0 where the high-priority file is read-only.
  NodeRow* Join(int priority, std::string_view slice, int64_t now_ns);
  void Leave(NodeRow* row);

  // Participant updates: cheap, lock-free.
  void Heartbeat(NodeRow* row, int64_t now_ns);
  void NoteSubmit(NodeRow* row, int64_t now_ns);  // also bumps inflight
  void NoteComplete(NodeRow* row, int n = 1);

  // True while some other live high-priority participant has submissions running, or submitted within
  // `linger_ns` (so a periodic high-priority stream keeps its claim between kernels).
  bool HighPriorityActive(const NodeRow* self, int64_t now_ns, int64_t linger_ns, int64_t stale_ns) const;
  // True while some other live high-priority participant has submissions not yet seen complete.
  bool HighPriorityPending(const NodeRow* self, int64_t now_ns, int64_t stale_ns) const;
  // Nanoseconds until the next burst of a live, periodic high-priority participant that is not running
  // now (0 when one is due or slightly late), or -1 when none is predictable: no period learnt yet,
  // or the participant is more than a quarter period late (it is not periodic at the moment).
  // With `period_ns`, the period of the participant that is due first.
  int64_t HighPriorityDueIn(const NodeRow* self, int64_t now_ns, int64_t stale_ns,
                            int64_t* period_ns = nullptr) const;
  // True when a live high-priority participant exists at all (best effort then tracks its queue).
  bool HighPriorityPresent(int64_t now_ns, int64_t stale_ns) const;
  // False only when no high-priority participant has joined (or all left cleanly): one load, no
  // clock, for the launch path of processes that enforce nothing else.
  bool HighPriorityMaybePresent() const;
  // Bumps the row's submission counter (the launch path's only write; no clock).
  static void NoteUntrackedSubmit(NodeRow* row) {
    row->submits.store(row->submits.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
  }
  // Remembers, per row, when its submission counter last changed (the counter has no time stamp).
  struct ActivityWatch {
    uint64_t seen[2 * kRows] = {};
    int64_t changed_ns[2 * kRows] = {};
  };
  // True when no other live participant submitted within `idle_ns` (burst mode may use the GPU).
  // With `watch`, untracked submissions (counter changes since the watch last looked) count too.
  bool OthersIdle(const NodeRow* self, int64_t now_ns, int64_t idle_ns, int64_t stale_ns,
                  ActivityWatch* watch = nullptr) const;

  int LiveRows(int64_t now_ns, int64_t stale_ns) const;

  // Records one completed busy interval of `row` (host monotonic ns).
  void PublishBusy(NodeRow* row, int64_t start_ns, int64_t end_ns);
  // GPU time inside [start, end) that other participants' published intervals took from ours on a
  // time-sliced GPU: all of one nested inside ours (ours was preempted for it), half of a partial
  // overlap (each side was preempted for the other for part of it; both sides count half), none of
  // one that contains ours (ours ran inside it, and the other side is credited for ours).
  // With `top`, the index of the row whose intervals took the most of it (-1 when none).
  int64_t OthersBusy(const NodeRow* self, int64_t start_ns, int64_t end_ns, int* top = nullptr) const;
  // Adds `ns` of GPU time to what row `index` owes (its share of a context switch that landed in a
  // caller's bracket). Indices [0, kRows) are best-effort rows, [kRows, 2 kRows) high-priority ones (billed
  // only where that file is writable). Out-of-range indices and free rows are ignored.
  void Bill(int index, int64_t ns);
  // True when every other live participant that publishes intervals has published through `t_ns`
  // (heartbeat within `stale_ns`; rows that publish none are not waited for).
  bool OthersPublishedThrough(const NodeRow* self, int64_t t_ns, int64_t now_ns, int64_t stale_ns) const;

 private:
  NodeRegion(int be_fd, Header* be, int hi_fd, Header* hi, bool hi_writable);
  bool InHigh(const NodeRow* row) const;
  const NodeRow* RowAt(int index) const;  // [0, 2 kRows): best effort, then high priority
  int HighWater(int file) const;          // 0 best effort, 1 high priority
  int be_fd_, hi_fd_;
  Header* be_;
  Header* hi_;
  bool hi_writable_;
};

int64_t MonotonicNs();

}  // namespace tessera::slice
