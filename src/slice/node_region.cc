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
#include <sched.h>

namespace tessera::slice {

namespace {
constexpr uint64_t kMagic = 0x31474e4f444e5354ull;  // "TSNDONG1"
constexpr uint32_t kVersion = 6;
constexpr uint64_t kInitMagic = 0x494e49544e535431ull;  // a first joiner is setting the file up

static_assert(std::atomic<int64_t>::is_always_lock_free, "shared atomics must be lock-free");
static_assert(std::atomic<uint64_t>::is_always_lock_free, "shared atomics must be lock-free");
static_assert(std::atomic<int32_t>::is_always_lock_free, "shared atomics must be lock-free");

// Time arithmetic on values read from the files, which other participants (tenants) may write: saturating,
// so a damaged row reads as very old or very far ahead, never as an overflow.
int64_t Since(int64_t now, int64_t then) {
  int64_t d;
  return __builtin_sub_overflow(now, then, &d) ? (then < 0 ? INT64_MAX : INT64_MIN) : d;
}
int64_t Plus(int64_t t, int64_t d) {
  int64_t r;
  return __builtin_add_overflow(t, d, &r) ? (d > 0 ? INT64_MAX : INT64_MIN) : r;
}

uint64_t NewNonce() {
  std::random_device rd;
  uint64_t v = (static_cast<uint64_t>(rd()) << 32) ^ rd() ^ static_cast<uint64_t>(MonotonicNs());
  return v == 0 ? 1 : v;
}

// Calls fn(row) for each row of another live high-priority participant (owned, not `self`, heartbeat
// within `stale_ns`) until fn returns true; true when one did.
// Every row of the high-priority file is high priority, whatever its priority field says: only the slices
// the agent made high priority can write that file.
template <typename Fn>
bool AnyLiveHighPriority(const NodeRow* rows, int high_water, const NodeRow* self, int64_t now_ns,
                         int64_t stale_ns, Fn fn) {
  if (high_water > NodeRegion::kRows) high_water = NodeRegion::kRows;
  for (int i = 0; i < high_water; ++i) {
    const NodeRow& r = rows[i];
    if (&r == self || r.owner.load(std::memory_order_acquire) == 0) continue;
    if (Since(now_ns, r.heartbeat_ns.load(std::memory_order_relaxed)) > stale_ns) continue;
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

int NodeRegion::HighWater(int file) const {
  const int hw = (file == 0 ? be_ : hi_)->high_water.load(std::memory_order_acquire);
  return hw < 0 ? 0 : (hw > kRows ? kRows : hw);
}

std::string NodeRegion::PathFor(std::string_view gpu_uuid, std::string_view dir) {
  std::string p(dir);
  p += '/';
  p += gpu_uuid;
  return p;
}

std::string NodeRegion::HighPathFor(std::string_view gpu_uuid, std::string_view dir) {
  return PathFor(gpu_uuid, dir) + ".high";
}

namespace {

constexpr int64_t kInitWaitNs = 100'000'000;  // how long a joiner waits for another's first set-up

void InitHeader(void* m, size_t len) {
  auto* h = static_cast<NodeRegion::Header*>(m);
  std::memset(m, 0, len);
  h->version = kVersion;
  h->rows = NodeRegion::kRows;
  std::atomic_thread_fence(std::memory_order_release);
  reinterpret_cast<std::atomic<uint64_t>*>(&h->magic)->store(kMagic, std::memory_order_release);
}

bool Valid(const NodeRegion::Header* h) {
  return reinterpret_cast<const std::atomic<uint64_t>*>(&h->magic)->load(std::memory_order_acquire) == kMagic &&
         h->version == kVersion && h->rows == static_cast<uint32_t>(NodeRegion::kRows);
}

// Opens and maps one file. `create`: make it (0666) and set it up when new or foreign, never waiting on
// anyone: a fresh file is claimed by a compare-and-swap on its magic; a foreign one is rebuilt only under
// a lock taken without waiting. `writable` false maps it read-only (the high-priority file of a
// best-effort slice, mounted read-only). nullptr and *err when it cannot be used.
void* MapNodeFile(const std::string& path, bool create, bool* writable, int* fd_out, std::string* err) {
  const size_t len = sizeof(NodeRegion::Header);
  int fd = open(path.c_str(), O_RDWR | (create ? O_CREAT : 0) | O_CLOEXEC | O_NOFOLLOW, 0666);
  *writable = fd >= 0;
  if (fd < 0 && (errno == EROFS || errno == EACCES)) fd = open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
  if (fd < 0) {
    if (err) *err = "node region " + path + ": " + std::strerror(errno);
    return nullptr;
  }
  struct stat st;
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    if (err) *err = "node region " + path + ": not a regular file";
    close(fd);
    return nullptr;
  }
  if (*writable && st.st_uid == geteuid()) fchmod(fd, 0666);  // every container user must be able to join
  if (static_cast<size_t>(st.st_size) < len) {
    if (!*writable || ftruncate(fd, static_cast<off_t>(len)) != 0) {
      if (err) *err = "node region " + path + ": too short and cannot be sized";
      close(fd);
      return nullptr;
    }
  }
  void* m = mmap(nullptr, len, *writable ? PROT_READ | PROT_WRITE : PROT_READ, MAP_SHARED, fd, 0);
  if (m == MAP_FAILED) {
    if (err) *err = "node region " + path + ": mmap: " + std::strerror(errno);
    close(fd);
    return nullptr;
  }
  auto* h = static_cast<NodeRegion::Header*>(m);
  auto* magic = reinterpret_cast<std::atomic<uint64_t>*>(&h->magic);
  const int64_t until = MonotonicNs() + kInitWaitNs;
  while (!Valid(h)) {
    uint64_t zero = 0;
    if (*writable && magic->compare_exchange_strong(zero, kInitMagic)) {
      InitHeader(m, len);  // a new file: ours to set up
      break;
    }
    if (zero != kInitMagic && *writable && flock(fd, LOCK_EX | LOCK_NB) == 0) {
      // Foreign or damaged: rebuilt by whoever gets the lock at once. Rows of a foreign layout cannot
      // be trusted. Somebody else holding the lock (a tenant may) is no reason to wait.
      if (!Valid(h)) InitHeader(m, len);
      flock(fd, LOCK_UN);
      break;
    }
    if (MonotonicNs() > until) {
      if (err) *err = "node region " + path + ": not usable (damaged, or being set up by another process)";
      munmap(m, len);
      close(fd);
      return nullptr;
    }
    sched_yield();
  }
  *fd_out = fd;
  return m;
}

}  // namespace

std::unique_ptr<NodeRegion> NodeRegion::Open(const std::string& path, std::string* err) {
  bool be_w = false, hi_w = false;
  int be_fd = -1, hi_fd = -1;
  void* be = MapNodeFile(path, true, &be_w, &be_fd, err);
  if (be == nullptr) return nullptr;
  void* hi = MapNodeFile(path + ".high", true, &hi_w, &hi_fd, err);
  if (hi == nullptr || !be_w) {
    if (hi == nullptr) {
      // fall through: without the high-priority file nothing can be coordinated
    } else {
      if (err) *err = "node region " + path + ": read-only";
      munmap(hi, sizeof(Header));
      close(hi_fd);
    }
    munmap(be, sizeof(Header));
    close(be_fd);
    return nullptr;
  }
  return std::unique_ptr<NodeRegion>(new NodeRegion(be_fd, static_cast<Header*>(be), hi_fd, static_cast<Header*>(hi), hi_w));
}

bool NodeRegion::Prepare(const std::string& path, std::string* err) {
  bool w = false;
  int fd = -1;
  void* m = MapNodeFile(path, true, &w, &fd, err);
  if (m == nullptr) return false;
  if (!w) {
    if (err) *err = "node region " + path + ": not writable";
  }
  munmap(m, sizeof(Header));
  close(fd);
  return w;
}

NodeRegion::NodeRegion(int be_fd, Header* be, int hi_fd, Header* hi, bool hi_writable)
    : be_fd_(be_fd), hi_fd_(hi_fd), be_(be), hi_(hi), hi_writable_(hi_writable) {}

NodeRegion::~NodeRegion() {
  munmap(be_, sizeof(Header));
  munmap(hi_, sizeof(Header));
  close(be_fd_);
  close(hi_fd_);
}

bool NodeRegion::InHigh(const NodeRow* row) const { return row >= hi_->row && row < hi_->row + kRows; }

const NodeRow* NodeRegion::RowAt(int index) const {
  if (index < 0 || index >= 2 * kRows) return nullptr;
  return index < kRows ? &be_->row[index] : &hi_->row[index - kRows];
}

NodeRow* NodeRegion::Join(int priority, std::string_view slice, int64_t now_ns) {
  // High priority is where one joins, not what one says: only a slice whose high-priority file is
  // writable (the agent mounts it so for high-priority slices alone) can join as high priority.
  const bool high = priority == 0;
  if (high && !hi_writable_) return nullptr;
  Header* h = high ? hi_ : be_;
  for (int i = 0; i < kRows; ++i) {
    NodeRow& r = h->row[i];
    uint64_t owner = r.owner.load(std::memory_order_acquire);
    const bool stale = Since(now_ns, r.heartbeat_ns.load(std::memory_order_relaxed)) > kReclaimNs;
    if (owner != 0 && !stale) continue;
    // Claimed by compare-and-swap, no lock: a racer for the same row moves on to the next.
    if (!r.owner.compare_exchange_strong(owner, NewNonce(), std::memory_order_acq_rel)) continue;
    r.heartbeat_ns.store(0, std::memory_order_relaxed);  // stale until set up (readers skip it)
    r.priority.store(high ? 0 : 1, std::memory_order_relaxed);
    r.inflight.store(0, std::memory_order_relaxed);
    r.last_submit_ns.store(0, std::memory_order_relaxed);
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
    r.heartbeat_ns.store(now_ns, std::memory_order_release);
    int hw = h->high_water.load(std::memory_order_relaxed);
    while (hw < i + 1 && !h->high_water.compare_exchange_weak(hw, i + 1)) {
    }
    if (high) {
      h->hp_beat_ns.store(now_ns, std::memory_order_relaxed);
      h->hp_joined.fetch_add(1, std::memory_order_relaxed);
    }
    return &r;
  }
  return nullptr;
}

void NodeRegion::Leave(NodeRow* row) {
  if (!row) return;
  if (InHigh(row)) {
    int32_t n = hi_->hp_joined.load(std::memory_order_relaxed);
    while (n > 0 && !hi_->hp_joined.compare_exchange_weak(n, n - 1)) {
    }
  }
  row->inflight.store(0, std::memory_order_relaxed);
  row->heartbeat_ns.store(0, std::memory_order_relaxed);
  row->owner.store(0, std::memory_order_release);
}

void NodeRegion::Heartbeat(NodeRow* row, int64_t now_ns) {
  row->heartbeat_ns.store(now_ns, std::memory_order_relaxed);
  if (InHigh(row)) hi_->hp_beat_ns.store(now_ns, std::memory_order_relaxed);
}

void NodeRegion::NoteSubmit(NodeRow* row, int64_t now_ns) {
  const int32_t before = row->inflight.fetch_add(1, std::memory_order_relaxed);
  row->last_submit_ns.store(now_ns, std::memory_order_relaxed);
  if (InHigh(row)) {
    hi_->hp_last_submit_ns.store(now_ns, std::memory_order_relaxed);
    if (before == 0) {
      // A new burst: learn the interval between bursts (EWMA over ~4; gaps over 1 s are pauses).
      const int64_t last = row->burst_start_ns.load(std::memory_order_relaxed);
      const int64_t gap = Since(now_ns, last);
      if (last != 0 && gap > 0 && gap < 1'000'000'000) {
        const int64_t p = row->period_ns.load(std::memory_order_relaxed);
        row->period_ns.store(p == 0 ? gap : p + Since(gap, p) / 4, std::memory_order_relaxed);
      }
      row->burst_start_ns.store(now_ns, std::memory_order_relaxed);
    }
  }
}

void NodeRegion::NoteComplete(NodeRow* row, int n) { row->inflight.fetch_sub(n, std::memory_order_relaxed); }

bool NodeRegion::HighPriorityMaybePresent() const {
  return hi_->hp_joined.load(std::memory_order_relaxed) != 0;
}

bool NodeRegion::HighPriorityPresent(int64_t now_ns, int64_t stale_ns) const {
  const int64_t beat = hi_->hp_beat_ns.load(std::memory_order_relaxed);
  return beat != 0 && Since(now_ns, beat) <= stale_ns;
}

bool NodeRegion::HighPriorityActive(const NodeRow* self, int64_t now_ns, int64_t linger_ns,
                                    int64_t stale_ns) const {
  const Header* h = hi_;
  // Fast exits: nobody high-priority alive, or one submitted just now (the common busy case).
  if (Since(now_ns, h->hp_beat_ns.load(std::memory_order_relaxed)) > stale_ns) return false;
  return AnyLiveHighPriority(h->row, h->high_water.load(std::memory_order_acquire), self, now_ns, stale_ns,
                             [&](const NodeRow& r) {
                               return r.inflight.load(std::memory_order_relaxed) > 0 ||
                                      Since(now_ns, r.last_submit_ns.load(std::memory_order_relaxed)) <
                                          linger_ns;
                             });
}

bool NodeRegion::HighPriorityPending(const NodeRow* self, int64_t now_ns, int64_t stale_ns) const {
  const Header* h = hi_;
  if (!HighPriorityPresent(now_ns, stale_ns)) return false;
  return AnyLiveHighPriority(h->row, h->high_water.load(std::memory_order_acquire), self, now_ns, stale_ns,
                             [](const NodeRow& r) { return r.inflight.load(std::memory_order_relaxed) > 0; });
}

int64_t NodeRegion::HighPriorityDueIn(const NodeRow* self, int64_t now_ns, int64_t stale_ns,
                                      int64_t* period_ns) const {
  const Header* h = hi_;
  if (!HighPriorityPresent(now_ns, stale_ns)) return -1;
  int64_t due = -1;
  AnyLiveHighPriority(h->row, h->high_water.load(std::memory_order_acquire), self, now_ns, stale_ns,
                      [&](const NodeRow& r) {
                        const int64_t period = r.period_ns.load(std::memory_order_relaxed);
                        const int64_t start = r.burst_start_ns.load(std::memory_order_relaxed);
                        if (period <= 0 || start == 0) return false;
                        const int64_t next = Plus(start, period);
                        if (now_ns > Plus(next, period / 4)) return false;  // late: not periodic right now
                        const int64_t in = std::max<int64_t>(0, Since(next, now_ns));
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
  int64_t total = 0, top_ns = 0;
  if (top) *top = -1;
  for (int r = 0; r < 2 * kRows; ++r) {
    if (r % kRows >= HighWater(r / kRows)) {
      r = (r / kRows + 1) * kRows - 1;  // the rest of this file was never used
      continue;
    }
    const NodeRow& row = *RowAt(r);
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
  if (index < 0 || index >= 2 * kRows || ns <= 0) return;
  if (index >= kRows && !hi_writable_) return;  // read-only here: the high-priority side pays no one's switch
  NodeRow& row = const_cast<NodeRow&>(*RowAt(index));
  if (row.owner.load(std::memory_order_acquire) == 0) return;
  row.billed_ns.fetch_add(ns, std::memory_order_relaxed);
}

bool NodeRegion::OthersPublishedThrough(const NodeRow* self, int64_t t_ns, int64_t now_ns,
                                        int64_t stale_ns) const {
  for (int i = 0; i < 2 * kRows; ++i) {
    if (i % kRows >= HighWater(i / kRows)) continue;
    const NodeRow& r = *RowAt(i);
    if (&r == self || r.owner.load(std::memory_order_acquire) == 0) continue;
    if (Since(now_ns, r.heartbeat_ns.load(std::memory_order_relaxed)) > stale_ns) continue;
    const int64_t through = r.published_through_ns.load(std::memory_order_acquire);
    if (through != 0 && through < t_ns) return false;
  }
  return true;
}

bool NodeRegion::OthersIdle(const NodeRow* self, int64_t now_ns, int64_t idle_ns, int64_t stale_ns,
                            ActivityWatch* watch) const {
  bool idle = true;
  for (int i = 0; i < 2 * kRows; ++i) {
    if (i % kRows >= HighWater(i / kRows)) continue;
    const NodeRow& r = *RowAt(i);
    if (&r == self || r.owner.load(std::memory_order_acquire) == 0) continue;
    if (watch != nullptr) {
      const uint64_t c = r.submits.load(std::memory_order_relaxed);
      if (c != watch->seen[i]) {
        watch->seen[i] = c;
        watch->changed_ns[i] = now_ns;
      }
      if (watch->changed_ns[i] != 0 && now_ns - watch->changed_ns[i] < idle_ns) idle = false;
    }
    if (Since(now_ns, r.last_submit_ns.load(std::memory_order_relaxed)) < idle_ns) idle = false;
    if (Since(now_ns, r.heartbeat_ns.load(std::memory_order_relaxed)) > stale_ns) continue;
    if (r.inflight.load(std::memory_order_relaxed) > 0) idle = false;
  }
  return idle;
}

int NodeRegion::LiveRows(int64_t now_ns, int64_t stale_ns) const {
  int n = 0;
  for (int i = 0; i < 2 * kRows; ++i) {
    if (i % kRows >= HighWater(i / kRows)) continue;
    const NodeRow& r = *RowAt(i);
    if (r.owner.load(std::memory_order_acquire) == 0) continue;
    if (Since(now_ns, r.heartbeat_ns.load(std::memory_order_relaxed)) > stale_ns) continue;
    ++n;
  }
  return n;
}

}  // namespace tessera::slice
