// tessera sim: replays a cluster trace through the placement engine (the artifact protocol of the
// ATC'23 "Beware of Fragmentation" paper) and reports unallocated GPU against arrived workload.
//
// Thin: flag parsing, file I/O, threads and output formats; the replay itself is
// placement/replay.h and the plot is cli/sim_plot.h.
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "cli/commands.h"
#include "cli/sim_plot.h"
#include "kube/file_read.h"
#include "placement/engine.h"
#include "placement/replay.h"
#include "placement/trace.h"

namespace tessera::cli {

namespace {

namespace pl = tessera::placement;
namespace tr = tessera::placement::trace;

const char kUsage[] =
    "usage: tessera sim --nodes FILE --pods FILE [--policy NAME[,NAME...]] [--seeds 42-51]\n"
    "                   [--out DIR] [--plot FILE.png] [--jobs N] [--inflation 1.3]\n"
    "                   [--typical-coverage 0.95] [--quiet]\n"
    "\n"
    "Replays a trace (Alibaba cluster-trace-gpu-v2023 CSV format) through the placement engine:\n"
    "pods shuffled with each seed, inflated by sampling with replacement to 130 % of GPU capacity,\n"
    "placed one at a time with no departures. Prints the unallocated GPU share at 100 % arrived\n"
    "(median over seeds) per policy.\n"
    "\n"
    "  --nodes FILE      node list CSV (sn,cpu_milli,memory_mib,gpu,model)\n"
    "  --pods FILE       pod list CSV (name,cpu_milli,memory_mib,num_gpu,gpu_milli,gpu_spec,...)\n"
    "  --policy LIST     comma-separated: random,binpack,spread,bestfit,fgd,tessera or 'all'\n"
    "                    (default tessera)\n"
    "  --seeds A-B|A,B   seeds (default 42-51)\n"
    "  --out DIR         write summary.csv, summary.json and curves.csv there\n"
    "  --plot FILE.png   unallocated % vs arrived %, median over seeds, one curve per policy\n"
    "  --jobs N          parallel replays (default: number of CPUs)\n"
    "  --inflation R     arrivals up to R x GPU capacity (default 1.3, range 1..10)\n"
    "  --typical-coverage C  fgd: share of pods whose most frequent request kinds form the\n"
    "                    typical workload (default 0.95 as the artifact; range 0.01..1)\n"
    "  --quiet           no progress bar\n";

// The largest trace list read: the dataset's are under 1 MiB each, its seeded variants a few MiB.
constexpr size_t kMaxTraceBytes = size_t{64} << 20;

// A device or pipe named by mistake (/dev/zero) fails at the limit instead of filling memory.
bool ReadFile(const std::string& path, std::string* out, std::string* err) {
  return kube::ReadFileCapped(path, kMaxTraceBytes, "a trace list", out, err);
}

bool ParseSeeds(const std::string& s, std::vector<uint64_t>* out) {
  std::stringstream ss(s);
  std::string part;
  while (std::getline(ss, part, ',')) {
    if (part.empty()) return false;
    size_t dash = part.find('-');
    try {
      size_t used = 0;
      if (dash == std::string::npos) {
        out->push_back(std::stoull(part, &used));
        if (used != part.size()) return false;
      } else {
        uint64_t a = std::stoull(part.substr(0, dash), &used);
        if (used != dash) return false;
        std::string rest = part.substr(dash + 1);
        uint64_t b = std::stoull(rest, &used);
        if (used != rest.size() || b < a || b - a > 10000) return false;
        for (uint64_t x = a; x <= b; ++x) out->push_back(x);
      }
    } catch (...) {
      return false;
    }
  }
  return !out->empty();
}

double Median(std::vector<double> v) {
  std::erase_if(v, [](double x) { return std::isnan(x); });
  if (v.empty()) return std::nan("");
  std::sort(v.begin(), v.end());
  const size_t m = v.size() / 2;
  return v.size() % 2 ? v[m] : 0.5 * (v[m - 1] + v[m]);
}

struct Job {
  pl::Policy policy;
  uint64_t seed;
  tr::ReplayResult result;
};

// Progress across all jobs: one line on stderr, redrawn in place.
class Progress {
 public:
  Progress(bool enabled, size_t jobs) : enabled_(enabled), jobs_(jobs) {}
  void Update(size_t job, uint64_t done, uint64_t total) {
    if (!enabled_) return;
    std::lock_guard<std::mutex> lock(mu_);
    if (fraction_.size() < jobs_) fraction_.resize(jobs_, 0);
    fraction_[job] = total ? double(done) / double(total) : 1;
    double sum = 0;
    for (double f : fraction_) sum += f;
    const double frac = sum / double(jobs_);
    const int width = 40;
    const int fill = int(frac * width);
    std::fprintf(stderr, "\r[%.*s%*s] %5.1f%%  %zu replays", fill, "########################################",
                 width - fill, "", 100 * frac, jobs_);
    std::fflush(stderr);
  }
  void Done() {
    if (enabled_) std::fprintf(stderr, "\n");
  }

 private:
  bool enabled_;
  size_t jobs_;
  std::mutex mu_;
  std::vector<double> fraction_;
};

std::string JsonNumber(double x) {
  if (std::isnan(x)) return "null";
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.4f", x);
  return buf;
}

}  // namespace

int SimCmd(int argc, char** argv) {
  std::string nodes_path, pods_path, policies = "tessera", seeds_arg = "42-51", out_dir, plot_path;
  int jobs = int(std::max(1u, std::thread::hardware_concurrency()));
  double inflation = 1.3;
  double coverage = tr::ReplayOptions{}.typical_coverage;
  bool quiet = false;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto value = [&](std::string* dst) {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "tessera sim: %s needs a value\n\n%s", a.c_str(), kUsage);
        return false;
      }
      *dst = argv[++i];
      return true;
    };
    std::string tmp;
    if (a == "--help" || a == "-h") {
      std::printf("%s", kUsage);
      return 0;
    } else if (a == "--nodes") {
      if (!value(&nodes_path)) return 2;
    } else if (a == "--pods") {
      if (!value(&pods_path)) return 2;
    } else if (a == "--policy") {
      if (!value(&policies)) return 2;
    } else if (a == "--seeds") {
      if (!value(&seeds_arg)) return 2;
    } else if (a == "--out") {
      if (!value(&out_dir)) return 2;
    } else if (a == "--plot") {
      if (!value(&plot_path)) return 2;
    } else if (a == "--quiet") {
      quiet = true;
    } else if (a == "--jobs") {
      if (!value(&tmp)) return 2;
      char* end = nullptr;
      long j = std::strtol(tmp.c_str(), &end, 10);
      if (!end || *end || j < 1 || j > 256) {
        std::fprintf(stderr, "tessera sim: --jobs: want an integer in 1..256, got '%s'\n", tmp.c_str());
        return 2;
      }
      jobs = int(j);
    } else if (a == "--inflation") {
      if (!value(&tmp)) return 2;
      char* end = nullptr;
      inflation = std::strtod(tmp.c_str(), &end);
      if (!end || *end || !(inflation >= 1.0 && inflation <= 10.0)) {
        std::fprintf(stderr, "tessera sim: --inflation: want a number in 1..10, got '%s'\n", tmp.c_str());
        return 2;
      }
    } else if (a == "--typical-coverage") {
      if (!value(&tmp)) return 2;
      char* end = nullptr;
      coverage = std::strtod(tmp.c_str(), &end);
      if (!end || *end || !(coverage >= 0.01 && coverage <= 1.0)) {
        std::fprintf(stderr, "tessera sim: --typical-coverage: want a number in 0.01..1, got '%s'\n", tmp.c_str());
        return 2;
      }
    } else {
      std::fprintf(stderr, "tessera sim: unknown flag '%s'\n\n%s", a.c_str(), kUsage);
      return 2;
    }
  }
  if (nodes_path.empty() || pods_path.empty()) {
    std::fprintf(stderr, "tessera sim: --nodes and --pods are required\n\n%s", kUsage);
    return 2;
  }
  std::vector<pl::Policy> policy_list;
  {
    std::stringstream ss(policies);
    std::string name;
    while (std::getline(ss, name, ',')) {
      if (name == "all") {
        for (pl::Policy p : pl::AllPolicies()) policy_list.push_back(p);
        continue;
      }
      auto p = pl::ParsePolicy(name);
      if (!p) {
        std::fprintf(stderr,
                     "tessera sim: --policy: unknown policy '%s' (allowed: random, binpack, spread, bestfit, "
                     "fgd, tessera, all)\n",
                     name.c_str());
        return 2;
      }
      policy_list.push_back(*p);
    }
    if (policy_list.empty()) {
      std::fprintf(stderr, "tessera sim: --policy: empty list\n");
      return 2;
    }
  }
  std::vector<uint64_t> seeds;
  if (!ParseSeeds(seeds_arg, &seeds)) {
    std::fprintf(stderr, "tessera sim: --seeds: want A-B or A,B,... of non-negative integers, got '%s'\n",
                 seeds_arg.c_str());
    return 2;
  }

  std::string text, err;
  if (!ReadFile(nodes_path, &text, &err)) {
    std::fprintf(stderr, "tessera sim: --nodes: %s\n", err.c_str());
    return 1;
  }
  auto nodes = tr::ParseNodes(text);
  if (!nodes.ok()) {
    std::fprintf(stderr, "tessera sim: %s: %s\n", nodes_path.c_str(), nodes.error.c_str());
    return 1;
  }
  if (!ReadFile(pods_path, &text, &err)) {
    std::fprintf(stderr, "tessera sim: --pods: %s\n", err.c_str());
    return 1;
  }
  auto pods = tr::ParsePods(text);
  if (!pods.ok()) {
    std::fprintf(stderr, "tessera sim: %s: %s\n", pods_path.c_str(), pods.error.c_str());
    return 1;
  }
  int64_t gpus = 0;
  for (const auto& n : nodes.value) gpus += n.gpus;
  if (gpus == 0) {
    std::fprintf(stderr, "tessera sim: %s: the cluster has no GPU\n", nodes_path.c_str());
    return 1;
  }
  if (pods.value.empty()) {
    std::fprintf(stderr, "tessera sim: %s: no pods\n", pods_path.c_str());
    return 1;
  }

  std::vector<Job> all;
  for (pl::Policy p : policy_list) {
    for (uint64_t s : seeds) all.push_back(Job{p, s, {}});
  }
  Progress progress(!quiet && isatty(STDERR_FILENO), all.size());
  std::atomic<size_t> next{0};
  auto worker = [&] {
    for (;;) {
      const size_t j = next.fetch_add(1);
      if (j >= all.size()) return;
      tr::ReplayOptions opts;
      opts.inflation = inflation;
      opts.typical_coverage = coverage;
      opts.progress = [&, j](uint64_t done, uint64_t total) { progress.Update(j, done, total); };
      all[j].result = tr::Replay(nodes.value, pods.value, all[j].policy, all[j].seed, opts);
    }
  };
  std::vector<std::thread> threads;
  const int nthreads = std::min<int>(jobs, int(all.size()));
  for (int t = 0; t < nthreads; ++t) threads.emplace_back(worker);
  for (auto& t : threads) t.join();
  progress.Done();

  // Summary per policy: median over seeds of the unallocated share at 100 % arrived.
  std::printf("%-10s %8s %10s %10s %10s %8s\n", "policy", "seeds", "unalloc%", "min", "max", "sec/run");
  std::vector<PlotSeries> series;
  for (pl::Policy p : policy_list) {
    std::vector<double> vals;
    double secs = 0;
    std::vector<const tr::ReplayResult*> runs;
    for (const auto& j : all) {
      if (j.policy != p) continue;
      vals.push_back(j.result.unallocated_at_100);
      secs += j.result.seconds;
      runs.push_back(&j.result);
    }
    auto mm = std::minmax_element(vals.begin(), vals.end());
    std::printf("%-10s %8zu %10.2f %10.2f %10.2f %8.2f\n", std::string(pl::PolicyName(p)).c_str(), vals.size(),
                Median(vals), *mm.first, *mm.second, secs / double(vals.size()));
    // Median curve on a 0.5 % grid of arrived workload.
    PlotSeries s;
    s.name = std::string(pl::PolicyName(p));
    for (int step = 0; step <= 2 * int(std::ceil(inflation * 100)); ++step) {
      const double x = step * 0.5;
      std::vector<double> ys;
      for (const auto* r : runs) {
        // Last point at or before x (the curve is monotone in arrived).
        const auto& c = r->curve;
        auto it = std::upper_bound(c.begin(), c.end(), x,
                                   [](double v, const tr::CurvePoint& pt) { return v < pt.arrived_pct; });
        if (it == c.begin()) continue;
        if (it == c.end() && x > c.back().arrived_pct + 0.5) continue;
        ys.push_back(std::prev(it)->unallocated_pct);
      }
      if (ys.size() == runs.size() && !ys.empty()) s.points.emplace_back(x, Median(ys));
    }
    series.push_back(std::move(s));
  }

  if (!out_dir.empty()) {
    std::error_code ec;
    std::filesystem::create_directories(out_dir, ec);
    if (ec) {
      std::fprintf(stderr, "tessera sim: --out: cannot create %s: %s\n", out_dir.c_str(), ec.message().c_str());
      return 1;
    }
    std::ofstream csv(out_dir + "/summary.csv");
    csv << "policy,seed,unallocated_pct_at_100,placed,failed,failed_gpu_pods,seconds\n";
    for (const auto& j : all) {
      csv << pl::PolicyName(j.policy) << ',' << j.seed << ',' << JsonNumber(j.result.unallocated_at_100) << ','
          << j.result.placed << ',' << j.result.failed << ',' << j.result.failed_gpu_pods << ','
          << JsonNumber(j.result.seconds) << '\n';
    }
    std::ofstream curves(out_dir + "/curves.csv");
    curves << "policy,seed,pod,arrived_pct,unallocated_pct\n";
    for (const auto& j : all) {
      // One row per 0.1 % of arrived workload keeps the file small and the curve exact enough.
      double last = -1;
      const auto& c = j.result.curve;
      for (size_t i = 0; i < c.size(); ++i) {
        if (i + 1 < c.size() && c[i].arrived_pct - last < 0.1) continue;
        last = c[i].arrived_pct;
        curves << pl::PolicyName(j.policy) << ',' << j.seed << ',' << i + 1 << ',' << JsonNumber(c[i].arrived_pct)
               << ',' << JsonNumber(c[i].unallocated_pct) << '\n';
      }
    }
    std::ofstream json(out_dir + "/summary.json");
    json << "{\n  \"nodes\": \"" << nodes_path << "\",\n  \"pods\": \"" << pods_path
         << "\",\n  \"inflation\": " << inflation << ",\n  \"policies\": [\n";
    for (size_t pi = 0; pi < policy_list.size(); ++pi) {
      std::vector<double> vals;
      json << "    {\"policy\": \"" << pl::PolicyName(policy_list[pi]) << "\", \"runs\": [";
      bool first = true;
      for (const auto& j : all) {
        if (j.policy != policy_list[pi]) continue;
        vals.push_back(j.result.unallocated_at_100);
        json << (first ? "" : ", ") << "{\"seed\": " << j.seed
             << ", \"unallocated_pct_at_100\": " << JsonNumber(j.result.unallocated_at_100)
             << ", \"placed\": " << j.result.placed << ", \"failed\": " << j.result.failed
             << ", \"seconds\": " << JsonNumber(j.result.seconds) << "}";
        first = false;
      }
      json << "], \"median_unallocated_pct_at_100\": " << JsonNumber(Median(vals)) << "}"
           << (pi + 1 < policy_list.size() ? "," : "") << "\n";
    }
    json << "  ]\n}\n";
    if (!csv || !curves || !json) {
      std::fprintf(stderr, "tessera sim: --out: writing to %s failed\n", out_dir.c_str());
      return 1;
    }
  }
  if (!plot_path.empty()) {
    std::string perr;
    if (!WritePlotPng(plot_path, series, &perr)) {
      std::fprintf(stderr, "tessera sim: --plot: %s\n", perr.c_str());
      return 1;
    }
  }
  return 0;
}

}  // namespace tessera::cli
