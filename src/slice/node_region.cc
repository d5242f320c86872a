#include "slice/node_region.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <random>

namespace tessera::slice {

namespace {
constexpr uint64_t kMagic = 0x31474e4f444e5354ull;  // "TSNDONG1"
constexpr uint32_t kVersion = 5;

static_assert(std::atomic<int64_t>::is_always_lock_free, "shared atomics must be lock-free");
static_assert(std::atomic<uint64_t>::is_always_lock_free, "shared atomics must be lock-free");
static_assert(std::atomic<int32_t>::is_always_lock_free, "shared atomics must be lock-free");

// An flock held only for the few instructions of open/join/leave; released by the kernel if we die.
class FileLock {
 public:
  explicit FileLock(int fd) : fd_(fd) {
    while (flock(fd_, LOCK_EX) != 0 && errno == EINTR) {
    }
  }
  ~FileLock() { flock(fd_, LOCK_UN); }

 private:
  int fd_;
};

uint64_t NewNonce() {
  std::random_device rd;
  uint64_t v = (static_cast<uint64_t>(rd()) << 32) ^ rd() ^ static_cast<uint64_t>(MonotonicNs());
  return v == 0 ? 1 : v;
}

// Calls fn(row) for each row of another live high-priority participant (owned, not `self`, heartbeat
// within `stale_ns`) until fn returns true; true when one did.
template <typename Fn>
bool AnyLiveHighPriority(const NodeRow* rows, int high_water, const NodeRow* self, int64_t now_ns,
                         int64_t stale_ns, Fn fn) {
  for (int i = 0; i < high_water; ++i) {
    const NodeRow& r = rows[i];
    if (&r == self || r.owner.load(std::memory_order_acquire) == 0) continue;
    if (r.priority.load(std::memory_order_relaxed) != 0) continue;
    if (now_ns - r.heartbeat_ns.load(std::memory_order_relaxed) > stale_ns) continue;
    if (fn(r)) return true;
  }
  return false;
}
}  // namespace

int64_t MonotonicNs() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
}

struct NodeRegion::Header {
  uint64_t magic;
  uint32_t version;
  uint32_t rows;
  std::atomic<int32_t> high_water;  // rows at or past this index were never used
  int32_t pad;
  std::atomic<int64_t> hp_last_submit_ns;  // newest submission of any high-priority participant
  std::atomic<int64_t> hp_beat_ns;         // newest heartbeat of any high-priority participant
  std::atomic<int32_t> hp_joined;          // high-priority rows joined and not left (crashes: stays up)
  int32_t pad2;
  char reserved[64];
  NodeRow row[kRows];
};

std::string NodeRegion::PathFor(std::string_view gpu_uuid, std::string_view dir) {
  std::string p(dir);
  p += '/';
  p += gpu_uuid;
  return p;
}

std::unique_ptr<NodeRegion> NodeRegion::Open(const std::string& path, std::string* err) {
  int fd = open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0666);
  if (fd < 0) {
    if (err) *err = "node region " + path + ": " + std::strerror(errno);
    return nullptr;
  }
  // Every container user must be able to join, whatever its umask.
  fchmod(fd, 0666);
  const size_t len = sizeof(Header);
  {
    FileLock lock(fd);
    struct stat st;
    if (fstat(fd, &st) != 0 || (static_cast<size_t>(st.st_size) < len && ftruncate(fd, len) != 0)) {
      if (err) *err = "node region " + path + ": cannot size: " + std::strerror(errno);
      close(fd);
      return nullptr;
    }
    void* m = mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (m == MAP_FAILED) {
      if (err) *err = "node region " + path + ": mmap: " + std::strerror(errno);
      close(fd);
      return nullptr;
    }
    auto* h = static_cast<Header*>(m);
    if (h->magic != kMagic || h->version != kVersion || h->rows != kRows) {
      // Fresh (all zero) or foreign: rebuild. Rows of a foreign layout cannot be trusted.
      std::memset(m, 0, len);
      h->version = kVersion;
      h->rows = kRows;
      std::atomic_thread_fence(std::memory_order_release);
      h->magic = kMagic;
    }
    return std::unique_ptr<NodeRegion>(new NodeRegion(fd, m, len));
  }
}

NodeRegion::NodeRegion(int fd, void* map, size_t len) : fd_(fd), map_(map), len_(len) {}

NodeRegion::~NodeRegion() {
  munmap(map_, len_);
  close(fd_);
}

NodeRegion::Header* NodeRegion::header() const { return static_cast<Header*>(map_); }

NodeRow* NodeRegion::Join(int priority, std::string_view slice, int64_t now_ns) {
  Header* h = header();
  FileLock lock(fd_);
  for (int i = 0; i < kRows; ++i) {
    NodeRow& r = h->row[i];
    uint64_t owner = r.owner.load(std::memory_order_acquire);
    const bool stale = now_ns - r.heartbeat_ns.load(std::memory_order_relaxed) > kReclaimNs;
    if (owner != 0 && !stale) continue;
    r.priority.store(priority, std::memory_order_relaxed);
    r.inflight.store(0, std::memory_order_relaxed);
    r.last_submit_ns.store(0, std::memory_order_relaxed);
    r.heartbeat_ns.store(now_ns, std::memory_order_relaxed);
    r.pid.store(getpid(), std::memory_order_relaxed);
    r.submits.store(0, std::memory_order_relaxed);
    r.burst_start_ns.store(0, std::memory_order_relaxed);
    r.period_ns.store(0, std::memory_order_relaxed);
    std::memset(r.slice, 0, sizeof(r.slice));
    for (int k = 0; k < kNodeRecent; ++k) r.recent_end[k].store(0, std::memory_order_relaxed);
    r.recent_pos.store(0, std::memory_order_relaxed);
    r.billed_ns.store(0, std::memory_order_relaxed);
    r.published_through_ns.store(0, std::memory_order_relaxed);
    std::memcpy(r.slice, slice.data(), std::min(slice.size(), sizeof(r.slice) - 1));
    r.owner.store(NewNonce(), std::memory_order_release);
    int hw = h->high_water.load(std::memory_order_relaxed);
    if (i + 1 > hw) h->high_water.store(i + 1, std::memory_order_release);
    if (priority == 0) {
      h->hp_beat_ns.store(now_ns, std::memory_order_relaxed);
      h->hp_joined.fetch_add(1, std::memory_order_relaxed);
    }
    return &r;
  }
  return nullptr;
}

void NodeRegion::Leave(NodeRow* row) {
  if (!row) return;
  FileLock lock(fd_);
  if (row->priority.load(std::memory_order_relaxed) == 0 &&
      header()->hp_joined.load(std::memory_order_relaxed) > 0) {
    header()->hp_joined.fetch_sub(1, std::memory_order_relaxed);
  }
  row->inflight.store(0, std::memory_order_relaxed);
  row->heartbeat_ns.store(0, std::memory_order_relaxed);
  row->owner.store(0, std::memory_order_release);
}

void NodeRegion::Heartbeat(NodeRow* row, int64_t now_ns) {
  row->heartbeat_ns.store(now_ns, std::memory_order_relaxed);
  if (row->priority.load(std::memory_order_relaxed) == 0) {
    header()->hp_beat_ns.store(now_ns, std::memory_order_relaxed);
  }
}

void NodeRegion::NoteSubmit(NodeRow* row, int64_t now_ns) {
  const int32_t before = row->inflight.fetch_add(1, std::memory_order_relaxed);
  row->last_submit_ns.store(now_ns, std::memory_order_relaxed);
  if (row->priority.load(std::memory_order_relaxed) == 0) {
    header()->hp_last_submit_ns.store(now_ns, std::memory_order_relaxed);
    if (before == 0) {
      // A new burst: learn the interval between bursts (EWMA over ~4; gaps over 1 s are pauses).
      const int64_t last = row->burst_start_ns.load(std::memory_order_relaxed);
      const int64_t gap = now_ns - last;
      if (last != 0 && gap > 0 && gap < 1'000'000'000) {
        const int64_t p = row->period_ns.load(std::memory_order_relaxed);
        row->period_ns.store(p == 0 ? gap : p + (gap - p) / 4, std::memory_order_relaxed);
      }
      row->burst_start_ns.store(now_ns, std::memory_order_relaxed);
    }
  }
}

void NodeRegion::NoteComplete(NodeRow* row, int n) { row->inflight.fetch_sub(n, std::memory_order_relaxed); }

bool NodeRegion::HighPriorityMaybePresent() const {
  return header()->hp_joined.load(std::memory_order_relaxed) != 0;
}

bool NodeRegion::HighPriorityPresent(int64_t now_ns, int64_t stale_ns) const {
  const int64_t beat = header()->hp_beat_ns.load(std::memory_order_relaxed);
  return beat != 0 && now_ns - beat <= stale_ns;
}

bool NodeRegion::HighPriorityActive(const NodeRow* self, int64_t now_ns, int64_t linger_ns,
                                    int64_t stale_ns) const {
  const Header* h = header();
  // Fast exits: nobody high-priority alive, or one submitted just now (the common busy case).
  if (now_ns - h->hp_beat_ns.load(std::memory_order_relaxed) > stale_ns) return false;
  return AnyLiveHighPriority(h->row, h->high_water.load(std::memory_order_acquire), self, now_ns, stale_ns,
                             [&](const NodeRow& r) {
                               return r.inflight.load(std::memory_order_relaxed) > 0 ||
                                      now_ns - r.last_submit_ns.load(std::memory_order_relaxed) < linger_ns;
                             });
}

bool NodeRegion::HighPriorityPending(const NodeRow* self, int64_t now_ns, int64_t stale_ns) const {
  const Header* h = header();
  if (!HighPriorityPresent(now_ns, stale_ns)) return false;
  return AnyLiveHighPriority(h->row, h->high_water.load(std::memory_order_acquire), self, now_ns, stale_ns,
                             [](const NodeRow& r) { return r.inflight.load(std::memory_order_relaxed) > 0; });
}

int64_t NodeRegion::HighPriorityDueIn(const NodeRow* self, int64_t now_ns, int64_t stale_ns,
                                      int64_t* period_ns) const {
  const Header* h = header();
  if (!HighPriorityPresent(now_ns, stale_ns)) return -1;
  int64_t due = -1;
  AnyLiveHighPriority(h->row, h->high_water.load(std::memory_order_acquire), self, now_ns, stale_ns,
                      [&](const NodeRow& r) {
                        const int64_t period = r.period_ns.load(std::memory_order_relaxed);
                        const int64_t start = r.burst_start_ns.load(std::memory_order_relaxed);
                        if (period <= 0 || start == 0) return false;
                        const int64_t next = start + period;
                        if (now_ns > next + period / 4) return false;  // late: not periodic right now
                        const int64_t in = std::max<int64_t>(0, next - now_ns);
                        if (due < 0 || in < due) {
                          due = in;
                          if (period_ns) *period_ns = period;
                        }
                        return false;  // every row: the soonest wins
                      });
  return due;
}

void NodeRegion::PublishBusy(NodeRow* row, int64_t start_ns, int64_t end_ns) {
  const uint32_t i = row->recent_pos.load(std::memory_order_relaxed) % kNodeRecent;
  // Readers accept an entry only when end is non-zero before and after reading start.
  row->recent_end[i].store(0, std::memory_order_release);
  row->recent_start[i].store(start_ns, std::memory_order_release);
  row->recent_end[i].store(end_ns, std::memory_order_release);
  row->recent_pos.store(i + 1, std::memory_order_release);
}

int64_t NodeRegion::OthersBusy(const NodeRow* self, int64_t start_ns, int64_t end_ns, int* top) const {
  const Header* h = header();
  const int hw = h->high_water.load(std::memory_order_acquire);
  int64_t total = 0, top_ns = 0;
  if (top) *top = -1;
  for (int r = 0; r < hw; ++r) {
    const NodeRow& row = h->row[r];
    if (&row == self) continue;
    int64_t theirs = 0;
    for (int i = 0; i < kNodeRecent; ++i) {
      const int64_t e1 = row.recent_end[i].load(std::memory_order_acquire);
      const int64_t s = row.recent_start[i].load(std::memory_order_acquire);
      const int64_t e2 = row.recent_end[i].load(std::memory_order_acquire);
      if (e1 == 0 || e1 != e2 || e1 <= start_ns || s >= end_ns) continue;
      if (s > start_ns) {
        // Began inside ours: ours was preempted for it. Wholly inside: all of it was theirs; running on
        // past our end: the overlap was shared, half each.
        theirs += e1 <= end_ns ? e1 - s : (end_ns - s) / 2;
      } else if (e1 < end_ns) {
        // Began before ours and ended inside: the same shared overlap seen from the other side.
        theirs += (e1 - start_ns) / 2;
      }
      // Began before and ended after: ours ran inside theirs, all ours.
    }
    total += theirs;
    if (top && theirs > top_ns) {
      top_ns = theirs;
      *top = r;
    }
  }
  return std::min(total, end_ns - start_ns);
}

void NodeRegion::Bill(int index, int64_t ns) {
  if (index < 0 || index >= kRows || ns <= 0) return;
  NodeRow& row = header()->row[index];
  if (row.owner.load(std::memory_order_acquire) == 0) return;
  row.billed_ns.fetch_add(ns, std::memory_order_relaxed);
}

bool NodeRegion::OthersPublishedThrough(const NodeRow* self, int64_t t_ns, int64_t now_ns,
                                        int64_t stale_ns) const {
  const Header* h = header();
  const int hw = h->high_water.load(std::memory_order_acquire);
  for (int i = 0; i < hw; ++i) {
    const NodeRow& r = h->row[i];
    if (&r == self || r.owner.load(std::memory_order_acquire) == 0) continue;
    if (now_ns - r.heartbeat_ns.load(std::memory_order_relaxed) > stale_ns) continue;
    const int64_t through = r.published_through_ns.load(std::memory_order_acquire);
    if (through != 0 && through < t_ns) return false;
  }
  return true;
}

bool NodeRegion::OthersIdle(const NodeRow* self, int64_t now_ns, int64_t idle_ns, int64_t stale_ns,
                            ActivityWatch* watch) const {
  const Header* h = header();
  const int hw = h->high_water.load(std::memory_order_acquire);
  bool idle = true;
  for (int i = 0; i < hw; ++i) {
    const NodeRow& r = h->row[i];
    if (&r == self || r.owner.load(std::memory_order_acquire) == 0) continue;
    if (watch != nullptr) {
      const uint64_t c = r.submits.load(std::memory_order_relaxed);
      if (c != watch->seen[i]) {
        watch->seen[i] = c;
        watch->changed_ns[i] = now_ns;
      }
      if (watch->changed_ns[i] != 0 && now_ns - watch->changed_ns[i] < idle_ns) idle = false;
    }
    if (now_ns - r.last_submit_ns.load(std::memory_order_relaxed) < idle_ns) idle = false;
    if (now_ns - r.heartbeat_ns.load(std::memory_order_relaxed) > stale_ns) continue;
    if (r.inflight.load(std::memory_order_relaxed) > 0) idle = false;
  }
  return idle;
}

int NodeRegion::LiveRows(int64_t now_ns, int64_t stale_ns) const {
  const Header* h = header();
  int n = 0;
  const int hw = h->high_water.load(std::memory_order_acquire);
  for (int i = 0; i < hw; ++i) {
    const NodeRow& r = h->row[i];
    if (r.owner.load(std::memory_order_acquire) == 0) continue;
    if (now_ns - r.heartbeat_ns.load(std::memory_order_relaxed) > stale_ns) continue;
    ++n;
  }
  return n;
}

}  // namespace tessera::slice
