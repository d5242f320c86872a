// bench_shim: the shim's costs on the paths it touches, run with and without libtessera.so by
// test/gpu/sections/30-bench.sh (native baseline in the same run).
//   bench_shim [ROUNDS_SCALE]   prints one JSON line:
//     launch_submit_ns   median per-launch host time of an empty kernel (batches of 256, no sync inside)
//     roundtrip_us p50/p99       launch + cudaStreamSynchronize
//     malloc_us / free_us p50   cudaMalloc/cudaFree at 4 KiB, 1 MiB, 64 MiB
#include <cuda_runtime.h>
#include <stdio.h>
#include <stdlib.h>

#include <algorithm>
#include <chrono>
#include <vector>

__global__ void Empty() {}

namespace {

using Clock = std::chrono::steady_clock;

double Ns(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double, std::nano>(b - a).count();
}

double Pct(std::vector<double> v, double p) {
  std::sort(v.begin(), v.end());
  size_t i = static_cast<size_t>(p * (v.size() - 1));
  return v[i];
}

void Check(cudaError_t e, const char* what) {
  if (e != cudaSuccess) {
    fprintf(stderr, "bench_shim: %s: %s\n", what, cudaGetErrorString(e));
    exit(1);
  }
}

}  // namespace

int main(int argc, char** argv) {
  int scale = argc > 1 ? atoi(argv[1]) : 1;
  Check(cudaFree(nullptr), "init");
  cudaStream_t s;
  Check(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking), "stream");
  for (int i = 0; i < 2000; ++i) Empty<<<1, 1, 0, s>>>();
  Check(cudaStreamSynchronize(s), "warmup");

  // Submit time: host time per launch, batches small enough never to fill the launch queue.
  std::vector<double> per_launch;
  for (int b = 0; b < 400 * scale; ++b) {
    auto t0 = Clock::now();
    for (int i = 0; i < 256; ++i) Empty<<<1, 1, 0, s>>>();
    auto t1 = Clock::now();
    per_launch.push_back(Ns(t0, t1) / 256);
    Check(cudaStreamSynchronize(s), "batch sync");
  }
  Check(cudaGetLastError(), "launch");

  std::vector<double> rt;
  for (int i = 0; i < 20000 * scale; ++i) {
    auto t0 = Clock::now();
    Empty<<<1, 1, 0, s>>>();
    cudaStreamSynchronize(s);
    rt.push_back(Ns(t0, Clock::now()) / 1000);
  }

  const size_t sizes[] = {4096, 1 << 20, 64 << 20};
  double malloc_p50[3], free_p50[3];
  for (int k = 0; k < 3; ++k) {
    std::vector<double> m, f;
    for (int i = 0; i < 2000 * scale + 100; ++i) {
      void* p = nullptr;
      auto t0 = Clock::now();
      Check(cudaMalloc(&p, sizes[k]), "cudaMalloc");
      auto t1 = Clock::now();
      Check(cudaFree(p), "cudaFree");
      auto t2 = Clock::now();
      if (i >= 100) {
        m.push_back(Ns(t0, t1) / 1000);
        f.push_back(Ns(t1, t2) / 1000);
      }
    }
    malloc_p50[k] = Pct(m, 0.5);
    free_p50[k] = Pct(f, 0.5);
  }
  printf("{\"launch_submit_ns\":%.1f,\"launch_submit_ns_p90\":%.1f,\"roundtrip_us_p50\":%.3f,\"roundtrip_us_p99\":%.3f,"
         "\"malloc_us_p50\":{\"4KiB\":%.3f,\"1MiB\":%.3f,\"64MiB\":%.3f},"
         "\"free_us_p50\":{\"4KiB\":%.3f,\"1MiB\":%.3f,\"64MiB\":%.3f}}\n",
         Pct(per_launch, 0.5), Pct(per_launch, 0.9), Pct(rt, 0.5), Pct(rt, 0.99), malloc_p50[0], malloc_p50[1],
         malloc_p50[2], free_p50[0], free_p50[1], free_p50[2]);
  return 0;
}
