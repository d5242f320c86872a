// The attack "a process of the slice drops the shim (cleared preload) and allocates past its wall", with
// the fake driver (src/shim/testing): `tessera run` starts it in a 1 GiB slice with LD_PRELOAD removed
// by `env -u`, so the fake libcuda grants 2,000 MiB. The watchdog (the agent's NVML backend on the fake
// NVML, which lists per-process usage like the driver) kills it; a neighbour slice whose process keeps
// the shim is untouched and keeps its memory.
#include <gtest/gtest.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "agent/watchdog.h"
#include "cli/commands.h"
#include "slice/region.h"

namespace tessera::agent {
namespace {

constexpr uint64_t kMiB = 1ull << 20;

struct Child {
  pid_t pid = -1;
  int out = -1;  // its stdout
};

// `tessera run ARGS` in a child; RunCmd execs the command, so the child becomes it.
Child StartRun(std::vector<std::string> args) {
  int o[2];
  EXPECT_EQ(pipe(o), 0);
  pid_t pid = fork();
  if (pid == 0) {
    dup2(o[1], 1);
    close(o[0]);
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    _exit(tessera::cli::RunCmd(static_cast<int>(args.size()), argv.data()));
  }
  close(o[1]);
  return {pid, o[0]};
}

// The first line of the child's stdout.
std::string FirstLine(int fd) {
  std::string line;
  char c;
  while (read(fd, &c, 1) == 1 && c != '\n') line += c;
  return line;
}

uint64_t DriverBytes(gpu::Backend* b, const std::string& uuid, pid_t pid) {
  std::vector<gpu::ProcessUsage> procs;
  if (!b->Processes(uuid, &procs).ok()) return 0;
  for (const auto& p : procs) {
    if (p.pid == static_cast<uint32_t>(pid)) return p.used_bytes;
  }
  return 0;
}

TEST(WatchdogAttack, ProcessThatDropsTheShimIsKilledAndTheNeighbourKeepsRunning) {
  std::ifstream self("/proc/self/cgroup");
  std::stringstream cg;
  cg << self.rdbuf();
  if (!ParsePodCgroup(cg.str()).pod_uid.empty()) GTEST_SKIP() << "this test runs inside a pod's cgroup";
  char dir[] = "/tmp/tessera-wd-attack-XXXXXX";
  ASSERT_NE(mkdtemp(dir), nullptr);
  const std::string state = std::string(dir) + "/slices";
  setenv("FAKE_GPU_STATE_DIR", dir, 1);
  setenv("FAKE_CUDA_DEVICES", "1", 1);
  auto run = [&](const std::string& name, std::vector<std::string> cmd) {
    std::vector<std::string> a = {"run", "--state-dir", state, "--shim", TESSERA_SHIM_PATH,
                                  "--memory", "1GiB", "--slice", name, "--"};
    a.insert(a.end(), cmd.begin(), cmd.end());
    return StartRun(a);
  };
  // The neighbour keeps the shim and stays under its wall (200 MiB + the 300 MiB context).
  Child neighbour = run("neighbour", {TESSERA_PROBE_PATH, "hold", "200"});
  ASSERT_EQ(FirstLine(neighbour.out), "hold 0");
  // The attacker: same kind of slice, preload cleared, 2,000 MiB granted by the driver.
  Child attacker = run("attacker", {"env", "-u", "LD_PRELOAD", TESSERA_PROBE_PATH, "hold", "2000"});
  ASSERT_EQ(FirstLine(attacker.out), "hold 0");

  auto nvml = gpu::MakeNvmlBackend(std::string(TESSERA_FAKE_LIB_DIR) + "/libnvidia-ml.so.1");
  ASSERT_TRUE(nvml->Init().ok());
  std::vector<gpu::GpuInfo> gpus;
  ASSERT_TRUE(nvml->Discover(&gpus).ok());
  ASSERT_EQ(gpus.size(), 1u);
  const std::string uuid = gpus[0].uuid;
  const uint64_t neighbour_before = DriverBytes(nvml.get(), uuid, neighbour.pid);
  ASSERT_EQ(neighbour_before, 500 * kMiB);
  ASSERT_EQ(DriverBytes(nvml.get(), uuid, attacker.pid), 2300 * kMiB);  // past its wall: the shim is gone

  std::vector<std::string> logs;
  std::mutex logs_mu;
  WatchdogHooks hooks;
  hooks.slices = [&] { return ListStandaloneSlices(state); };
  hooks.log = [&](const std::string& l) {
    std::lock_guard<std::mutex> lock(logs_mu);
    logs.push_back(l);
  };
  WatchdogOptions o;
  o.period_s = 0.1;
  Watchdog wd(o, nvml.get(), hooks);
  wd.SetGpus({uuid});
  const auto t0 = std::chrono::steady_clock::now();
  wd.Start();
  int st = 0;
  pid_t done = 0;
  while ((done = waitpid(attacker.pid, &st, WNOHANG)) == 0 &&
         std::chrono::steady_clock::now() - t0 < std::chrono::seconds(20)) {
    usleep(5000);
  }
  const double took = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  wd.Stop();
  ASSERT_EQ(done, attacker.pid) << "the attacker is still running";
  EXPECT_TRUE(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);
  std::printf("attacker killed %.0f ms after the watchdog started (poll every 100 ms)\n", took * 1000);
  // The neighbour: alive, and the driver still shows all its memory.
  EXPECT_EQ(waitpid(neighbour.pid, &st, WNOHANG), 0);
  EXPECT_EQ(DriverBytes(nvml.get(), uuid, neighbour.pid), neighbour_before);
  auto stats = wd.Stats();
  EXPECT_EQ(stats.over_limit_kills, 1u);
  EXPECT_EQ(stats.kill_failures, 0u);
  {
    std::lock_guard<std::mutex> lock(logs_mu);
    ASSERT_FALSE(logs.empty());
    EXPECT_NE(logs[0].find("standalone slice attacker: killed process " + std::to_string(attacker.pid)),
              std::string::npos)
        << logs[0];
    EXPECT_NE(logs[0].find("not accounted by the shim"), std::string::npos) << logs[0];
  }
  kill(neighbour.pid, SIGKILL);
  waitpid(neighbour.pid, nullptr, 0);
  close(neighbour.out);
  close(attacker.out);
  ASSERT_EQ(system((std::string("rm -rf ") + dir).c_str()), 0);
}

}  // namespace
}  // namespace tessera::agent
