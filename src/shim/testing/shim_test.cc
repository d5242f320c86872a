// libtessera.so end to end against the fake driver: each test runs shim_probe (or several) with
// LD_PRELOAD=libtessera.so and the fake libcuda/libnvidia-ml on LD_LIBRARY_PATH.
#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "agent/row_broker.h"
#include "slice/agent_rows.h"
#include "slice/config.h"
#include "slice/host_pid.h"
#include "slice/region.h"

namespace {

constexpr uint64_t kMiB = 1ull << 20;

// An exited, not yet reaped child: the driver has already taken its memory back.
bool Zombie(pid_t pid) {
  char path[64], buf[512];
  snprintf(path, sizeof(path), "/proc/%d/stat", static_cast<int>(pid));
  FILE* f = fopen(path, "r");
  if (!f) return true;
  size_t n = fread(buf, 1, sizeof(buf) - 1, f);
  fclose(f);
  buf[n] = 0;
  const char* p = strrchr(buf, ')');
  return !p || p[2] == 'Z' || p[2] == 'X';
}

double Now() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

std::string ReadAll(int fd) {
  std::string s;
  char buf[4096];
  ssize_t n;
  while ((n = read(fd, buf, sizeof(buf))) > 0) s.append(buf, static_cast<size_t>(n));
  return s;
}

struct Child {
  pid_t pid = -1;
  int out = -1;  // stdout pipe
  int err = -1;  // stderr pipe
};

class ShimTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_NE(mkdtemp(dir_), nullptr);
    state_ = std::string(dir_) + "/state";
    mkdir(state_.c_str(), 0755);
    config_ = std::string(dir_) + "/slice.conf";
    WriteConfig(1024 * kMiB);
  }
  void TearDown() override {
    broker_.Stop();
    std::string cmd = std::string("rm -rf ") + dir_;
    ASSERT_EQ(system(cmd.c_str()), 0);
  }
  void WriteConfig(uint64_t limit) { WriteConfigGpus({{0, limit}}); }
  // The slice's GPUs in config order: (fake GPU index, limit).
  void WriteConfigGpus(const std::vector<std::pair<int, uint64_t>>& gpus) {
    limit_ = gpus[0].second;
    tessera::slice::SliceConfig c;
    tessera::slice::InitSliceConfig(&c);
    snprintf(c.name, sizeof(c.name), "probe");
    snprintf(c.region, sizeof(c.region), "%s/region", dir_);
    for (auto [dev, limit] : gpus) {
      tessera::slice::GpuLimit& g = c.gpus[c.gpu_count++];
      snprintf(g.uuid, sizeof(g.uuid), "GPU-fa4e0000-0000-0000-0000-0000000000%02x", dev);
      g.memory_bytes = limit;
      g.cores = 100;
    }
    char err[256];
    ASSERT_TRUE(tessera::slice::WriteSliceConfig(config_.c_str(), c, err, sizeof(err))) << err;
  }
  std::vector<std::string> Env(bool with_config) {
    std::vector<std::string> env = {
        std::string("LD_PRELOAD=") + TESSERA_SHIM_PATH,
        std::string("LD_LIBRARY_PATH=") + TESSERA_FAKE_LIB_DIR,
        "FAKE_GPU_STATE_DIR=" + state_,
        "PROBE_LIMIT=" + std::to_string(limit_),
        "PATH=/usr/bin:/bin",
    };
    if (with_config) env.push_back("TESSERA_SLICE_CONFIG=" + config_);
    return env;
  }
  Child Start(const std::vector<std::string>& args, bool with_config = true,
              const std::vector<std::string>& extra_env = {}) {
    std::vector<std::string> env = Env(with_config);
    env.insert(env.end(), extra_env.begin(), extra_env.end());
    int o[2], e[2];
    EXPECT_EQ(pipe(o), 0);
    EXPECT_EQ(pipe(e), 0);
    Child c;
    c.pid = fork();
    if (c.pid == 0) {
      dup2(o[1], 1);
      dup2(e[1], 2);
      close(o[0]);
      close(e[0]);
      std::vector<char*> argv, envp;
      std::string probe = TESSERA_PROBE_PATH;
      std::vector<std::string> wrap = wrapper_;
      for (auto& w : wrap) argv.push_back(w.data());
      argv.push_back(probe.data());
      std::vector<std::string> a = args;
      for (auto& s : a) argv.push_back(s.data());
      argv.push_back(nullptr);
      for (auto& s : env) envp.push_back(s.data());
      envp.push_back(nullptr);
      execve(argv[0], argv.data(), envp.data());
      _exit(127);
    }
    close(o[1]);
    close(e[1]);
    c.out = o[0];
    c.err = e[0];
    return c;
  }
  // Runs to completion: exit code, stdout, stderr.
  int Run(const std::vector<std::string>& args, std::string* out, std::string* err, bool with_config = true,
          const std::vector<std::string>& extra_env = {}) {
    Child c = Start(args, with_config, extra_env);
    *out = ReadAll(c.out);
    *err = ReadAll(c.err);
    close(c.out);
    close(c.err);
    int st = 0;
    waitpid(c.pid, &st, 0);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
  }
  // Reads one line from a child's stdout.
  std::string ReadLine(const Child& c) {
    std::string line;
    char ch;
    while (read(c.out, &ch, 1) == 1 && ch != '\n') line += ch;
    return line;
  }
  // The region's books for the slice's g-th GPU (config order).
  tessera::slice::GpuUsage Usage(int g = 0) {
    tessera::slice::Region r;
    char err[256];
    tessera::slice::GpuUsage u{};
    if (!tessera::slice::OpenRegion((std::string(dir_) + "/region").c_str(), false, &r, err, sizeof(err)))
      return u;
    u = tessera::slice::ReadGpuUsage(r.hdr, g);
    tessera::slice::CloseRegion(&r);
    return u;
  }
  // Runs the probe through this command line (e.g. into new namespaces) when not empty.
  std::vector<std::string> wrapper_;
  uint64_t DevicePeak() {
    FILE* f = fopen((state_ + "/device").c_str(), "rb");
    if (!f) return 0;
    uint64_t v[16] = {};
    size_t n = fread(v, sizeof(uint64_t), 16, f);
    fclose(f);
    return n >= 9 ? v[8] : 0;  // layout: used[8], peak[8]
  }
  // What the fake GPU holds on device 0, summed from per-process files (sampled, so only indicative).
  uint64_t DeviceUsed() {
    uint64_t sum = 0;
    DIR* d = opendir(state_.c_str());
    if (!d) return 0;
    while (dirent* e = readdir(d)) {
      char* end;
      long pid = strtol(e->d_name, &end, 10);
      if (pid <= 0 || *end) continue;
      if (kill(static_cast<pid_t>(pid), 0) != 0 || Zombie(static_cast<pid_t>(pid))) continue;  // memory freed
      FILE* f = fopen((state_ + "/" + e->d_name).c_str(), "r");
      if (!f) continue;
      unsigned long long v = 0;
      if (fscanf(f, "%llu", &v) == 1) sum += v;
      fclose(f);
    }
    closedir(d);
    return sum;
  }

  // What the fake driver says one process holds on each fake GPU (what NVML reports per process).
  std::vector<uint64_t> ProcessOnDevices(pid_t pid) {
    std::vector<uint64_t> v;
    FILE* f = fopen((state_ + "/" + std::to_string(pid)).c_str(), "r");
    if (!f) return v;
    unsigned long long x;
    while (fscanf(f, "%llu", &x) == 1) v.push_back(x);
    fclose(f);
    return v;
  }
  // Whether this machine lets an unprivileged user make a user + pid + mount namespace (as a container
  // has) with the host's /proc kept at `hostproc`, which the namespace tests need.
  bool NamespacesAllowed(const std::string& hostproc) {
    mkdir(hostproc.c_str(), 0755);
    return system(("unshare -Urpfm sh -c 'mount --bind /proc " + hostproc +
                   " && mount -t proc proc /proc' 2>/dev/null").c_str()) == 0;
  }
  // The node agent's host-pid pass over the slice's region, from the test's (the host's) namespace;
  // with `procs`, the rows afterwards (*n of them).
  tessera::slice::HostPidPass PublishAsAgent(tessera::slice::ProcUsage* procs = nullptr, int* n = nullptr) {
    tessera::slice::Region r;
    char err[256];
    tessera::slice::HostPidPass pass;
    if (!tessera::slice::OpenRegion((std::string(dir_) + "/region").c_str(), true, &r, err, sizeof(err))) {
      ADD_FAILURE() << err;
      return pass;
    }
    pass = tessera::slice::PublishHostPids(r.hdr, "/proc", tessera::slice::SelfPidNamespace());
    if (procs != nullptr) *n = tessera::slice::ReadProcs(r.hdr, procs, *n);
    tessera::slice::CloseRegion(&r);
    return pass;
  }
  void Stop(const Child& c) {
    kill(c.pid, SIGKILL);
    waitpid(c.pid, nullptr, 0);
    close(c.out);
    close(c.err);
  }

  // ---- Under a node agent (agent rows): the test is the agent. ----
  // Writes the slice's config for a region the RowBroker owns at dir_/agent, and serves it.
  void StartAgent(uint64_t limit) {
    agent_dir_ = std::string(dir_) + "/agent";
    limit_ = limit;
    tessera::slice::SliceConfig c;
    tessera::slice::InitSliceConfig(&c);
    snprintf(c.name, sizeof(c.name), "probe");
    snprintf(c.region, sizeof(c.region), "%s/slice.region", agent_dir_.c_str());
    snprintf(c.agent, sizeof(c.agent), "%s/agent.sock", agent_dir_.c_str());
    tessera::slice::GpuLimit& g = c.gpus[c.gpu_count++];
    snprintf(g.uuid, sizeof(g.uuid), "GPU-fa4e0000-0000-0000-0000-000000000000");
    g.memory_bytes = limit;
    g.cores = 100;
    char err[256];
    ASSERT_TRUE(tessera::slice::WriteSliceConfig(config_.c_str(), c, err, sizeof(err))) << err;
    std::string e;
    ASSERT_TRUE(broker_.Add(agent_dir_, c, &e)) << e;
    broker_.Start();
  }
  tessera::slice::GpuUsage AgentUsage() {
    tessera::slice::Region r;
    char err[256];
    tessera::slice::GpuUsage u{};
    if (!tessera::slice::OpenRegion((agent_dir_ + "/slice.region").c_str(), false, &r, err, sizeof(err))) {
      ADD_FAILURE() << err;
      return u;
    }
    u = tessera::slice::ReadGpuUsage(r.hdr, 0);
    tessera::slice::CloseRegion(&r);
    return u;
  }
  int AgentRowsTaken() {
    tessera::slice::Region r;
    char err[256];
    int n = 0;
    if (!tessera::slice::OpenRegion((agent_dir_ + "/slice.region").c_str(), false, &r, err, sizeof(err))) return -1;
    for (auto& o : r.hdr->slot_owner) n += o.load() != 0;
    tessera::slice::CloseRegion(&r);
    return n;
  }
  // The region directory read-only, as the device plugin mounts it into a container (root: a mount
  // namespace; otherwise a user namespace too).
  std::vector<std::string> ReadOnlyRegionWrapper() {
    const std::string enter = "mount --bind -o ro " + agent_dir_ + " " + agent_dir_ + " && exec \"$0\" \"$@\"";
    return {"/usr/bin/unshare", geteuid() == 0 ? "-m" : "-Urm", "/bin/sh", "-c", enter};
  }
  bool ReadOnlyMountsAllowed() {
    const std::string probe = std::string(dir_) + "/rocheck";
    mkdir(probe.c_str(), 0755);
    return system(("/usr/bin/unshare " + std::string(geteuid() == 0 ? "-m" : "-Urm") + " sh -c 'mount --bind -o ro " +
                   probe + " " + probe + " && ! touch " + probe + "/x' 2>/dev/null").c_str()) == 0;
  }
  // Reads one line within `seconds`; false on timeout (a hang) or end of file.
  bool ReadLineWithin(const Child& c, double seconds, std::string* line) {
    line->clear();
    const double until = Now() + seconds;
    for (;;) {
      pollfd p{c.out, POLLIN, 0};
      const int left = static_cast<int>((until - Now()) * 1000);
      if (left <= 0 || poll(&p, 1, left) <= 0) return false;
      char ch;
      if (read(c.out, &ch, 1) != 1) return false;
      if (ch == '\n') return true;
      *line += ch;
    }
  }

  tessera::agent::RowBroker broker_;
  std::string agent_dir_;
  char dir_[64] = "/tmp/tessera-shim-XXXXXX";
  std::string state_, config_;
  uint64_t limit_ = 0;
};

int CountOccurrences(const std::string& s, const std::string& what) {
  int n = 0;
  for (size_t p = s.find(what); p != std::string::npos; p = s.find(what, p + 1)) ++n;
  return n;
}

TEST_F(ShimTest, EveryInterceptionPathHoldsTheWall) {
  std::string out, err;
  int rc = Run({"paths"}, &out, &err);
  EXPECT_EQ(rc, 0) << out << err;
  EXPECT_EQ(CountOccurrences(out, "FAIL"), 0) << out;
  EXPECT_GT(CountOccurrences(out, "ok "), 80) << out;
  // One rate-limited line naming slice, limit, used and the request.
  EXPECT_EQ(CountOccurrences(err, "out of GPU memory"), 1) << err;
  EXPECT_NE(err.find("slice probe"), std::string::npos) << err;
  EXPECT_NE(err.find("limit 1.00 GiB"), std::string::npos) << err;
  EXPECT_NE(err.find("asked 2.00 GiB"), std::string::npos) << err;
}

// The first attack: the C library's own dlsym fetched with dlvsym(RTLD_NEXT, "dlsym",
// "GLIBC_2.34") allocated 2 GiB against a 1 GiB wall. Every by-name door (dlvsym, dlsym on libc's handle,
// the driver opened by path or as a second copy, cuGetProcAddress at any version and flag) now leads
// through the hooks: 100 MiB charged and 2 GiB refused through each.
TEST_F(ShimTest, EveryDoorToTheDriverLeadsThroughTheWall) {
  const std::string copy_dir = std::string(dir_) + "/copy";
  ASSERT_EQ(mkdir(copy_dir.c_str(), 0755), 0);
  ASSERT_EQ(system(("cp " + std::string(TESSERA_FAKE_LIB_DIR) + "/libcuda.so.1 " + copy_dir + "/").c_str()), 0);
  std::string out, err;
  int rc = Run({"doors"}, &out, &err, true,
               {"PROBE_DRIVER_DIR=" + std::string(TESSERA_FAKE_LIB_DIR), "PROBE_DRIVER_COPY=" + copy_dir + "/libcuda.so.1"});
  EXPECT_EQ(rc, 0) << out << err;
  EXPECT_EQ(CountOccurrences(out, "FAIL"), 0) << out;
  // dlvsym x2 versions x2 handles, libc's dlsym, libc's dlvsym, by path, the copy and the copy's
  // cuGetProcAddress: each one's over-the-wall refusal.
  EXPECT_GE(CountOccurrences(out, "over the wall"), 8) << out;
  EXPECT_NE(out.find("ok every cuGetProcAddress answer for a hooked function is a hook"), std::string::npos) << out;
}

// A driver that answers cuGetProcAddress with an entry point the shim has never seen (a newer ABI variant,
// an internal alias) for a function it hooks: refused rather than handed to the application.
TEST_F(ShimTest, UnknownDriverEntryPointForAHookedFunctionIsRefused) {
  std::string out, err;
  int rc = Run({"doors"}, &out, &err, true, {"FAKE_CUDA_PROCADDR_ALIAS=1", "PROBE_EXPECT_ALIAS=1"});
  EXPECT_EQ(rc, 0) << out << err;
  EXPECT_NE(out.find("ok an unknown driver entry point for a hooked function is refused"), std::string::npos) << out;
  EXPECT_NE(err.find("cuGetProcAddress(\"cuMemAlloc\", version 13010)"), std::string::npos) << err;
}

TEST_F(ShimTest, LaunchesReachTheDriver) {
  std::string out, err;
  EXPECT_EQ(Run({"launch"}, &out, &err), 0) << out << err;
}

TEST_F(ShimTest, ForkedChildIsItsOwnProcessOfTheSlice) {
  std::string out, err;
  EXPECT_EQ(Run({"fork"}, &out, &err), 0) << out << err;
}

TEST_F(ShimTest, NoConfigPassesThroughAndSaysSoOnce) {
  std::string out, err;
  EXPECT_EQ(Run({"alloc", "8000"}, &out, &err, /*with_config=*/false), 0);
  EXPECT_NE(out.find("alloc-result 0"), std::string::npos) << out;
  EXPECT_EQ(CountOccurrences(err, "no slice config"), 1) << err;
}

TEST_F(ShimTest, UntrustedConfigRefusesMemory) {
  ASSERT_EQ(chmod(config_.c_str(), 0666), 0);  // anyone could raise the limit: not trusted
  std::string out, err;
  EXPECT_EQ(Run({"alloc", "1"}, &out, &err), 0);
  EXPECT_NE(out.find("alloc-result 2"), std::string::npos) << out;
  EXPECT_NE(err.find("writable"), std::string::npos) << err;
}

TEST_F(ShimTest, ContextThatCannotFitGetsOutOfMemory) {
  WriteConfig(200 * kMiB);  // below the context estimate
  std::string out, err;
  EXPECT_EQ(Run({"ctx"}, &out, &err), 42) << out << err;
  EXPECT_NE(out.find("ctx-result 2"), std::string::npos) << out;
  EXPECT_NE(err.find("context"), std::string::npos) << err;
}

TEST_F(ShimTest, DriverUsageReplacesTheContextEstimate) {
  WriteConfig(4096 * kMiB);
  Child c = Start({"hold", "100"});
  EXPECT_EQ(ReadLine(c), "hold 0");
  // The estimate (640 MiB) holds until the fake NVML shows the context (300 MiB), then that figure wins.
  double t0 = Now();
  uint64_t overhead = 0;
  while (Now() - t0 < 10) {
    overhead = Usage().overhead_bytes;
    if (overhead == 300 * kMiB) break;
    usleep(20000);
  }
  EXPECT_EQ(overhead, 300 * kMiB);
  EXPECT_EQ(Usage().charged_bytes, 100 * kMiB);
  Stop(c);
}

// A context the driver first shows only in part (seen on an H100 with two GPUs visible: 14 MiB of a
// ~610 MiB context, the rest appearing with the first allocations) must not replace the estimate, or the
// process fills the slice and the rest of its context lands beyond the wall.
TEST_F(ShimTest, PartlyShownContextKeepsTheEstimate) {
  const uint64_t limit = 2048 * kMiB;
  WriteConfig(limit);
  const std::string go = state_ + "/go";
  Child c = Start({"lazyfill", go}, true, {"FAKE_CUDA_CTX_EARLY_MIB=14"});
  EXPECT_EQ(ReadLine(c), "ready");
  // Long enough for several reconciliations, past the 2 s after creation where the estimate is a floor
  // anyway: the 14 MiB figure is never taken for the context.
  uint64_t lowest = ~0ull;
  const double t0 = Now();
  while (Now() - t0 < 3) {
    lowest = std::min(lowest, Usage().overhead_bytes);
    usleep(20000);
  }
  EXPECT_GE(lowest, 300 * kMiB);
  close(open(go.c_str(), O_CREAT | O_WRONLY, 0644));
  const std::string filled = ReadLine(c);
  EXPECT_EQ(filled.rfind("filled ", 0), 0u) << filled;
  EXPECT_LE(DevicePeak(), limit) << filled;
  Stop(c);
}

// A process in a container has its own pid namespace; the driver lists it under its host pid, so the
// shim cannot find its own context in NVML and would count it at the estimate forever, whatever it grows
// to. Here the fake driver's context (900 MiB) is larger than the estimate (640 MiB): it is counted
// whole once the node agent's pass (PublishHostPids, run here from the host's namespace) names the host pid.
TEST_F(ShimTest, ContainerProcessIsMeasuredOnceTheAgentPublishesItsHostPid) {
  const std::string hostproc = std::string(dir_) + "/hostproc";
  if (!NamespacesAllowed(hostproc)) {
    GTEST_SKIP() << "this machine does not allow unprivileged user and pid namespaces (unshare -Urpfm)";
  }
  // A user + pid + mount namespace as a container has, with the host's /proc kept at `hostproc` for the
  // fake driver and a /proc of its own for the process.
  const std::string enter = "mount --bind /proc " + hostproc + " && mount -t proc proc /proc && exec \"$0\" \"$@\"";
  WriteConfig(4096 * kMiB);
  wrapper_ = {"/usr/bin/unshare", "-Urpfm", "--kill-child", "/bin/sh", "-c", enter};
  Child c = Start({"hold", "100"}, true, {"FAKE_CUDA_CTX_MIB=900", "FAKE_DRIVER_PROC=" + hostproc});
  ASSERT_EQ(ReadLine(c), "hold 0");
  // Without the host pid the reconciler finds nothing: the estimate stays, past the 2 s after creation
  // where it is a floor anyway.
  const double t0 = Now();
  uint64_t overhead = 0;
  while (Now() - t0 < 3) {
    overhead = Usage().overhead_bytes;
    EXPECT_EQ(overhead, 640 * kMiB);
    usleep(50000);
  }
  // The agent's pass, from the host's namespace.
  tessera::slice::ProcUsage proc[4];
  int n = 4;
  const tessera::slice::HostPidPass pass = PublishAsAgent(proc, &n);
  EXPECT_EQ(pass.pending, 1);
  EXPECT_EQ(pass.published, 1);
  ASSERT_EQ(n, 1);
  EXPECT_NE(proc[0].host_pid, proc[0].pid);
  EXPECT_GT(proc[0].host_pid, 0);
  const double t1 = Now();
  while (Now() - t1 < 10 && Usage().overhead_bytes != 900 * kMiB) usleep(20000);
  EXPECT_EQ(Usage().overhead_bytes, 900 * kMiB);
  EXPECT_EQ(Usage().used_bytes, 1000 * kMiB);
  Stop(c);
}

// A recent driver (580, measured on an H100) shows a process in a pid namespace under its pid there,
// so getpid() matches; the host pid the agent publishes must not replace that match.
TEST_F(ShimTest, ContainerProcessIsMeasuredWhenTheDriverShowsItsOwnPid) {
  if (!NamespacesAllowed(std::string(dir_) + "/hostproc")) {
    GTEST_SKIP() << "this machine does not allow unprivileged user and pid namespaces (unshare -Urpfm)";
  }
  WriteConfig(4096 * kMiB);
  wrapper_ = {"/usr/bin/unshare", "-Urpfm", "--kill-child", "/bin/sh", "-c",
              "mount -t proc proc /proc && exec \"$0\" \"$@\""};
  Child c = Start({"hold", "100"}, true, {"FAKE_CUDA_CTX_MIB=900"});  // the fake driver names it by getpid()
  ASSERT_EQ(ReadLine(c), "hold 0");
  EXPECT_EQ(PublishAsAgent().published, 1);
  const double t0 = Now();
  while (Now() - t0 < 10 && Usage().overhead_bytes != 900 * kMiB) usleep(20000);
  EXPECT_EQ(Usage().overhead_bytes, 900 * kMiB);
  Stop(c);
}

TEST_F(ShimTest, EightProcessesRacingNeverOvershoot) {
  // Each process alone can ask for up to 8 x 512 MiB, so the wall is reached even when the scheduler
  // runs the processes one after another.
  const uint64_t limit = 6144 * kMiB;
  WriteConfig(limit);
  // A start barrier: every racer holds its context before any of them allocates, so all 8 race (without it,
  // early racers could fill the slice before a late one had its context, which is a refusal, not a race).
  int go[2];
  ASSERT_EQ(pipe(go), 0);
  ASSERT_EQ(fcntl(go[1], F_SETFD, FD_CLOEXEC), 0);  // only the read end reaches the racers
  std::vector<Child> kids;
  for (int i = 0; i < 8; ++i)
    kids.push_back(Start({"race", "1000", std::to_string(i + 1), "512", "8"}, true,
                         {"PROBE_GO_FD=" + std::to_string(go[0])}));
  for (int i = 0; i < 8; ++i) EXPECT_EQ(ReadLine(kids[i]), "ready") << "racer " << i;
  close(go[0]);
  close(go[1]);  // end-of-file for every racer: go
  uint64_t peak = 0;  // sampled sum (indicative only)
  int running = 8;
  std::vector<int> status(8, -1);
  std::string outs;
  while (running > 0) {
    uint64_t u = DeviceUsed();
    if (u > peak) peak = u;
    for (int i = 0; i < 8; ++i) {
      int st;
      if (status[i] == -1 && waitpid(kids[i].pid, &st, WNOHANG) == kids[i].pid) {
        status[i] = WIFEXITED(st) ? WEXITSTATUS(st) : 128;
        outs += ReadAll(kids[i].out);
        close(kids[i].out);
        close(kids[i].err);
        --running;
      }
    }
  }
  for (int s : status) EXPECT_EQ(s, 0) << outs;
  // The fake device's exact peak over all processes (what the GPU really held at any instant).
  uint64_t device_peak = DevicePeak();
  EXPECT_LE(device_peak, limit);
  EXPECT_GT(device_peak, limit / 2);
  EXPECT_GT(peak, 0u);
  EXPECT_NE(outs.find("refused="), std::string::npos);
  tessera::slice::GpuUsage u = Usage();
  EXPECT_LE(u.peak_bytes, limit);
  EXPECT_GT(u.wall_refusals, 0u) << outs;  // the race did reach the wall
}

TEST_F(ShimTest, SigkilledProcessIsReclaimedWithinOneSecond) {
  WriteConfig(3072 * kMiB);
  Child survivor = Start({"hold", "10"});
  ASSERT_EQ(ReadLine(survivor), "hold 0");
  Child victim = Start({"hold", "1200"});
  ASSERT_EQ(ReadLine(victim), "hold 0");
  uint64_t before = Usage().used_bytes;
  ASSERT_GT(before, 1200 * kMiB);
  ASSERT_EQ(kill(victim.pid, SIGKILL), 0);
  double t0 = Now();
  // Not reaped: a zombie's memory is already gone at the driver; the survivor's reconciler must notice.
  while (Now() - t0 < 2 && Usage().charged_bytes > 10 * kMiB) usleep(5000);
  double took = Now() - t0;
  EXPECT_LT(took, 1.0);
  EXPECT_EQ(Usage().charged_bytes, 10 * kMiB);
  waitpid(victim.pid, nullptr, 0);
  std::string out, err;
  EXPECT_EQ(Run({"alloc", "1200"}, &out, &err), 0);
  EXPECT_NE(out.find("alloc-result 0"), std::string::npos) << out << err;
  kill(survivor.pid, SIGKILL);
  waitpid(survivor.pid, nullptr, 0);
  for (int fd : {survivor.out, survivor.err, victim.out, victim.err}) close(fd);
}

// Two GPUs in one slice with different walls, listed in the config in the other order than the process
// numbers them (CUDA_VISIBLE_DEVICES=1,0): each ordinal is matched to its slice GPU by UUID, so each wall
// holds on its own GPU, cuMemGetInfo reports each after a context switch, and each charge lands there.
TEST_F(ShimTest, EachGpuOfASliceHasItsOwnWallWhateverTheOrdinals) {
  const uint64_t kCtx = 300 * kMiB;  // the fake driver's context size
  WriteConfigGpus({{0, 1024 * kMiB}, {1, 3072 * kMiB}});
  Child c = Start({"devices", "2048"}, true, {"CUDA_VISIBLE_DEVICES=1,0"});
  EXPECT_EQ(ReadLine(c), "dev 0 phys 1 total 3221225472 alloc 0");  // 2 GiB fits in GPU 1's 3 GiB
  EXPECT_EQ(ReadLine(c), "dev 1 phys 0 total 1073741824 alloc 2");  // and not in GPU 0's 1 GiB
  ASSERT_EQ(ReadLine(c), "ready");
  EXPECT_EQ(Usage(1).charged_bytes, 2048 * kMiB);
  EXPECT_EQ(Usage(0).charged_bytes, 0u);
  EXPECT_EQ(Usage(0).wall_refusals, 1u);
  EXPECT_EQ(Usage(1).wall_refusals, 0u);
  std::vector<uint64_t> held = ProcessOnDevices(c.pid);
  ASSERT_EQ(held.size(), 2u);
  EXPECT_EQ(held[0], kCtx);                // fake GPU 0: its context only
  EXPECT_EQ(held[1], kCtx + 2048 * kMiB);  // fake GPU 1: context + the allocation
  Stop(c);
}

// A slice given only the second GPU (as the agent or `tessera run --gpu 1` sets it up): the process sees
// it as ordinal 0, and everything is accounted on GPU 1 with nothing on GPU 0.
TEST_F(ShimTest, SliceOfOnlyTheSecondGpuIsAccountedThere) {
  const uint64_t kCtx = 300 * kMiB;
  WriteConfigGpus({{1, 3072 * kMiB}});
  const std::string visible = "CUDA_VISIBLE_DEVICES=GPU-fa4e0000-0000-0000-0000-000000000001";
  Child c = Start({"devices", "1024"}, true, {visible});
  EXPECT_EQ(ReadLine(c), "dev 0 phys 1 total 3221225472 alloc 0");
  ASSERT_EQ(ReadLine(c), "ready");
  EXPECT_EQ(Usage(0).charged_bytes, 1024 * kMiB);
  std::vector<uint64_t> held = ProcessOnDevices(c.pid);
  ASSERT_EQ(held.size(), 2u);
  EXPECT_EQ(held[0], 0u);  // no phantom usage on GPU 0
  EXPECT_EQ(held[1], kCtx + 1024 * kMiB);
  // A second process of the slice shares that wall: 1800 MiB more does not fit in 3 GiB.
  std::string out, err;
  EXPECT_EQ(Run({"alloc", "1800"}, &out, &err, true, {visible}), 0) << out << err;
  EXPECT_NE(out.find("alloc-result 2"), std::string::npos) << out << err;
  EXPECT_NE(err.find("GPU-fa4e0000-0000-0000-0000-000000000001"), std::string::npos) << err;
  Stop(c);
}

// test/gpu's nodeinfo (the agent's NVML backend + the slice books) on the same two fake GPUs: both GPUs
// discovered with NUMA node, PCI bus and health; the slice of only GPU 1 reported on host GPU 1 with its
// process's driver usage there and nothing elsewhere.
TEST_F(ShimTest, NodeInfoReportsTheSliceOnItsGpu) {
  WriteConfigGpus({{1, 3072 * kMiB}});
  Child c =
      Start({"devices", "1024"}, true, {"CUDA_VISIBLE_DEVICES=GPU-fa4e0000-0000-0000-0000-000000000001"});
  ASSERT_EQ(ReadLine(c), "dev 0 phys 1 total 3221225472 alloc 0");
  ASSERT_EQ(ReadLine(c), "ready");
  std::string cmd = "env -i LD_LIBRARY_PATH=" + std::string(TESSERA_FAKE_LIB_DIR) +
                    " FAKE_GPU_STATE_DIR=" + state_ + " " + TESSERA_NODEINFO_PATH + " " + config_;
  FILE* p = popen(cmd.c_str(), "r");
  ASSERT_NE(p, nullptr);
  std::string out = ReadAll(fileno(p));
  EXPECT_EQ(pclose(p), 0) << out;
  const std::string gpu1 = "GPU-fa4e0000-0000-0000-0000-000000000001";
  EXPECT_NE(
      out.find(
          "{\"index\":0,\"uuid\":\"GPU-fa4e0000-0000-0000-0000-000000000000\",\"model\":\"Fake GPU\","
          "\"memory_bytes\":17179869184,\"numa_node\":0,\"pci_bus_id\":\"0000:10:00.0\",\"healthy\":true"),
      std::string::npos)
      << out;
  EXPECT_NE(out.find("{\"index\":1,\"uuid\":\"" + gpu1 +
                     "\",\"model\":\"Fake GPU\",\"memory_bytes\":17179869184,"
                     "\"numa_node\":1,\"pci_bus_id\":\"0000:11:00.0\",\"healthy\":true"),
            std::string::npos)
      << out;
  EXPECT_NE(out.find("\"pids\":[" + std::to_string(c.pid) + "]"), std::string::npos) << out;
  EXPECT_NE(out.find("{\"uuid\":\"" + gpu1 + "\",\"host_index\":1,\"limit_bytes\":3221225472,"),
            std::string::npos)
      << out;
  EXPECT_NE(out.find("\"charged_bytes\":1073741824,"), std::string::npos) << out;
  EXPECT_NE(out.find("\"driver_bytes\":" + std::to_string(1324 * kMiB) + "}],\"elsewhere_bytes\":0}"),
            std::string::npos)
      << out;
  Stop(c);
}

TEST_F(ShimTest, CorruptRegionIsRebuilt) {
  std::string region = std::string(dir_) + "/region";
  int fd = open(region.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0666);
  ASSERT_GE(fd, 0);
  std::string junk(100000, '\x5a');
  ASSERT_EQ(write(fd, junk.data(), junk.size()), static_cast<ssize_t>(junk.size()));
  close(fd);
  std::string out, err;
  EXPECT_EQ(Run({"paths"}, &out, &err), 0) << out << err;
}


// ---- Under the node agent ---------------------------------------------------------------------------------

// The second attack: the region was mounted read-write (0777) with the limit behind an unkeyed
// checksum; zeroing the process rows gave 3,456 MiB against 1,024, rewriting the limit 8,576 MiB. Under
// the agent the region directory is read-only in the container: the header, the roster, the live part
// and every other process's row refuse to open for writing and the header mapping cannot be made
// writable; a process that zeroes its own row is fenced by its own books. The fake GPU never holds more
// than the wall for the slice.
TEST_F(ShimTest, TenantCannotWriteTheAgentsBooksNorPassTheWall) {
  const uint64_t limit = 3072 * kMiB;
  StartAgent(limit);
  if (!ReadOnlyMountsAllowed()) GTEST_SKIP() << "this machine allows no mount namespace (unshare -m / -Urm)";
  Child neighbour = Start({"hold", "1000"});
  ASSERT_EQ(ReadLine(neighbour), "hold 0");
  wrapper_ = ReadOnlyRegionWrapper();
  Child hostile = Start({"tamper"});
  std::string line, report;
  while (ReadLineWithin(hostile, 20, &line)) {
    report += line + "\n";
    if (line.rfind("got ", 0) == 0) break;
  }
  ASSERT_NE(report.find("got "), std::string::npos) << report;
  // Every write by path failed (EROFS), the header stayed read-only (EACCES), the own row was zeroed.
  EXPECT_NE(report.find("open-rw region 30"), std::string::npos) << report;
  EXPECT_NE(report.find("open-rw live 30"), std::string::npos) << report;
  EXPECT_NE(report.find("open-rw row-0 30"), std::string::npos) << report;  // the neighbour's row
  EXPECT_EQ(report.find("open-rw row-1 0"), std::string::npos) << report;
  EXPECT_NE(report.find("mprotect-header 13"), std::string::npos) << report;
  EXPECT_NE(report.find("zeroed own row"), std::string::npos) << report;
  EXPECT_LE(DevicePeak(), limit) << report;
  const tessera::slice::GpuUsage u = AgentUsage();
  EXPECT_LE(u.used_bytes, limit);
  EXPECT_GE(u.charged_bytes, 1000 * kMiB);  // the neighbour's row is intact
  Stop(hostile);
  Stop(neighbour);
}

// Standalone (`tessera run`) the slice's processes share the region file; one that rewrites the limit with
// a valid checksum and zeroes the rows still meets the wall of the trusted config.
TEST_F(ShimTest, RewrittenLimitAndChecksumDoNotRaiseTheWall) {
  const uint64_t limit = 2048 * kMiB;
  WriteConfig(limit);
  Child hostile = Start({"tamper"});
  std::string line, report;
  while (ReadLineWithin(hostile, 20, &line)) {
    report += line + "\n";
    if (line.rfind("got ", 0) == 0) break;
  }
  ASSERT_NE(report.find("rewrote limit and zeroed rows"), std::string::npos) << report;
  EXPECT_LE(DevicePeak(), limit) << report;
  EXPECT_LE(Usage().used_bytes, limit) << report;
  Stop(hostile);
}

// The container restart: a process of the slice holding 2,000 MiB is SIGKILLed with its pid
// namespace; the container's next process, in a new pid namespace, was refused ("used 2.87 GiB" of 3)
// because nobody could judge the dead row. The agent judges host pids: the slice is whole again.
TEST_F(ShimTest, ContainerRestartedInANewPidNamespaceGetsItsSliceBack) {
  if (!NamespacesAllowed(std::string(dir_) + "/hostproc") && geteuid() != 0) {
    GTEST_SKIP() << "this machine allows no pid namespace (unshare -p)";
  }
  StartAgent(3072 * kMiB);
  const std::vector<std::string> ns = {"/usr/bin/unshare", geteuid() == 0 ? "-pf" : "-Urpf", "--kill-child",
                                       "--mount-proc", "/bin/sh", "-c", "exec \"$0\" \"$@\""};
  wrapper_ = ns;
  Child first = Start({"hold", "2000"});
  ASSERT_EQ(ReadLine(first), "hold 0");
  EXPECT_GE(AgentUsage().charged_bytes, 2000 * kMiB);
  Stop(first);  // SIGKILL: the namespace and its process go
  std::string out, err;
  EXPECT_EQ(Run({"alloc", "2000"}, &out, &err), 0) << err;
  EXPECT_NE(out.find("alloc-result 0"), std::string::npos) << out << err;
  const double t0 = Now();
  while (Now() - t0 < 5 && AgentRowsTaken() != 0) usleep(10000);
  EXPECT_EQ(AgentRowsTaken(), 0);  // the second process exited: its row went too
}

// 1,000 processes of one slice SIGKILLed at random points of their allocation loops, four at a time: every
// one starts (registers) within its deadline, and afterwards nothing is left charged and no row is taken;
// the whole slice is free for the next process.
TEST_F(ShimTest, ThousandSigkillsMidAllocationLeakNothingAndNeverHang) {
  // Room for four live churners at once (each: a context estimate of 640 MiB + at most 8 x 128 MiB), so
  // that a refusal here could only come from rows the dead left behind.
  const uint64_t limit = 8192 * kMiB;
  StartAgent(limit);
  unsigned seed = 12345;
  int started = 0, hangs = 0;
  std::vector<Child> live;
  for (int i = 0; i < 1000; ++i) {
    live.push_back(Start({"churn", std::to_string(i)}));
    if (live.size() < 4) continue;
    Child c = live.front();
    live.erase(live.begin());
    std::string line;
    if (ReadLineWithin(c, 10, &line) && line == "ready") {
      ++started;
    } else {
      ++hangs;
      ADD_FAILURE() << "process " << i << " said '" << line << "': " << ReadAll(c.err);
    }
    // Somewhere in its loop: between 0 and ~2 ms after it said ready.
    const double until = Now() + (rand_r(&seed) % 2000) / 1e6;
    while (Now() < until) {
    }
    Stop(c);
  }
  for (Child& c : live) {
    std::string line;
    if (ReadLineWithin(c, 10, &line) && line == "ready") {
      ++started;
    } else {
      ++hangs;
    }
    Stop(c);
  }
  EXPECT_EQ(hangs, 0);
  EXPECT_EQ(started, 1000);
  // The agent's sweep (every 100 ms) reclaims what the last ones left.
  const double t0 = Now();
  while (Now() - t0 < 5 && (AgentRowsTaken() != 0 || AgentUsage().used_bytes != 0)) usleep(20000);
  EXPECT_EQ(AgentRowsTaken(), 0);
  EXPECT_EQ(AgentUsage().used_bytes, 0u);
  EXPECT_LE(AgentUsage().peak_bytes, limit);  // the books never passed the wall
  std::string out, err;
  EXPECT_EQ(Run({"alloc", "7500"}, &out, &err), 0) << err;  // the wall less a context estimate
  EXPECT_NE(out.find("alloc-result 0"), std::string::npos) << out << err;
}

// A region corrupted on the host (a stray write into the limits) is found by the agent's sweep and
// rebuilt with a new generation; the process that held memory registers again and is counted again.
TEST_F(ShimTest, CorruptedAgentRegionIsRebuiltAndHoldersAreCountedAgain) {
  const uint64_t limit = 3072 * kMiB;
  StartAgent(limit);
  Child holder = Start({"hold", "1000"});
  ASSERT_EQ(ReadLine(holder), "hold 0");
  const std::string path = agent_dir_ + "/slice.region";
  int fd = open(path.c_str(), O_RDWR);
  ASSERT_GE(fd, 0);
  const uint64_t junk = 99999 * kMiB;
  ASSERT_EQ(pwrite(fd, &junk, sizeof(junk),
                   offsetof(tessera::slice::RegionHeader, limits) + offsetof(tessera::slice::RegionGpuLimit, limit_bytes)),
            static_cast<ssize_t>(sizeof(junk)));
  close(fd);
  const double t0 = Now();
  while (Now() - t0 < 5 && broker_.rebuilds() == 0) usleep(10000);
  EXPECT_EQ(broker_.rebuilds(), 1u);
  while (Now() - t0 < 10 && AgentUsage().charged_bytes != 1000 * kMiB) usleep(20000);
  EXPECT_EQ(AgentUsage().charged_bytes, 1000 * kMiB);
  EXPECT_EQ(AgentUsage().limit_bytes, limit);
  std::string out, err;
  EXPECT_EQ(Run({"alloc", "2000"}, &out, &err), 0) << err;  // 1000 + contexts + 2000 > 3072
  EXPECT_NE(out.find("alloc-result 2"), std::string::npos) << out << err;
  Stop(holder);
}

// No agent behind the socket (restarting, or gone): the process gets no memory and says why, at once.
TEST_F(ShimTest, UnreachableAgentRefusesMemoryWithoutHanging) {
  StartAgent(1024 * kMiB);
  broker_.Stop();
  broker_.Remove(agent_dir_);  // the socket is closed: nobody listens
  std::string out, err;
  const double t0 = Now();
  EXPECT_EQ(Run({"alloc", "1"}, &out, &err), 0) << err;
  EXPECT_LT(Now() - t0, 5.0);
  EXPECT_NE(out.find("alloc-result 2"), std::string::npos) << out;
  EXPECT_NE(err.find("node agent"), std::string::npos) << err;
}

}  // namespace
