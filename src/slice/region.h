// Slice region: the shared memory-accounting file of one slice.
//
// One file per slice (mmap'ed MAP_SHARED) holds a versioned, checksummed header, one slot per GPU of the
// slice (limit, counters, space for the compute limiter) and one row per process of the slice (owner =
// pid + process start time, bytes charged per GPU, driver-measured overhead per GPU). Every process that
// runs libtessera.so inside the slice maps it read-write; the node agent, `tessera slices` and `tessera top`
// map it to read usage (and, with write access, to reclaim rows of dead processes).
//
// Accounting rule (why it is crash-safe): the rows are the only truth. A GPU's usage is the sum over live
// rows of bytes[g] + overhead[g]; there is no separate counter that a crash could leave out of step.
// TryCharge() publishes the caller's reservation in its own row first (fetch_add), then sums all rows and
// backs the reservation out if the sum passes the limit. With sequentially consistent atomics two racing
// callers can at worst both back out (a spurious refusal, retried), never both succeed past the limit.
// A process killed at any instant leaves only its row behind; any reader that finds the owner dead (pid
// gone, zombie, or pid reused with another start time) zeroes the row, so the usage is back at once.
//
// Thread safety: every function here may be called from any thread of any process concurrently, except
// Open/Create which take an flock on the file while (re)initializing. Nothing here throws or allocates
// with malloc/new, so the shim can use it inside arbitrary applications.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>

#include "slice/config.h"

namespace tessera::slice {

inline constexpr uint64_t kRegionMagic = 0x314e4752534d4554ull;  // "TEMSRGN1" little-endian
inline constexpr uint32_t kRegionVersion = 2;
inline constexpr int kRegionMaxProcs = 256;
// The region's parts are page-aligned so that, under the node agent, each can come from its own file with
// its own access: the header read-only, the live page read-write, each row read-write for its owner only.
inline constexpr size_t kRegionPage = 4096;

// The wall of one GPU of the slice. Immutable after (re)build and covered by the header checksum.
struct RegionGpuLimit {
  char uuid[kUuidMax];   // "GPU-xxxxxxxx-..." as in the slice config
  uint64_t limit_bytes;  // the memory wall
  uint32_t cores;        // compute cap in percent (1..100) from the config
  uint32_t pad0;
};

// Live counters per GPU of the slice, written by every process of the slice.
struct alignas(64) RegionGpu {
  std::atomic<uint64_t> peak_bytes;        // highest sum seen by a successful charge
  std::atomic<uint64_t> wall_refusals;     // allocations refused at the wall
  std::atomic<uint64_t> ctx_hint_bytes;    // largest measured context overhead (estimate for new contexts)
  // Reserved for the compute limiter (src/shim/launch_gate*, limiter*): it owns the meaning.
  std::atomic<uint32_t> cap_percent;       // effective cap the limiter applies now
  std::atomic<uint32_t> cap_flags;
  std::atomic<uint64_t> busy_ns;           // measured GPU busy time of the slice
  std::atomic<uint64_t> throttled_ns;      // time launches were held back
  std::atomic<uint64_t> priority_waits;    // launches delayed for a high-priority slice
  std::atomic<uint64_t> limiter_spare[8];
};

// One process of the slice, one page. owner packs (start_time_ticks & 0x7fffffff) << 32 | pid so a row is
// claimed, judged and reclaimed with single atomic operations.
struct alignas(kRegionPage) RegionRow {
  std::atomic<uint64_t> owner;             // 0 = free; bit 63 set = being reclaimed (then pid is the reclaimer's)
  std::atomic<uint64_t> pidns;             // inode of the owner's pid namespace (liveness is judged only in it)
  std::atomic<uint64_t> bytes[kMaxGpus];   // bytes charged by this process's allocations
  std::atomic<uint64_t> overhead[kMaxGpus];  // driver-measured usage beyond `bytes` (context, modules, pools)
  // The owner's pid in the host's pid namespace, which is how the driver (NVML) names it, published by
  // the node agent for owners in other namespaces (host_pid.h). Valid only while host_owner == owner.
  std::atomic<uint64_t> host_owner;
  std::atomic<uint64_t> host_pid;
  std::atomic<uint64_t> limiter_spare[4];  // reserved for the compute limiter
};

// flags: the rows are the node agent's (agent_rows.h). Then the header is written by the agent alone
// (mounted read-only into the container), the live part lives in the file `live` and row i in the file
// `rows/<i>` beside the region, each handed to a process by the agent; slot_owner is the roster.
inline constexpr uint32_t kRegionAgentRows = 1;

struct alignas(kRegionPage) RegionHeader {
  // ---- Trusted part: standalone, written by the slice's processes (no boundary between them); under the
  // node agent, written by the agent alone.
  uint64_t magic;
  uint32_t version;
  uint32_t header_size;      // sizeof(RegionHeader)
  uint32_t row_size;         // sizeof(RegionRow)
  uint32_t max_procs;
  uint32_t gpu_count;
  int32_t priority;          // from the config: 0 high, 1 best effort
  int32_t cap_mode;          // CapMode
  uint32_t flags;            // kRegionAgentRows
  char slice[kSliceNameMax];
  RegionGpuLimit limits[kMaxGpus];
  uint64_t checksum;         // FNV-1a over the fields above (see RegionChecksum)
  std::atomic<uint64_t> generation;       // bumped on every rebuild: processes re-claim their row
  std::atomic<uint32_t> rows_high_water;  // rows [0, high water) may be in use
  std::atomic<uint32_t> pad1;
  std::atomic<uint64_t> rows_reclaimed;   // rows of dead processes cleaned up
  std::atomic<uint64_t> rebuilds;         // times the region was found corrupt/stale and rebuilt
  std::atomic<uint64_t> roster_gen;       // agent rows: bumped whenever slot_owner changes
  std::atomic<uint64_t> slot_owner[kRegionMaxProcs];  // agent rows: owner (host pid + start) of each row
  // ---- Live part: written by every process of the slice.
  alignas(kRegionPage) RegionGpu gpus[kMaxGpus];
  std::atomic<uint64_t> wall_refusals;    // total over GPUs
  std::atomic<uint64_t> limiter_spare[8];
  // ---- Rows.
  alignas(kRegionPage) RegionRow rows[kRegionMaxProcs];
};

inline constexpr size_t kRegionLiveOffset = offsetof(RegionHeader, gpus);
inline constexpr size_t kRegionRowsOffset = offsetof(RegionHeader, rows);
inline constexpr size_t kRegionLiveSize = kRegionRowsOffset - kRegionLiveOffset;
static_assert(kRegionLiveOffset % kRegionPage == 0 && kRegionRowsOffset % kRegionPage == 0);
static_assert(sizeof(RegionRow) == kRegionPage);

inline constexpr size_t kRegionFileSize = sizeof(RegionHeader);

// A mapped region. Value type holding the mapping; Close() unmaps. Not copyable semantics are left to the
// caller (it is a plain struct so the shim can keep one in static storage without a constructor).
struct Region {
  RegionHeader* hdr = nullptr;
  int fd = -1;
  bool writable = false;
  // Agent rows only: the directory of the region's files, and the roster each row's mapping was made for
  // (RefreshRows maps a row's file again when its slot changes hands).
  bool agent_rows = false;
  int own_row = -1;  // the row this process writes (its file mapped read-write)
  uint64_t mapped_gen = 0;
  char dir[kPathMax] = {};
  uint64_t mapped_owner[kRegionMaxProcs] = {};
};

// ---- Opening -------------------------------------------------------------------------------------------

// Opens (creating if needed) the region at cfg.region for a process of the slice and makes it match cfg:
// a missing, short, corrupt (bad magic/version/checksum) or foreign (other slice name) region is rebuilt;
// changed limits are applied in place. Returns false with a message in err on failure.
bool OpenRegionForSlice(const SliceConfig& cfg, Region* out, char* err, size_t errlen);

// Opens an existing region to read (writable=false) or to read and reclaim (writable=true). Fails (false,
// message) when the file is missing, short or fails validation; never rebuilds.
bool OpenRegion(const char* path, bool writable, Region* out, char* err, size_t errlen);

void CloseRegion(Region* r);

// Under the node agent (kRegionAgentRows): the directory of region_path (where `live` and `rows/` lie).
bool RegionDir(const char* region_path, char* dir, size_t n);
// Maps the live part (from live_fd, or from dir/live when live_fd < 0) and every occupied row's file
// over the region mapping: read-write where r->writable, read-only otherwise.
bool MapAgentParts(Region* r, int live_fd, char* err, size_t errlen);
// Maps `len` bytes of fd over the region at `offset`.
bool MapFdAt(Region* r, int fd, size_t offset, size_t len, bool rw, char* err, size_t errlen);
// Under the node agent: maps the rows whose slot changed hands since the last call (one load when none
// did). Never on the launch path: it may open and map files. True when anything was remapped.
bool RefreshRows(Region* r);
// Fills the trusted part of a header for cfg (magic, layout, limits, checksum).
void InitRegionHeader(RegionHeader* h, const SliceConfig& cfg, uint32_t flags);

// True when the region's GPUs are the config's, in the config's order.
bool SameGpuSet(const RegionHeader* h, const SliceConfig& cfg);

// Validates the header (magic, version, sizes, checksum, gpu_count range). Message on failure.
bool ValidateRegion(const RegionHeader* h, char* err, size_t errlen);
uint64_t RegionChecksum(const RegionHeader* h);

// ---- Read side (agent, tessera slices/top) --------------------------------------------------------------

struct GpuUsage {
  uint64_t limit_bytes;
  uint64_t used_bytes;       // charged + overhead over live rows
  uint64_t charged_bytes;    // charged by allocations only
  uint64_t overhead_bytes;   // context/module/pool overhead measured from the driver
  uint64_t peak_bytes;
  uint64_t wall_refusals;
};
// Usage of GPU index g (0 <= g < gpu_count). Rows are summed as they are; call ReclaimDead() first to drop
// dead processes' rows (needs a writable mapping).
GpuUsage ReadGpuUsage(const RegionHeader* h, int g);

struct ProcUsage {
  int32_t pid;
  uint32_t start_ticks;     // low 31 bits of the process start time (clock ticks since boot)
  uint64_t pidns;
  int32_t host_pid;             // pid in the host's namespace when the agent published it, else 0
  uint64_t bytes[kMaxGpus];     // charged + overhead per GPU index
  uint64_t overhead[kMaxGpus];  // of which overhead
};
// Copies up to max live rows into out; returns how many.
int ReadProcs(const RegionHeader* h, ProcUsage* out, int max);

// Reclaims rows whose owner is dead (judged in the caller's pid namespace only). Returns rows reclaimed.
// Safe against concurrent claimers and reclaimers. Cost: one kill(0)/proc read per live row.
int ReclaimDead(RegionHeader* h);

// ---- Write side (the shim) ------------------------------------------------------------------------------

// Claims a free row for the calling process (pid = getpid()). Returns row index or -1 when full.
int ClaimRow(RegionHeader* h);
// Releases the caller's row (normal exit). Zeroes its bytes first.
void ReleaseRow(RegionHeader* h, int row);

enum class ChargeResult { kOk, kOverLimit };
struct ChargeOutcome {
  ChargeResult result;
  uint64_t used_before;   // slice usage on this GPU seen by the final attempt (without this request)
  uint64_t limit;
};
// Atomically checks and reserves `bytes` on GPU index g in row `row`, into the bytes[] (overhead=false)
// or overhead[] (overhead=true) column. Never lets the sum pass the limit.
// `wall`: the limit to hold (the caller's trusted config); 0 takes the header's.
ChargeOutcome TryCharge(RegionHeader* h, int row, int g, uint64_t bytes, bool overhead, uint64_t wall = 0);
// Returns bytes previously charged (clamped at zero so a double free cannot wrap the counter).
void Uncharge(RegionHeader* h, int row, int g, uint64_t bytes, bool overhead);
// Replaces the row's overhead for GPU g with a measured value (no limit check: it is a fact, not a request).
void SetOverhead(RegionHeader* h, int row, int g, uint64_t bytes);

// The row owner's host pid as published by the node agent (PublishHostPid), or 0 when none was published
// for the row's current owner.
int RowHostPid(const RegionHeader* h, int row);
// Records host_pid for the row while its owner is `owner`; false (nothing kept) when the row has changed
// hands since the caller read `owner`.
bool PublishHostPid(RegionHeader* h, int row, uint64_t owner, int host_pid);

// Index of the GPU with this UUID in the region, or -1.
int FindRegionGpu(const RegionHeader* h, const char* uuid);

// Process helpers shared with the agent and tests.
// Start time of pid in clock ticks since boot (field 22 of /proc/<pid>/stat); 0 when unknown.
uint64_t ProcessStartTicks(int pid);
// Field 22 (start time) of the text of a /proc/<pid>/stat file; false when the text has no such field.
bool ParseStatStartTicks(const char* stat, uint64_t* ticks);
// True when pid is alive, not a zombie, and its start time matches (start_ticks as stored, 31 bits).
bool ProcessAlive(int pid, uint32_t start_ticks);
uint64_t SelfPidNamespace();

inline uint64_t PackOwner(int pid, uint64_t start_ticks) {
  return ((start_ticks & 0x7fffffffull) << 32) | static_cast<uint32_t>(pid);
}
inline int OwnerPid(uint64_t owner) { return static_cast<int>(owner & 0xffffffffu); }
inline uint32_t OwnerStart(uint64_t owner) { return static_cast<uint32_t>((owner >> 32) & 0x7fffffffu); }
inline constexpr uint64_t kOwnerReclaiming = 1ull << 63;

}  // namespace tessera::slice
