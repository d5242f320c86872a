// Micro-benchmark of the placement engine at extender scale.
//
// Builds a synthetic cluster shaped like the Alibaba openb trace (8-card, 4-card, 2-card and 1-card
// nodes of several models), fills it to about 70 % with a mix of fractional and whole-card pods,
// then times Engine::Evaluate over every node for typical requests, per policy. Prints p50/p99/max
// per call. No files, no arguments needed; `--nodes N` and `--calls N` override the defaults.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "placement/engine.h"

namespace pl = tessera::placement;

namespace {

std::vector<pl::Node> MakeCluster(int n, std::mt19937_64& rng) {
  struct Shape {
    int gpus;
    const char* model;
    int64_t cpu, mem, gpu_mem;
    int weight;
  };
  const Shape shapes[] = {{8, "G2", 96000, 393216, 16384, 45}, {2, "T4", 104000, 524288, 16384, 32},
                          {2, "P100", 64000, 262144, 16384, 11},  {8, "G3", 128000, 786432, 32768, 4},
                          {4, "V100M16", 32000, 131072, 16384, 4}, {8, "V100M32", 96000, 786432, 32768, 2},
                          {1, "A10", 128000, 1048576, 24576, 2}};
  int total = 0;
  for (const auto& s : shapes) total += s.weight;
  std::vector<pl::Node> nodes;
  for (int i = 0; i < n; ++i) {
    int pick = int(rng() % uint64_t(total));
    const Shape* s = shapes;
    while (pick >= s->weight) pick -= (s++)->weight;
    pl::Node node;
    node.name = "node-" + std::to_string(i);
    node.cpu_milli = s->cpu;
    node.memory_mib = s->mem;
    for (int g = 0; g < s->gpus; ++g) {
      pl::Gpu gpu;
      gpu.uuid = "GPU-" + std::to_string(i) + "-" + std::to_string(g);
      gpu.model = s->model;
      gpu.memory_mib = s->gpu_mem;
      gpu.numa = g * 2 / s->gpus;
      node.gpus.push_back(gpu);
    }
    nodes.push_back(std::move(node));
  }
  return nodes;
}

// Request kinds and frequencies resembling the trace's most common ones.
struct Kind {
  int gpus, pct;
  int64_t cpu, mem;
  double weight;
};
const Kind kKinds[] = {{1, 100, 11000, 32768, 30}, {1, 81, 3000, 15258, 13}, {1, 100, 3000, 15258, 6},
                       {1, 47, 11000, 30517, 5},   {1, 47, 8000, 22888, 4},  {0, 0, 12000, 24576, 5},
                       {0, 0, 32000, 65536, 4},    {1, 32, 4000, 15258, 3},  {1, 65, 11000, 30517, 3},
                       {1, 23, 4000, 15258, 2},    {1, 46, 6000, 22888, 2},  {2, 100, 16000, 65536, 0.5},
                       {4, 100, 32000, 131072, 0.3}, {8, 100, 64000, 262144, 0.5}, {1, 16, 4000, 15258, 1}};

std::shared_ptr<const pl::Workload> MakeWorkload() {
  std::vector<pl::TypicalRequest> reqs;
  for (const auto& k : kKinds) {
    pl::TypicalRequest t;
    t.gpus = k.gpus;
    t.cores = k.pct;
    t.cpu_milli = k.cpu;
    t.memory_mib = k.mem;
    t.weight = k.weight;
    reqs.push_back(t);
  }
  return pl::Workload::Make(std::move(reqs), 1.0);
}

pl::PodRequest ToRequest(const Kind& k, pl::Policy p) {
  pl::PodRequest r;
  r.cpu_milli = k.cpu;
  r.memory_mib = k.mem;
  r.node_policy = p;
  if (k.gpus > 0) {
    pl::ContainerRequest c;
    c.gpus = k.gpus;
    c.cores = k.pct;
    c.memory_percent = k.pct;
    r.containers.push_back(c);
  }
  return r;
}

double Percentile(std::vector<double> v, double q) {
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, size_t(q * double(v.size())))];
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<int> sizes = {500, 5000};
  int calls = 300;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!std::strcmp(argv[i], "--nodes")) sizes = {std::atoi(argv[i + 1])};
    if (!std::strcmp(argv[i], "--calls")) calls = std::max(1, std::atoi(argv[i + 1]));
  }
  std::printf("%-8s %-9s %10s %10s %10s %9s\n", "nodes", "policy", "p50_ms", "p99_ms", "max_ms", "feasible");
  for (int n : sizes) {
    std::mt19937_64 rng(7);
    pl::Snapshot snap(MakeCluster(n, rng), MakeWorkload());
    const pl::Engine engine;
    double wsum = 0;
    for (const auto& k : kKinds) wsum += k.weight;
    auto draw = [&]() -> const Kind& {
      double x = std::uniform_real_distribution<double>(0, wsum)(rng);
      for (const auto& k : kKinds) {
        if ((x -= k.weight) < 0) return k;
      }
      return kKinds[0];
    };
    // Fill to about 70 % of GPU capacity with best-fit placements (fast, realistic leftovers).
    pl::Evaluation ev;
    pl::Assignment a;
    while (snap.used_gpu_cores() < snap.total_gpu_cores() * 7 / 10) {
      const pl::PodRequest r = ToRequest(draw(), pl::Policy::kBestFit);
      // Place on a random feasible node among a small sample: cheap and leaves varied states.
      for (int t = 0; t < 8; ++t) {
        const uint32_t node = uint32_t(rng() % uint64_t(n));
        const char* why = nullptr;
        if (engine.Assign(snap, r, node, &a, &why)) {
          snap.Commit(node, r, a);
          break;
        }
      }
    }
    for (pl::Policy p : pl::AllPolicies()) {
      std::vector<double> ms;
      size_t feasible = 0;
      for (int c = 0; c < calls; ++c) {
        const pl::PodRequest r = ToRequest(draw(), p);
        const auto t0 = std::chrono::steady_clock::now();
        engine.Evaluate(snap, r, {}, &ev);
        const auto t1 = std::chrono::steady_clock::now();
        ms.push_back(std::chrono::duration<double, std::milli>(t1 - t0).count());
        feasible += ev.feasible;
      }
      std::printf("%-8d %-9s %10.3f %10.3f %10.3f %9zu\n", n, std::string(pl::PolicyName(p)).c_str(),
                  Percentile(ms, 0.5), Percentile(ms, 0.99), *std::max_element(ms.begin(), ms.end()),
                  feasible / size_t(calls));
    }
  }
  return 0;
}
