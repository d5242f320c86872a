// Agent rows: the registration protocol (client side heap-free, for the shim) and the agent's operations
// on the region it owns. See agent_rows.h.
#include "slice/agent_rows.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

#include "slice/error_text.h"
#include "slice/fs.h"

namespace tessera::slice {
namespace {

using internal::SetErr;

int64_t NowMs() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1000 + ts.tv_nsec / 1000000;
}

// Waits for `events` on fd until deadline (ms, CLOCK_MONOTONIC). False on timeout or error.
bool WaitFor(int fd, short events, int64_t deadline) {
  for (;;) {
    const int64_t left = deadline - NowMs();
    if (left <= 0) return false;
    pollfd p{fd, events, 0};
    const int n = poll(&p, 1, static_cast<int>(left));
    if (n > 0) return (p.revents & events) != 0;
    if (n < 0 && errno != EINTR) return false;
  }
}

// One request, one reply (with up to two descriptors). -1 on any failure (message in err).
bool Exchange(const char* socket_path, RowOp op, int timeout_ms, RowReply* reply, int fds[2], char* err, size_t errlen) {
  fds[0] = fds[1] = -1;
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (strlen(socket_path) >= sizeof(addr.sun_path)) {
    SetErr(err, errlen, "agent socket path %s too long", socket_path);
    return false;
  }
  strcpy(addr.sun_path, socket_path);
  const int64_t deadline = NowMs() + timeout_ms;
  int s = -1;
  for (;;) {
    s = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (s < 0) {
      SetErr(err, errlen, "socket: %s", strerror(errno));
      return false;
    }
    if (connect(s, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0) break;
    const int e = errno;
    close(s);
    s = -1;
    // A full backlog (EAGAIN) is a busy agent: retry until the deadline. Anything else: no agent.
    if (e != EAGAIN || NowMs() >= deadline) {
      SetErr(err, errlen, "node agent at %s: %s", socket_path, e == EAGAIN ? "busy past the deadline" : strerror(e));
      return false;
    }
    timespec pause{0, 2000000};
    nanosleep(&pause, nullptr);
  }
  RowRequest req{kRowRequestMagic, 1, static_cast<uint32_t>(op), 0};
  if (!WaitFor(s, POLLOUT, deadline) || send(s, &req, sizeof(req), MSG_NOSIGNAL) != static_cast<ssize_t>(sizeof(req))) {
    SetErr(err, errlen, "node agent at %s: cannot send the request", socket_path);
    close(s);
    return false;
  }
  if (!WaitFor(s, POLLIN, deadline)) {
    SetErr(err, errlen, "node agent at %s: no answer within %d ms", socket_path, timeout_ms);
    close(s);
    return false;
  }
  alignas(cmsghdr) char control[CMSG_SPACE(2 * sizeof(int))];
  iovec iov{reply, sizeof(*reply)};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control;
  msg.msg_controllen = sizeof(control);
  const ssize_t n = recvmsg(s, &msg, MSG_CMSG_CLOEXEC);
  close(s);
  for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
    if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
    const size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    for (size_t i = 0; i < count; ++i) {
      int fd;
      memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
      if (i < 2) {
        fds[i] = fd;
      } else {
        close(fd);
      }
    }
  }
  if (n != static_cast<ssize_t>(sizeof(*reply)) || reply->magic != kRowReplyMagic) {
    SetErr(err, errlen, "node agent at %s: malformed answer", socket_path);
    for (int i = 0; i < 2; ++i)
      if (fds[i] >= 0) close(fds[i]);
    return false;
  }
  reply->message[sizeof(reply->message) - 1] = '\0';
  return true;
}

}  // namespace

bool RegisterRow(const char* socket_path, int timeout_ms, int* slot, int* row_fd, int* live_fd, uint64_t* generation,
                 char* err, size_t errlen) {
  RowReply reply{};
  int fds[2];
  if (!Exchange(socket_path, RowOp::kRegister, timeout_ms, &reply, fds, err, errlen)) return false;
  if (reply.status != 0 || fds[0] < 0 || fds[1] < 0 || reply.slot < 0 || reply.slot >= kRegionMaxProcs) {
    SetErr(err, errlen, "node agent refused a row: %s", reply.message[0] ? reply.message : strerror(reply.status));
    for (int i = 0; i < 2; ++i)
      if (fds[i] >= 0) close(fds[i]);
    return false;
  }
  *slot = reply.slot;
  *row_fd = fds[0];
  *live_fd = fds[1];
  *generation = reply.generation;
  return true;
}

int AskAgentToReclaim(const char* socket_path, int timeout_ms) {
  RowReply reply{};
  int fds[2];
  char err[160];
  if (!Exchange(socket_path, RowOp::kReclaim, timeout_ms, &reply, fds, err, sizeof(err))) return -1;
  for (int i = 0; i < 2; ++i)
    if (fds[i] >= 0) close(fds[i]);
  return reply.status == 0 ? reply.slot : -1;
}

bool OpenRegionAsMember(const SliceConfig& cfg, int timeout_ms, Region* out, char* err, size_t errlen) {
  *out = Region{};
  int slot = -1, row_fd = -1, live_fd = -1;
  uint64_t gen = 0;
  if (!RegisterRow(cfg.agent, timeout_ms, &slot, &row_fd, &live_fd, &gen, err, errlen)) return false;
  bool ok = OpenRegion(cfg.region, false, out, err, errlen);
  if (ok && !(out->hdr->flags & kRegionAgentRows)) {
    SetErr(err, errlen, "region %s is not the node agent's", cfg.region);
    ok = false;
  }
  if (ok && (strncmp(out->hdr->slice, cfg.name, sizeof(out->hdr->slice)) != 0 || !SameGpuSet(out->hdr, cfg))) {
    SetErr(err, errlen, "region %s is for another slice or other GPUs than the config", cfg.region);
    ok = false;
  }
  // OpenRegion mapped the live part and the rows read-only from their files; this process's own row and
  // the live part come read-write from the descriptors the agent handed over.
  ok = ok && MapFdAt(out, live_fd, kRegionLiveOffset, kRegionLiveSize, true, err, errlen) &&
       MapFdAt(out, row_fd, kRegionRowsOffset + static_cast<size_t>(slot) * kRegionPage, kRegionPage, true, err, errlen);
  close(row_fd);
  close(live_fd);
  if (!ok) {
    CloseRegion(out);
    return false;
  }
  out->own_row = slot;
  out->mapped_owner[slot] = out->hdr->slot_owner[slot].load();
  return true;
}

bool RejoinAsMember(const SliceConfig& cfg, int timeout_ms, Region* r, char* err, size_t errlen) {
  int slot = -1, row_fd = -1, live_fd = -1;
  uint64_t gen = 0;
  if (!RegisterRow(cfg.agent, timeout_ms, &slot, &row_fd, &live_fd, &gen, err, errlen)) return false;
  const int old = r->own_row;
  const bool ok =
      MapFdAt(r, live_fd, kRegionLiveOffset, kRegionLiveSize, true, err, errlen) &&
      MapFdAt(r, row_fd, kRegionRowsOffset + static_cast<size_t>(slot) * kRegionPage, kRegionPage, true, err, errlen);
  close(row_fd);
  close(live_fd);
  if (!ok) return false;
  r->own_row = slot;
  r->mapped_owner[slot] = r->hdr->slot_owner[slot].load();
  if (old >= 0 && old != slot) r->mapped_owner[old] = ~0ull;  // no longer ours: map what the roster says
  r->mapped_gen = ~0ull;
  RefreshRows(r);
  return true;
}

// ---- Agent side -------------------------------------------------------------------------------------------

namespace {

bool PathIn(const char* dir, const char* name, char* out, size_t n) {
  return snprintf(out, n, "%s/%s", dir, name) < static_cast<int>(n);
}

// A fresh zeroed file of `len` bytes at path, mode 0644, written through the file-system seam.
bool FreshFile(const char* path, size_t len, char* err, size_t errlen) {
  const Fs& fs = CurrentFs();
  char tmp[kPathMax + 32];
  snprintf(tmp, sizeof(tmp), "%s.new", path);
  int fd = fs.open(tmp, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0644);
  if (fd < 0) {
    SetErr(err, errlen, "%s: %s", tmp, strerror(errno));
    return false;
  }
  fchmod(fd, 0644);
  if (fs.ftruncate(fd, static_cast<off_t>(len)) != 0) {
    SetErr(err, errlen, "%s: cannot size to %zu bytes: %s", tmp, len, strerror(errno));
    close(fd);
    unlink(tmp);
    return false;
  }
  close(fd);
  if (fs.rename(tmp, path) != 0) {
    SetErr(err, errlen, "%s: rename: %s", path, strerror(errno));
    unlink(tmp);
    return false;
  }
  return true;
}

bool MakeDir(const char* path, char* err, size_t errlen) {
  if (mkdir(path, 0755) != 0 && errno != EEXIST) {
    SetErr(err, errlen, "%s: %s", path, strerror(errno));
    return false;
  }
  chmod(path, 0755);  // never world-writable, whatever it was
  return true;
}

}  // namespace

bool PrepareAgentRegion(const char* dir, const SliceConfig& cfg, bool* rebuilt, char* err, size_t errlen) {
  *rebuilt = false;
  char path[kPathMax + 32], live[kPathMax + 32], rows[kPathMax + 32];
  if (!PathIn(dir, "slice.region", path, sizeof(path)) || !PathIn(dir, "live", live, sizeof(live)) ||
      !PathIn(dir, "rows", rows, sizeof(rows))) {
    SetErr(err, errlen, "%s: path too long", dir);
    return false;
  }
  if (!MakeDir(dir, err, errlen) || !MakeDir(rows, err, errlen)) return false;
  struct stat st;
  if (stat(live, &st) != 0 || static_cast<size_t>(st.st_size) != kRegionLiveSize) {
    if (!FreshFile(live, kRegionLiveSize, err, errlen)) return false;
  }
  const Fs& fs = CurrentFs();
  int fd = fs.open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0644);
  if (fd < 0) {
    SetErr(err, errlen, "%s: %s", path, strerror(errno));
    return false;
  }
  fchmod(fd, 0644);
  while (flock(fd, LOCK_EX) != 0 && errno == EINTR) {
  }
  bool ok = true;
  if (fstat(fd, &st) != 0) st.st_size = 0;
  const off_t found_size = st.st_size;  // 0: a new slice, nothing to rebuild
  if (static_cast<size_t>(st.st_size) != kRegionFileSize) {
    // Truncated or another layout: back to the right size, in place, so mappings stay valid.
    if (fs.ftruncate(fd, static_cast<off_t>(kRegionFileSize)) != 0) {
      SetErr(err, errlen, "%s: cannot size to %zu bytes: %s", path, kRegionFileSize, strerror(errno));
      ok = false;
    }
    *rebuilt = found_size != 0;
  }
  void* m = ok ? mmap(nullptr, kRegionFileSize, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0) : MAP_FAILED;
  if (ok && m == MAP_FAILED) {
    SetErr(err, errlen, "%s: mmap: %s", path, strerror(errno));
    ok = false;
  }
  if (ok) {
    auto* h = static_cast<RegionHeader*>(m);
    char why[160];
    const bool valid = ValidateRegion(h, why, sizeof(why)) && (h->flags & kRegionAgentRows) &&
                       strncmp(h->slice, cfg.name, sizeof(h->slice)) == 0 && SameGpuSet(h, cfg);
    bool same_limits = valid && h->priority == cfg.priority && h->cap_mode == static_cast<int32_t>(cfg.cap_mode);
    for (int g = 0; same_limits && g < cfg.gpu_count; ++g)
      same_limits = h->limits[g].limit_bytes == cfg.gpus[g].memory_bytes &&
                    h->limits[g].cores == static_cast<uint32_t>(cfg.gpus[g].cores);
    if (!valid) {
      // Corrupt, truncated, foreign: start over. Every row file goes; processes see the new generation
      // and register again (their own books put back what they hold).
      const uint64_t gen = h->generation.load() + static_cast<uint64_t>(NowMs()) + 1;
      const uint64_t rebuilds = h->magic == kRegionMagic ? h->rebuilds.load() : 0;
      for (int i = 0; i < kRegionMaxProcs; ++i) {
        char row[kPathMax + 48];
        snprintf(row, sizeof(row), "%s/%d", rows, i);
        unlink(row);
      }
      memset(m, 0, kRegionRowsOffset);  // the rows' range of this file is never used under the agent
      InitRegionHeader(h, cfg, kRegionAgentRows);
      h->rebuilds.store(rebuilds + (found_size != 0 ? 1 : 0));
      h->roster_gen.store(gen);
      h->generation.store(gen);
      *rebuilt = found_size != 0;
    } else if (!same_limits) {
      InitRegionHeader(h, cfg, kRegionAgentRows);  // resized in place; rows keep their charges
    }
    munmap(m, kRegionFileSize);
  }
  flock(fd, LOCK_UN);
  close(fd);
  return ok;
}

bool AssignAgentRow(Region* r, int host_pid, int* slot, int* row_fd, int* live_fd, char* err, size_t errlen) {
  RegionHeader* h = r->hdr;
  const uint64_t start = ProcessStartTicks(host_pid);
  if (start == 0) {
    SetErr(err, errlen, "process %d is not visible in the agent's /proc", host_pid);
    return false;
  }
  const uint64_t owner = PackOwner(host_pid, start);
  int free_slot = -1;
  for (int pass = 0; pass < 2 && free_slot < 0; ++pass) {
    for (int i = 0; i < kRegionMaxProcs; ++i) {
      if (h->slot_owner[i].load() == 0) {
        free_slot = i;
        break;
      }
    }
    if (free_slot < 0 && ReclaimAgentRows(r) == 0) break;
  }
  if (free_slot < 0) {
    SetErr(err, errlen, "all %d rows of the slice are taken by live processes", kRegionMaxProcs);
    return false;
  }
  char path[kPathMax + 48], live[kPathMax + 32];
  snprintf(path, sizeof(path), "%s/rows/%d", r->dir, free_slot);
  snprintf(live, sizeof(live), "%s/live", r->dir);
  // A new file each time: a descriptor an earlier owner kept points at the old, unlinked one.
  if (!FreshFile(path, kRegionPage, err, errlen)) return false;
  int fd = CurrentFs().open(path, O_RDWR | O_CLOEXEC | O_NOFOLLOW, 0);
  int lfd = CurrentFs().open(live, O_RDWR | O_CLOEXEC | O_NOFOLLOW, 0);
  if (fd < 0 || lfd < 0) {
    SetErr(err, errlen, "%s: %s", fd < 0 ? path : live, strerror(errno));
    if (fd >= 0) close(fd);
    if (lfd >= 0) close(lfd);
    return false;
  }
  void* m = mmap(nullptr, kRegionPage, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (m != MAP_FAILED) {
    auto* row = static_cast<RegionRow*>(m);
    char ns_path[64];
    snprintf(ns_path, sizeof(ns_path), "/proc/%d/ns/pid", host_pid);
    struct stat st;
    row->pidns.store(stat(ns_path, &st) == 0 ? static_cast<uint64_t>(st.st_ino) : 0);
    row->host_pid.store(static_cast<uint64_t>(host_pid));
    row->host_owner.store(owner);
    row->owner.store(owner);
    munmap(m, kRegionPage);
  }
  h->slot_owner[free_slot].store(owner);
  uint32_t hw = h->rows_high_water.load();
  while (hw < static_cast<uint32_t>(free_slot + 1) &&
         !h->rows_high_water.compare_exchange_weak(hw, static_cast<uint32_t>(free_slot + 1))) {
  }
  h->roster_gen.fetch_add(1);
  RefreshRows(r);
  *slot = free_slot;
  *row_fd = fd;
  *live_fd = lfd;
  return true;
}

int ReclaimAgentRows(Region* r) {
  RegionHeader* h = r->hdr;
  int reclaimed = 0;
  for (int i = 0; i < kRegionMaxProcs; ++i) {
    const uint64_t owner = h->slot_owner[i].load();
    if (owner == 0 || ProcessAlive(OwnerPid(owner), OwnerStart(owner))) continue;
    // Zero the file first: a process that still maps it (the remapping is lazy) reads nothing.
    RegionRow& row = h->rows[i];
    if (r->mapped_owner[i] == owner) {
      for (int g = 0; g < kMaxGpus; ++g) {
        row.bytes[g].store(0);
        row.overhead[g].store(0);
      }
      row.owner.store(0);
    }
    char path[kPathMax + 48];
    snprintf(path, sizeof(path), "%s/rows/%d", r->dir, i);
    unlink(path);
    h->slot_owner[i].store(0);
    h->rows_reclaimed.fetch_add(1);
    ++reclaimed;
  }
  if (reclaimed > 0) {
    h->roster_gen.fetch_add(1);
    RefreshRows(r);
  }
  return reclaimed;
}

}  // namespace tessera::slice
