// watchdogctl: the agent's watchdog (src/agent/watchdog.h) on the real driver, without gRPC/Kubernetes.
//   watchdogctl root DIR -- CMD...        appends this pid to DIR/roots (as tessera run does), execs CMD
//   watchdogctl watch STATE STOP LIMIT    watches the standalone slices under STATE every 100 ms until the
//                                         file STOP exists; meanwhile samples NVML every 5 ms for the first
//                                         moment each pid held more than LIMIT bytes. Prints JSON:
//                                         {"kills":[{"pid","ms","slice"}],"first_over":{pid: ms}}
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "agent/watchdog.h"
#include "slice/region.h"
#include "slice/roots.h"

using namespace tessera;

static long long NowMs() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1000LL + ts.tv_nsec / 1000000;
}

int main(int argc, char** argv) {
  if (argc >= 5 && !strcmp(argv[1], "root") && !strcmp(argv[3], "--")) {
    if (!slice::AppendSliceRoot(argv[2], getpid(), slice::ProcessStartTicks(getpid()))) return 125;
    execvp(argv[4], argv + 4);
    return 127;
  }
  if (argc != 5 || strcmp(argv[1], "watch")) {
    fprintf(stderr, "usage: watchdogctl root DIR -- CMD... | watch STATE STOP LIMIT_BYTES\n");
    return 2;
  }
  const std::string state = argv[2], stop = argv[3];
  const unsigned long long limit = strtoull(argv[4], nullptr, 10);
  auto nvml = gpu::MakeNvmlBackend();
  std::vector<gpu::GpuInfo> gpus;
  if (!nvml->Init().ok() || !nvml->Discover(&gpus).ok()) return 3;
  std::vector<std::string> uuids;
  for (const auto& g : gpus) uuids.push_back(g.uuid);
  std::mutex mu;
  std::vector<std::string> kills;
  std::map<unsigned, long long> first_over;
  agent::WatchdogHooks hooks;
  hooks.slices = [&] { return agent::ListStandaloneSlices(state); };
  hooks.log = [](const std::string& l) { fprintf(stderr, "watchdog: %s\n", l.c_str()); };
  hooks.kill = [&](int pid, uint64_t start, std::string* why) {
    bool ok = agent::KillProcess("/proc", pid, start, why);
    std::lock_guard<std::mutex> lock(mu);
    kills.push_back("{\"pid\":" + std::to_string(pid) + ",\"ms\":" + std::to_string(NowMs()) +
                    ",\"ok\":" + (ok ? "true" : "false") + "}");
    return ok;
  };
  agent::WatchdogOptions o;
  o.period_s = 0.1;
  agent::Watchdog wd(o, nvml.get(), hooks);
  wd.SetGpus(uuids);
  std::atomic<bool> done{false};
  std::thread sampler([&] {
    while (!done) {
      for (const auto& u : uuids) {
        std::vector<gpu::ProcessUsage> procs;
        if (!nvml->Processes(u, &procs).ok()) continue;
        for (const auto& p : procs) {
          std::lock_guard<std::mutex> lock(mu);
          if (p.used_bytes > limit && !first_over.count(p.pid)) first_over[p.pid] = NowMs();
        }
      }
      usleep(5000);
    }
  });
  wd.Start();
  while (access(stop.c_str(), F_OK) != 0) usleep(20000);
  wd.Stop();
  done = true;
  sampler.join();
  auto st = wd.Stats();
  printf("{\"kills\":[");
  for (size_t i = 0; i < kills.size(); ++i) printf("%s%s", i ? "," : "", kills[i].c_str());
  printf("],\"first_over\":{");
  bool first = true;
  for (const auto& [pid, ms] : first_over) {
    printf("%s\"%u\":%lld", first ? "" : ",", pid, ms);
    first = false;
  }
  printf("},\"polls\":%llu,\"last_poll_s\":%.6f}\n", (unsigned long long)st.polls, st.last_poll_seconds);
  return 0;
}
