#include "shim/launch_gate_core.h"

#include <sys/prctl.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>

namespace tessera::shim {

namespace {

int64_t SysNow() { return slice::MonotonicNs(); }

int64_t SysCoarseNow() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
}

void SysSleep(int64_t ns) {
  if (ns <= 0) return;
  timespec ts{static_cast<time_t>(ns / 1'000'000'000), static_cast<long>(ns % 1'000'000'000)};
  while (nanosleep(&ts, &ts) != 0) {
  }
}

int64_t MsToNs(float ms) { return static_cast<int64_t>(static_cast<double>(ms) * 1e6); }

// Waiting granularity: short enough that a drained queue is noticed within a fraction of a 0.05 ms
// kernel's period, long enough that a waiting thread costs little CPU.
constexpr int64_t kPollNs = 20'000;
constexpr int64_t kMaxCapSleepNs = 3'000'000;
constexpr int64_t kBatchNs = 1'000'000;
constexpr int64_t kTurnNs = 2'000'000;
constexpr int64_t kSpatialTurnNs = 1'000'000;
// Best effort beside a periodic high-priority participant: a kernel is started only if its estimated
// cost plus this margin (launch, context switch, the other side's jitter) ends before the next burst is
// due. A kernel that never fits is still started, one at a time, once it has waited kMaxHoldPeriods
// periods (and kMinHoldNs), early in a period, so best effort is slowed, never starved.
constexpr int64_t kDueGuardNs = 250'000;
// A periodic high-priority participant brings its context onto the GPU this long before its next burst
// is due (a no-op kernel): on a time-sliced GPU, switching in the context of a process that was not
// the last to run costs ~0.1 ms (H100), which its first kernel would otherwise pay.
constexpr int64_t kPrewarmLeadNs = 200'000;
constexpr int64_t kPrewarmWindowNs = 120'000;
constexpr int64_t kMaxHoldPeriods = 2;
constexpr int64_t kMinHoldNs = 2'000'000;
// An isolated launch costs a few microseconds on current GPUs (about 3 us on an H100); a larger
// "floor" can only come from a calibration that waited for other work.
constexpr int64_t kMaxFloorNs = 8'000;

}  // namespace

GateClock SystemClock() { return GateClock{&SysNow, &SysSleep, &SysCoarseNow}; }

struct Gate::Cell {
  std::atomic<uint64_t> seq{0};
  CUevent start = nullptr;
  CUevent end = nullptr;
  int64_t estimate_ns = 0;
  bool failed = false;
  bool noted = false;  // counted in the node row's inflight
};

struct Gate::Ring {
  CUcontext ctx = nullptr;
  int gpu = -1;  // index into gpus_, -1: this GPU is not part of the slice
  std::atomic<bool> dead{false};
  std::atomic<uint64_t> tail{0};  // next cell to claim
  std::atomic<uint64_t> head{0};  // next cell to harvest (consumer only writes)
  std::atomic<int64_t> estimate_ns{0};
  std::atomic<bool> has_sample{false};
  CUevent cover = nullptr;  // consumer only: end event of the latest-ending harvested bracket
  std::atomic<int64_t> floor_ns{0};
  std::atomic<int64_t> held_since{0};  // best effort: first hold for a due high-priority burst (0: none)
  int64_t prewarmed_for = 0;           // high priority: the burst whose successor was prewarmed
  // Calibration kit (harvester only, under the harvest flag): a no-op kernel on a private stream.
  // It measures the launch floor and anchors this context's event clock to CLOCK_MONOTONIC.
  int calib_state = 0;  // 0 not set up, 1 measuring, 2 floor known, -1 impossible
  CUmodule calib_mod = nullptr;
  CUfunction calib_fn = nullptr;
  CUstream calib_stream = nullptr;
  CUevent calib_a = nullptr, calib_b = nullptr;
  int calib_valid = 0, calib_tries = 0;
  int64_t calib_best = -1;
  CUevent anchor = nullptr;  // completed event whose host time is anchor_host_ns
  int64_t anchor_host_ns = 0;
  // Consumer only: what this context's brackets cost when no other participant ran inside them, and
  // how much that varies (EWMAs over ~8), to tell the switch time inside a preempted bracket.
  int64_t clean_ns = 0, clean_dev_ns = 0;
  int clean_n = 0;
  Cell cells[kRingCells];
  Ring() {
    for (uint32_t i = 0; i < kRingCells; ++i) cells[i].seq.store(i, std::memory_order_relaxed);
  }
  int InFlight() const {
    return static_cast<int>(tail.load(std::memory_order_acquire) - head.load(std::memory_order_acquire));
  }
};

struct Gate::GpuState {
  GateGpu cfg;
  std::atomic<int64_t> own_tat{0};
  std::atomic<uint64_t> own_turn_owner{0};
  std::atomic<int64_t> own_turn_until{0};
  std::atomic<uint64_t>* turn_owner = nullptr;
  std::atomic<int64_t>* turn_until = nullptr;
  std::atomic<uint64_t> own_busy{0}, own_throttled{0}, own_prio{0};
  std::atomic<int64_t>* tat = nullptr;
  std::atomic<uint64_t>* busy = nullptr;
  std::atomic<uint64_t>* throttled = nullptr;
  std::atomic<uint64_t>* prio = nullptr;
  slice::NodeRow* row = nullptr;
  int64_t billed_seen = 0;  // under the harvest flag: the row's billed_ns already charged
  // Under the harvest flag, this round: the earliest host end of a bracket left for later (0: none).
  int64_t deferred_end = 0;
  std::atomic<int64_t> measured{0};
  slice::NodeRegion::ActivityWatch watch;  // burst decisions (threads of this process race benignly)
  bool capped() const { return !CapBucket::Uncapped(cfg.cap); }
};

namespace {
struct ThreadState {
  const void* gate = nullptr;
  uint64_t generation = 0;
  CUcontext ctx = nullptr;
  void* ring = nullptr;
  void* pending_ring = nullptr;
  uint64_t pending_pos = 0;
};
// Initial-exec: libtessera.so is loaded at start-up (LD_PRELOAD / ld.so.preload), so its TLS is
// static and the launch path needs no __tls_get_addr call.
__attribute__((tls_model("initial-exec"))) thread_local ThreadState t_state;
uint64_t NewNonce() {
  static std::atomic<uint64_t> counter{0};
  uint64_t v = static_cast<uint64_t>(slice::MonotonicNs()) * 0x9e3779b97f4a7c15ull ^
               (static_cast<uint64_t>(getpid()) << 32) ^ counter.fetch_add(1);
  return v == 0 ? 1 : v;
}

// Unique per Gate (and per fork generation), so a thread's cache never matches a gate that was
// destroyed and another one built at the same address.
std::atomic<uint64_t> g_next_generation{1};
}  // namespace

Gate::Gate(const GateDriver& drv, const GateClock& clock, GateOptions opts, std::vector<GateGpu> gpus)
    : drv_(drv), clock_(clock), opts_(std::move(opts)) {
  generation_.store(g_next_generation.fetch_add(1));
  nonce_ = NewNonce();
  for (auto& r : rings_) r.store(nullptr, std::memory_order_relaxed);
  const int64_t now = clock_.now_ns();
  for (auto& g : gpus) {
    auto s = std::make_unique<GpuState>();
    s->cfg = std::move(g);
    s->tat = s->cfg.tat ? s->cfg.tat : &s->own_tat;
    s->turn_owner = s->cfg.turn_owner ? s->cfg.turn_owner : &s->own_turn_owner;
    s->turn_until = s->cfg.turn_until ? s->cfg.turn_until : &s->own_turn_until;
    s->busy = s->cfg.busy_ns ? s->cfg.busy_ns : &s->own_busy;
    s->throttled = s->cfg.throttled_ns ? s->cfg.throttled_ns : &s->own_throttled;
    s->prio = s->cfg.priority_waits ? s->cfg.priority_waits : &s->own_prio;
    if (s->cfg.node) s->row = s->cfg.node->Join(opts_.priority, opts_.slice, now);
    gpus_.push_back(std::move(s));
  }
}

Gate::~Gate() {
  if (!shut_down_.load()) Shutdown();
  const int n = ring_count_.load();
  for (int i = 0; i < n; ++i) delete rings_[i].load();
}

Gate::Ring* Gate::RingFor(CUcontext ctx) {
  const int n = ring_count_.load(std::memory_order_acquire);
  for (int i = n - 1; i >= 0; --i) {
    Ring* r = rings_[i].load(std::memory_order_acquire);
    if (r->ctx == ctx && !r->dead.load(std::memory_order_relaxed)) return r;
  }
  return CreateRing(ctx);
}

Gate::Ring* Gate::CreateRing(CUcontext ctx) {
  std::lock_guard<std::mutex> lock(create_mu_);
  const int n = ring_count_.load(std::memory_order_acquire);
  for (int i = 0; i < n; ++i) {
    Ring* r = rings_[i].load(std::memory_order_acquire);
    if (r->ctx == ctx && !r->dead.load(std::memory_order_relaxed)) return r;
  }
  if (n >= kMaxRings) return nullptr;
  auto* r = new Ring();
  r->ctx = ctx;
  CUdevice dev = 0;
  CUuuid uuid{};
  if (drv_.ctx_get_device(&dev) == CUDA_SUCCESS && drv_.device_get_uuid(&uuid, dev) == CUDA_SUCCESS) {
    char text[48];
    FormatUuid(uuid, text);
    for (size_t g = 0; g < gpus_.size(); ++g) {
      if (gpus_[g]->cfg.uuid == text) r->gpu = static_cast<int>(g);
    }
  }
  rings_[n].store(r, std::memory_order_release);
  ring_count_.store(n + 1, std::memory_order_release);
  return r;
}

int64_t Gate::Scaled(int64_t gpu_ns) const {
  if (!opts_.spatial) return gpu_ns;
  return static_cast<int64_t>(static_cast<__int128>(gpu_ns) * opts_.spatial_ppm / 1'000'000);
}

void Gate::Wait(int64_t ns) {
  // Fresh completions may already change the answer (a refund, a drained queue): look again first.
  if (HarvestOnce() > 0) return;
  clock_.sleep_ns(std::max<int64_t>(ns, 1000));
}

void Gate::Before(CUstream stream) {
  ThreadState& ts = t_state;
  ts.pending_ring = nullptr;
  if (shut_down_.load(std::memory_order_relaxed)) return;
  const uint64_t gen = generation_.load(std::memory_order_relaxed);
  CUcontext ctx = nullptr;
  if (drv_.ctx_get_current(&ctx) != CUDA_SUCCESS || ctx == nullptr) return;
  Ring* ring;
  if (ts.gate == this && ts.generation == gen && ts.ctx == ctx) {
    ring = static_cast<Ring*>(ts.ring);
  } else {
    ring = RingFor(ctx);
    ts.gate = this;
    ts.generation = gen;
    ts.ctx = ctx;
    ts.ring = ring;
  }
  if (ring == nullptr || ring->gpu < 0) return;
  GpuState& g = *gpus_[ring->gpu];
  slice::NodeRegion* node = g.cfg.node.get();
  const bool capped = g.capped();
  const bool high = opts_.priority == 0;
  // The common uncapped best-effort case: one load when no high-priority process ever joined this
  // GPU's node region, else the coarse clock (staleness is judged in hundreds of milliseconds).
  bool watch_high = false;
  if (!high && !opts_.spatial && node != nullptr && g.row != nullptr) {
    watch_high = node->HighPriorityMaybePresent() &&
                 node->HighPriorityPresent(clock_.coarse_now_ns ? clock_.coarse_now_ns() : clock_.now_ns(),
                                           opts_.stale_ns);
  }
  if (!capped && !high && !watch_high) {
    // Nothing to enforce: only let burst neighbours see that this GPU is wanted.
    if (g.row) slice::NodeRegion::NoteUntrackedSubmit(g.row);
    return;
  }
  int64_t now = clock_.now_ns();
  CUstreamCaptureStatus cap_status = CU_STREAM_CAPTURE_STATUS_NONE;
  if (drv_.stream_is_capturing(stream, &cap_status) == CUDA_SUCCESS &&
      cap_status != CU_STREAM_CAPTURE_STATUS_NONE) {
    return;  // recorded into a graph: the graph's launch is what gets gated
  }
  if (opts_.background_harvester && !harvester_started_.load(std::memory_order_relaxed)) {
    StartHarvester();
  }

  const int64_t wait_start = now;
  bool waited_cap = false, waited_prio = false;
  int64_t estimate = 0;
  for (;;) {
    now = clock_.now_ns();
    // While a high-priority participant lives on this GPU, best effort keeps at most one submission
    // in flight (so high priority waits for at most one of our kernels, never a queue), and while
    // its work is pending, submits nothing (a kernel queued now could run before theirs).
    if (watch_high && (ring->InFlight() > 0 || node->HighPriorityPending(g.row, now, opts_.stale_ns))) {
      waited_prio = true;
      Wait(kPollNs);
      continue;
    }
    if (watch_high) {
      // A periodic high-priority participant finds the GPU free when its next burst comes: start only
      // a kernel that ends before then.
      int64_t period = 0;
      const int64_t due = node->HighPriorityDueIn(g.row, now, opts_.stale_ns, &period);
      const int64_t est = ring->has_sample.load(std::memory_order_acquire)
                              ? ring->estimate_ns.load(std::memory_order_relaxed)
                              : 0;
      if (due >= 0 && est + kDueGuardNs > due) {
        int64_t since = ring->held_since.load(std::memory_order_relaxed);
        if (since == 0) {
          since = now;
          ring->held_since.store(now, std::memory_order_relaxed);
        }
        const bool starved = now - since >= std::max(kMaxHoldPeriods * period, kMinHoldNs);
        if (!starved || due < period / 2) {
          waited_prio = true;
          Wait(std::clamp<int64_t>(due, kPollNs, kMaxCapSleepNs));
          continue;
        }
      }
    }
    if (capped) {
      const bool sampled = ring->has_sample.load(std::memory_order_acquire);
      if (!sampled && ring->InFlight() > 0) {
        // No measurement yet: one bracket at a time until the first one tells us the cost.
        waited_cap = true;
        Wait(kPollNs);
        continue;
      }
      // Processes of one slice take turns of kTurnNs: every switch between their contexts costs GPU
      // time that lands in someone's bracket, so alternating kernel by kernel would charge the slice
      // for switches. A dead owner's turn simply runs out.
      const uint64_t owner = g.turn_owner->load(std::memory_order_acquire);
      const int64_t until = g.turn_until->load(std::memory_order_acquire);
      const bool turn_free = owner == 0 || owner == nonce_ || now >= until;
      if (!turn_free) {
        waited_cap = true;
        Wait(std::min(until - now, kMaxCapSleepNs));
        continue;
      }
      estimate = Scaled(ring->estimate_ns.load(std::memory_order_relaxed));
      Admission a = CapBucket::TryAdmit(*g.tat, g.cfg.cap, now, estimate, false);
      if (!a.admitted && g.cfg.cap.burst) {
        const bool idle =
            node == nullptr || node->OthersIdle(g.row, now, opts_.burst_idle_ns, opts_.stale_ns, &g.watch);
        if (idle) a = CapBucket::TryAdmit(*g.tat, g.cfg.cap, now, estimate, true);
      }
      if (!a.admitted) {
        // Once throttled, sleep until a little credit has built up, so the next submissions go out
        // back to back: a queued kernel's launch latency is hidden (and not charged), while an
        // isolated one pays it. The average share is unchanged; the GPU sees ~1 ms bursts.
        waited_cap = true;
        Wait(std::min(a.wait_ns + kBatchNs, kMaxCapSleepNs));
        continue;
      }
      if (owner != nonce_ || now >= until) {
        g.turn_owner->store(nonce_, std::memory_order_release);
        // Time-sliced: long turns, each switch between the processes' contexts costs GPU time. Spatial
        // (MPS clients run side by side, no switch): short turns, measured better for 2 ms kernels.
        g.turn_until->store(now + (opts_.spatial ? kSpatialTurnNs : kTurnNs), std::memory_order_release);
      }
    }
    break;
  }

  if (watch_high) ring->held_since.store(0, std::memory_order_relaxed);

  // Claim a cell (Vyukov bounded queue, producer side).
  Cell* cell = nullptr;
  uint64_t pos = ring->tail.load(std::memory_order_relaxed);
  for (;;) {
    Cell& c = ring->cells[pos % kRingCells];
    const uint64_t seq = c.seq.load(std::memory_order_acquire);
    if (seq == pos) {
      if (ring->tail.compare_exchange_weak(pos, pos + 1, std::memory_order_acq_rel)) {
        cell = &c;
        break;
      }
    } else if (seq < pos) {
      Wait(kPollNs);  // ring full: kRingCells brackets in flight
      pos = ring->tail.load(std::memory_order_relaxed);
    } else {
      pos = ring->tail.load(std::memory_order_relaxed);
    }
  }
  if (waited_cap || waited_prio) {
    now = clock_.now_ns();
    g.throttled->fetch_add(static_cast<uint64_t>(now - wait_start), std::memory_order_relaxed);
    if (waited_cap) cap_waits_.fetch_add(1, std::memory_order_relaxed);
    if (waited_prio) {
      prio_waits_.fetch_add(1, std::memory_order_relaxed);
      g.prio->fetch_add(1, std::memory_order_relaxed);
    }
  }
  cell->failed = false;
  cell->estimate_ns = capped ? estimate : 0;
  if (cell->start == nullptr) drv_.event_create(&cell->start, CU_EVENT_DEFAULT);
  if (cell->end == nullptr) drv_.event_create(&cell->end, CU_EVENT_DEFAULT);
  if (cell->start == nullptr || cell->end == nullptr ||
      drv_.event_record(cell->start, stream) != CUDA_SUCCESS) {
    cell->failed = true;
  }
  cell->noted = g.row != nullptr;
  if (cell->noted) node->NoteSubmit(g.row, now);
  tracked_.fetch_add(1, std::memory_order_relaxed);
  ts.pending_ring = ring;
  ts.pending_pos = pos;
}

void Gate::After(CUstream stream, CUresult result) {
  ThreadState& ts = t_state;
  auto* ring = static_cast<Ring*>(ts.pending_ring);
  if (ring == nullptr) return;
  ts.pending_ring = nullptr;
  Cell& c = ring->cells[ts.pending_pos % kRingCells];
  if (result != CUDA_SUCCESS) c.failed = true;
  if (!c.failed && drv_.event_record(c.end, stream) != CUDA_SUCCESS) c.failed = true;
  c.seq.store(ts.pending_pos + 1, std::memory_order_release);
}

int Gate::HarvestOnce() {
  bool expected = false;
  if (!harvesting_.compare_exchange_strong(expected, true, std::memory_order_acquire)) return 0;
  const int64_t now = clock_.now_ns();
  int done = 0;
  const int n = ring_count_.load(std::memory_order_acquire);
  for (auto& g : gpus_) g->deferred_end = 0;
  for (int i = 0; i < n; ++i) done += HarvestRing(rings_[i].load(std::memory_order_acquire), now);
  PublishThrough(now);
  CollectBills(now);
  Heartbeat(now);
  harvesting_.store(false, std::memory_order_release);
  return done;
}

int Gate::HarvestRing(Ring* r, int64_t now) {
  if (r->gpu < 0) return 0;
  GpuState& g = *gpus_[r->gpu];
  int done = 0;
  bool ctx_set = false;
  for (;;) {
    const uint64_t pos = r->head.load(std::memory_order_relaxed);
    Cell& c = r->cells[pos % kRingCells];
    if (c.seq.load(std::memory_order_acquire) != pos + 1) break;  // not published yet
    if (!ctx_set && !r->dead.load(std::memory_order_relaxed)) {
      // Event calls are made with the owning context current, as the driver expects.
      CUcontext cur = nullptr;
      drv_.ctx_get_current(&cur);
      if (cur != r->ctx) drv_.ctx_set_current(r->ctx);
      ctx_set = true;
    }
    int64_t cost = 0;
    // A dead ring's events belong to a destroyed context (or a parent before fork): never touch them,
    // only retire the cells so counters return to zero.
    if (r->dead.load(std::memory_order_relaxed)) c.failed = true;
    if (!c.failed) {
      const CUresult q = drv_.event_query(c.end);
      if (q == CUDA_ERROR_NOT_READY) break;
      if (q == CUDA_SUCCESS) {
        float ms = 0;
        if (r->cover == nullptr) {
          if (drv_.event_elapsed(&ms, c.start, c.end) == CUDA_SUCCESS) {
            cost =
                std::max<int64_t>(MsToNs(ms) - r->floor_ns.load(std::memory_order_relaxed), MsToNs(ms) / 2);
          }
        } else {
          float de = 0, ds = 0;
          if (drv_.event_elapsed(&de, r->cover, c.end) == CUDA_SUCCESS && de > 0) {
            // Union with what was already charged: only the part after the latest charged end.
            const int64_t floor = r->floor_ns.load(std::memory_order_relaxed);
            if (drv_.event_elapsed(&ds, r->cover, c.start) == CUDA_SUCCESS && MsToNs(ds) > floor) {
              // Isolated: its bracket includes the launch latency that a queue would have hidden.
              if (drv_.event_elapsed(&ms, c.start, c.end) == CUDA_SUCCESS) {
                cost = std::max<int64_t>(MsToNs(ms) - floor, MsToNs(ms) / 2);
              }
            } else {
              // Queued right behind the previous bracket: its launch latency was hidden.
              cost = MsToNs(de);
            }
          }
        }
        if (r->anchor != nullptr && cost > 0 && g.row != nullptr && !opts_.spatial) {
          // Other participants' brackets that overlap ours ran while ours was preempted (time
          // slicing): that time was theirs, and they are charged for it (OthersBusy splits it).
          float as = 0, ae = 0;
          if (drv_.event_elapsed(&as, r->anchor, c.start) == CUDA_SUCCESS &&
              drv_.event_elapsed(&ae, r->anchor, c.end) == CUDA_SUCCESS) {
            const int64_t hs = r->anchor_host_ns + MsToNs(as), he = r->anchor_host_ns + MsToNs(ae);
            // A preemptor's interval reaches the node region only when its own harvester has seen it
            // complete. A capped context whose bracket may hold one waits (up to kMaxDeferNs) until every
            // other publishing participant has published through the bracket's end; otherwise their work
            // would be charged to us. Nothing has been changed for this cell yet: the next round redoes it.
            // High priority never waits: its completions release best-effort neighbours (NoteComplete).
            if (g.capped() && opts_.priority != 0 && now - he < kMaxDeferNs && cost > SettledCost(*r) &&
                !g.cfg.node->OthersPublishedThrough(g.row, he, now, opts_.stale_ns)) {
              g.deferred_end = g.deferred_end == 0 ? he : std::min(g.deferred_end, he);
              break;
            }
            int top = -1;
            const int64_t theirs = std::min(cost, g.cfg.node->OthersBusy(g.row, hs, he, &top));
            cost -= theirs;
            placed_.fetch_add(1, std::memory_order_relaxed);
            credited_.fetch_add(theirs, std::memory_order_relaxed);
            if (theirs == 0) {
              NoteClean(*r, cost);
            } else {
              // Ours was switched out and back in around their work. Each side pays its own switch-in:
              // half the excess over what our brackets cost unpreempted goes to the main preemptor.
              const int64_t half = SwitchExcess(*r, cost) / 2;
              if (half > 0 && top >= 0) {
                cost -= half;
                g.cfg.node->Bill(top, half);
                switch_billed_.fetch_add(half, std::memory_order_relaxed);
              }
            }
            g.cfg.node->PublishBusy(g.row, hs, he);
          }
        }
        if (r->cover == nullptr || cost > 0) std::swap(r->cover, c.end);
      } else {
        // The context is gone (or the event is unusable): stop using this ring.
        r->dead.store(true, std::memory_order_relaxed);
      }
    }
    cost = std::max<int64_t>(cost, 0);
    if (g.capped()) CapBucket::Charge(*g.tat, g.cfg.cap, now, Scaled(cost) - c.estimate_ns);
    g.busy->fetch_add(static_cast<uint64_t>(cost), std::memory_order_relaxed);
    g.measured.fetch_add(cost, std::memory_order_relaxed);
    if (!c.failed) {
      const int64_t est = r->estimate_ns.load(std::memory_order_relaxed);
      const bool had = r->has_sample.load(std::memory_order_relaxed);
      // EWMA over ~4 submissions: follows a change of kernel length within a few launches.
      r->estimate_ns.store(had ? est + (cost - est) / 4 : cost, std::memory_order_relaxed);
      r->has_sample.store(true, std::memory_order_release);
    }
    if (c.noted && g.row) g.cfg.node->NoteComplete(g.row);
    c.seq.store(pos + kRingCells, std::memory_order_release);
    r->head.store(pos + 1, std::memory_order_release);
    completed_.fetch_add(1, std::memory_order_relaxed);
    ++done;
  }
  return done;
}

void Gate::NoteClean(Ring& r, int64_t cost) {
  if (r.clean_n == 0) {
    r.clean_ns = cost;
    r.clean_dev_ns = 0;
  } else {
    r.clean_dev_ns += (std::abs(cost - r.clean_ns) - r.clean_dev_ns) / 8;
    r.clean_ns += (cost - r.clean_ns) / 8;
  }
  if (r.clean_n < kSteadySamples) ++r.clean_n;
}

bool Gate::Steady(const Ring& r) {
  // Enough unpreempted brackets, spread within 1/8 of their cost: only then can a context tell its own
  // work from time that others (or switching to them) took inside a bracket.
  return r.clean_n >= kSteadySamples && r.clean_dev_ns * 8 <= r.clean_ns;
}

int64_t Gate::SwitchExcess(const Ring& r, int64_t own) const {
  // An unsteady context keeps the whole bracket, as before.
  if (!Steady(r)) return 0;
  return std::clamp<int64_t>(own - r.clean_ns, 0, kMaxSwitchPairNs);
}

int64_t Gate::SettledCost(const Ring& r) {
  // A steady context's bracket within its usual spread held nobody else's work worth waiting for.
  if (!Steady(r)) return 0;
  return r.clean_ns + 4 * r.clean_dev_ns + 20'000;
}

void Gate::PublishThrough(int64_t now) {
  if (opts_.spatial) return;
  // Every bracket that ended before this round began was seen complete by it (less a margin for the
  // event-to-host clock mapping) and published, except where a ring stopped at a deferred bracket.
  // Brackets of other streams behind a running head-of-line bracket are not covered; a participant
  // that reads this may then miss them and keep the time (the conservative side).
  for (auto& g : gpus_) {
    if (g->row == nullptr) continue;
    int64_t through = now - kThroughMarginNs;
    if (g->deferred_end != 0) through = std::min(through, g->deferred_end);
    g->row->published_through_ns.store(through, std::memory_order_release);
  }
}

void Gate::CollectBills(int64_t now) {
  for (auto& gp : gpus_) {
    GpuState& g = *gp;
    if (g.row == nullptr) continue;
    const int64_t billed = g.row->billed_ns.load(std::memory_order_relaxed);
    const int64_t d = billed - g.billed_seen;
    if (d <= 0) continue;
    g.billed_seen = billed;
    if (g.capped()) CapBucket::Charge(*g.tat, g.cfg.cap, now, Scaled(d));
    g.busy->fetch_add(static_cast<uint64_t>(d), std::memory_order_relaxed);
    g.measured.fetch_add(d, std::memory_order_relaxed);
    switch_charged_.fetch_add(d, std::memory_order_relaxed);
  }
}

void Gate::Heartbeat(int64_t now) {
  for (auto& g : gpus_) {
    if (g->cfg.node && g->row) g->cfg.node->Heartbeat(g->row, now);
  }
}

void Gate::StartHarvester() {
  bool expected = false;
  if (!harvester_started_.compare_exchange_strong(expected, true)) return;
  stop_.store(false);
  harvester_ = std::thread([this] {
    // Its sleeps are tens of microseconds: the default 50 us timer slack would double them, and a
    // high-priority completion would reach best-effort neighbours that much later.
    prctl(PR_SET_TIMERSLACK, 1000UL, 0, 0, 0);
    while (!stop_.load(std::memory_order_relaxed)) {
      if (opts_.calibrate_floor) CalibratePending();
      HarvestOnce();
      // Sleep about half the expected remaining work, so completions are seen promptly without
      // spinning: 50 us .. 1 ms. A high-priority process polls faster (20 us .. 100 us): best-effort
      // neighbours hold their submissions until it reports its kernels complete.
      const bool high = opts_.priority == 0;
      int64_t sleep = high ? 100'000 : 1'000'000;
      const int n = ring_count_.load(std::memory_order_acquire);
      for (int i = 0; i < n; ++i) {
        Ring* r = rings_[i].load(std::memory_order_acquire);
        if (r->InFlight() > 0) {
          sleep = std::min(sleep, std::max<int64_t>(high ? 20'000 : 50'000, r->estimate_ns.load() / 2));
        }
      }
      clock_.sleep_ns(sleep);
    }
  });
}

void Gate::StopHarvester() {
  if (!harvester_started_.load()) return;
  stop_.store(true);
  if (harvester_.joinable()) harvester_.join();
  harvester_started_.store(false);
}

void Gate::Shutdown() {
  shut_down_.store(true, std::memory_order_release);
  StopHarvester();
  for (auto& g : gpus_) {
    if (g->cfg.node && g->row) g->cfg.node->Leave(g->row);
  }
}

void Gate::ResetAfterFork() {
  // The thread object refers to a thread that does not exist in the child: drop it without joining.
  if (harvester_.joinable()) harvester_.detach();
  harvester_started_.store(false);
  harvesting_.store(false);
  const int n = ring_count_.load();
  for (int i = 0; i < n; ++i) rings_[i].load()->dead.store(true);
  generation_.store(g_next_generation.fetch_add(1));
  nonce_ = NewNonce();
  const int64_t now = clock_.now_ns();
  for (auto& g : gpus_) {
    if (g->cfg.node) g->row = g->cfg.node->Join(opts_.priority, opts_.slice, now);
    g->billed_seen = 0;  // a fresh row starts unbilled
  }
}

// An empty kernel: its bracket is pure launch latency plus completion, which is what an isolated
// launch of real work pays on top of the work.
static const char kNopPtx[] =
    ".version 6.0\n.target sm_50\n.address_size 64\n.visible .entry tessera_nop()\n{\nret;\n}\n";

// One step of a context's calibration; called by the harvester with the harvest flag held. Each step
// makes at most one timed no-op launch, and only while the context has none of its own work in flight
// (a try that overlaps the application's work is discarded), so the application is never delayed.
void Gate::Calibrate(Ring* r, int64_t now) {
  if (r->calib_state < 0) return;
  CUcontext prev = nullptr;
  drv_.ctx_get_current(&prev);
  if (prev != r->ctx && drv_.ctx_set_current(r->ctx) != CUDA_SUCCESS) return;
  if (r->calib_state == 0) {
    r->calib_state = -1;
    if (drv_.module_load_data != nullptr && drv_.launch_kernel != nullptr &&
        drv_.module_load_data(&r->calib_mod, kNopPtx) == CUDA_SUCCESS &&
        drv_.module_get_function(&r->calib_fn, r->calib_mod, "tessera_nop") == CUDA_SUCCESS &&
        drv_.stream_create(&r->calib_stream, CU_STREAM_NON_BLOCKING) == CUDA_SUCCESS &&
        drv_.event_create(&r->calib_a, CU_EVENT_DEFAULT) == CUDA_SUCCESS &&
        drv_.event_create(&r->calib_b, CU_EVENT_DEFAULT) == CUDA_SUCCESS &&
        drv_.event_create(&r->anchor, CU_EVENT_DEFAULT) == CUDA_SUCCESS) {
      r->calib_state = 1;
    } else {
      r->anchor = nullptr;
    }
  }
  const bool idle = r->InFlight() == 0;
  const uint64_t tail0 = r->tail.load(std::memory_order_acquire);
  if (r->calib_state == 1 && idle) {
    ++r->calib_tries;
    float ms = 0;
    if (drv_.event_record(r->calib_a, r->calib_stream) == CUDA_SUCCESS &&
        drv_.launch_kernel(r->calib_fn, 1, 1, 1, 32, 1, 1, 0, r->calib_stream, nullptr, nullptr) ==
            CUDA_SUCCESS &&
        drv_.event_record(r->calib_b, r->calib_stream) == CUDA_SUCCESS &&
        drv_.event_synchronize(r->calib_b) == CUDA_SUCCESS &&
        drv_.event_elapsed(&ms, r->calib_a, r->calib_b) == CUDA_SUCCESS) {
      const int64_t host = clock_.now_ns();
      if (r->InFlight() == 0 && r->tail.load(std::memory_order_acquire) == tail0 &&
          r->calib_tries > 2) {  // the first tries load the module
        const int64_t ns = MsToNs(ms);
        r->calib_best = r->calib_best < 0 ? ns : std::min(r->calib_best, ns);
        ++r->calib_valid;
        std::swap(r->calib_b, r->anchor);
        r->anchor_host_ns = host;
      }
    } else {
      r->calib_state = -1;
    }
    if (r->calib_valid >= 8 || r->calib_tries > 400) {
      // Never more than a launch can plausibly cost: a busy GPU during calibration must not make
      // every later kernel look free.
      if (r->calib_best > 0) r->floor_ns.store(std::min<int64_t>(r->calib_best, kMaxFloorNs));
      r->calib_state = 2;
    }
  } else if (r->calib_state == 2 && idle && now - r->anchor_host_ns > 200'000'000) {
    // Five times a second: re-anchor (elapsed times are floats in ms, precise only over short spans)
    // and take one more floor sample, so a floor first measured while the GPU was busy elsewhere comes
    // down to the true one.
    float ms = 0;
    if (drv_.event_record(r->calib_a, r->calib_stream) == CUDA_SUCCESS &&
        drv_.launch_kernel(r->calib_fn, 1, 1, 1, 32, 1, 1, 0, r->calib_stream, nullptr, nullptr) ==
            CUDA_SUCCESS &&
        drv_.event_record(r->calib_b, r->calib_stream) == CUDA_SUCCESS &&
        drv_.event_synchronize(r->calib_b) == CUDA_SUCCESS &&
        drv_.event_elapsed(&ms, r->calib_a, r->calib_b) == CUDA_SUCCESS) {
      const int64_t host = clock_.now_ns();
      if (r->InFlight() == 0 && r->tail.load(std::memory_order_acquire) == tail0) {
        const int64_t ns = MsToNs(ms);
        if (ns > 0 && ns < r->floor_ns.load()) r->floor_ns.store(ns);
        std::swap(r->calib_b, r->anchor);
        r->anchor_host_ns = host;
      }
    }
  }
  if (prev != r->ctx) drv_.ctx_set_current(prev);
}

// High priority, time-sliced: once per period, a no-op kernel just before the next burst is due, so the
// burst finds its context already running. Only when this context is idle and its no-op kit is loaded.
void Gate::Prewarm(Ring* r, int64_t now) {
  GpuState& g = *gpus_[r->gpu];
  if (g.row == nullptr || r->calib_state < 1 || r->InFlight() != 0) return;
  const int64_t period = g.row->period_ns.load(std::memory_order_relaxed);
  const int64_t start = g.row->burst_start_ns.load(std::memory_order_relaxed);
  if (period <= 2 * kPrewarmLeadNs || start == 0 || r->prewarmed_for == start) return;
  const int64_t at = start + period - kPrewarmLeadNs;
  if (now < at || now > at + kPrewarmWindowNs) return;
  r->prewarmed_for = start;
  CUcontext prev = nullptr;
  drv_.ctx_get_current(&prev);
  if (prev != r->ctx && drv_.ctx_set_current(r->ctx) != CUDA_SUCCESS) return;
  drv_.launch_kernel(r->calib_fn, 1, 1, 1, 32, 1, 1, 0, r->calib_stream, nullptr, nullptr);
  prewarms_.fetch_add(1, std::memory_order_relaxed);
  if (prev != r->ctx) drv_.ctx_set_current(prev);
}

void Gate::CalibratePending() {
  bool expected = false;
  if (!harvesting_.compare_exchange_strong(expected, true, std::memory_order_acquire)) return;
  const int64_t now = clock_.now_ns();
  const int n = ring_count_.load(std::memory_order_acquire);
  for (int i = 0; i < n; ++i) {
    Ring* r = rings_[i].load(std::memory_order_acquire);
    if (r->gpu < 0 || r->dead.load(std::memory_order_relaxed) || r->tail.load() == 0) continue;
    // Uncapped best effort needs neither a floor nor published intervals, and its no-op launches
    // would only add context switches in front of high-priority work.
    if (opts_.priority != 0 && !gpus_[r->gpu]->capped()) continue;
    Calibrate(r, now);
    if (opts_.priority == 0 && !opts_.spatial) Prewarm(r, now);
  }
  harvesting_.store(false, std::memory_order_release);
}

int64_t Gate::LaunchFloorNs() {
  CUcontext ctx = nullptr;
  if (drv_.ctx_get_current(&ctx) != CUDA_SUCCESS || ctx == nullptr) return 0;
  Ring* r = RingFor(ctx);
  return r ? r->floor_ns.load() : 0;
}

GateStats Gate::Stats() const {
  GateStats s;
  s.tracked = tracked_.load();
  s.completed = completed_.load();
  s.cap_waits = cap_waits_.load();
  s.priority_waits = prio_waits_.load();
  s.prewarms = prewarms_.load();
  s.placed = placed_.load();
  s.credited_ns = credited_.load();
  s.switch_billed_ns = switch_billed_.load();
  s.switch_charged_ns = switch_charged_.load();
  for (auto& g : gpus_) s.measured_ns += g->measured.load();
  return s;
}

int64_t Gate::MeasuredNs(int gpu) const { return gpus_[gpu]->measured.load(); }

int Gate::InFlightCurrent() {
  CUcontext ctx = nullptr;
  if (drv_.ctx_get_current(&ctx) != CUDA_SUCCESS || ctx == nullptr) return 0;
  Ring* r = RingFor(ctx);
  return r ? r->InFlight() : 0;
}

}  // namespace tessera::shim
