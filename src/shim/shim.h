// Shim state: slice config, region mapping, per-process accounting, the reconciler thread.
//
// Internal to libtessera.so; the hook files (hooks_*.cc) call these. The model: every allocation hook
// resolves the GPU it lands on (by UUID, so CUDA_VISIBLE_DEVICES remapping cannot confuse it), charges the
// slice region before the real call (atomic check-and-reserve, see slice/region.h), records the charge
// in a lock-free pointer table so the matching free returns exactly that amount, and uncharges when the
// real call fails. Context overhead is charged as an estimate before a context is created and replaced
// by the driver's per-process figure (NVML) by the reconciler thread.
//
// Thread-safety: all functions may be called from any application thread at any time after
// EnsureInit(). Nothing here takes a lock on the allocation path; init is a one-time CAS-guarded step.
#pragma once

#include <cuda.h>

#include <atomic>
#include <cstddef>
#include <cstdint>

#include "slice/config.h"
#include "slice/region.h"

namespace tessera::shim {

enum class Mode : int {
  kUninit = 0,
  kPassThrough = 1,  // no slice config: everything goes straight to the driver
  kActive = 2,       // config + region: the wall is enforced
  kFailClosed = 3,   // a config exists but cannot be used (untrusted, corrupt, region error): refuse memory
};

extern std::atomic<int> g_mode;  // Mode

inline Mode CurrentMode() { return static_cast<Mode>(g_mode.load(std::memory_order_acquire)); }

// Loads the config and region once. Safe to call from any hook; recursive calls from the init thread
// return at once.
void EnsureInit();
// True when allocations must be charged (kActive or kFailClosed).
inline bool Enforcing() {
  Mode m = CurrentMode();
  if (m == Mode::kUninit) {
    EnsureInit();
    m = CurrentMode();
  }
  return m == Mode::kActive || m == Mode::kFailClosed;
}

// The slice config, loaded once per process (the only load: the memory wall, the launch gate and the MPS
// set-up all read this copy). Safe from a library constructor; heap-free.
enum class ConfigLoad { kNone, kOk, kUnusable };
ConfigLoad LoadConfigOnce(const slice::SliceConfig** cfg);
const slice::SliceConfig& Config();
slice::RegionHeader* RegionHdr();

// GPU index in the slice for a device ordinal: >= 0, kGpuNotInSlice, or kGpuUnknown (driver error).
inline constexpr int kGpuNotInSlice = -1;
inline constexpr int kGpuUnknown = -2;
int GpuOfDevice(CUdevice dev);
// GPU of the calling thread's current context (kGpuUnknown when there is none).
int CurrentGpu();

// What a byte request costs against the wall: the driver hands out large allocations in 2 MiB pages.
inline uint64_t ChargeSize(uint64_t bytes) {
  constexpr uint64_t kPage = 2ull << 20;
  return bytes <= (1ull << 20) ? bytes : (bytes + kPage - 1) / kPage * kPage;
}

// Charges `bytes` (already rounded) on slice GPU g for an allocation of `asked` bytes through `api`.
// False (and one rate-limited stderr line) when the wall refuses.
bool Charge(int g, uint64_t bytes, uint64_t asked, const char* api);
void Uncharge(int g, uint64_t bytes);
// Refusal for a GPU outside the slice or a fail-closed slice; prints the reason (rate-limited).
void ReportRefusal(int g, uint64_t asked, const char* api, const char* why);

// Context lifecycle: called around the real context-creating call. Before returns false (refuse with
// CUDA_ERROR_OUT_OF_MEMORY) when even the context's estimated overhead does not fit.
bool ContextBefore(int g, const char* api, bool* charged_estimate);
void ContextAfter(int g, bool charged_estimate, CUresult result);

// Brackets every allocation/free from before its charge (or before the real free) until the books
// and the driver agree again, so the reconciler only trusts a driver figure taken while nothing was
// in flight on that GPU in this process.
void OpBegin(int g);
void OpEnd(int g);
struct OpScope {
  int g;
  explicit OpScope(int gpu) : g(gpu) { OpBegin(g); }
  ~OpScope() { OpEnd(g); }
  OpScope(const OpScope&) = delete;
  OpScope& operator=(const OpScope&) = delete;
};

// Asks the reconciler to measure driver usage soon (after pool trims, context changes).
void RequestReconcile();

// Allocation table: pointer/handle -> (bytes, gpu). Lock-free; fixed capacity in an anonymous mapping.
enum class Kind : uint64_t { kDevPtr = 0, kArray = 1, kMipmap = 2, kVmm = 3, kGraph = 4 };
bool TrackAlloc(Kind kind, uint64_t key, uint64_t bytes, int g);
bool UntrackAlloc(Kind kind, uint64_t key, uint64_t* bytes, int* g);

// Total (limit) and used for slice GPU g as the application should see them.
void SliceMemInfo(int g, uint64_t* limit, uint64_t* used);

// One line to stderr (prefix "tessera: "), not rate-limited; for once-only notices.
void Notice(const char* fmt, ...) __attribute__((format(printf, 1, 2)));

}  // namespace tessera::shim
