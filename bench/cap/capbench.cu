// capbench: the workload side of the compute-cap and priority benchmarks (bench/cap/run.sh drives it).
//
//   capbench calibrate --us N                 print the iteration count of an N-microsecond kernel
//   capbench work --iters I --seconds S       launch that kernel flat out; report kernels done, rate and
//                [--streams K] [--launch plain|graph|coop|ex] [--start-at EPOCH_MS]
//   capbench latency --iters I --period-us P --seconds S [--start-at EPOCH_MS]
//                                             one kernel every P us, launch-to-completion p50/p99
//
// Work is a fixed number of dependent FMAs per thread over a grid that fills every SM, so it costs
// GPU time in proportion to the SMs it gets (time-sliced or MPS-partitioned alike), unlike a clock
// spin. With --direct the program calls the launch gate itself (built in), which tests the gate on a
// real GPU without LD_PRELOAD; normally the shim's hooks do that. Output: one JSON object on stdout.
#include <cuda.h>
#include <cuda_runtime.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#ifdef CAPBENCH_DIRECT
#include "shim/launch_gate.h"
#include "slice/config.h"
#endif

#define CHECK(x)                                                                          \
  do {                                                                                    \
    cudaError_t e_ = (x);                                                                 \
    if (e_ != cudaSuccess) {                                                              \
      std::fprintf(stderr, "capbench: %s failed: %s\n", #x, cudaGetErrorString(e_));      \
      std::exit(1);                                                                       \
    }                                                                                     \
  } while (0)

__global__ void Burn(float* out, int iters) {
  float a = threadIdx.x * 1e-3f, b = 1.0001f, c = 0.9999f;
  for (int i = 0; i < iters; ++i) {
    a = fmaf(a, b, c);
    b = fmaf(b, c, a * 1e-7f);
  }
  if (a == 12345.0f) out[blockIdx.x] = a + b;  // keeps the loop; practically never written
}

__global__ void Fault() { *reinterpret_cast<volatile int*>(0x10) = 1; }

static double NowS() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec * 1e-9;
}
static double RealMs() {
  timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return ts.tv_sec * 1e3 + ts.tv_nsec * 1e-6;
}

struct Args {
  std::string mode;
  int iters = 1000;
  double us = 100;
  double seconds = 3;
  int streams = 1;
  std::string launch = "plain";
  double period_us = 1000;
  double start_at = 0;
  bool direct = false;
  int blocks = 0;  // grid size; 0: `waves` full waves of co-resident blocks on every SM
  int waves = 8;
};

static Args Parse(int argc, char** argv) {
  Args a;
  if (argc < 2) {
    std::fprintf(stderr, "usage: capbench calibrate|work|latency [flags]\n");
    std::exit(2);
  }
  a.mode = argv[1];
  for (int i = 2; i < argc; ++i) {
    std::string k = argv[i];
    auto val = [&]() -> const char* {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "capbench: %s needs a value\n", k.c_str());
        std::exit(2);
      }
      return argv[++i];
    };
    if (k == "--iters") a.iters = std::atoi(val());
    else if (k == "--us") a.us = std::atof(val());
    else if (k == "--seconds") a.seconds = std::atof(val());
    else if (k == "--streams") a.streams = std::atoi(val());
    else if (k == "--launch") a.launch = val();
    else if (k == "--period-us") a.period_us = std::atof(val());
    else if (k == "--start-at") a.start_at = std::atof(val());
    else if (k == "--direct") a.direct = true;
    else if (k == "--blocks") a.blocks = std::atoi(val());
    else if (k == "--waves") a.waves = std::atoi(val());
    else {
      std::fprintf(stderr, "capbench: unknown flag %s\n", k.c_str());
      std::exit(2);
    }
  }
  return a;
}

static int g_blocks = 0;
static float* g_out = nullptr;
static bool g_direct = false;

// The gate's counters as a JSON fragment (direct mode only).
static std::string GateStats() {
#ifdef CAPBENCH_DIRECT
  if (g_direct) {
    char buf[512];
    tessera::shim::LaunchGateDescribe(buf, sizeof(buf));
    return std::string(",\"gate\":") + buf;
  }
#endif
  return "";
}

static void GateBefore(cudaStream_t s) {
#ifdef CAPBENCH_DIRECT
  if (g_direct && tessera::shim::g_launch_gate_enabled) tessera::shim::LaunchGateBefore(s);
#endif
}
static void GateAfter(cudaStream_t s, cudaError_t e) {
#ifdef CAPBENCH_DIRECT
  if (g_direct && tessera::shim::g_launch_gate_enabled)
    tessera::shim::LaunchGateAfter(s, e == cudaSuccess ? CUDA_SUCCESS : CUDA_ERROR_UNKNOWN);
#endif
}

struct Launcher {
  std::string how;
  int iters;
  std::vector<cudaGraphExec_t> graphs;  // one per stream
  void Init(const std::vector<cudaStream_t>& streams) {
    if (how != "graph") return;
    for (cudaStream_t s : streams) {
      cudaGraph_t g;
      CHECK(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal));
      Burn<<<g_blocks, 256, 0, s>>>(g_out, iters);
      CHECK(cudaStreamEndCapture(s, &g));
      cudaGraphExec_t e;
      CHECK(cudaGraphInstantiate(&e, g, 0));
      graphs.push_back(e);
    }
  }
  void Launch(cudaStream_t s, int idx) {
    GateBefore(s);
    cudaError_t e = cudaSuccess;
    if (how == "plain") {
      Burn<<<g_blocks, 256, 0, s>>>(g_out, iters);
      e = cudaGetLastError();
    } else if (how == "graph") {
      e = cudaGraphLaunch(graphs[idx], s);
    } else if (how == "coop") {
      void* args[] = {&g_out, &iters};
      e = cudaLaunchCooperativeKernel((void*)Burn, dim3(g_blocks), dim3(256), args, 0, s);
    } else if (how == "ex") {
      cudaLaunchConfig_t cfg = {};
      cfg.gridDim = dim3(g_blocks);
      cfg.blockDim = dim3(256);
      cfg.stream = s;
      e = cudaLaunchKernelEx(&cfg, Burn, g_out, iters);
    } else {
      std::fprintf(stderr, "capbench: unknown --launch %s\n", how.c_str());
      std::exit(2);
    }
    GateAfter(s, e);
    CHECK(e);
  }
};

static void WaitStart(double start_at) {
  if (start_at <= 0) return;
  const double d = start_at - RealMs();
  if (d > 0) usleep(static_cast<useconds_t>(d * 1000));
}

int main(int argc, char** argv) {
  Args a = Parse(argc, argv);
  g_direct = a.direct;
#ifdef CAPBENCH_DIRECT
  if (a.direct) {
    tessera::slice::SliceConfig cfg;
    char err[512];
    const char* p = std::getenv("TESSERA_SLICE_CONFIG");
    if (p == nullptr || !tessera::slice::LoadSliceConfig(p, true, &cfg, err, sizeof(err))) {
      std::fprintf(stderr, "capbench: --direct needs TESSERA_SLICE_CONFIG: %s\n", p ? err : "unset");
      return 2;
    }
    // No accounting region in direct mode: the cap is per process, as for one process in a slice.
    tessera::shim::LaunchGateInit(cfg, nullptr);
  }
#endif
  CHECK(cudaSetDeviceFlags(cudaDeviceScheduleSpin));
  cudaDeviceProp prop;
  CHECK(cudaGetDeviceProperties(&prop, 0));
  // Blocks that fit co-resident on every SM (so cooperative launches are legal too).
  int per_sm = 0;
  CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, Burn, 256, 0));
  // Several waves by default, so an SM partition that is not a divisor of the SM count loses little
  // to the last, partial wave; a cooperative grid must be co-resident: one wave.
  // Full occupancy: a kernel that leaves thread slots free would let a co-running MPS client do its
  // work for free, and the benchmark would measure latency hiding instead of SM share.
  const int wave = prop.multiProcessorCount * per_sm;
  g_blocks = a.blocks > 0 ? a.blocks : wave * (a.launch == "coop" ? 1 : std::max(1, a.waves));
  CHECK(cudaMalloc(&g_out, g_blocks * sizeof(float)));

  if (a.mode == "calibrate") {
    cudaEvent_t e0, e1;
    CHECK(cudaEventCreate(&e0));
    CHECK(cudaEventCreate(&e1));
    int iters = 20000;
    float ms = 0;
    for (int round = 0; round < 6; ++round) {
      Burn<<<g_blocks, 256>>>(g_out, iters);  // warm
      std::vector<float> t;
      for (int r = 0; r < 7; ++r) {
        CHECK(cudaEventRecord(e0));
        Burn<<<g_blocks, 256>>>(g_out, iters);
        CHECK(cudaEventRecord(e1));
        CHECK(cudaEventSynchronize(e1));
        CHECK(cudaEventElapsedTime(&ms, e0, e1));
        t.push_back(ms);
      }
      std::sort(t.begin(), t.end());
      ms = t[3];
      const double target_ms = a.us / 1000.0;
      if (std::abs(ms - target_ms) / target_ms < 0.02) break;
      iters = std::max(1, static_cast<int>(iters * target_ms / ms));
    }
    const char* pct = std::getenv("CUDA_MPS_ACTIVE_THREAD_PERCENTAGE");
    std::printf("{\"mode\":\"calibrate\",\"us\":%.1f,\"iters\":%d,\"measured_us\":%.1f,\"blocks\":%d,\"sms\":%d,"
                "\"gpu\":\"%s\",\"mps_pct\":\"%s\"}\n",
                a.us, iters, ms * 1000, g_blocks, prop.multiProcessorCount, prop.name, pct ? pct : "");
    return 0;
  }

  if (a.mode == "work") {
    std::vector<cudaStream_t> streams(a.streams);
    for (auto& s : streams) CHECK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
    Launcher l{a.launch, a.iters, {}};
    l.Init(streams);
    // Warm-up (module load, first measurement of the gate) outside the timed part.
    for (int i = 0; i < 2; ++i) l.Launch(streams[0], 0);
    CHECK(cudaDeviceSynchronize());
    WaitStart(a.start_at);
    // Completion of each kernel is sampled through one event per launch; per-second counts give the
    // worst 1 s window.
    const int seconds = static_cast<int>(a.seconds + 0.999);
    std::vector<long> per_second(seconds + 2, 0);
    std::vector<cudaEvent_t> ring(64);
    std::vector<int> ring_sec(64, -1);
    for (auto& e : ring) CHECK(cudaEventCreateWithFlags(&e, cudaEventDisableTiming));
    long launched = 0, done = 0;
    size_t head = 0, tail = 0;
    const double t0 = NowS();
    auto reap = [&](bool block) {
      while (head < tail) {
        cudaEvent_t e = ring[head % ring.size()];
        if (block) CHECK(cudaEventSynchronize(e));
        else if (cudaEventQuery(e) != cudaSuccess) break;
        const double t = NowS() - t0;
        if (t < a.seconds) per_second[static_cast<int>(t)]++;
        ++done;
        ++head;
      }
    };
    while (NowS() - t0 < a.seconds) {
      const int si = static_cast<int>(launched % a.streams);
      l.Launch(streams[si], si);
      // The completion marker is not a kernel: it does not go through the gate.
      if (tail - head == ring.size()) {
        cudaEvent_t e = ring[head % ring.size()];
        CHECK(cudaEventSynchronize(e));
        reap(false);
      }
      CHECK(cudaEventRecord(ring[tail % ring.size()], streams[si]));
      ++tail;
      ++launched;
      reap(false);
    }
    // Work finished inside the window counts; the rest drains untimed.
    reap(false);
    const long in_window = done;
    const double elapsed = a.seconds;
    reap(true);
    CHECK(cudaDeviceSynchronize());
    long wmin = -1, wmax = 0;
    for (int s = 1; s < static_cast<int>(a.seconds); ++s) {  // skip the first second (ramp)
      wmin = wmin < 0 ? per_second[s] : std::min(wmin, per_second[s]);
      wmax = std::max(wmax, per_second[s]);
    }
    std::printf("{\"mode\":\"work\",\"iters\":%d,\"launch\":\"%s\",\"streams\":%d,\"kernels\":%ld,"
                "\"seconds\":%.3f,\"rate\":%.3f,\"window_min\":%ld,\"window_max\":%ld,\"mps_pct\":\"%s\"%s}\n",
                a.iters, a.launch.c_str(), a.streams, in_window, elapsed, in_window / elapsed,
                wmin, wmax, std::getenv("CUDA_MPS_ACTIVE_THREAD_PERCENTAGE") ? std::getenv("CUDA_MPS_ACTIVE_THREAD_PERCENTAGE") : "",
                GateStats().c_str());
    return 0;
  }

  if (a.mode == "latency") {
    cudaStream_t s;
    CHECK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
    Launcher l{"plain", a.iters, {}};
    for (int i = 0; i < 20; ++i) l.Launch(s, 0);
    CHECK(cudaStreamSynchronize(s));
    WaitStart(a.start_at);
    std::vector<double> lat;
    const double t0 = NowS();
    double next = t0;
    while (NowS() - t0 < a.seconds) {
      while (NowS() < next) {
      }
      const double t1 = NowS();
      l.Launch(s, 0);
      CHECK(cudaStreamSynchronize(s));
      lat.push_back((NowS() - t1) * 1e6);
      next += a.period_us * 1e-6;
      if (next < NowS()) next = NowS();
    }
    std::sort(lat.begin(), lat.end());
    auto pct = [&](double p) { return lat[std::min(lat.size() - 1, static_cast<size_t>(p * lat.size()))]; };
    std::printf("{\"mode\":\"latency\",\"iters\":%d,\"samples\":%zu,\"p50_us\":%.1f,\"p99_us\":%.1f,"
                "\"max_us\":%.1f%s}\n",
                a.iters, lat.size(), pct(0.50), pct(0.99), lat.back(), GateStats().c_str());
    return 0;
  }
  if (a.mode == "fault") {
    // An illegal write: what happens to the neighbours of a faulting client is what spatial mode
    // must document.
    WaitStart(a.start_at);
    Fault<<<1, 1>>>();
    cudaError_t e = cudaDeviceSynchronize();
    std::printf("{\"mode\":\"fault\",\"error\":\"%s\"}\n", cudaGetErrorName(e));
    return 0;
  }
  std::fprintf(stderr, "capbench: unknown mode %s\n", a.mode.c_str());
  return 2;
}
