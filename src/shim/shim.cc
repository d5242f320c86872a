// Shim state, accounting and the reconciler. See shim.h for the model.
#include "shim/shim.h"

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>

#include "shim/launch_gate.h"
#include "shim/real.h"
#include "shim/uuid.h"
#include "slice/agent_rows.h"

namespace tessera::shim {

std::atomic<int> g_mode{0};

namespace {

using slice::kMaxGpus;

constexpr uint64_t kDefaultCtxEstimate = 640ull << 20;  // until a context on this GPU was measured
constexpr int kMaxOrdinals = 64;

slice::SliceConfig g_cfg;
slice::Region g_region;
char g_fail_reason[320];

std::atomic<int> g_init_state{0};  // 0 none, 1 running, 2 done
__thread int t_in_init;

std::atomic<int> g_row{-1};
std::atomic<uint64_t> g_row_gen{0};
std::atomic<uint64_t> g_local_bytes[kMaxGpus];     // this process's charged allocations per GPU
std::atomic<uint64_t> g_local_overhead[kMaxGpus];  // this process's overhead (estimate or measured)
std::atomic<int> g_ctx_charged[kMaxGpus];
std::atomic<int64_t> g_ctx_floor_until[kMaxGpus];  // keep the estimate at least until then (ns)
std::atomic<uint64_t> g_ctx_size[kMaxGpus];        // the context as the driver first showed it whole
std::atomic<uint64_t> g_ctx_estimate[kMaxGpus];    // what was charged for the context at its creation
// A smaller per-process figure is never a whole context (a CUDA context takes hundreds of MiB on every
// GPU the driver supports): it is the driver showing one late or in part.
constexpr uint64_t kMinContextSighting = 128ull << 20;
std::atomic<uint64_t> g_inflight[kMaxGpus];        // allocations/frees between books and driver
std::atomic<uint64_t> g_ops_done[kMaxGpus];        // completed allocations/frees
std::atomic<int> g_devmap[kMaxOrdinals];           // 0 unknown, gpu+1, or 1000 = not in slice

std::atomic<int> g_claiming{0};        // EnsureRow's slow path
std::atomic<int> g_refreshing{0};      // agent rows: one remapping at a time (others go on)
std::atomic<int> g_rejoin{0};          // agent rows: register again (forked child)
std::atomic<int64_t> g_last_join_ns{0};
constexpr int kAgentTimeoutMs = 2000;  // a registration never waits longer on the node agent
std::atomic<int> g_reconcile_lock{0};  // one reconciliation at a time
std::atomic<int64_t> g_last_report_ns{0};
std::atomic<uint64_t> g_suppressed{0};

// Reconciler thread.
std::atomic<int> g_thread_state{0};  // 0 not started, 1 running
std::atomic<int> g_reconcile_req{0};
std::atomic<int> g_stopping{0};
std::atomic<int> g_in_nvml{0};

int64_t NowNs() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1000000000 + ts.tv_nsec;
}

void VWriteLine(const char* fmt, va_list ap) {
  char buf[512];
  int n = snprintf(buf, sizeof(buf), "tessera: ");
  int m = vsnprintf(buf + n, sizeof(buf) - static_cast<size_t>(n) - 1, fmt, ap);
  size_t len = static_cast<size_t>(n) + (m < 0 ? 0 : static_cast<size_t>(m));
  if (len > sizeof(buf) - 2) len = sizeof(buf) - 2;
  buf[len++] = '\n';
  ssize_t w = write(2, buf, len);
  (void)w;
}

// Rate limit: one refusal line per second per process; the next line says how many were not printed.
bool TakeReportSlot(uint64_t* suppressed) {
  int64_t now = NowNs();
  int64_t last = g_last_report_ns.load();
  if (last != 0 && now - last < 1000000000) {
    g_suppressed.fetch_add(1);
    return false;
  }
  if (!g_last_report_ns.compare_exchange_strong(last, now)) {
    g_suppressed.fetch_add(1);
    return false;
  }
  *suppressed = g_suppressed.exchange(0);
  return true;
}

void FormatBytes(uint64_t b, char* out, size_t n) {
  if (b >= (1ull << 30))
    snprintf(out, n, "%.2f GiB", static_cast<double>(b) / (1ull << 30));
  else
    snprintf(out, n, "%.1f MiB", static_cast<double>(b) / (1ull << 20));
}

void AtForkChild() {
  // The child is a new process: no row, no contexts, no reconciler thread. Its first CUDA use claims
  // a fresh row (CUDA itself is unusable in a forked child until exec, but the child may exec later
  // without it, or be a python multiprocessing worker that initialises CUDA anew).
  g_row.store(-1);
  g_rejoin.store(g_region.agent_rows ? 1 : 0);
  g_refreshing.store(0);
  // Locks another thread of the parent held at fork() would never be released here.
  g_claiming.store(0);
  g_reconcile_lock.store(0);
  g_thread_state.store(0);
  g_reconcile_req.store(0);
  g_in_nvml.store(0);
  for (int g = 0; g < kMaxGpus; ++g) {
    g_local_bytes[g].store(0);
    g_local_overhead[g].store(0);
    g_ctx_charged[g].store(0);
    g_ctx_size[g].store(0);
    g_ctx_estimate[g].store(0);
    g_inflight[g].store(0);
  }
}

// Claims (or re-claims after a region rebuild) this process's row. Returns -1 when none is free.
int EnsureRow() {
  slice::RegionHeader* h = g_region.hdr;
  int row = g_row.load(std::memory_order_acquire);
  uint64_t gen = h->generation.load(std::memory_order_relaxed);
  if (row >= 0 && gen == g_row_gen.load(std::memory_order_relaxed)) return row;
  // Slow path: first use in this process, or the region was rebuilt under us (its rows were wiped):
  // take a row and put back what this process holds, so the wall keeps counting it.
  while (g_claiming.exchange(1)) sched_yield();
  row = g_row.load();
  gen = h->generation.load();
  if (g_region.agent_rows) {
    // Under the node agent a row is the agent's to give: register again after a rebuild or a fork, at
    // most once a second while the agent does not answer (the caller refuses meanwhile).
    if (row < 0 || gen != g_row_gen.load() || g_rejoin.load()) {
      const int64_t now = NowNs();
      char err[256];
      if (now - g_last_join_ns.load() < 1000000000 && row < 0) {
        g_claiming.store(0);
        return -1;
      }
      g_last_join_ns.store(now);
      gen = h->generation.load();
      if (slice::RejoinAsMember(g_cfg, kAgentTimeoutMs, &g_region, err, sizeof(err))) {
        row = g_region.own_row;
        for (int g = 0; g < kMaxGpus; ++g) {
          h->rows[row].bytes[g].store(g_local_bytes[g].load());
          h->rows[row].overhead[g].store(g_local_overhead[g].load());
        }
        g_rejoin.store(0);
      } else {
        Notice("slice %s: %s", g_cfg.name, err);
        row = -1;
      }
      g_row_gen.store(gen);
      g_row.store(row, std::memory_order_release);
    }
    g_claiming.store(0);
    return row;
  }
  if (row < 0 || gen != g_row_gen.load()) {
    row = slice::ClaimRow(h);
    if (row >= 0) {
      for (int g = 0; g < kMaxGpus; ++g) {
        h->rows[row].bytes[g].store(g_local_bytes[g].load());
        h->rows[row].overhead[g].store(g_local_overhead[g].load());
      }
    }
    g_row_gen.store(gen);
    g_row.store(row, std::memory_order_release);
  }
  g_claiming.store(0);
  return row;
}

// Agent rows: maps the rows of processes that joined or left since the last look. One thread at a time;
// a thread that finds another at it goes on (ChargeRow looks again if it missed someone).
void RefreshAgentRows() {
  if (!g_region.agent_rows || g_refreshing.exchange(1)) return;
  slice::RefreshRows(&g_region);
  g_refreshing.store(0);
}

// Standalone the slice's processes reclaim dead rows themselves; under the node agent they cannot (and
// need not: the agent sweeps), they only follow the roster.
void ReclaimOrRefresh() {
  if (g_region.agent_rows) {
    RefreshAgentRows();
  } else {
    slice::ReclaimDead(g_region.hdr);
  }
}

// After a refusal: rows of dead processes may be what fills the slice. True when some were freed.
bool ReclaimNow() {
  if (!g_region.agent_rows) return slice::ReclaimDead(g_region.hdr) > 0;
  const bool freed = slice::AskAgentToReclaim(g_cfg.agent, 500) > 0;
  RefreshAgentRows();
  return freed;
}

// What a process holds is in its own books too: a row that shows less (written over by the process
// itself) is put back before anything is charged, so the sum the wall is held against includes it.
void FenceOwnRow(int row, int g, bool overhead) {
  std::atomic<uint64_t>& col = overhead ? g_region.hdr->rows[row].overhead[g] : g_region.hdr->rows[row].bytes[g];
  const uint64_t own = overhead ? g_local_overhead[g].load() : g_local_bytes[g].load();
  const uint64_t shown = col.load();
  if (shown < own) col.fetch_add(own - shown);
}

// TryCharge against the wall of the trusted config. Under the node agent, a process that joined between
// the roster check and the sum is not in the sum: seen afterwards, the charge is backed out and tried
// again with its row mapped.
slice::ChargeOutcome ChargeRow(int row, int g, uint64_t bytes, bool overhead) {
  slice::RegionHeader* h = g_region.hdr;
  const uint64_t wall = g_cfg.gpus[g].memory_bytes;
  slice::ChargeOutcome o{};
  for (int attempt = 0; attempt < 8; ++attempt) {
    RefreshAgentRows();
    FenceOwnRow(row, g, overhead);
    o = slice::TryCharge(h, row, g, bytes, overhead, wall);
    if (!g_region.agent_rows || o.result != slice::ChargeResult::kOk ||
        h->roster_gen.load() == g_region.mapped_gen)
      return o;
    slice::Uncharge(h, row, g, bytes, overhead);
  }
  o.result = slice::ChargeResult::kOverLimit;
  return o;
}

}  // namespace

ConfigLoad LoadConfigOnce(const slice::SliceConfig** cfg) {
  // Once per process, whoever asks first (the MPS set-up at library load, or the first hook).
  static std::atomic<int> state{0};  // 0 not yet, 1 loading, 2 done
  static ConfigLoad result = ConfigLoad::kNone;
  int expect = 0;
  if (state.compare_exchange_strong(expect, 1)) {
    // Inside a container the mounted config wins over anything the environment says.
    const char* path = slice::SliceConfigPath();
    if (!path) {
      result = ConfigLoad::kNone;
    } else {
      char err[256];
      if (slice::LoadSliceConfig(path, true, &g_cfg, err, sizeof(err))) {
        result = ConfigLoad::kOk;
      } else {
        snprintf(g_fail_reason, sizeof(g_fail_reason), "slice config unusable (%.200s)", err);
        result = ConfigLoad::kUnusable;
      }
    }
    state.store(2, std::memory_order_release);
  } else {
    while (state.load(std::memory_order_acquire) != 2) sched_yield();
  }
  *cfg = &g_cfg;
  return result;
}

namespace {

void DoInit() {
  const slice::SliceConfig* loaded = nullptr;
  const ConfigLoad load = LoadConfigOnce(&loaded);
  if (load == ConfigLoad::kNone) {
    Notice("no slice config (TESSERA_SLICE_CONFIG unset, %s absent): CUDA passes through without a memory wall",
           slice::kContainerSliceConfig);
    g_mode.store(static_cast<int>(Mode::kPassThrough), std::memory_order_release);
    return;
  }
  char err[256];
  if (load == ConfigLoad::kUnusable) {
    Notice("%s: refusing all GPU memory until it is fixed", g_fail_reason);
    g_mode.store(static_cast<int>(Mode::kFailClosed), std::memory_order_release);
    return;
  }
  const bool agent = g_cfg.agent[0] != '\0';
  if (agent ? !slice::OpenRegionAsMember(g_cfg, kAgentTimeoutMs, &g_region, err, sizeof(err))
            : !slice::OpenRegionForSlice(g_cfg, &g_region, err, sizeof(err))) {
    snprintf(g_fail_reason, sizeof(g_fail_reason), "slice %.63s: accounting region unusable (%.160s)", g_cfg.name, err);
    Notice("%s: refusing all GPU memory", g_fail_reason);
    g_mode.store(static_cast<int>(Mode::kFailClosed), std::memory_order_release);
    return;
  }
  pthread_atfork(nullptr, nullptr, &AtForkChild);
  if (agent) {
    g_row_gen.store(g_region.hdr->generation.load());
    g_row.store(g_region.own_row, std::memory_order_release);
    g_mode.store(static_cast<int>(Mode::kActive), std::memory_order_release);
    return;
  }
  // Processes of the slice that died since anyone last looked must not count against this one.
  slice::ReclaimDead(g_region.hdr);
  g_mode.store(static_cast<int>(Mode::kActive), std::memory_order_release);
  EnsureRow();
}

// ---- Reconciler ------------------------------------------------------------------------------------------

bool g_nvml_ok = false;
bool g_nvml_tried = false;

void ReconcileOnce() {
  if (!g_nvml_tried) {
    g_nvml_tried = true;
    g_nvml_ok = ResolveRealNvml() && g_real_nvml.nvmlInit_v2 && g_real_nvml.nvmlInit_v2() == NVML_SUCCESS &&
                g_real_nvml.nvmlDeviceGetHandleByUUID && g_real_nvml.nvmlDeviceGetComputeRunningProcesses_v3;
    if (!g_nvml_ok) Notice("NVML unavailable: context overhead stays at its estimate");
  }
  if (!g_nvml_ok) return;
  static nvmlProcessInfo_t infos[512];
  const unsigned self = static_cast<unsigned>(getpid());
  slice::RegionHeader* h = g_region.hdr;
  int row = EnsureRow();
  if (row < 0) return;
  // Which pid NVML gives this process depends on the driver: a recent one (580, measured) translates pids
  // into the caller's pid namespace, so getpid() matches even in a container; an older one lists host
  // pids, which the node agent publishes in the row (slice/host_pid.h). Either is accepted.
  const unsigned host = static_cast<unsigned>(slice::RowHostPid(h, row));
  for (int g = 0; g < g_cfg.gpu_count && g < kMaxGpus; ++g) {
    if (!g_ctx_charged[g].load()) continue;
    nvmlDevice_t dev;
    if (g_real_nvml.nvmlDeviceGetHandleByUUID(g_cfg.gpus[g].uuid, &dev) != NVML_SUCCESS) continue;
    // A driver figure is only comparable with our books if no allocation or free of this process was
    // half-way (charged but not yet made, or made but not yet charged) while it was taken.
    uint64_t ops_before = g_ops_done[g].load();
    if (g_inflight[g].load() != 0) continue;
    uint64_t tracked = g_local_bytes[g].load();
    unsigned count = 512;
    if (g_real_nvml.nvmlDeviceGetComputeRunningProcesses_v3(dev, &count, infos) != NVML_SUCCESS) continue;
    if (g_inflight[g].load() != 0 || g_ops_done[g].load() != ops_before || g_local_bytes[g].load() != tracked) continue;
    int pick = -1;
    for (unsigned i = 0; i < count && i < 512; ++i) {
      if (infos[i].usedGpuMemory == static_cast<unsigned long long>(NVML_VALUE_NOT_AVAILABLE)) continue;
      if (infos[i].pid != self && (host == 0 || infos[i].pid != host)) continue;
      // Both found (our container pid is also some other process's pid in the list): ours holds at least
      // what this process allocated and is the closest such figure.
      if (pick >= 0) {
        const unsigned long long a = infos[i].usedGpuMemory, b = infos[pick].usedGpuMemory;
        const bool a_fits = a >= tracked, b_fits = b >= tracked;
        if (a_fits != b_fits ? !a_fits : a >= b) continue;
      }
      pick = static_cast<int>(i);
    }
    if (pick >= 0) {
      const unsigned i = static_cast<unsigned>(pick);
      uint64_t used = infos[i].usedGpuMemory;
      uint64_t overhead = used > tracked ? used - tracked : 0;
      // used - tracked dips whenever a reservation is published before the driver shows it, or a free
      // is seen by the driver before our books: the context itself never goes away while the process
      // lives, so the overhead never drops below it. Until the driver has shown a whole context, that
      // floor is the estimate charged at creation: the driver shows a new context late and at first
      // only in part (14 MiB of a ~610 MiB context on an H100 with a second GPU visible).
      uint64_t ctx = g_ctx_size[g].load();
      if (ctx == 0 && overhead >= kMinContextSighting) {
        // First sight of a whole context at the driver: that is what a context costs on this GPU, the
        // estimate the next process of the slice will charge.
        ctx = overhead;
        g_ctx_size[g].store(ctx);
        uint64_t hint = h->gpus[g].ctx_hint_bytes.load();
        while (ctx > hint && ctx < (8ull << 30) && !h->gpus[g].ctx_hint_bytes.compare_exchange_weak(hint, ctx)) {
        }
      }
      uint64_t floor = ctx != 0 ? ctx : g_ctx_estimate[g].load();
      // Right after a context was created the driver's figure may still lag behind a context that has
      // been shown whole: for 2 s the estimate stays a floor too.
      if (NowNs() < g_ctx_floor_until[g].load()) floor = std::max(floor, g_ctx_estimate[g].load());
      if (overhead < floor) overhead = floor;
      g_local_overhead[g].store(overhead);
      slice::SetOverhead(h, row, g, overhead);
    }
  }
}

// One reconciliation at a time (the thread and a refused allocation may both want one).
bool ReconcileLocked(bool wait) {
  int expect = 0;
  while (!g_reconcile_lock.compare_exchange_weak(expect, 1)) {
    if (!wait) return false;
    expect = 0;
    sched_yield();
  }
  g_in_nvml.store(1);
  if (!g_stopping.load()) ReconcileOnce();
  g_in_nvml.store(0);
  g_reconcile_lock.store(0);
  return true;
}

// A refusal may rest on a stale overhead figure (a pool or graph cache that has since been trimmed):
// measure again before saying no, if this process has any overhead to re-measure.
bool RefreshOverheadForRetry(int g) {
  if (!g_nvml_ok || g_local_overhead[g].load() == 0) return false;
  uint64_t before = g_local_overhead[g].load();
  if (!ReconcileLocked(true)) return false;
  return g_local_overhead[g].load() < before;
}

uint64_t OverheadSum() {
  uint64_t s = 0;
  for (int g = 0; g < kMaxGpus; ++g) s += g_local_overhead[g].load();
  return s;
}
uint64_t OpsSum() {
  uint64_t s = 0;
  for (int g = 0; g < kMaxGpus; ++g) s += g_ops_done[g].load();
  return s;
}

// Measures every 100 ms while anything changes (allocations, a request, a moving driver figure) and
// backs off to once a second when the process is quiet: an NVML query costs CPU time the application
// may want (measured on an H100 VM with the benchmark pinned to one core).
void* ReconcilerMain(void*) {
  // Lowest CPU priority: on a core shared with the application's threads, they come first.
  setpriority(PRIO_PROCESS, static_cast<id_t>(gettid()), 19);
  constexpr int64_t kFast = 100000000, kSlow = 1000000000, kDuty = 200;
  int tick = 0;
  int64_t period = kFast, next = 0;
  uint64_t last_ops = ~0ull;
  for (;;) {
    timespec ts{0, 50 * 1000 * 1000};
    nanosleep(&ts, nullptr);
    if (g_stopping.load()) return nullptr;
    ++tick;
    if (tick % 4 == 0) ReclaimOrRefresh();  // dead processes' rows: back within ~200 ms
    int64_t now = NowNs();
    uint64_t ops = OpsSum();
    bool req = g_reconcile_req.exchange(0) != 0;
    if (req || ops != last_ops) period = kFast;
    if (!req && now < next) continue;
    uint64_t before = OverheadSum();
    timespec c0, c1;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &c0);
    ReconcileLocked(false);
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &c1);
    if (!req && ops == last_ops && OverheadSum() == before) period = period * 2 > kSlow ? kSlow : period * 2;
    last_ops = ops;
    // However busy the process is, the queries take at most 1/kDuty of a core: where NVML is slow the
    // application (often pinned to the same core) keeps its time.
    const int64_t cost = (c1.tv_sec - c0.tv_sec) * 1000000000 + (c1.tv_nsec - c0.tv_nsec);
    next = now + (period > cost * kDuty ? period : cost * kDuty);
  }
}

void StopReconciler() {
  // Runs from exit(): keep libnvidia-ml's own teardown from racing an NVML call in our thread.
  g_stopping.store(1);
  int64_t until = NowNs() + 200000000;
  while (g_in_nvml.load() && NowNs() < until) sched_yield();
}

void StartReconciler() {
  int expect = 0;
  if (!g_thread_state.compare_exchange_strong(expect, 1)) return;
  static std::atomic<int> atexit_done{0};
  if (!atexit_done.exchange(1)) atexit(&StopReconciler);
  pthread_attr_t attr;
  pthread_attr_init(&attr);
  pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
  pthread_attr_setstacksize(&attr, 256 * 1024);
  // The application's signals belong to its own threads.
  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &old);
  pthread_t t;
  if (pthread_create(&t, &attr, &ReconcilerMain, nullptr) != 0) g_thread_state.store(0);
  pthread_sigmask(SIG_SETMASK, &old, nullptr);
  pthread_attr_destroy(&attr);
}

}  // namespace

void Notice(const char* fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  VWriteLine(fmt, ap);
  va_end(ap);
}

void EnsureInit() {
  if (g_init_state.load(std::memory_order_acquire) == 2) return;
  if (t_in_init) return;  // re-entered from inside init (e.g. dlopen of libcuda calling back)
  int expect = 0;
  if (g_init_state.compare_exchange_strong(expect, 1)) {
    t_in_init = 1;
    DoInit();
    t_in_init = 0;
    g_init_state.store(2, std::memory_order_release);
    return;
  }
  while (g_init_state.load(std::memory_order_acquire) != 2) sched_yield();
}

const slice::SliceConfig& Config() { return g_cfg; }
slice::RegionHeader* RegionHdr() { return g_region.hdr; }

int GpuOfDevice(CUdevice dev) {
  if (dev < 0 || dev >= kMaxOrdinals) return kGpuUnknown;
  int v = g_devmap[dev].load(std::memory_order_relaxed);
  if (v != 0) return v == 1000 ? kGpuNotInSlice : v - 1;
  CUuuid u;
  auto get = g_real.cuDeviceGetUuid_v2 ? g_real.cuDeviceGetUuid_v2 : g_real.cuDeviceGetUuid;
  if (!get || get(&u, dev) != CUDA_SUCCESS) return kGpuUnknown;
  char s[48];
  FormatUuid(u, s);
  int g = slice::FindGpu(g_cfg, s);
  g_devmap[dev].store(g < 0 ? 1000 : g + 1, std::memory_order_relaxed);
  return g < 0 ? kGpuNotInSlice : g;
}

int CurrentGpu() {
  CUdevice dev;
  if (!g_real.cuCtxGetDevice || g_real.cuCtxGetDevice(&dev) != CUDA_SUCCESS) return kGpuUnknown;
  return GpuOfDevice(dev);
}

void ReportRefusal(int g, uint64_t asked, const char* api, const char* why) {
  uint64_t suppressed = 0;
  if (!TakeReportSlot(&suppressed)) return;
  char a[32];
  FormatBytes(asked, a, sizeof(a));
  Notice("slice %s: %s of %s refused with CUDA_ERROR_OUT_OF_MEMORY: %s%s", g_cfg.name[0] ? g_cfg.name : "?", api, a,
         why, suppressed ? " (more refusals since the last line)" : "");
}

bool Charge(int g, uint64_t bytes, uint64_t asked, const char* api) {
  if (CurrentMode() == Mode::kFailClosed) {
    ReportRefusal(g, asked, api, g_fail_reason);
    return false;
  }
  int row = EnsureRow();
  if (row < 0) {
    ReportRefusal(g, asked, api, "no free process row in the slice region (256 processes)");
    return false;
  }
  slice::ChargeOutcome o = ChargeRow(row, g, bytes, false);
  if (o.result != slice::ChargeResult::kOk && ReclaimNow()) o = ChargeRow(row, g, bytes, false);
  if (o.result != slice::ChargeResult::kOk && RefreshOverheadForRetry(g)) o = ChargeRow(row, g, bytes, false);
  if (o.result == slice::ChargeResult::kOk) {
    g_local_bytes[g].fetch_add(bytes);
    return true;
  }
  uint64_t suppressed = 0;
  if (TakeReportSlot(&suppressed)) {
    char lim[32], used[32], ask[32];
    FormatBytes(o.limit, lim, sizeof(lim));
    FormatBytes(o.used_before, used, sizeof(used));
    FormatBytes(asked, ask, sizeof(ask));
    Notice("slice %s: out of GPU memory on %s: limit %s, used %s, asked %s (%s); returning CUDA_ERROR_OUT_OF_MEMORY%s",
           g_cfg.name, g_cfg.gpus[g].uuid, lim, used, ask, api,
           suppressed ? " (further refusals since the last line not shown)" : "");
  }
  return false;
}

void Uncharge(int g, uint64_t bytes) {
  if (g < 0 || g >= kMaxGpus) return;
  int row = g_row.load(std::memory_order_acquire);
  if (row < 0 || !g_region.hdr) return;
  // Own books first, then the row: the row never shows less than the books (FenceOwnRow).
  uint64_t cur = g_local_bytes[g].load();
  while (!g_local_bytes[g].compare_exchange_weak(cur, cur > bytes ? cur - bytes : 0)) {
  }
  slice::Uncharge(g_region.hdr, row, g, bytes, false);
}

bool ContextBefore(int g, const char* api, bool* charged_estimate) {
  *charged_estimate = false;
  if (g < 0 || CurrentMode() != Mode::kActive) return CurrentMode() != Mode::kFailClosed || g < 0;
  if (g_ctx_charged[g].exchange(1)) return true;  // this process already pays for a context here
  slice::RegionHeader* h = g_region.hdr;
  int row = EnsureRow();
  if (row < 0) {
    g_ctx_charged[g].store(0);
    return true;
  }
  uint64_t est = h->gpus[g].ctx_hint_bytes.load();
  if (est == 0) est = kDefaultCtxEstimate;
  slice::ChargeOutcome o = ChargeRow(row, g, est, true);
  if (o.result != slice::ChargeResult::kOk && ReclaimNow()) o = ChargeRow(row, g, est, true);
  if (o.result != slice::ChargeResult::kOk) {
    g_ctx_charged[g].store(0);
    uint64_t suppressed = 0;
    if (TakeReportSlot(&suppressed)) {
      char lim[32], used[32], ask[32];
      FormatBytes(o.limit, lim, sizeof(lim));
      FormatBytes(o.used_before, used, sizeof(used));
      FormatBytes(est, ask, sizeof(ask));
      Notice("slice %s: a CUDA context on %s does not fit: limit %s, used %s, context needs about %s (%s); "
             "returning CUDA_ERROR_OUT_OF_MEMORY",
             g_cfg.name, g_cfg.gpus[g].uuid, lim, used, ask, api);
    }
    return false;
  }
  g_local_overhead[g].store(est);
  g_ctx_estimate[g].store(est);
  g_ctx_floor_until[g].store(NowNs() + 2000000000);
  *charged_estimate = true;
  return true;
}

void ContextAfter(int g, bool charged_estimate, CUresult result) {
  if (g < 0 || CurrentMode() != Mode::kActive) return;
  if (result != CUDA_SUCCESS) {
    if (charged_estimate) {
      int row = g_row.load();
      if (row >= 0) slice::SetOverhead(g_region.hdr, row, g, 0);
      g_local_overhead[g].store(0);
      g_ctx_charged[g].store(0);
    }
    return;
  }
  StartReconciler();
  RequestReconcile();
}

void RequestReconcile() { g_reconcile_req.store(1); }

void OpBegin(int g) {
  if (g >= 0 && g < kMaxGpus) g_inflight[g].fetch_add(1);
}
void OpEnd(int g) {
  if (g < 0 || g >= kMaxGpus) return;
  g_ops_done[g].fetch_add(1);
  g_inflight[g].fetch_sub(1);
}

void SliceMemInfo(int g, uint64_t* limit, uint64_t* used) {
  slice::GpuUsage u = slice::ReadGpuUsage(g_region.hdr, g);
  *limit = u.limit_bytes;
  *used = u.used_bytes;
}

// ---- Allocation table ---------------------------------------------------------------------------------------

namespace {
struct Slot {
  std::atomic<uint64_t> key;
  std::atomic<uint64_t> val;  // bytes << 8 | gpu
};
constexpr uint64_t kCap = 1ull << 20;
constexpr uint64_t kEmpty = 0;
constexpr uint64_t kTomb = ~0ull;
constexpr int kMaxProbe = 1 << 14;
std::atomic<Slot*> g_table{nullptr};

Slot* Table() {
  Slot* t = g_table.load(std::memory_order_acquire);
  if (t) return t;
  // An anonymous mapping, not the application's heap; pages are touched only as slots are used.
  void* p = mmap(nullptr, kCap * sizeof(Slot), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (p == MAP_FAILED) return nullptr;
  Slot* expect = nullptr;
  if (!g_table.compare_exchange_strong(expect, static_cast<Slot*>(p))) {
    munmap(p, kCap * sizeof(Slot));
    return expect;
  }
  return static_cast<Slot*>(p);
}

uint64_t MakeKey(Kind kind, uint64_t key) { return key ^ (static_cast<uint64_t>(kind) << 58); }
uint64_t Mix(uint64_t k) {
  k ^= k >> 33;
  k *= 0xff51afd7ed558ccdull;
  k ^= k >> 33;
  return k;
}
}  // namespace

bool TrackAlloc(Kind kind, uint64_t key, uint64_t bytes, int g) {
  Slot* t = Table();
  if (!t) return false;
  uint64_t k = MakeKey(kind, key);
  if (k == kEmpty || k == kTomb) k ^= 2;
  uint64_t i = Mix(k);
  for (int probe = 0; probe < kMaxProbe; ++probe, ++i) {
    Slot& s = t[i & (kCap - 1)];
    uint64_t cur = s.key.load(std::memory_order_acquire);
    if ((cur == kEmpty || cur == kTomb) && s.key.compare_exchange_strong(cur, k)) {
      s.val.store(bytes << 8 | static_cast<uint64_t>(g & 0xff), std::memory_order_release);
      return true;
    }
  }
  return false;
}

bool UntrackAlloc(Kind kind, uint64_t key, uint64_t* bytes, int* g) {
  Slot* t = g_table.load(std::memory_order_acquire);
  if (!t) return false;
  uint64_t k = MakeKey(kind, key);
  if (k == kEmpty || k == kTomb) k ^= 2;
  uint64_t i = Mix(k);
  for (int probe = 0; probe < kMaxProbe; ++probe, ++i) {
    Slot& s = t[i & (kCap - 1)];
    uint64_t cur = s.key.load(std::memory_order_acquire);
    if (cur == kEmpty) return false;
    if (cur != k) continue;
    uint64_t v = s.val.exchange(0);
    if (!s.key.compare_exchange_strong(cur, kTomb)) continue;  // lost a race with another free of it
    *bytes = v >> 8;
    *g = static_cast<int>(v & 0xff);
    return true;
  }
  return false;
}

}  // namespace tessera::shim
