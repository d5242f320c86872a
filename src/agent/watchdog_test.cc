#include "agent/watchdog.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "gpu/fault_backend.h"
#include "gpu/sim_backend.h"
#include "slice/region.h"

namespace tessera::agent {
namespace {

namespace fs = std::filesystem;
constexpr uint64_t kMiB = 1ull << 20;
const char* kPodA = "3f1c0a52-1111-4000-8000-00000000000a";
const char* kPodB = "3f1c0a52-2222-4000-8000-00000000000b";

TEST(ParsePodCgroup, CgroupfsAndSystemdLayoutsOfV1AndV2) {
  struct Case {
    const char* text;
    const char* uid;
    const char* ctr;
  } cases[] = {
      {"12:memory:/kubepods/burstable/pod3f1c0a52-1111-4000-8000-00000000000a/"
       "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef\n",
       kPodA, "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"},
      {"0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod3f1c0a52_1111_4000_8000_00000000000a.slice/"
       "cri-containerd-abcdef0123456789.scope\n",
       kPodA, "abcdef0123456789"},
      // Read from inside another cgroup namespace: the path is relative to the reader's root.
      {"0::/../../kubepods-besteffort-pod3f1c0a52_2222_4000_8000_00000000000b.slice/crio-00ff00ff00ff00ff.scope\n",
       kPodB, "00ff00ff00ff00ff"},
      // v1 with the pod's own cgroup on one line and the container on another: the container wins.
      {"3:cpu:/kubepods/pod3f1c0a52-1111-4000-8000-00000000000a\n"
       "2:memory:/kubepods/pod3f1c0a52-1111-4000-8000-00000000000a/aaaabbbbccccdddd\n",
       kPodA, "aaaabbbbccccdddd"},
      {"0::/user.slice/user-0.slice/session-1.scope\n", "", ""},
      {"0::/kubepods.slice/podnot-a-uid/abc\n", "", ""},
      {"garbage", "", ""},
  };
  for (const auto& c : cases) {
    PodCgroup p = ParsePodCgroup(c.text);
    EXPECT_EQ(p.pod_uid, c.uid) << c.text;
    EXPECT_EQ(p.container_id, c.ctr) << c.text;
  }
}

TEST(WatchdogOptions, RangesNameTheFlag) {
  WatchdogOptions o;
  EXPECT_TRUE(ValidateWatchdogOptions(o).ok());
  o.period_s = 0.001;
  EXPECT_NE(ValidateWatchdogOptions(o).message().find("--watchdog-period-ms: 1 is out of range [10, 10000]"), std::string::npos);
  o.period_s = 0.1;
  o.slack_bytes = 1ull << 41;
  EXPECT_NE(ValidateWatchdogOptions(o).message().find("--watchdog-slack"), std::string::npos);
  WatchdogAction a;
  EXPECT_TRUE(ParseWatchdogAction("report", &a));
  EXPECT_EQ(a, WatchdogAction::kReport);
  EXPECT_FALSE(ParseWatchdogAction("Kill", &a));
}

// A real child process that waits to be killed.
pid_t Child() {
  pid_t p = fork();
  if (p == 0) {
    for (;;) pause();
  }
  return p;
}

bool KilledBySigkill(pid_t p) {
  int st = 0;
  return waitpid(p, &st, 0) == p && WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL;
}

bool Alive(pid_t p) {
  int st = 0;
  return waitpid(p, &st, WNOHANG) == 0;
}

std::string ReadAll(const fs::path& p) {
  std::ifstream in(p);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// The host's /proc as the watchdog reads it, for chosen processes: their real stat (start time, parent),
// and a cgroup file we choose (this machine's processes sit in no pod).
class FakeProc {
 public:
  FakeProc() : root_(fs::temp_directory_path() / ("wd-proc-" + std::to_string(getpid()))) {
    fs::remove_all(root_);
    fs::create_directories(root_);
  }
  ~FakeProc() { fs::remove_all(root_); }
  void Add(pid_t pid, const std::string& cgroup, const std::string& comm = "victim") {
    const fs::path d = root_ / std::to_string(pid);
    fs::create_directories(d);
    std::ofstream(d / "stat") << ReadAll("/proc/" + std::to_string(pid) + "/stat");
    std::ofstream(d / "cgroup") << cgroup;
    std::ofstream(d / "comm") << comm << "\n";
  }
  static std::string InPod(const char* uid, const char* ctr) {
    return std::string("0::/kubepods.slice/kubepods-pod") + uid + ".slice/cri-containerd-" + ctr + ".scope\n";
  }
  std::string root() const { return root_.string(); }

 private:
  fs::path root_;
};

std::unique_ptr<gpu::SimBackend> OneGpu() {
  gpu::SimSpec spec;
  EXPECT_TRUE(gpu::ParseSimSpec("gpus: [{uuid: GPU-a, model: m, memory_mib: 16384}, "
                                "{uuid: GPU-b, model: m, memory_mib: 16384}]",
                                "t", &spec)
                  .ok());
  auto b = std::make_unique<gpu::SimBackend>(spec);
  EXPECT_TRUE(b->Init().ok());
  return b;
}

WatchedSlice PodSlice(const std::string& name, const char* uid, const std::string& ctr, uint64_t limit) {
  WatchedSlice s;
  s.name = name;
  s.region = "/nonexistent/" + name;
  s.namespace_ = "team";
  s.pod = "pod-" + name;
  s.pod_uid = uid;
  s.container = ctr;
  s.limits["GPU-a"] = limit;
  return s;
}

struct Recorded {
  std::vector<std::string> events, logs;
};

WatchdogHooks Hooks(std::vector<WatchedSlice> slices, Recorded* rec) {
  WatchdogHooks h;
  h.slices = [slices] { return slices; };
  h.event = [rec](const WatchedSlice& s, const std::string& reason, const std::string& msg) {
    rec->events.push_back(s.pod + " " + reason + " " + msg);
  };
  h.log = [rec](const std::string& line) { rec->logs.push_back(line); };
  return h;
}

TEST(Watchdog, KillsTheOverLimitSlicesProcessAndLeavesTheNeighbour) {
  FakeProc proc;
  pid_t big = Child(), small = Child(), neighbour = Child();
  proc.Add(big, FakeProc::InPod(kPodA, "aaaa0000aaaa0000"), "static-alloc");
  proc.Add(small, FakeProc::InPod(kPodA, "aaaa0000aaaa0000"));
  proc.Add(neighbour, FakeProc::InPod(kPodB, "bbbb0000bbbb0000"));
  auto gpus = OneGpu();
  ASSERT_TRUE(gpus->SetProcesses("GPU-a", {{uint32_t(big), 700 * kMiB, true},
                                           {uint32_t(small), 500 * kMiB, true},
                                           {uint32_t(neighbour), 1000 * kMiB, true}})
                  .ok());
  Recorded rec;
  WatchdogOptions o;
  o.proc_root = proc.root();
  Watchdog wd(o, gpus.get(), Hooks({PodSlice("a", kPodA, "main", 1024 * kMiB), PodSlice("b", kPodB, "main", 1024 * kMiB)}, &rec));
  wd.SetGpus({"GPU-a", "GPU-b"});
  auto found = wd.PollOnce();
  // Slice a holds 1,200 MiB against 1,024: its largest process goes, which brings it under; b (1,000 of
  // 1,024) is not touched.
  ASSERT_EQ(found.size(), 1u);
  EXPECT_EQ(found[0].pid, big);
  EXPECT_TRUE(found[0].killed);
  EXPECT_EQ(found[0].slice_bytes, 1200 * kMiB);
  EXPECT_TRUE(KilledBySigkill(big));
  EXPECT_TRUE(Alive(small));
  EXPECT_TRUE(Alive(neighbour));
  ASSERT_EQ(rec.events.size(), 1u);
  EXPECT_NE(rec.events[0].find("pod-a TesseraOverMemoryLimitKilled killed process " + std::to_string(big)),
            std::string::npos)
      << rec.events[0];
  EXPECT_NE(rec.events[0].find("the slice held 1200 MiB against its wall of 1024 MiB"), std::string::npos);
  ASSERT_EQ(rec.logs.size(), 1u);
  EXPECT_NE(rec.logs[0].find("team/pod-a container main (slice a): killed process"), std::string::npos);
  auto st = wd.Stats();
  EXPECT_EQ(st.over_limit_kills, 1u);
  EXPECT_EQ(st.polls, 1u);
  ASSERT_EQ(st.measured.size(), 2u);
  kill(small, SIGKILL);
  kill(neighbour, SIGKILL);
  waitpid(small, nullptr, 0);
  waitpid(neighbour, nullptr, 0);
}

TEST(Watchdog, ProcessesTheShimDoesNotAccountGoFirst) {
  // The region's rows name the processes the shim counts; the bypasser goes even when it is the smaller.
  FakeProc proc;
  pid_t honest = Child(), bypass = Child();
  proc.Add(honest, FakeProc::InPod(kPodA, "aaaa0000aaaa0000"));
  proc.Add(bypass, FakeProc::InPod(kPodA, "aaaa0000aaaa0000"));
  const fs::path dir = fs::temp_directory_path() / ("wd-region-" + std::to_string(getpid()));
  fs::create_directories(dir);
  slice::SliceConfig cfg;
  slice::InitSliceConfig(&cfg);
  snprintf(cfg.name, sizeof(cfg.name), "a");
  snprintf(cfg.region, sizeof(cfg.region), "%s/slice.region", dir.c_str());
  cfg.gpu_count = 1;
  snprintf(cfg.gpus[0].uuid, sizeof(cfg.gpus[0].uuid), "GPU-a");
  cfg.gpus[0].memory_bytes = 1024 * kMiB;
  cfg.gpus[0].cores = 100;
  slice::Region region;
  char err[256];
  ASSERT_TRUE(slice::OpenRegionForSlice(cfg, &region, err, sizeof(err))) << err;
  // The honest process's row, as the agent's host-pid pass publishes it for a container process.
  const uint64_t owner = slice::PackOwner(1, 1);
  region.hdr->rows[0].owner.store(owner);
  region.hdr->rows[0].pidns.store(slice::SelfPidNamespace());
  region.hdr->rows_high_water.store(1);
  ASSERT_TRUE(slice::PublishHostPid(region.hdr, 0, owner, honest));
  auto gpus = OneGpu();
  ASSERT_TRUE(gpus->SetProcesses("GPU-a", {{uint32_t(honest), 900 * kMiB, true}, {uint32_t(bypass), 300 * kMiB, true}}).ok());
  Recorded rec;
  WatchdogOptions o;
  o.proc_root = proc.root();
  WatchedSlice a = PodSlice("a", kPodA, "main", 1024 * kMiB);
  a.region = cfg.region;
  Watchdog wd(o, gpus.get(), Hooks({a}, &rec));
  wd.SetGpus({"GPU-a"});
  auto found = wd.PollOnce();
  ASSERT_EQ(found.size(), 1u);
  EXPECT_EQ(found[0].pid, bypass);
  EXPECT_TRUE(KilledBySigkill(bypass));
  EXPECT_TRUE(Alive(honest));
  EXPECT_NE(rec.logs[0].find("not accounted by the shim"), std::string::npos) << rec.logs[0];
  slice::CloseRegion(&region);
  fs::remove_all(dir);
  kill(honest, SIGKILL);
  waitpid(honest, nullptr, 0);
}

TEST(Watchdog, ReportOnlyKillsNothingAndSaysItOncePerExcursion) {
  FakeProc proc;
  pid_t p = Child();
  proc.Add(p, FakeProc::InPod(kPodA, "aaaa0000aaaa0000"));
  auto gpus = OneGpu();
  ASSERT_TRUE(gpus->SetProcesses("GPU-a", {{uint32_t(p), 2000 * kMiB, true}}).ok());
  Recorded rec;
  WatchdogOptions o;
  o.proc_root = proc.root();
  o.over_limit = WatchdogAction::kReport;
  int kills = 0;
  WatchdogHooks h = Hooks({PodSlice("a", kPodA, "main", 1024 * kMiB)}, &rec);
  h.kill = [&kills](int, uint64_t, std::string*) { return ++kills, true; };
  Watchdog wd(o, gpus.get(), h);
  wd.SetGpus({"GPU-a"});
  EXPECT_EQ(wd.PollOnce().size(), 1u);
  EXPECT_EQ(wd.PollOnce().size(), 0u);  // same excursion: said already
  ASSERT_TRUE(gpus->SetProcesses("GPU-a", {{uint32_t(p), 100 * kMiB, true}}).ok());
  EXPECT_EQ(wd.PollOnce().size(), 0u);  // back under the wall
  ASSERT_TRUE(gpus->SetProcesses("GPU-a", {{uint32_t(p), 1500 * kMiB, true}}).ok());
  EXPECT_EQ(wd.PollOnce().size(), 1u);  // a new excursion
  EXPECT_EQ(kills, 0);
  EXPECT_TRUE(Alive(p));
  ASSERT_EQ(rec.events.size(), 2u);
  EXPECT_NE(rec.events[0].find("TesseraOverMemoryLimit slice a holds 2000 MiB on GPU-a against its wall of 1024 MiB"),
            std::string::npos)
      << rec.events[0];
  EXPECT_EQ(wd.Stats().over_limit_reports, 2u);
  kill(p, SIGKILL);
  waitpid(p, nullptr, 0);
}

TEST(Watchdog, ProcessOfNoSliceOnASharedGpuIsReportedNotKilled) {
  FakeProc proc;
  pid_t stranger = Child(), other_gpu = Child();
  proc.Add(stranger, "0::/system.slice/miner.service\n", "miner");
  proc.Add(other_gpu, FakeProc::InPod(kPodA, "aaaa0000aaaa0000"));
  auto gpus = OneGpu();
  ASSERT_TRUE(gpus->SetProcesses("GPU-a", {{uint32_t(stranger), 3000 * kMiB, true}}).ok());
  // A process of slice a on GPU-b, outside its slice: its wall there is 0.
  ASSERT_TRUE(gpus->SetProcesses("GPU-b", {{uint32_t(other_gpu), 10 * kMiB, true}}).ok());
  Recorded rec;
  WatchdogOptions o;
  o.proc_root = proc.root();
  o.all_gpus_shared = false;
  int kills = 0;
  WatchdogHooks h = Hooks({PodSlice("a", kPodA, "main", 1024 * kMiB)}, &rec);
  h.kill = [&kills](int, uint64_t, std::string*) { return ++kills, true; };
  Watchdog wd(o, gpus.get(), h);
  wd.SetGpus({"GPU-a", "GPU-b"});
  auto found = wd.PollOnce();
  ASSERT_EQ(found.size(), 2u);
  EXPECT_EQ(found[0].kind, WatchdogFinding::kUnknown);
  EXPECT_EQ(found[0].pid, stranger);
  EXPECT_FALSE(found[0].killed);
  EXPECT_EQ(found[1].kind, WatchdogFinding::kOverLimit);
  EXPECT_EQ(found[1].pid, other_gpu);
  EXPECT_EQ(found[1].limit_bytes, 0u);
  EXPECT_EQ(kills, 1);  // only the slice's process on a GPU outside its slice
  auto st = wd.Stats();
  EXPECT_EQ(st.unknown_now["GPU-a"], std::make_pair(1, 3000 * kMiB));
  EXPECT_EQ(st.unknown_reports, 1u);
  wd.PollOnce();
  EXPECT_EQ(wd.Stats().unknown_reports, 1u);  // logged once per process
  bool logged = false;
  for (const auto& l : rec.logs) logged |= l.find("process " + std::to_string(stranger) + " (miner) holds 3000 MiB on shared GPU GPU-a and belongs to no slice") != std::string::npos;
  EXPECT_TRUE(logged);
  EXPECT_TRUE(Alive(stranger));
  kill(stranger, SIGKILL);
  kill(other_gpu, SIGKILL);
  waitpid(stranger, nullptr, 0);
  waitpid(other_gpu, nullptr, 0);
}

TEST(Watchdog, StandaloneSliceFindsDescendantsOfItsRoot) {
  // tessera run's root process forks a child that drops the shim: the child's ancestry leads to the root.
  FakeProc proc;
  int ready[2];
  ASSERT_EQ(pipe(ready), 0);
  pid_t root = fork();
  if (root == 0) {
    pid_t kid = fork();
    if (kid == 0) {
      for (;;) pause();
    }
    if (write(ready[1], &kid, sizeof(kid)) != sizeof(kid)) _exit(1);
    for (;;) pause();
  }
  pid_t kid = 0;
  ASSERT_EQ(read(ready[0], &kid, sizeof(kid)), static_cast<ssize_t>(sizeof(kid)));
  proc.Add(root, "0::/user.slice\n", "run");
  proc.Add(kid, "0::/user.slice\n", "static-alloc");
  WatchedSlice s;
  s.name = "run-1";
  s.region = "/nonexistent";
  s.limits["GPU-a"] = 1024 * kMiB;
  s.roots.push_back({root, slice::ProcessStartTicks(root)});
  auto gpus = OneGpu();
  ASSERT_TRUE(gpus->SetProcesses("GPU-a", {{uint32_t(kid), 1500 * kMiB, true}}).ok());
  Recorded rec;
  WatchdogOptions o;
  o.proc_root = proc.root();
  Watchdog wd(o, gpus.get(), Hooks({s}, &rec));
  wd.SetGpus({"GPU-a"});
  auto found = wd.PollOnce();
  ASSERT_EQ(found.size(), 1u);
  EXPECT_EQ(found[0].slice, "run-1");
  EXPECT_EQ(found[0].pid, kid);
  EXPECT_TRUE(found[0].killed);
  EXPECT_TRUE(rec.events.empty());  // no pod to put an event on
  EXPECT_NE(rec.logs[0].find("standalone slice run-1: killed process"), std::string::npos);
  kill(root, SIGKILL);
  waitpid(root, nullptr, 0);
}

TEST(Watchdog, ProcessListFailureIsCountedAndNothingIsKilled) {
  FakeProc proc;
  pid_t p = Child();
  proc.Add(p, FakeProc::InPod(kPodA, "aaaa0000aaaa0000"));
  auto sim = OneGpu();
  ASSERT_TRUE(sim->SetProcesses("GPU-a", {{uint32_t(p), 2000 * kMiB, true}}).ok());
  gpu::FaultPlan plan;
  plan.fail_processes = 1;
  gpu::FaultBackend gpus(std::move(sim), plan);
  Recorded rec;
  WatchdogOptions o;
  o.proc_root = proc.root();
  Watchdog wd(o, &gpus, Hooks({PodSlice("a", kPodA, "main", 1024 * kMiB)}, &rec));
  wd.SetGpus({"GPU-a"});
  EXPECT_TRUE(wd.PollOnce().empty());
  EXPECT_EQ(wd.Stats().poll_failures, 1u);
  EXPECT_TRUE(Alive(p));
  auto found = wd.PollOnce();  // the next poll sees it
  ASSERT_EQ(found.size(), 1u);
  EXPECT_TRUE(KilledBySigkill(p));
}

TEST(KillProcess, RefusesAProcessWithAnotherStartTime) {
  pid_t p = Child();
  std::string why;
  EXPECT_FALSE(KillProcess("/proc", p, slice::ProcessStartTicks(p) + 1, &why));
  EXPECT_EQ(why, "it exited");
  EXPECT_TRUE(Alive(p));
  EXPECT_TRUE(KillProcess("/proc", p, slice::ProcessStartTicks(p), &why)) << why;
  EXPECT_TRUE(KilledBySigkill(p));
}

}  // namespace
}  // namespace tessera::agent
