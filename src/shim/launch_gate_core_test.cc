// The gate against a simulated GPU and a virtual clock: kernels have exact lengths, timing events get
// the time their stream reaches them, and sleeping advances the clock. This checks the whole loop
// (estimate -> admission -> events -> harvest -> correction) without a GPU and without real time.
#include "shim/launch_gate_core.h"

#include <gtest/gtest.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <functional>
#include <map>
#include <vector>

namespace tessera::shim {
namespace {

constexpr int64_t kMs = 1'000'000;
constexpr int64_t kUs = 1'000;

// ---- simulated device -------------------------------------------------------------------------------
struct FakeEvent {
  bool recorded = false;
  int64_t ts = 0;
};
struct Interval {
  int64_t start, end;
  int tag;
};
struct Sim {
  int64_t now = 0;
  bool exclusive = true;  // contexts never overlap (time-sliced GPU); streams of one context may
  int64_t device_free = 0;
  std::map<CUstream, int64_t> stream_free;
  CUcontext current = reinterpret_cast<CUcontext>(0x1000);
  unsigned char uuid_byte = 0xab;
  std::vector<Interval> kernels;
  std::vector<Gate*> harvesters;  // gates whose background threads we simulate
  std::function<void()> on_tick;  // other "processes" acting while this one sleeps
  std::vector<std::unique_ptr<FakeEvent>> events;

  int64_t launch_overhead = 0;  // GPU time an isolated launch costs before its work starts
  int64_t switch_cost = 0;      // exclusive device: switching to another context's kernel
  CUcontext last_ctx = nullptr;
  int64_t Launch(CUstream s, int64_t len, int tag) {
    int64_t start = std::max(now, stream_free[s]);
    if (exclusive) start = std::max(start, device_free);
    if (exclusive && tag >= 0) {
      if (last_ctx != nullptr && last_ctx != current) start += switch_cost;
      last_ctx = current;
    }
    // A launch queued behind earlier work on its stream has its latency hidden.
    if (start == now || start > stream_free[s]) start += launch_overhead;
    const int64_t end = start + len;
    stream_free[s] = end;
    device_free = std::max(device_free, end);
    if (tag >= 0) kernels.push_back({start, end, tag});
    return end;
  }
  // GPU time of tag (or all tags with -1) inside [a, b), union over overlapping kernels.
  int64_t Busy(int64_t a, int64_t b, int tag = -1) const {
    std::vector<std::pair<int64_t, int64_t>> iv;
    for (auto& k : kernels) {
      if (tag >= 0 && k.tag != tag) continue;
      const int64_t s = std::max(k.start, a), e = std::min(k.end, b);
      if (e > s) iv.push_back({s, e});
    }
    std::sort(iv.begin(), iv.end());
    int64_t total = 0, cur_s = 0, cur_e = -1;
    for (auto& [s, e] : iv) {
      if (s > cur_e) {
        if (cur_e > cur_s) total += cur_e - cur_s;
        cur_s = s;
        cur_e = e;
      } else {
        cur_e = std::max(cur_e, e);
      }
    }
    if (cur_e > cur_s) total += cur_e - cur_s;
    return total;
  }
};
Sim* g_sim = nullptr;

CUresult FCtxGetCurrent(CUcontext* c) {
  *c = g_sim->current;
  return CUDA_SUCCESS;
}
CUresult FCtxSetCurrent(CUcontext) { return CUDA_SUCCESS; }
CUresult FCtxGetDevice(CUdevice* d) {
  *d = 0;
  return CUDA_SUCCESS;
}
CUresult FDeviceGetUuid(CUuuid* u, CUdevice) {
  std::memset(u->bytes, g_sim->uuid_byte, sizeof(u->bytes));
  return CUDA_SUCCESS;
}
CUresult FEventCreate(CUevent* e, unsigned int) {
  g_sim->events.push_back(std::make_unique<FakeEvent>());
  *e = reinterpret_cast<CUevent>(g_sim->events.back().get());
  return CUDA_SUCCESS;
}
CUresult FEventRecord(CUevent e, CUstream s) {
  auto* ev = reinterpret_cast<FakeEvent*>(e);
  ev->recorded = true;
  ev->ts = std::max(g_sim->now, g_sim->stream_free[s]);
  // On an exclusive (time-sliced) device a context's commands are processed only once it runs.
  if (g_sim->exclusive && g_sim->switch_cost > 0) ev->ts = std::max(ev->ts, g_sim->device_free);
  return CUDA_SUCCESS;
}
CUresult FEventQuery(CUevent e) {
  auto* ev = reinterpret_cast<FakeEvent*>(e);
  return !ev->recorded || ev->ts <= g_sim->now ? CUDA_SUCCESS : CUDA_ERROR_NOT_READY;
}
CUresult FEventElapsed(float* ms, CUevent a, CUevent b) {
  auto* ea = reinterpret_cast<FakeEvent*>(a);
  auto* eb = reinterpret_cast<FakeEvent*>(b);
  if (ea->ts > g_sim->now || eb->ts > g_sim->now) return CUDA_ERROR_NOT_READY;
  *ms = static_cast<float>(static_cast<double>(eb->ts - ea->ts) / 1e6);
  return CUDA_SUCCESS;
}
CUresult FIsCapturing(CUstream s, CUstreamCaptureStatus* st) {
  *st =
      s == reinterpret_cast<CUstream>(0x99) ? CU_STREAM_CAPTURE_STATUS_ACTIVE : CU_STREAM_CAPTURE_STATUS_NONE;
  return CUDA_SUCCESS;
}
CUresult FEventSync(CUevent e) {
  auto* ev = reinterpret_cast<FakeEvent*>(e);
  g_sim->now = std::max(g_sim->now, ev->ts);
  return CUDA_SUCCESS;
}
CUresult FEventDestroy(CUevent) { return CUDA_SUCCESS; }
CUresult FStreamCreate(CUstream* s, unsigned int) {
  static uintptr_t next = 0x5000;
  *s = reinterpret_cast<CUstream>(next++);
  return CUDA_SUCCESS;
}
CUresult FStreamDestroy(CUstream) { return CUDA_SUCCESS; }
CUresult FModuleLoad(CUmodule* m, const void* image) {
  *m = reinterpret_cast<CUmodule>(0x77);
  return std::strstr(static_cast<const char*>(image), ".entry tessera_nop") ? CUDA_SUCCESS
                                                                            : CUDA_ERROR_INVALID_PTX;
}
CUresult FModuleUnload(CUmodule) { return CUDA_SUCCESS; }
CUresult FModuleGetFunction(CUfunction* f, CUmodule, const char*) {
  *f = reinterpret_cast<CUfunction>(0x78);
  return CUDA_SUCCESS;
}
CUresult FLaunch(CUfunction, unsigned int, unsigned int, unsigned int, unsigned int, unsigned int,
                 unsigned int, unsigned int, CUstream s, void**, void**) {
  g_sim->Launch(s, 0, -1);
  return CUDA_SUCCESS;
}
int64_t FNow() { return g_sim->now; }
void FSleep(int64_t ns) {
  while (ns > 0) {
    const int64_t step = std::min<int64_t>(ns, 10'000);
    g_sim->now += step;
    ns -= step;
    if (g_sim->on_tick) g_sim->on_tick();
    for (Gate* g : g_sim->harvesters) g->HarvestOnce();
  }
}

GateDriver FakeDriver() {
  return GateDriver{&FCtxGetCurrent,     &FCtxSetCurrent, &FCtxGetDevice,  &FDeviceGetUuid, &FEventCreate,
                    &FEventRecord,       &FEventQuery,    &FEventElapsed,  &FIsCapturing,   &FEventSync,
                    &FEventDestroy,      &FStreamCreate,  &FStreamDestroy, &FModuleLoad,    &FModuleUnload,
                    &FModuleGetFunction, &FLaunch};
}
std::string FakeUuid(unsigned char b) {
  char out[64];
  std::snprintf(out, sizeof(out), "GPU-%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x",
                b, b, b, b, b, b, b, b, b, b, b, b, b, b, b, b);
  return out;
}

struct SimTest : ::testing::Test {
  Sim sim;
  void SetUp() override { g_sim = &sim; }
  void TearDown() override { g_sim = nullptr; }
  GateGpu Gpu(int cores, std::atomic<int64_t>* tat = nullptr, bool burst = false) {
    GateGpu g;
    g.uuid = FakeUuid(sim.uuid_byte);
    g.cap.share_ppm = cores * 10'000;
    g.cap.burst = burst;
    g.tat = tat;
    return g;
  }
  GateOptions Opts(int priority = 1) {
    GateOptions o;
    o.priority = priority;
    o.background_harvester = false;
    o.slice = "test";
    return o;
  }
  // One greedy submitter: launches kernels of `len` on `stream` until the clock passes `until`.
  void Submit(Gate& g, CUstream stream, int64_t len, int tag, int64_t until) {
    while (sim.now < until) {
      g.Before(stream);
      sim.Launch(stream, len, tag);
      g.After(stream, CUDA_SUCCESS);
      sim.now += 5 * kUs;  // host cost of a launch
      for (Gate* h : sim.harvesters) h->HarvestOnce();
    }
  }
};

CUstream S(int i) { return reinterpret_cast<CUstream>(static_cast<uintptr_t>(0x10 + i)); }

TEST_F(SimTest, CapHoldsForEveryShareAndKernelLength) {
  for (int cores : {10, 25, 50, 75}) {
    for (int64_t len : {kMs / 20, kMs / 10, 2 * kMs, 10 * kMs}) {
      sim = Sim();
      Gate g(FakeDriver(), GateClock{&FNow, &FSleep}, Opts(), {Gpu(cores)});
      sim.harvesters = {&g};
      Submit(g, S(0), len, 0, 12'000 * kMs);
      // Every 1 s window after the first second: share within 3 points.
      for (int64_t w = 1'000 * kMs; w + 1'000 * kMs <= 12'000 * kMs; w += 250 * kMs) {
        const double share = 100.0 * sim.Busy(w, w + 1'000 * kMs) / (1'000.0 * kMs);
        EXPECT_NEAR(share, cores, 3.0) << "cores " << cores << " len " << len << " window " << w;
      }
    }
  }
}

// Isolated short kernels pay a launch latency that a flat-out queue hides. The gate measures that
// floor once per context (a no-op kernel) and charges the work, so the work rate matches the cap.
TEST_F(SimTest, ChargesWorkNotLaunchLatency) {
  for (bool calibrate : {false, true}) {
    sim = Sim();
    sim.launch_overhead = 5 * kUs;
    Gate g(FakeDriver(), GateClock{&FNow, &FSleep}, Opts(), {Gpu(75)});
    sim.harvesters = {&g};
    g.Before(S(0));
    sim.Launch(S(0), 100 * kUs, 0);
    g.After(S(0), CUDA_SUCCESS);
    sim.now += kMs;
    g.HarvestOnce();
    if (calibrate) {
      for (int i = 0; i < 12; ++i) g.CalibratePending();
    }
    EXPECT_NEAR(g.LaunchFloorNs(), calibrate ? 5 * kUs : 0, 10);
    Submit(g, S(0), 100 * kUs, 0, 6'000 * kMs);
    const double work = 100.0 * sim.Busy(1'000 * kMs, 6'000 * kMs) / (5'000.0 * kMs);
    // Bursts hide most launch latency; the floor removes what is left.
    if (calibrate) {
      EXPECT_NEAR(work, 75.0, 1.0);
    } else {
      EXPECT_GT(work, 75.0 * 100 / 105 - 0.5);
      EXPECT_LT(work, 75.0 + 0.5);
    }
  }
}

TEST_F(SimTest, MeasuresUnionAcrossStreams) {
  sim.exclusive = false;
  Gate g(FakeDriver(), GateClock{&FNow, &FSleep}, Opts(), {Gpu(50)});
  sim.harvesters = {&g};
  // Two streams, kernels overlapping in time: charged as the union, not the sum.
  int64_t until = 5'000 * kMs;
  while (sim.now < until) {
    for (int s = 0; s < 2; ++s) {
      g.Before(S(s));
      sim.Launch(S(s), 2 * kMs, 0);
      g.After(S(s), CUDA_SUCCESS);
    }
    sim.now += 5 * kUs;
  }
  sim.now += 100 * kMs;
  g.HarvestOnce();
  const double union_busy = static_cast<double>(sim.Busy(0, sim.now));
  EXPECT_NEAR(g.MeasuredNs(0) / union_busy, 1.0, 0.01);
  EXPECT_NEAR(100.0 * sim.Busy(1'000 * kMs, 4'000 * kMs) / (3'000.0 * kMs), 50.0, 3.0);
}

TEST_F(SimTest, ProcessesOfASliceShareOneBudget) {
  std::atomic<int64_t> shared_tat{0};
  Gate a(FakeDriver(), GateClock{&FNow, &FSleep}, Opts(), {Gpu(30, &shared_tat)});
  Gate b(FakeDriver(), GateClock{&FNow, &FSleep}, Opts(), {Gpu(30, &shared_tat)});
  sim.harvesters = {&a, &b};
  const CUcontext ca = reinterpret_cast<CUcontext>(0x1000), cb = reinterpret_cast<CUcontext>(0x2000);
  // Alternate the two "processes" (contexts); each is greedy.
  while (sim.now < 8'000 * kMs) {
    sim.current = ca;
    a.Before(S(0));
    sim.Launch(S(0), kMs, 0);
    a.After(S(0), CUDA_SUCCESS);
    sim.current = cb;
    b.Before(S(1));
    sim.Launch(S(1), 3 * kMs, 1);
    b.After(S(1), CUDA_SUCCESS);
    sim.now += 5 * kUs;
  }
  const double share = 100.0 * sim.Busy(1'000 * kMs, 7'000 * kMs) / (6'000.0 * kMs);
  EXPECT_NEAR(share, 30.0, 3.0);
}

// Spatial (MPS) mode: one process alone on its 25 % partition runs flat out; two processes of the
// same slice, running side by side, share the slice's 25 % between them.
TEST_F(SimTest, SpatialModeSharesThePartitionAcrossProcesses) {
  sim.exclusive = false;
  GateOptions o = Opts();
  o.spatial = true;
  o.spatial_ppm = 250'000;
  std::atomic<int64_t> tat{0};
  {
    Gate a(FakeDriver(), GateClock{&FNow, &FSleep}, o, {Gpu(25, &tat)});
    sim.harvesters = {&a};
    Submit(a, S(0), 2 * kMs, 0, 3'000 * kMs);
    EXPECT_NEAR(sim.Busy(1'000 * kMs, 3'000 * kMs, 0) / (2'000.0 * kMs), 1.0, 0.02);
  }
  sim = Sim();
  sim.exclusive = false;
  tat.store(0);
  Gate a(FakeDriver(), GateClock{&FNow, &FSleep}, o, {Gpu(25, &tat)});
  Gate b(FakeDriver(), GateClock{&FNow, &FSleep}, o, {Gpu(25, &tat)});
  sim.harvesters = {&a, &b};
  const CUcontext ca = reinterpret_cast<CUcontext>(0x1000), cb = reinterpret_cast<CUcontext>(0x2000);
  while (sim.now < 6'000 * kMs) {
    sim.current = ca;
    a.Before(S(0));
    sim.Launch(S(0), 2 * kMs, 0);
    a.After(S(0), CUDA_SUCCESS);
    sim.current = cb;
    b.Before(S(1));
    sim.Launch(S(1), 2 * kMs, 1);
    b.After(S(1), CUDA_SUCCESS);
    sim.now += 5 * kUs;
  }
  // Partition-time of both processes together: one partition's worth, not two.
  const double both =
      (sim.Busy(1'000 * kMs, 6'000 * kMs, 0) + sim.Busy(1'000 * kMs, 6'000 * kMs, 1)) / (5'000.0 * kMs);
  EXPECT_NEAR(both, 1.0, 0.05);
}

// Two processes of one slice take turns of ~1 ms (every switch between their contexts costs GPU time
// that lands in a bracket); a turn never outlives its 1 ms, so a dead owner delays nobody for long.
TEST_F(SimTest, ProcessesOfASliceTakeTurns) {
  std::atomic<int64_t> tat{0}, until{0};
  std::atomic<uint64_t> owner{0};
  GateGpu ga = Gpu(50, &tat), gb = Gpu(50, &tat);
  ga.turn_owner = gb.turn_owner = &owner;
  ga.turn_until = gb.turn_until = &until;
  Gate a(FakeDriver(), GateClock{&FNow, &FSleep}, Opts(), {ga});
  Gate b(FakeDriver(), GateClock{&FNow, &FSleep}, Opts(), {gb});
  sim.harvesters = {&a, &b};
  const CUcontext ca = reinterpret_cast<CUcontext>(0x1000), cb = reinterpret_cast<CUcontext>(0x2000);
  sim.now = 100 * kMs;
  sim.exclusive = false;
  sim.current = ca;
  a.Before(S(0));
  sim.Launch(S(0), 10 * kUs, 0);
  a.After(S(0), CUDA_SUCCESS);
  const uint64_t a_owner = owner.load();
  EXPECT_NE(a_owner, 0u);
  EXPECT_EQ(until.load(), 100 * kMs + 2 * kMs);  // turns of 2 ms
  sim.now += 20 * kUs;                           // the first bracket completes: the cost is known
  a.HarvestOnce();
  // a again within its turn: no wait.
  a.Before(S(0));
  sim.Launch(S(0), 10 * kUs, 0);
  a.After(S(0), CUDA_SUCCESS);
  EXPECT_EQ(sim.now, 100 * kMs + 20 * kUs);
  // b waits for the end of a's turn, then holds the next one.
  sim.current = cb;
  b.Before(S(1));
  sim.Launch(S(1), 10 * kUs, 1);
  b.After(S(1), CUDA_SUCCESS);
  EXPECT_GE(sim.now, 102 * kMs);
  EXPECT_LT(sim.now, 104 * kMs);
  EXPECT_NE(owner.load(), a_owner);
  // A turn held by a process that died: at most 1 ms of delay.
  owner.store(0x1234);
  until.store(sim.now + kMs);
  const int64_t t0 = sim.now;
  sim.current = ca;
  a.Before(S(0));
  a.After(S(0), CUDA_SUCCESS);
  EXPECT_LE(sim.now - t0, kMs + 50 * kUs);
  EXPECT_EQ(owner.load(), a_owner);
}

TEST_F(SimTest, CapturedLaunchesAreNotGated) {
  Gate g(FakeDriver(), GateClock{&FNow, &FSleep}, Opts(), {Gpu(10)});
  for (int i = 0; i < 100; ++i) {
    g.Before(reinterpret_cast<CUstream>(0x99));
    g.After(reinterpret_cast<CUstream>(0x99), CUDA_SUCCESS);
  }
  EXPECT_EQ(sim.now, 0);
  EXPECT_EQ(g.Stats().tracked, 0u);
}

TEST_F(SimTest, FailedLaunchIsRefunded) {
  Gate g(FakeDriver(), GateClock{&FNow, &FSleep}, Opts(), {Gpu(50)});
  sim.harvesters = {&g};
  // Learn the cost first.
  g.Before(S(0));
  sim.Launch(S(0), 4 * kMs, 0);
  g.After(S(0), CUDA_SUCCESS);
  sim.now += 10 * kMs;
  g.HarvestOnce();
  const int64_t before = g.MeasuredNs(0);
  for (int i = 0; i < 50; ++i) {
    g.Before(S(0));
    g.After(S(0), CUDA_ERROR_INVALID_VALUE);  // nothing ran
  }
  g.HarvestOnce();
  EXPECT_EQ(g.MeasuredNs(0), before);
  // The estimates charged for failed launches were given back: the clock moved ~ one estimate only.
  EXPECT_LT(sim.now, 40 * kMs);
}

TEST_F(SimTest, UnlistedGpuAndUncappedBestEffortPassThrough) {
  Gate g(FakeDriver(), GateClock{&FNow, &FSleep}, Opts(), {Gpu(100)});
  GateGpu other = Gpu(10);
  other.uuid = FakeUuid(0x11);  // the slice caps a GPU this process does not use
  Gate h(FakeDriver(), GateClock{&FNow, &FSleep}, Opts(), {other});
  for (int i = 0; i < 100; ++i) {
    g.Before(S(0));
    sim.Launch(S(0), kMs, 0);
    g.After(S(0), CUDA_SUCCESS);
    h.Before(S(0));
    sim.Launch(S(0), kMs, 0);
    h.After(S(0), CUDA_SUCCESS);
  }
  EXPECT_EQ(g.Stats().tracked, 0u);
  EXPECT_EQ(h.Stats().tracked, 0u);
  EXPECT_EQ(sim.now, 0);
}

// ---- priority -----------------------------------------------------------------------------------------

struct PriorityTest : SimTest {
  std::string path;
  std::shared_ptr<slice::NodeRegion> node;
  void SetUp() override {
    SimTest::SetUp();
    char tmpl[] = "/tmp/tessera-node-XXXXXX";
    int fd = mkstemp(tmpl);
    ASSERT_GE(fd, 0);
    close(fd);
    unlink(tmpl);
    path = tmpl;
    std::string err;
    node = slice::NodeRegion::Open(path, &err);
    ASSERT_TRUE(node) << err;
  }
  void TearDown() override {
    node.reset();
    unlink(path.c_str());
    unlink((path + ".high").c_str());
    SimTest::TearDown();
  }
};

// High priority issues a 50 us kernel every 1 ms from its own "process" (also while best effort is
// blocked in Before); best effort floods kernels of `be_len` for 2 s. Returns how long each
// high-priority kernel waited for the GPU, in order; `be_kernels` counts best effort's kernels.
struct PeriodicRun {
  std::vector<int64_t> waits;
  int be_kernels = 0;
  int max_be_inflight = 0;
  uint64_t be_priority_waits = 0;
  int64_t be_busy = 0;
  int64_t duration = 0;
};
PeriodicRun RunPeriodic(Sim& sim, std::shared_ptr<slice::NodeRegion> node, GateGpu hg, GateGpu bg,
                        GateOptions ho, GateOptions bo, int64_t be_len) {
  PeriodicRun out;
  sim.now = 10 * kMs;
  const int64_t t0 = sim.now;
  hg.node = node;
  bg.node = node;
  Gate high(FakeDriver(), GateClock{&FNow, &FSleep}, ho, {hg});
  Gate be(FakeDriver(), GateClock{&FNow, &FSleep}, bo, {bg});
  sim.harvesters = {&high, &be};
  sim.exclusive = true;
  const CUcontext ch = reinterpret_cast<CUcontext>(0x1000), cbe = reinterpret_cast<CUcontext>(0x2000);
  int64_t next_high = sim.now;
  bool in_high = false;
  sim.on_tick = [&] {
    if (in_high || sim.now < next_high) return;
    in_high = true;
    const CUcontext saved = sim.current;
    sim.current = ch;
    high.Before(S(0));
    const int64_t submitted = sim.now;
    const int64_t end = sim.Launch(S(0), 50 * kUs, 0);
    high.After(S(0), CUDA_SUCCESS);
    out.waits.push_back(end - submitted - 50 * kUs);
    next_high += kMs;
    sim.current = saved;
    in_high = false;
  };
  while (sim.now < t0 + 2'000 * kMs) {
    sim.on_tick();
    sim.current = cbe;
    be.Before(S(1));
    sim.Launch(S(1), be_len, 1);
    be.After(S(1), CUDA_SUCCESS);
    ++out.be_kernels;
    out.max_be_inflight = std::max(out.max_be_inflight, be.InFlightCurrent());
    FSleep(10 * kUs);
  }
  sim.on_tick = nullptr;
  out.be_priority_waits = be.Stats().priority_waits;
  out.duration = sim.now - t0;
  out.be_busy = sim.Busy(t0, sim.now, 1);
  sim.harvesters.clear();
  return out;
}

TEST_F(PriorityTest, BestEffortKeepsOneKernelInFlightWhileHighPriorityIsActive) {
  // Best effort floods 5 ms kernels beside the 1 kHz high-priority tenant.
  PeriodicRun r = RunPeriodic(sim, node, Gpu(100), Gpu(100), Opts(0), Opts(1), 5 * kMs);
  ASSERT_FALSE(r.waits.empty());
  // The worst case is one best-effort kernel (5 ms) plus the high-priority tenant's own kernels
  // queued behind it (at most 5 of 50 us each), never a queue of best-effort kernels.
  EXPECT_LE(*std::max_element(r.waits.begin(), r.waits.end()), 5 * kMs + 5 * 50 * kUs);
  EXPECT_LE(r.max_be_inflight, 1);
  EXPECT_GT(r.be_priority_waits, 0u);
}

TEST_F(PriorityTest, BestEffortLeavesTheGpuFreeWhenPeriodicHighPriorityWorkIsDue) {
  // 300 us kernels fit between the 50 us bursts: best effort runs them early in each period and none
  // is running when the next burst comes.
  PeriodicRun r = RunPeriodic(sim, node, Gpu(100), Gpu(100), Opts(0), Opts(1), 300 * kUs);
  ASSERT_GT(r.waits.size(), 1500u);
  // Once the period is learnt (a few bursts), no high-priority kernel waits for best effort.
  const int64_t worst = *std::max_element(r.waits.begin() + 10, r.waits.end());
  EXPECT_EQ(worst, 0);
  // Best effort still has most of the time high priority leaves (two 300 us kernels per 1 ms).
  EXPECT_GE(static_cast<double>(r.be_busy) / r.duration, 0.5) << r.be_kernels << " kernels";
}

TEST_F(PriorityTest, BestEffortKernelsThatNeverFitAreSlowedNotStarved) {
  // A 2 ms kernel never fits in a 1 ms period: best effort still runs one after waiting two periods,
  // started early in a period, so a high-priority kernel waits at most one best-effort kernel.
  PeriodicRun r = RunPeriodic(sim, node, Gpu(100), Gpu(100), Opts(0), Opts(1), 2 * kMs);
  ASSERT_GT(r.waits.size(), 500u);
  EXPECT_GE(r.be_kernels, 2000 / 6);  // at least one per ~6 ms
  EXPECT_LE(*std::max_element(r.waits.begin() + 10, r.waits.end()), 2 * kMs);
  // Without the hold every burst would wait (a 2 ms kernel always overlaps the next one); with it, a
  // good share find the GPU free (this simulated GPU never preempts, a real one does after its slice).
  const auto free_bursts = std::count(r.waits.begin() + 10, r.waits.end(), 0);
  EXPECT_GE(free_bursts, static_cast<long>((r.waits.size() - 10) / 4));
}

TEST_F(PriorityTest, PeriodicHighPriorityBringsItsContextInBeforeEachBurst) {
  // Time-sliced: one no-op kernel per period, shortly before the burst is due, never more.
  sim.now = 10 * kMs;
  GateGpu hg = Gpu(100);
  hg.node = node;
  Gate high(FakeDriver(), GateClock{&FNow, &FSleep}, Opts(0), {hg});
  sim.current = reinterpret_cast<CUcontext>(0x1000);
  std::vector<int64_t> nops;
  int64_t next = sim.now;
  const int periods = 500;
  for (int i = 0; i < periods; ++i) {
    while (sim.now < next) {
      const uint64_t before = high.Stats().prewarms;
      high.CalibratePending();
      if (high.Stats().prewarms != before) nops.push_back(next - sim.now);  // lead before the burst
      high.HarvestOnce();
      sim.now += 10 * kUs;
    }
    high.Before(S(0));
    sim.Launch(S(0), 50 * kUs, 0);
    high.After(S(0), CUDA_SUCCESS);
    next += kMs;
  }
  // Every period once the interval is learnt (a few bursts, and calibration first).
  EXPECT_GE(nops.size(), static_cast<size_t>(periods - 20));
  EXPECT_LE(nops.size(), static_cast<size_t>(periods));
  for (int64_t lead : nops) {
    EXPECT_GT(lead, 50 * kUs);
    EXPECT_LE(lead, 200 * kUs);
  }
}

TEST_F(PriorityTest, BestEffortRunsFreelyWithoutHighPriority) {
  GateGpu bg = Gpu(100);
  bg.node = node;
  Gate be(FakeDriver(), GateClock{&FNow, &FSleep}, Opts(1), {bg});
  sim.harvesters = {&be};
  for (int i = 0; i < 100; ++i) {
    be.Before(S(1));
    sim.Launch(S(1), 5 * kMs, 1);
    be.After(S(1), CUDA_SUCCESS);
  }
  EXPECT_EQ(sim.now, 0);  // never waited
}

TEST_F(PriorityTest, KilledHighPriorityParticipantStopsHoldingOthersBack) {
  // A real second process joins as high priority with work in flight, then dies by SIGKILL.
  int ready[2];
  ASSERT_EQ(pipe(ready), 0);
  pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    std::string err;
    auto n = slice::NodeRegion::Open(path, &err);
    if (!n) _exit(1);
    slice::NodeRow* row = n->Join(0, "video", slice::MonotonicNs());
    n->NoteSubmit(row, slice::MonotonicNs());
    n->Heartbeat(row, slice::MonotonicNs());
    char c = 1;
    if (write(ready[1], &c, 1) != 1) _exit(1);
    for (;;) pause();
  }
  char c;
  ASSERT_EQ(read(ready[0], &c, 1), 1);
  const int64_t t0 = slice::MonotonicNs();
  ASSERT_EQ(kill(pid, SIGKILL), 0);
  int status;
  waitpid(pid, &status, 0);
  slice::NodeRow* me = node->Join(1, "batch", t0);
  const int64_t stale = 200 * kMs;
  // Right after death its claim still looks live (heartbeat fresh) ...
  EXPECT_TRUE(node->HighPriorityActive(me, t0, 2 * kMs, stale));
  // ... and is ignored once the heartbeat is stale, with no cleanup by anybody.
  EXPECT_FALSE(node->HighPriorityActive(me, t0 + stale + 1, 2 * kMs, stale));
  EXPECT_FALSE(node->HighPriorityPresent(t0 + stale + 1, stale));
  // Its row is reclaimed by a later joiner.
  EXPECT_EQ(node->LiveRows(t0, stale), 2);
  std::vector<slice::NodeRow*> rows;
  for (int i = 0; i < slice::NodeRegion::kRows - 1; ++i) {
    rows.push_back(node->Join(1, "filler", t0 + slice::NodeRegion::kReclaimNs + 1));
    ASSERT_NE(rows.back(), nullptr) << i;
  }
  close(ready[0]);
  close(ready[1]);
}

TEST_F(PriorityTest, HighPriorityLingersBetweenPeriodicKernels) {
  slice::NodeRow* hp = node->Join(0, "video", 0);
  slice::NodeRow* be = node->Join(1, "batch", 0);
  node->NoteSubmit(hp, 1 * kMs);
  node->NoteComplete(hp);
  node->Heartbeat(hp, 1 * kMs);
  EXPECT_TRUE(node->HighPriorityActive(be, 2 * kMs, 2 * kMs, 200 * kMs));
  EXPECT_FALSE(node->HighPriorityActive(be, 4 * kMs, 2 * kMs, 200 * kMs));
  EXPECT_FALSE(node->HighPriorityActive(hp, 2 * kMs, 2 * kMs, 200 * kMs));  // never blocks itself
  EXPECT_FALSE(node->OthersIdle(be, 2 * kMs, 20 * kMs, 200 * kMs));
  EXPECT_TRUE(node->OthersIdle(be, 30 * kMs, 20 * kMs, 200 * kMs));
}

TEST_F(PriorityTest, OthersBusyCreditsNestedIntervalsAndSplitsPartialOverlaps) {
  slice::NodeRow* a = node->Join(1, "a", 0);
  slice::NodeRow* b = node->Join(1, "b", 0);
  // b ran 2..4 ms while a's bracket 1..6 ms was preempted: all of it is credited to a.
  node->PublishBusy(b, 2 * kMs, 4 * kMs);
  node->PublishBusy(a, 1 * kMs, 6 * kMs);
  EXPECT_EQ(node->OthersBusy(a, 1 * kMs, 6 * kMs), 2 * kMs);
  // b's bracket 3..8 overlaps a's 1..6 by 3 ms: half of it credited to b, and a's 1..6 seen against a
  // b bracket 3..8 would be credited the other half.
  EXPECT_EQ(node->OthersBusy(b, 3 * kMs, 8 * kMs), 3 * kMs / 2);
  node->PublishBusy(b, 3 * kMs, 8 * kMs);
  EXPECT_EQ(node->OthersBusy(a, 1 * kMs, 6 * kMs), 2 * kMs + 3 * kMs / 2);
  // A bracket of a's at 2.5..3.5 lies inside b's 2..4 (nothing credited for it: a ran inside it) and
  // overlaps the start of b's 3..8 by 0.5 ms (half credited).
  EXPECT_EQ(node->OthersBusy(a, 5 * kMs / 2, 7 * kMs / 2), kMs / 4);
  EXPECT_EQ(node->OthersBusy(a, 9 * kMs, 10 * kMs), 0);
  // The ring keeps the latest intervals only.
  for (int i = 0; i < 2 * slice::kNodeRecent; ++i)
    node->PublishBusy(b, (100 + i) * kMs, (100 + i) * kMs + 10);
  EXPECT_EQ(node->OthersBusy(a, 0, 99 * kMs), 0);
  EXPECT_EQ(node->OthersBusy(a, 0, 1'000 * kMs), slice::kNodeRecent * 10);
}

TEST_F(PriorityTest, OthersBusyNamesTheMainPreemptorAndBillsReachOnlyLiveRows) {
  slice::NodeRow* a = node->Join(1, "a", 0);
  slice::NodeRow* b = node->Join(1, "b", 0);
  slice::NodeRow* c = node->Join(1, "c", 0);
  node->PublishBusy(b, 2 * kMs, 3 * kMs);
  node->PublishBusy(c, 4 * kMs, 6 * kMs);
  int top = -1;
  EXPECT_EQ(node->OthersBusy(a, 1 * kMs, 8 * kMs, &top), 3 * kMs);
  EXPECT_EQ(top, 2);  // c took 2 ms of it, b 1 ms
  EXPECT_EQ(node->OthersBusy(a, 10 * kMs, 12 * kMs, &top), 0);
  EXPECT_EQ(top, -1);
  node->Bill(2, 150 * kUs);
  node->Bill(2, 50 * kUs);
  EXPECT_EQ(c->billed_ns.load(), 200 * kUs);
  EXPECT_EQ(b->billed_ns.load(), 0);
  // A row that changed hands starts unbilled; bills to free rows or past the table are dropped.
  node->Leave(c);
  node->Bill(2, kMs);
  node->Bill(slice::NodeRegion::kRows, kMs);
  node->Bill(-1, kMs);
  slice::NodeRow* d = node->Join(1, "d", 0);
  EXPECT_EQ(d, c);
  EXPECT_EQ(d->billed_ns.load(), 0);
}

// Two capped tenants of one time-sliced GPU, a at 70 % and b at 30 %, in their own contexts and of one
// priority, whose kernels the tests lay out by hand (the simulated device does not preempt).
struct TwoTenants {
  Sim& sim;
  std::atomic<int64_t> tat_a{0}, tat_b{0};
  std::unique_ptr<Gate> a, b;
  static constexpr uintptr_t kCtxA = 0x1000, kCtxB = 0x2000;
  TwoTenants(SimTest& t, std::shared_ptr<slice::NodeRegion> node, int priority = 1) : sim(t.sim) {
    sim = Sim();
    sim.exclusive = false;
    GateGpu ga = t.Gpu(70, &tat_a), gb = t.Gpu(30, &tat_b);
    ga.node = node;
    gb.node = node;
    a = std::make_unique<Gate>(FakeDriver(), GateClock{&FNow, &FSleep}, t.Opts(priority),
                               std::vector<GateGpu>{ga});
    b = std::make_unique<Gate>(FakeDriver(), GateClock{&FNow, &FSleep}, t.Opts(priority),
                               std::vector<GateGpu>{gb});
    sim.harvesters = {a.get(), b.get()};
  }
  ~TwoTenants() { sim.harvesters.clear(); }
  void RunA(int64_t len) { Run(*a, kCtxA, 0, len); }
  void RunB(int64_t len) { Run(*b, kCtxB, 1, len); }
  // b preempts a 2 ms kernel of a near its end (a's bracket: 4.4 ms, b's 2 ms inside it), and b's
  // harvester is late (only a is polled from then on). Returns when a's kernel was launched.
  int64_t PreemptWithLateHarvest() {
    const int64_t t0 = sim.now;
    RunA(4'400 * kUs);
    sim.now = t0 + 2'200 * kUs;
    RunB(2 * kMs);
    sim.harvesters = {a.get()};
    return t0;
  }
  // Twelve unpreempted kernels of a (lengths from `len(i)`) and one of b, each harvested, with both
  // contexts' event clocks anchored.
  template <typename Len>
  void History(Len len) {
    for (int i = 0; i < 12; ++i) {
      RunA(len(i));
      Settle();
    }
    RunB(2 * kMs);
    Settle();
  }

 private:
  void Run(Gate& g, uintptr_t ctx, int tag, int64_t len) {
    sim.current = reinterpret_cast<CUcontext>(ctx);
    g.Before(S(tag));
    sim.Launch(S(tag), len, tag);
    g.After(S(tag), CUDA_SUCCESS);
  }
  void Settle() {
    FSleep(5 * kMs);
    for (uintptr_t ctx : {kCtxA, kCtxB}) {
      sim.current = reinterpret_cast<CUcontext>(ctx);
      for (int i = 0; i < 12; ++i) {
        a->CalibratePending();
        b->CalibratePending();
      }
    }
  }
};

// When b's kernel preempts a's, a's bracket holds a's own work, b's work and two context switches
// (a out, b in; b out, a in). b's work is credited to a (it is b's), and the switches are split: each
// side pays its own switch-in. Only a context whose unpreempted brackets are steady can tell its work
// from the switches; one that cannot keeps them.
TEST_F(PriorityTest, EachSideOfAContextSwitchPaysItsOwnSwitchIn) {
  for (bool steady : {true, false}) {
    TwoTenants t(*this, node);
    // a's kernels are all 2 ms, or alternate 0.5 / 3.5 ms.
    t.History([&](int i) { return steady ? 2 * kMs : (i % 2 ? 3'500 : 500) * kUs; });
    const int64_t a0 = t.a->MeasuredNs(0), b0 = t.b->MeasuredNs(0);
    // a's 2 ms kernel is switched out after 1 ms (0.2 ms), b runs 2 ms, a comes back in (0.2 ms).
    const int64_t t0 = sim.now;
    t.RunA(4'400 * kUs);
    sim.now = t0 + 1'200 * kUs;
    t.RunB(2 * kMs);
    FSleep(t0 + 3'500 * kUs - sim.now);  // b's bracket is harvested, a's not yet
    const int64_t tat_b0 = t.tat_b.load();
    FSleep(t0 + 10 * kMs - sim.now);
    const int64_t a_cost = t.a->MeasuredNs(0) - a0, b_cost = t.b->MeasuredNs(0) - b0;
    if (steady) {
      EXPECT_NEAR(a_cost, 2'200 * kUs, 5 * kUs);  // own work + own switch-in
      EXPECT_NEAR(b_cost, 2'200 * kUs, 5 * kUs);  // own work + own switch-in, billed by a
      EXPECT_NEAR(t.a->Stats().switch_billed_ns, 200 * kUs, 5 * kUs);
      EXPECT_NEAR(t.b->Stats().switch_charged_ns, 200 * kUs, 5 * kUs);
      // The bill reached b's budget: 0.2 ms of GPU time at 30 % is 0.667 ms of wall time.
      EXPECT_NEAR(static_cast<double>(t.tat_b.load() - tat_b0), 200.0 * kUs / 0.3, 1.0 * kUs);
    } else {
      EXPECT_NEAR(a_cost, 2'400 * kUs, 5 * kUs);
      EXPECT_NEAR(b_cost, 2'000 * kUs, 5 * kUs);
      EXPECT_EQ(t.a->Stats().switch_billed_ns, 0);
      EXPECT_EQ(t.b->Stats().switch_charged_ns, 0);
      EXPECT_EQ(t.tat_b.load(), tat_b0);
    }
  }
}

// The preempting tenant's harvester may see its kernel complete only after the preempted tenant's
// bracket ended. The preempted tenant waits for it to publish (it would otherwise pay for the other's
// work), but never for a participant that stopped publishing: at most kMaxDeferNs. A high-priority
// tenant never waits (best-effort neighbours are held until they see its completions).
TEST_F(PriorityTest, PreemptedBracketWaitsForThePreemptorToPublish) {
  {
    // Two high-priority tenants (neither holds for the other); b's harvester is late, a does not wait.
    TwoTenants t(*this, node, /*priority=*/0);
    t.History([](int) { return 2 * kMs; });
    const int64_t a0 = t.a->MeasuredNs(0);
    const int64_t t0 = t.PreemptWithLateHarvest();
    FSleep(t0 + 4'500 * kUs - sim.now);
    sim.current = reinterpret_cast<CUcontext>(TwoTenants::kCtxA);
    EXPECT_EQ(t.a->InFlightCurrent(), 0);  // harvested at once: its neighbours see it complete
    EXPECT_NEAR(t.a->MeasuredNs(0) - a0, 4'400 * kUs, 5 * kUs);
  }
  for (bool b_returns : {true, false}) {
    TwoTenants t(*this, node);
    t.History([](int) { return 2 * kMs; });
    const int64_t a0 = t.a->MeasuredNs(0);
    const int64_t t0 = t.PreemptWithLateHarvest();
    FSleep(t0 + 6 * kMs - sim.now);
    EXPECT_EQ(t.a->MeasuredNs(0), a0) << "a's bracket must wait for b's interval";
    if (b_returns) {
      t.b->HarvestOnce();
      FSleep(t0 + 7 * kMs - sim.now);
      EXPECT_NEAR(t.a->MeasuredNs(0) - a0, 2'200 * kUs, 5 * kUs);  // b's work credited, switches split
      t.b->HarvestOnce();
      EXPECT_NEAR(t.b->Stats().switch_charged_ns, 200 * kUs, 5 * kUs);
    } else {
      // b publishes nothing more (a hung harvester): a stops waiting 20 ms after its bracket ended
      // and keeps the whole bracket, as it would without the node region.
      FSleep(t0 + 4'400 * kUs + Gate::kMaxDeferNs - 100 * kUs - sim.now);
      EXPECT_EQ(t.a->MeasuredNs(0), a0);
      FSleep(200 * kUs);
      EXPECT_NEAR(t.a->MeasuredNs(0) - a0, 4'400 * kUs, 5 * kUs);
    }
  }
}

TEST_F(PriorityTest, BestEffortHoldsEverythingWhileHighPriorityWorkIsPending) {
  slice::NodeRow* hp = node->Join(0, "video", 0);
  slice::NodeRow* be = node->Join(1, "batch", 0);
  node->Heartbeat(hp, kMs);
  node->NoteSubmit(hp, kMs);
  EXPECT_TRUE(node->HighPriorityPending(be, 2 * kMs, 200 * kMs));
  node->NoteComplete(hp);
  EXPECT_FALSE(node->HighPriorityPending(be, 2 * kMs, 200 * kMs));
  node->NoteSubmit(hp, 3 * kMs);
  // A dead high-priority process with work "pending" stops counting once its heartbeat is stale.
  EXPECT_FALSE(node->HighPriorityPending(be, 300 * kMs, 200 * kMs));
}

TEST_F(PriorityTest, UntrackedSubmissionsKeepABurstSliceUnderItsCap) {
  slice::NodeRow* burst = node->Join(1, "burst", 0);
  slice::NodeRow* plain = node->Join(1, "plain", 0);
  slice::NodeRegion::ActivityWatch watch;
  EXPECT_TRUE(node->OthersIdle(burst, 100 * kMs, 20 * kMs, 200 * kMs, &watch));
  slice::NodeRegion::NoteUntrackedSubmit(plain);  // no clock on that path: the watch dates it
  EXPECT_FALSE(node->OthersIdle(burst, 110 * kMs, 20 * kMs, 200 * kMs, &watch));
  EXPECT_FALSE(node->OthersIdle(burst, 125 * kMs, 20 * kMs, 200 * kMs, &watch));
  EXPECT_TRUE(node->OthersIdle(burst, 131 * kMs, 20 * kMs, 200 * kMs, &watch));
}

TEST_F(PriorityTest, HighPriorityPresenceHasAOneLoadFastPath) {
  EXPECT_FALSE(node->HighPriorityMaybePresent());
  slice::NodeRow* be = node->Join(1, "batch", 0);
  EXPECT_FALSE(node->HighPriorityMaybePresent());
  slice::NodeRow* hp = node->Join(0, "video", 0);
  EXPECT_TRUE(node->HighPriorityMaybePresent());
  node->Leave(hp);
  EXPECT_FALSE(node->HighPriorityMaybePresent());
  node->Leave(be);
}

TEST_F(PriorityTest, ShutdownReleasesBestEffortAtOnce) {
  GateGpu hg = Gpu(100);
  hg.node = node;
  Gate high(FakeDriver(), GateClock{&FNow, &FSleep}, Opts(0), {hg});
  EXPECT_TRUE(node->HighPriorityMaybePresent());
  high.Shutdown();
  EXPECT_FALSE(node->HighPriorityMaybePresent());
  high.Before(S(0));  // passes straight through after shutdown
  high.After(S(0), CUDA_SUCCESS);
  EXPECT_EQ(high.Stats().tracked, 0u);
}

// The third attack: a tenant held the flock of the node-wide priority files and a neighbour's
// CUDA initialisation hung until killed. Nothing takes that lock any more but a rebuild, and a rebuild
// only without waiting: with both files locked by another process, a neighbour opens, joins and leaves;
// a damaged file it cannot rebuild is given up within the set-up deadline (the process then runs without
// priority coordination) instead of waited for.
TEST_F(PriorityTest, ATenantHoldingTheFilesLocksStallsNobody) {
  int ready[2], done[2];
  ASSERT_EQ(pipe(ready), 0);
  ASSERT_EQ(pipe(done), 0);
  pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    close(done[1]);
    int a = open(path.c_str(), O_RDWR), b = open((path + ".high").c_str(), O_RDWR);
    if (a < 0 || b < 0 || flock(a, LOCK_EX) != 0 || flock(b, LOCK_EX) != 0) _exit(1);
    char c = 1;
    if (write(ready[1], &c, 1) != 1) _exit(1);
    while (read(done[0], &c, 1) > 0) {
    }
    _exit(0);
  }
  close(done[0]);
  char c;
  ASSERT_EQ(read(ready[0], &c, 1), 1);
  std::string err;
  auto neighbour = slice::NodeRegion::Open(path, &err);
  ASSERT_TRUE(neighbour) << err;
  slice::NodeRow* row = neighbour->Join(1, "neighbour", slice::MonotonicNs());
  ASSERT_NE(row, nullptr);
  neighbour->Leave(row);
  // Damaged while locked: not waited for.
  {
    FILE* f = std::fopen(path.c_str(), "r+");
    ASSERT_NE(f, nullptr);
    std::fputs("garbage garbage garbage", f);
    std::fclose(f);
  }
  auto damaged = slice::NodeRegion::Open(path, &err);
  EXPECT_FALSE(damaged);
  EXPECT_NE(err.find("not usable"), std::string::npos) << err;
  close(done[1]);
  int status = 0;
  waitpid(pid, &status, 0);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  // Lock released: the next opener rebuilds it.
  auto rebuilt = slice::NodeRegion::Open(path, &err);
  EXPECT_TRUE(rebuilt) << err;
  close(ready[0]);
  close(ready[1]);
}

// ... and a tenant could write itself high priority. Priority is now the file a row lives in: where the
// high-priority file is read-only (the agent mounts it so into best-effort slices) joining as high
// priority fails, and a best-effort row that says priority 0 with work in flight holds nobody back.
TEST_F(PriorityTest, ATenantCannotMakeItselfHighPriority) {
  int ready[2], done[2];
  ASSERT_EQ(pipe(ready), 0);
  ASSERT_EQ(pipe(done), 0);
  ASSERT_EQ(chmod((path + ".high").c_str(), 0444), 0);
  pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    close(done[1]);
    // Root reads past modes: the tenant runs as another uid, as a container's does against the mount.
    if (geteuid() == 0 && setuid(65534) != 0) _exit(2);
    std::string err;
    auto n = slice::NodeRegion::Open(path, &err);
    if (!n) _exit(3);
    if (n->Join(0, "liar", slice::MonotonicNs()) != nullptr) _exit(4);  // high priority refused
    slice::NodeRow* row = n->Join(1, "liar", slice::MonotonicNs());
    if (!row) _exit(5);
    row->priority.store(0);  // says high priority
    n->NoteSubmit(row, slice::MonotonicNs());
    n->Heartbeat(row, slice::MonotonicNs());
    char c = 1;
    if (write(ready[1], &c, 1) != 1) _exit(6);
    while (read(done[0], &c, 1) > 0) {
    }
    _exit(0);
  }
  close(done[0]);
  char c;
  ASSERT_EQ(read(ready[0], &c, 1), 1) << "tenant process failed early";
  const int64_t now = slice::MonotonicNs();
  slice::NodeRow* me = node->Join(1, "honest", now);
  ASSERT_NE(me, nullptr);
  EXPECT_FALSE(node->HighPriorityMaybePresent());
  EXPECT_FALSE(node->HighPriorityPresent(now, 200 * kMs));
  EXPECT_FALSE(node->HighPriorityActive(me, now, 2 * kMs, 200 * kMs));
  EXPECT_FALSE(node->HighPriorityPending(me, now, 200 * kMs));
  EXPECT_EQ(node->LiveRows(now, 200 * kMs), 2);  // it is a participant, of best effort
  close(done[1]);
  int status = 0;
  waitpid(pid, &status, 0);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "tenant exit " << WEXITSTATUS(status);
  close(ready[0]);
  close(ready[1]);
}

TEST_F(PriorityTest, CorruptFileIsRebuilt) {
  {
    FILE* f = std::fopen(path.c_str(), "r+");
    ASSERT_NE(f, nullptr);
    std::fputs("garbage garbage garbage", f);
    std::fclose(f);
  }
  std::string err;
  auto again = slice::NodeRegion::Open(path, &err);
  ASSERT_TRUE(again) << err;
  EXPECT_EQ(again->LiveRows(0, 200 * kMs), 0);
  EXPECT_NE(again->Join(0, "x", 0), nullptr);
}

}  // namespace
}  // namespace tessera::shim
