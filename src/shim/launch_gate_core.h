// Gate: the engine behind the launch gate (compute cap + latency priority), free of globals so tests
// can drive it with a simulated GPU and a virtual clock.
//
// The hook layer calls Before(stream) ahead of every kernel/graph submission and After(stream, result)
// right after it (launch_gate.h wires the globals). For a slice that needs neither a cap nor priority on
// a GPU, Before returns after a few loads. Otherwise the submission is bracketed by two timing events
// recorded on its stream, so what the work really cost on the GPU is measured, whatever the kernel
// shape, stream count, graph or cooperative launch. The events live in a fixed ring per CUDA context
// (producers: launching threads, claiming cells with one CAS; consumer: whoever holds the harvest
// flag, normally the background harvester thread). The harvester turns completed brackets into GPU
// time, taking the union over concurrent streams of the context, and corrects the slice's shared
// token bucket (limiter.h) from the estimate charged at admission to the measured cost.
//
// Waiting happens only in Before, only outside any lock, and only when the caller must wait: the cap
// is exhausted, or (best effort, time-sliced mode) a high-priority participant lives on the same GPU
// and this context still has a submission in flight, or the high-priority participant has work
// pending. High-priority state comes from the node region
// (slice/node_region.h), so it works across slices and containers; a dead participant stops counting
// once its heartbeat is stale.
//
// Thread-safety: Before/After may be called from any number of threads; each thread's Before/After
// pairs must not interleave (the hook layer guarantees this). HarvestOnce may be called from any thread
// (it is a try-lock: a second concurrent caller returns at once).
#pragma once

#include <cuda.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "shim/limiter.h"
#include "shim/uuid.h"
#include "slice/node_region.h"

namespace tessera::shim {

// The driver entry points the gate needs, real or simulated. All must be non-null.
struct GateDriver {
  CUresult (*ctx_get_current)(CUcontext*);
  CUresult (*ctx_set_current)(CUcontext);
  CUresult (*ctx_get_device)(CUdevice*);
  CUresult (*device_get_uuid)(CUuuid*, CUdevice);
  CUresult (*event_create)(CUevent*, unsigned int);
  CUresult (*event_record)(CUevent, CUstream);
  CUresult (*event_query)(CUevent);
  CUresult (*event_elapsed)(float*, CUevent, CUevent);
  CUresult (*stream_is_capturing)(CUstream, CUstreamCaptureStatus*);
  // Used once per context, by the harvester, to measure the fixed cost of a launch (see Calibrate).
  CUresult (*event_synchronize)(CUevent);
  CUresult (*event_destroy)(CUevent);
  CUresult (*stream_create)(CUstream*, unsigned int);
  CUresult (*stream_destroy)(CUstream);
  CUresult (*module_load_data)(CUmodule*, const void*);
  CUresult (*module_unload)(CUmodule);
  CUresult (*module_get_function)(CUfunction*, CUmodule, const char*);
  CUresult (*launch_kernel)(CUfunction, unsigned int, unsigned int, unsigned int, unsigned int, unsigned int,
                            unsigned int, unsigned int, CUstream, void**, void**);
};

struct GateClock {
  int64_t (*now_ns)();
  void (*sleep_ns)(int64_t);
  // A cheap clock good to a few ms, for the launch path's staleness checks (CLOCK_MONOTONIC costs
  // ~70 ns in some VMs; the coarse clock ~10 ns). Null: now_ns.
  int64_t (*coarse_now_ns)() = nullptr;
};
GateClock SystemClock();

// Settings of one GPU of the slice.
struct GateGpu {
  std::string uuid;  // "GPU-..." as in the slice config
  CapParams cap;
  // Shared state (slice region); the Gate falls back to private storage when null.
  std::atomic<int64_t>* tat = nullptr;
  // Which process of the slice holds the current submission turn, and until when (see Before).
  std::atomic<uint64_t>* turn_owner = nullptr;
  std::atomic<int64_t>* turn_until = nullptr;
  std::atomic<uint64_t>* busy_ns = nullptr;
  std::atomic<uint64_t>* throttled_ns = nullptr;
  std::atomic<uint64_t>* priority_waits = nullptr;
  // Node-wide coordination for this GPU; may be null (then priority is not enforced).
  std::shared_ptr<slice::NodeRegion> node;
};

struct GateOptions {
  int priority = 1;  // 0 high, 1 best effort
  // MPS spatial mode: each process runs on an SM partition of `spatial_ppm` of the GPU, so a bracket
  // of t ns costs t * spatial_ppm / 1e6 of the slice's share; no priority hold (MPS client priority
  // does that) and no time-slice preemption refunds (clients really run side by side). One process
  // alone on its partition is never throttled; several processes of the slice share its budget.
  bool spatial = false;
  int64_t spatial_ppm = 1'000'000;
  std::string slice;                   // for the node region rows
  int64_t hp_linger_ns = 2'000'000;    // a high-priority stream stays "active" this long between kernels
  int64_t stale_ns = 200'000'000;      // heartbeats older than this are ignored
  int64_t burst_idle_ns = 20'000'000;  // others idle this long -> a burst slice may run past its cap
  bool background_harvester = true;    // tests drive HarvestOnce themselves
  bool calibrate_floor = true;         // measure each context's launch floor with a no-op kernel
};

struct GateStats {
  uint64_t tracked = 0;           // submissions bracketed with events
  uint64_t completed = 0;         // brackets harvested
  uint64_t cap_waits = 0;         // Before() calls that waited for the cap
  uint64_t priority_waits = 0;    // Before() calls that waited for high priority
  int64_t measured_ns = 0;        // GPU time measured, all GPUs
  uint64_t prewarms = 0;          // high priority: no-op kernels that brought the context in before a burst
  uint64_t placed = 0;            // time-sliced brackets placed on the host clock (node region + anchor)
  int64_t credited_ns = 0;        // of their time, what other participants' brackets took (OthersBusy)
  int64_t switch_billed_ns = 0;   // context-switch time in our preempted brackets passed to the preemptor
  int64_t switch_charged_ns = 0;  // context-switch time others passed to us (our switch-ins), charged
};

class Gate {
 public:
  Gate(const GateDriver& drv, const GateClock& clock, GateOptions opts, std::vector<GateGpu> gpus);
  ~Gate();
  Gate(const Gate&) = delete;
  Gate& operator=(const Gate&) = delete;

  void Before(CUstream stream);
  void After(CUstream stream, CUresult result);

  // Harvests completed brackets of every context; returns how many. Non-blocking try-lock.
  int HarvestOnce();
  // Background harvester (heartbeats + harvesting). Started lazily by Before when needed.
  void StartHarvester();
  void StopHarvester();
  // Stops the harvester and leaves the node regions; the gate then only passes launches through.
  void Shutdown();
  // After fork(): the child has no harvester thread and no usable contexts; forget them.
  void ResetAfterFork();

  GateStats Stats() const;
  int64_t MeasuredNs(int gpu) const;
  // Fixed GPU-side cost of one isolated launch bracket in the calling thread's current context, as
  // measured by Calibrate (0 until measured). Subtracted from isolated brackets so that short kernels
  // are charged for their work, not for launch latency that a back-to-back queue would hide.
  int64_t LaunchFloorNs();
  // One calibration step for every context (launch floor, event-clock anchor); the harvester calls
  // this each round, tests too.
  void CalibratePending();
  // Submissions of the calling thread's current context still in flight (tests, priority).
  int InFlightCurrent();

  static constexpr uint32_t kRingCells = 256;
  // The longest a capped context waits for other participants to publish the intervals that may lie
  // inside one of its brackets (a participant whose harvester stopped is not waited for longer).
  static constexpr int64_t kMaxDeferNs = 20'000'000;

 private:
  struct Cell;
  struct Ring;
  struct GpuState;
  Ring* RingFor(CUcontext ctx);
  Ring* CreateRing(CUcontext ctx);
  void Wait(int64_t ns);
  int64_t Scaled(int64_t gpu_ns) const;
  int HarvestRing(Ring* r, int64_t now);
  void Heartbeat(int64_t now);
  void Calibrate(Ring* r, int64_t now);
  void Prewarm(Ring* r, int64_t now);
  // Switch-time attribution (time-sliced mode, see HarvestRing): the clean-bracket statistics of a
  // context, the excess of a preempted bracket over them, and charging what others billed us.
  static void NoteClean(Ring& r, int64_t cost);
  static bool Steady(const Ring& r);
  int64_t SwitchExcess(const Ring& r, int64_t own) const;
  void CollectBills(int64_t now);
  // Waiting for preemptors' intervals (see HarvestRing): the cost above which a bracket may hold one,
  // and this process's promise that its intervals ending before a time are all published.
  static int64_t SettledCost(const Ring& r);
  void PublishThrough(int64_t now);
  static constexpr int64_t kThroughMarginNs = 50'000;
  static constexpr int kSteadySamples = 8;
  // The most a switch out and back in may cost a bracket (measured ~0.45 ms on an H100 with 2 ms
  // kernels); anything past it is taken for the context's own work.
  static constexpr int64_t kMaxSwitchPairNs = 1'000'000;

  GateDriver drv_;
  GateClock clock_;
  GateOptions opts_;
  std::vector<std::unique_ptr<GpuState>> gpus_;

  static constexpr int kMaxRings = 64;
  std::atomic<Ring*> rings_[kMaxRings];
  std::atomic<int> ring_count_{0};
  std::mutex create_mu_;  // ring creation only (once per context), never on the steady launch path

  std::atomic<bool> harvesting_{false};
  std::atomic<bool> harvester_started_{false};
  std::atomic<bool> stop_{false};
  std::atomic<bool> shut_down_{false};
  std::thread harvester_;
  std::atomic<uint64_t> generation_{1};
  uint64_t nonce_ = 0;  // this process's identity in turn_owner (new after fork)

  std::atomic<uint64_t> tracked_{0}, completed_{0}, cap_waits_{0}, prio_waits_{0}, prewarms_{0}, placed_{0};
  std::atomic<int64_t> credited_{0}, switch_billed_{0}, switch_charged_{0};
};

}  // namespace tessera::shim
