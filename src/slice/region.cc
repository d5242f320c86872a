// Slice region: open/validate/rebuild, crash-safe charge accounting, dead-process reclaim.
// No exceptions, no heap (the shim runs this inside applications).
#include "slice/region.h"
#include "slice/error_text.h"

#include <cerrno>
#include <cstdarg>
#include <cstdio>
#include <cstring>
#include <fcntl.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

namespace tessera::slice {
namespace {

using internal::SetErr;

struct Fnv {
  uint64_t h = 1469598103934665603ull;
  void Add(const void* p, size_t n) {
    const unsigned char* b = static_cast<const unsigned char*>(p);
    for (size_t i = 0; i < n; ++i) {
      h ^= b[i];
      h *= 1099511628211ull;
    }
  }
  template <typename T>
  void AddV(const T& v) {
    Add(&v, sizeof(v));
  }
};

uint64_t SumGpu(const RegionHeader* h, int g) {
  uint32_t hw = h->rows_high_water.load();
  if (hw > kRegionMaxProcs) hw = kRegionMaxProcs;
  uint64_t s = 0;
  for (uint32_t i = 0; i < hw; ++i) s += h->rows[i].bytes[g].load() + h->rows[i].overhead[g].load();
  return s;
}

void ZeroRowCounters(RegionRow* r) {
  for (int g = 0; g < kMaxGpus; ++g) {
    r->bytes[g].store(0);
    r->overhead[g].store(0);
  }
  for (auto& s : r->limiter_spare) s.store(0);
  r->host_owner.store(0);
  r->host_pid.store(0);
}

void FillImmutable(RegionHeader* h, const SliceConfig& cfg, uint32_t flags) {
  h->flags = flags;
  h->magic = kRegionMagic;
  h->version = kRegionVersion;
  h->header_size = sizeof(RegionHeader);
  h->row_size = sizeof(RegionRow);
  h->max_procs = kRegionMaxProcs;
  h->gpu_count = static_cast<uint32_t>(cfg.gpu_count);
  h->priority = cfg.priority;
  h->cap_mode = static_cast<int32_t>(cfg.cap_mode);
  memset(h->slice, 0, sizeof(h->slice));
  snprintf(h->slice, sizeof(h->slice), "%s", cfg.name);
  for (int g = 0; g < kMaxGpus; ++g) {
    RegionGpuLimit& dst = h->limits[g];
    memset(&dst, 0, sizeof(dst));
    if (g < cfg.gpu_count) {
      snprintf(dst.uuid, sizeof(dst.uuid), "%s", cfg.gpus[g].uuid);
      dst.limit_bytes = cfg.gpus[g].memory_bytes;
      dst.cores = static_cast<uint32_t>(cfg.gpus[g].cores);
    }
  }
  for (int g = 0; g < cfg.gpu_count; ++g) h->gpus[g].cap_percent.store(static_cast<uint32_t>(cfg.gpus[g].cores));
  h->checksum = RegionChecksum(h);
}

}  // namespace

bool SameGpuSet(const RegionHeader* h, const SliceConfig& cfg) {
  if (h->gpu_count != static_cast<uint32_t>(cfg.gpu_count)) return false;
  for (int g = 0; g < cfg.gpu_count; ++g)
    if (strncmp(h->limits[g].uuid, cfg.gpus[g].uuid, sizeof(h->limits[g].uuid)) != 0) return false;
  return true;
}

namespace {

bool SameLimits(const RegionHeader* h, const SliceConfig& cfg) {
  if (h->priority != cfg.priority || h->cap_mode != static_cast<int32_t>(cfg.cap_mode)) return false;
  for (int g = 0; g < cfg.gpu_count; ++g) {
    if (h->limits[g].limit_bytes != cfg.gpus[g].memory_bytes) return false;
    if (h->limits[g].cores != static_cast<uint32_t>(cfg.gpus[g].cores)) return false;
  }
  return true;
}

// Rows can be damaged without the header being damaged (a stray write): counters above any limit or
// a free row with non-zero counters are reset rather than trusted.
void SanitizeRows(RegionHeader* h) {
  uint32_t hw = h->rows_high_water.load();
  if (hw > kRegionMaxProcs) h->rows_high_water.store(kRegionMaxProcs);
  for (int i = 0; i < kRegionMaxProcs; ++i) {
    RegionRow& r = h->rows[i];
    bool bad = false;
    for (uint32_t g = 0; g < kMaxGpus; ++g) {
      // A shrunk limit may legitimately sit below a live row: only absurd values are damage.
      uint64_t b = r.bytes[g].load(), o = r.overhead[g].load();
      if (g >= h->gpu_count && (b || o)) bad = true;
      if (b > (1ull << 50) || o > (1ull << 50)) bad = true;
    }
    if (r.owner.load() == 0 || bad) {
      if (bad && r.owner.load() != 0) r.owner.store(0);
      ZeroRowCounters(&r);
    }
  }
}

}  // namespace

uint64_t RegionChecksum(const RegionHeader* h) {
  Fnv f;
  f.AddV(h->magic);
  f.AddV(h->version);
  f.AddV(h->header_size);
  f.AddV(h->row_size);
  f.AddV(h->max_procs);
  f.AddV(h->gpu_count);
  f.AddV(h->priority);
  f.AddV(h->cap_mode);
  f.AddV(h->flags);
  f.Add(h->slice, sizeof(h->slice));
  for (int g = 0; g < kMaxGpus; ++g) {
    f.Add(h->limits[g].uuid, sizeof(h->limits[g].uuid));
    f.AddV(h->limits[g].limit_bytes);
    f.AddV(h->limits[g].cores);
  }
  return f.h;
}

void InitRegionHeader(RegionHeader* h, const SliceConfig& cfg, uint32_t flags) { FillImmutable(h, cfg, flags); }

bool ValidateRegion(const RegionHeader* h, char* err, size_t errlen) {
  if (h->magic != kRegionMagic) {
    SetErr(err, errlen, "bad magic (not a Tessera region)");
    return false;
  }
  if (h->version != kRegionVersion || h->header_size != sizeof(RegionHeader) || h->row_size != sizeof(RegionRow) ||
      h->max_procs != kRegionMaxProcs) {
    SetErr(err, errlen, "unsupported layout (version %u, header %u bytes; this build: version %u, %zu bytes)",
           h->version, h->header_size, kRegionVersion, sizeof(RegionHeader));
    return false;
  }
  if (h->gpu_count < 1 || h->gpu_count > kMaxGpus) {
    SetErr(err, errlen, "gpu_count %u out of range 1..%d", h->gpu_count, kMaxGpus);
    return false;
  }
  if (h->checksum != RegionChecksum(h)) {
    SetErr(err, errlen, "header checksum mismatch (corrupt)");
    return false;
  }
  if (memchr(h->slice, '\0', sizeof(h->slice)) == nullptr) {
    SetErr(err, errlen, "slice name not terminated (corrupt)");
    return false;
  }
  return true;
}

static bool MapFile(int fd, bool writable, RegionHeader** out, char* err, size_t errlen) {
  void* p = mmap(nullptr, kRegionFileSize, writable ? (PROT_READ | PROT_WRITE) : PROT_READ, MAP_SHARED, fd, 0);
  if (p == MAP_FAILED) {
    SetErr(err, errlen, "mmap: %s", strerror(errno));
    return false;
  }
  *out = static_cast<RegionHeader*>(p);
  return true;
}

bool OpenRegionForSlice(const SliceConfig& cfg, Region* out, char* err, size_t errlen) {
  *out = Region{};
  int fd = open(cfg.region, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0666);
  if (fd < 0) {
    SetErr(err, errlen, "region %s: %s", cfg.region, strerror(errno));
    return false;
  }
  while (flock(fd, LOCK_EX) != 0) {
    if (errno != EINTR) {
      SetErr(err, errlen, "region %s: flock: %s", cfg.region, strerror(errno));
      close(fd);
      return false;
    }
  }
  struct stat st;
  bool fresh = false;
  if (fstat(fd, &st) != 0 || static_cast<size_t>(st.st_size) != kRegionFileSize) {
    // Wrong size: an older layout or a truncated file. Start over at the right size.
    if (ftruncate(fd, 0) != 0 || ftruncate(fd, static_cast<off_t>(kRegionFileSize)) != 0) {
      SetErr(err, errlen, "region %s: ftruncate: %s", cfg.region, strerror(errno));
      flock(fd, LOCK_UN);
      close(fd);
      return false;
    }
    fresh = st.st_size != 0 ? false : true;
  }
  RegionHeader* h = nullptr;
  if (!MapFile(fd, true, &h, err, errlen)) {
    flock(fd, LOCK_UN);
    close(fd);
    return false;
  }
  char why[160];
  bool valid = ValidateRegion(h, why, sizeof(why));
  if (valid && (h->flags & kRegionAgentRows)) {
    // The node agent's: its rows are separate files this process may not write.
    SetErr(err, errlen, "region %s belongs to the node agent (the slice config must name its socket)", cfg.region);
    munmap(h, kRegionFileSize);
    flock(fd, LOCK_UN);
    close(fd);
    return false;
  }
  bool rebuild = !valid || strncmp(h->slice, cfg.name, sizeof(h->slice)) != 0 || !SameGpuSet(h, cfg);
  if (rebuild) {
    uint64_t gen = valid ? h->generation.load() : 0;
    uint64_t rebuilds = valid ? h->rebuilds.load() : 0;
    memset(static_cast<void*>(h), 0, kRegionFileSize);
    FillImmutable(h, cfg, 0);
    h->generation.store(gen + 1);
    h->rebuilds.store(fresh ? rebuilds : rebuilds + 1);
  } else {
    if (!SameLimits(h, cfg)) FillImmutable(h, cfg, h->flags);  // resized in place; rows keep their charges
    SanitizeRows(h);
  }
  flock(fd, LOCK_UN);
  out->hdr = h;
  out->fd = fd;
  out->writable = true;
  return true;
}

bool OpenRegion(const char* path, bool writable, Region* out, char* err, size_t errlen) {
  *out = Region{};
  int fd = open(path, (writable ? O_RDWR : O_RDONLY) | O_CLOEXEC | O_NOFOLLOW);
  if (fd < 0) {
    SetErr(err, errlen, "region %s: %s", path, strerror(errno));
    return false;
  }
  struct stat st;
  if (fstat(fd, &st) != 0 || static_cast<size_t>(st.st_size) != kRegionFileSize) {
    SetErr(err, errlen, "region %s: size %lld, expected %zu", path, static_cast<long long>(st.st_size), kRegionFileSize);
    close(fd);
    return false;
  }
  RegionHeader* h = nullptr;
  if (!MapFile(fd, writable, &h, err, errlen)) {
    close(fd);
    return false;
  }
  // A shared lock keeps a concurrent rebuild from showing us a half-written header.
  while (flock(fd, LOCK_SH) != 0 && errno == EINTR) {
  }
  char why[160];
  bool ok = ValidateRegion(h, why, sizeof(why));
  flock(fd, LOCK_UN);
  if (!ok) {
    SetErr(err, errlen, "region %s: %s", path, why);
    munmap(h, kRegionFileSize);
    close(fd);
    return false;
  }
  out->hdr = h;
  out->fd = fd;
  out->writable = writable;
  if (h->flags & kRegionAgentRows) {
    if (!RegionDir(path, out->dir, sizeof(out->dir)) || !MapAgentParts(out, -1, err, errlen)) {
      CloseRegion(out);
      return false;
    }
  }
  return true;
}

bool RegionDir(const char* region_path, char* dir, size_t n) {
  const char* slash = strrchr(region_path, '/');
  if (slash == nullptr || static_cast<size_t>(slash - region_path) + 1 > n) return false;
  memcpy(dir, region_path, static_cast<size_t>(slash - region_path));
  dir[slash - region_path] = '\0';
  return true;
}

namespace {
// Maps `len` bytes of the file dir/name over the region at `offset` (MAP_FIXED), read-write or read-only.
bool MapPart(Region* r, const char* name, size_t offset, size_t len, bool rw, char* err, size_t errlen) {
  char path[kPathMax + 32];
  snprintf(path, sizeof(path), "%s/%s", r->dir, name);
  int fd = open(path, (rw ? O_RDWR : O_RDONLY) | O_CLOEXEC | O_NOFOLLOW);
  if (fd < 0) {
    SetErr(err, errlen, "%s: %s", path, strerror(errno));
    return false;
  }
  struct stat st;
  if (fstat(fd, &st) != 0 || static_cast<size_t>(st.st_size) != len) {
    SetErr(err, errlen, "%s: size %lld, expected %zu", path, static_cast<long long>(st.st_size), len);
    close(fd);
    return false;
  }
  bool ok = MapFdAt(r, fd, offset, len, rw, err, errlen);
  close(fd);
  return ok;
}

// Free rows read as zeros whatever the region file holds (or lacks, when truncated): `count` rows from
// row `first`, in one mapping (an agent opens every slice's region on each watchdog pass, so a call per
// row cost it 256 system calls a region).
void MapZeroRows(Region* r, int first, int count) {
  mmap(reinterpret_cast<char*>(r->hdr) + kRegionRowsOffset + static_cast<size_t>(first) * kRegionPage,
       static_cast<size_t>(count) * kRegionPage, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
}
}  // namespace

bool MapFdAt(Region* r, int fd, size_t offset, size_t len, bool rw, char* err, size_t errlen) {
  void* at = reinterpret_cast<char*>(r->hdr) + offset;
  void* p = mmap(at, len, rw ? (PROT_READ | PROT_WRITE) : PROT_READ, MAP_SHARED | MAP_FIXED, fd, 0);
  if (p == MAP_FAILED) {
    SetErr(err, errlen, "mmap at %zu: %s", offset, strerror(errno));
    return false;
  }
  return true;
}

bool MapAgentParts(Region* r, int live_fd, char* err, size_t errlen) {
  r->agent_rows = true;
  const bool rw = r->writable || live_fd >= 0;
  bool ok = live_fd >= 0 ? MapFdAt(r, live_fd, kRegionLiveOffset, kRegionLiveSize, true, err, errlen)
                         : MapPart(r, "live", kRegionLiveOffset, kRegionLiveSize, rw, err, errlen);
  if (!ok) return false;
  MapZeroRows(r, 0, kRegionMaxProcs);
  memset(r->mapped_owner, 0, sizeof(r->mapped_owner));
  r->mapped_gen = ~0ull;
  RefreshRows(r);
  return true;
}

bool RefreshRows(Region* r) {
  if (!r->agent_rows || r->hdr == nullptr) return false;
  RegionHeader* h = r->hdr;
  const uint64_t gen = h->roster_gen.load();
  if (gen == r->mapped_gen) return false;
  uint32_t hw = h->rows_high_water.load();
  if (hw > kRegionMaxProcs) hw = kRegionMaxProcs;
  for (int i = 0; i < kRegionMaxProcs; ++i) {
    const uint64_t owner = static_cast<uint32_t>(i) < hw ? h->slot_owner[i].load() : 0;
    if (i == r->own_row || owner == r->mapped_owner[i]) continue;
    char name[32];
    snprintf(name, sizeof(name), "rows/%d", i);
    char ignored[160];
    if (owner == 0 || !MapPart(r, name, kRegionRowsOffset + static_cast<size_t>(i) * kRegionPage, kRegionPage,
                               r->writable, ignored, sizeof(ignored))) {
      MapZeroRows(r, i, 1);
      r->mapped_owner[i] = 0;
      continue;
    }
    r->mapped_owner[i] = owner;
  }
  r->mapped_gen = gen;
  return true;
}

void CloseRegion(Region* r) {
  if (r->hdr) munmap(r->hdr, kRegionFileSize);
  if (r->fd >= 0) close(r->fd);
  *r = Region{};
}

GpuUsage ReadGpuUsage(const RegionHeader* h, int g) {
  GpuUsage u{};
  if (g < 0 || g >= static_cast<int>(h->gpu_count) || g >= kMaxGpus) return u;
  u.limit_bytes = h->limits[g].limit_bytes;
  uint32_t hw = h->rows_high_water.load();
  if (hw > kRegionMaxProcs) hw = kRegionMaxProcs;
  for (uint32_t i = 0; i < hw; ++i) {
    u.charged_bytes += h->rows[i].bytes[g].load();
    u.overhead_bytes += h->rows[i].overhead[g].load();
  }
  u.used_bytes = u.charged_bytes + u.overhead_bytes;
  u.peak_bytes = h->gpus[g].peak_bytes.load();
  u.wall_refusals = h->gpus[g].wall_refusals.load();
  return u;
}

int ReadProcs(const RegionHeader* h, ProcUsage* out, int max) {
  int n = 0;
  uint32_t hw = h->rows_high_water.load();
  if (hw > kRegionMaxProcs) hw = kRegionMaxProcs;
  for (uint32_t i = 0; i < hw && n < max; ++i) {
    const RegionRow& r = h->rows[i];
    uint64_t o = r.owner.load();
    if (o == 0 || (o & kOwnerReclaiming)) continue;
    ProcUsage& p = out[n++];
    memset(&p, 0, sizeof(p));
    p.pid = OwnerPid(o);
    p.start_ticks = OwnerStart(o);
    p.pidns = r.pidns.load();
    p.host_pid = RowHostPid(h, static_cast<int>(i));
    for (uint32_t g = 0; g < h->gpu_count && g < kMaxGpus; ++g) {
      p.overhead[g] = r.overhead[g].load();
      p.bytes[g] = r.bytes[g].load() + p.overhead[g];
    }
  }
  return n;
}

bool ParseStatStartTicks(const char* stat, uint64_t* ticks) {
  const char* p = strrchr(stat, ')');
  if (p == nullptr || p[1] != ' ') return false;
  p += 2;  // ") " then field 3 (state)
  for (int field = 3; field < 22 && *p; ++field) {
    p = strchr(p, ' ');
    if (p == nullptr) return false;
    ++p;
  }
  uint64_t v = 0;
  while (*p >= '0' && *p <= '9') v = v * 10 + static_cast<uint64_t>(*p++ - '0');
  *ticks = v;
  return true;
}

uint64_t ProcessStartTicks(int pid) {
  char path[64];
  snprintf(path, sizeof(path), "/proc/%d/stat", pid);
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return 0;
  char buf[1024];
  ssize_t n = read(fd, buf, sizeof(buf) - 1);
  close(fd);
  if (n <= 0) return 0;
  buf[n] = '\0';
  uint64_t v = 0;
  return ParseStatStartTicks(buf, &v) ? v : 0;
}

bool ProcessAlive(int pid, uint32_t start_ticks) {
  if (pid <= 0) return false;
  if (kill(pid, 0) != 0 && errno == ESRCH) return false;
  char path[64];
  snprintf(path, sizeof(path), "/proc/%d/stat", pid);
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return errno != ENOENT;  // no /proc access: trust kill()
  char buf[1024];
  ssize_t n = read(fd, buf, sizeof(buf) - 1);
  close(fd);
  if (n <= 0) return false;
  buf[n] = '\0';
  const char* p = strrchr(buf, ')');
  if (!p || p[1] != ' ') return true;
  char state = p[2];
  if (state == 'Z' || state == 'X' || state == 'x') return false;  // exited: the driver freed its memory
  uint64_t v = 0;
  if (!ParseStatStartTicks(buf, &v)) return true;
  return static_cast<uint32_t>(v & 0x7fffffffu) == start_ticks;
}

uint64_t SelfPidNamespace() {
  struct stat st;
  if (stat("/proc/self/ns/pid", &st) != 0) return 0;
  return static_cast<uint64_t>(st.st_ino);
}

int ReclaimDead(RegionHeader* h) {
  const int self = static_cast<int>(getpid());
  const uint64_t me = PackOwner(self, ProcessStartTicks(self)) | kOwnerReclaiming;
  const uint64_t ns = SelfPidNamespace();
  uint32_t hw = h->rows_high_water.load();
  if (hw > kRegionMaxProcs) hw = kRegionMaxProcs;
  int reclaimed = 0;
  for (uint32_t i = 0; i < hw; ++i) {
    RegionRow& r = h->rows[i];
    uint64_t o = r.owner.load();
    if (o == 0) continue;
    if (o & kOwnerReclaiming) {
      // Another reclaimer holds it; take over only if that reclaimer died mid-way.
      if (ProcessAlive(OwnerPid(o), OwnerStart(o))) continue;
    } else {
      uint64_t rns = r.pidns.load();
      if (rns != 0 && ns != 0 && rns != ns) continue;  // other pid namespace: cannot judge
      if (OwnerPid(o) == self || ProcessAlive(OwnerPid(o), OwnerStart(o))) continue;
    }
    if (!r.owner.compare_exchange_strong(o, me)) continue;
    ZeroRowCounters(&r);
    r.pidns.store(0);
    r.owner.store(0);
    h->rows_reclaimed.fetch_add(1);
    ++reclaimed;
  }
  return reclaimed;
}

int ClaimRow(RegionHeader* h) {
  const int self = static_cast<int>(getpid());
  const uint64_t me = PackOwner(self, ProcessStartTicks(self));
  const uint64_t ns = SelfPidNamespace();
  for (int pass = 0; pass < 2; ++pass) {
    for (int i = 0; i < kRegionMaxProcs; ++i) {
      RegionRow& r = h->rows[i];
      uint64_t expect = 0;
      if (r.owner.load() != 0 || !r.owner.compare_exchange_strong(expect, me)) continue;
      r.pidns.store(ns);
      ZeroRowCounters(&r);
      uint32_t hw = h->rows_high_water.load();
      while (hw < static_cast<uint32_t>(i + 1) && !h->rows_high_water.compare_exchange_weak(hw, i + 1)) {
      }
      return i;
    }
    if (ReclaimDead(h) == 0) break;  // full: make room from dead processes once
  }
  return -1;
}

void ReleaseRow(RegionHeader* h, int row) {
  if (row < 0 || row >= kRegionMaxProcs) return;
  RegionRow& r = h->rows[row];
  ZeroRowCounters(&r);
  r.pidns.store(0);
  r.owner.store(0);
}

ChargeOutcome TryCharge(RegionHeader* h, int row, int g, uint64_t bytes, bool overhead, uint64_t wall) {
  ChargeOutcome out{ChargeResult::kOverLimit, 0, 0};
  if (g < 0 || g >= static_cast<int>(h->gpu_count) || row < 0 || row >= kRegionMaxProcs) return out;
  RegionGpu& gpu = h->gpus[g];
  const uint64_t limit = wall != 0 ? wall : h->limits[g].limit_bytes;
  out.limit = limit;
  std::atomic<uint64_t>& col = overhead ? h->rows[row].overhead[g] : h->rows[row].bytes[g];
  if (bytes > limit) {
    out.used_before = SumGpu(h, g);
    gpu.wall_refusals.fetch_add(1);
    h->wall_refusals.fetch_add(1);
    return out;
  }
  // Publish first, then look: whoever publishes later sees every earlier reservation (seq_cst), so two
  // racers cannot both pass. A racer that backs out may cause a spurious refusal of the other; the retry
  // below tells that case (others alone leave room) from a real one.
  for (int attempt = 0; attempt < 64; ++attempt) {
    col.fetch_add(bytes);
    uint64_t sum = SumGpu(h, g);
    if (sum <= limit) {
      uint64_t peak = gpu.peak_bytes.load();
      while (sum > peak && !gpu.peak_bytes.compare_exchange_weak(peak, sum)) {
      }
      out.result = ChargeResult::kOk;
      out.used_before = sum - bytes;
      return out;
    }
    col.fetch_sub(bytes);
    uint64_t others = SumGpu(h, g);
    out.used_before = others;
    if (others + bytes > limit) break;
  }
  gpu.wall_refusals.fetch_add(1);
  h->wall_refusals.fetch_add(1);
  return out;
}

void Uncharge(RegionHeader* h, int row, int g, uint64_t bytes, bool overhead) {
  if (g < 0 || g >= kMaxGpus || row < 0 || row >= kRegionMaxProcs) return;
  std::atomic<uint64_t>& col = overhead ? h->rows[row].overhead[g] : h->rows[row].bytes[g];
  uint64_t cur = col.load();
  while (!col.compare_exchange_weak(cur, cur > bytes ? cur - bytes : 0)) {
  }
}

void SetOverhead(RegionHeader* h, int row, int g, uint64_t bytes) {
  if (g < 0 || g >= kMaxGpus || row < 0 || row >= kRegionMaxProcs) return;
  h->rows[row].overhead[g].store(bytes);
}

int RowHostPid(const RegionHeader* h, int row) {
  if (row < 0 || row >= kRegionMaxProcs) return 0;
  const RegionRow& r = h->rows[row];
  // host_pid is stored before host_owner, and a new owner zeroes both after claiming: a matching
  // host_owner means host_pid belongs to this owner.
  const uint64_t o = r.owner.load();
  if (o == 0 || (o & kOwnerReclaiming) || r.host_owner.load() != o) return 0;
  return static_cast<int>(r.host_pid.load());
}

bool PublishHostPid(RegionHeader* h, int row, uint64_t owner, int host_pid) {
  if (row < 0 || row >= kRegionMaxProcs || owner == 0 || host_pid <= 0) return false;
  RegionRow& r = h->rows[row];
  if (r.owner.load() != owner) return false;
  r.host_pid.store(static_cast<uint64_t>(host_pid));
  r.host_owner.store(owner);
  if (r.owner.load() == owner) return true;
  // Changed hands meanwhile: withdraw, unless the new owner has already cleared the fields itself.
  uint64_t expect = owner;
  r.host_owner.compare_exchange_strong(expect, 0);
  return false;
}

int FindRegionGpu(const RegionHeader* h, const char* uuid) {
  for (uint32_t g = 0; g < h->gpu_count && g < kMaxGpus; ++g)
    if (strncmp(h->limits[g].uuid, uuid, sizeof(h->limits[g].uuid)) == 0) return static_cast<int>(g);
  return -1;
}

}  // namespace tessera::slice
