// bench_watchdog [GPUS] [SLICES_PER_GPU] [POLLS]: the cost of one watchdog poll on the simulated backend.
// Every slice has one real process (a paused child) in a pod cgroup of a /proc lookalike, holding memory
// under its wall, so each poll does the full work: list processes, read each one's stat/cgroup/comm,
// attribute, sum and compare. Prints the median and p99 poll time and the CPU share at a 100 ms period.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "agent/watchdog.h"
#include "gpu/sim_backend.h"

using namespace tessera;
namespace fs = std::filesystem;

int main(int argc, char** argv) {
  const int gpus = argc > 1 ? atoi(argv[1]) : 8;
  const int per_gpu = argc > 2 ? atoi(argv[2]) : 10;
  const int polls = argc > 3 ? atoi(argv[3]) : 2000;
  const fs::path root = fs::temp_directory_path() / ("bench-wd-" + std::to_string(getpid()));
  std::string yaml = "gpus:\n";
  for (int g = 0; g < gpus; ++g) yaml += "  - {uuid: GPU-b" + std::to_string(g) + ", model: m, memory_mib: 81920}\n";
  gpu::SimSpec spec;
  if (!gpu::ParseSimSpec(yaml, "bench", &spec).ok()) return 1;
  gpu::SimBackend backend(spec);
  backend.Init();
  std::vector<agent::WatchedSlice> slices;
  std::vector<pid_t> kids;
  std::vector<std::string> uuids;
  for (int g = 0; g < gpus; ++g) {
    const std::string uuid = "GPU-b" + std::to_string(g);
    uuids.push_back(uuid);
    std::vector<gpu::ProcessUsage> procs;
    for (int k = 0; k < per_gpu; ++k) {
      pid_t p = fork();
      if (p == 0) {
        for (;;) pause();
      }
      kids.push_back(p);
      char uid[64];
      snprintf(uid, sizeof(uid), "3f1c0a52-0000-4000-8000-%012d", g * 1000 + k);
      const fs::path d = root / std::to_string(p);
      fs::create_directories(d);
      std::ifstream stat("/proc/" + std::to_string(p) + "/stat");
      std::stringstream ss;
      ss << stat.rdbuf();
      std::ofstream(d / "stat") << ss.str();
      std::ofstream(d / "cgroup") << "0::/kubepods.slice/kubepods-pod" << uid << ".slice/cri-containerd-abcdef0123456789.scope\n";
      std::ofstream(d / "comm") << "python3\n";
      agent::WatchedSlice s;
      s.name = "s-" + std::to_string(g) + "-" + std::to_string(k);
      s.region = "/nonexistent";
      s.pod_uid = uid;
      s.limits[uuid] = 8ull << 30;
      slices.push_back(s);
      procs.push_back({static_cast<uint32_t>(p), 4ull << 30, true});
    }
    backend.SetProcesses(uuid, procs);
  }
  agent::WatchdogOptions o;
  o.proc_root = root.string();
  agent::WatchdogHooks hooks;
  hooks.slices = [&] { return slices; };
  agent::Watchdog wd(o, &backend, hooks);
  wd.SetGpus(uuids);
  std::vector<double> us;
  for (int i = 0; i < polls; ++i) {
    auto t0 = std::chrono::steady_clock::now();
    auto found = wd.PollOnce();
    us.push_back(std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count());
    if (!found.empty()) return 2;
  }
  std::sort(us.begin(), us.end());
  const double med = us[us.size() / 2], p99 = us[us.size() * 99 / 100];
  std::printf("{\"gpus\":%d,\"processes\":%d,\"polls\":%d,\"median_us\":%.1f,\"p99_us\":%.1f,"
              "\"cpu_share_at_100ms\":%.4f}\n",
              gpus, gpus * per_gpu, polls, med, p99, med / 100000.0);
  for (pid_t p : kids) kill(p, SIGKILL);
  for (pid_t p : kids) waitpid(p, nullptr, 0);
  fs::remove_all(root);
  return 0;
}
