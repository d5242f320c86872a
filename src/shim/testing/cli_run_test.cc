// `tessera run` and `tessera slices` (src/cli/cmd_run.cc, cmd_slices.cc) against the fake driver: slice
// creation and joining, percentages, GPU lists, bad arguments, and the listing of live processes.
// RunCmd execs, so every call runs in a forked child with its output captured.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "cli/commands.h"
#include "slice/config.h"
#include "slice/region.h"

namespace {

struct Result {
  int code;
  std::string out, err;
};

std::string Drain(int fd) {
  std::string s;
  char buf[4096];
  ssize_t n;
  while ((n = read(fd, buf, sizeof(buf))) > 0) s.append(buf, static_cast<size_t>(n));
  close(fd);
  return s;
}

// Runs fn(argc, argv) in a child; `keep` leaves it running and returns its pid in code (stdout first line
// is read by the caller through out_fd).
Result Call(int (*fn)(int, char**), std::vector<std::string> args) {
  int o[2], e[2];
  EXPECT_EQ(pipe(o), 0);
  EXPECT_EQ(pipe(e), 0);
  pid_t pid = fork();
  if (pid == 0) {
    dup2(o[1], 1);
    dup2(e[1], 2);
    close(o[0]);
    close(e[0]);
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    int rc = fn(static_cast<int>(args.size()), argv.data());
    fflush(stdout);
    fflush(stderr);
    _exit(rc);
  }
  close(o[1]);
  close(e[1]);
  Result r;
  r.out = Drain(o[0]);
  r.err = Drain(e[0]);
  int st = 0;
  waitpid(pid, &st, 0);
  r.code = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
  return r;
}

std::string Slurp(const std::string& path) {
  std::ifstream f(path);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

class CliRunTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_NE(mkdtemp(dir_), nullptr);
    state_ = std::string(dir_) + "/slices";
    setenv("FAKE_GPU_STATE_DIR", dir_, 1);
    unsetenv("TESSERA_STATE_DIR");
  }
  void TearDown() override { ASSERT_EQ(system((std::string("rm -rf ") + dir_).c_str()), 0); }
  std::vector<std::string> RunArgs(std::vector<std::string> flags, std::vector<std::string> cmd) {
    std::vector<std::string> a = {"run", "--state-dir", state_, "--shim", TESSERA_SHIM_PATH};
    a.insert(a.end(), flags.begin(), flags.end());
    a.push_back("--");
    a.insert(a.end(), cmd.begin(), cmd.end());
    return a;
  }
  char dir_[64] = "/tmp/tessera-cli-XXXXXX";
  std::string state_;
};

TEST_F(CliRunTest, BadArgumentsNameTheAcceptedForms) {
  struct Case {
    std::vector<std::string> flags;
    const char* mention;
  } cases[] = {
      {{"--memory", "2XB"}, "forms: 2GiB"},
      {{"--memory", "0%"}, "1%..100%"},
      {{"--memory", "101%"}, "1%..100%"},
      {{"--memory", "1GiB", "--cores", "0"}, "1..100"},
      {{"--memory", "1GiB", "--priority", "urgent"}, "high, best-effort"},
      {{"--memory", "1GiB", "--gpu", "7"}, "not a GPU of this host"},
      {{"--memory", "1GiB", "--gpu", "0,0"}, "twice"},
      {{"--memory", "1GiB", "--slice", "Bad_Name"}, "[a-z0-9]"},
      {{"--memory", "1TiB"}, "more than GPU"},
      {{"--bogus", "1"}, "unexpected argument"},
      // Per-GPU limits.
      {{"--memory", "0=2XB"}, "'2XB' for GPU 0 not understood"},
      {{"--memory", "0=2XB"}, "0=2GiB,1=6GiB"},
      {{"--memory", "0=0%"}, "1%..100%"},
      {{"--memory", "0:2GiB"}, "GPU=SIZE|PCT per GPU"},
      {{"--memory", "=2GiB"}, "is not GPU=SIZE"},
      {{"--memory", "0=1GiB,0=2GiB"}, "GPU 0 given twice"},
      {{"--memory", "0=1GiB,GPU-fa4e0000-0000-0000-0000-000000000000=1GiB"}, "names a GPU listed twice"},
      {{"--gpu", "0", "--memory", "0=1GiB,GPU-fa4e0000-0000-0000-0000-000000000000=1GiB"},
       "by index and by UUID"},
      {{"--memory", "5=1GiB"}, "--memory: '5' is not a GPU of this host"},
      {{"--memory", "0=1GiB,1=2GiB", "--gpu", "0"}, "GPU 1 is not in --gpu"},
      {{"--memory", "0=1GiB", "--gpu", "0,1"}, "no limit for GPU '1' of --gpu"},
      {{"--memory", "0=1GiB,1=1TiB"}, "more than GPU 1"},
      {{}, "--memory is required"},
  };
  for (const Case& c : cases) {
    Result r = Call(tessera::cli::RunCmd, RunArgs(c.flags, {"/bin/true"}));
    EXPECT_EQ(r.code, 2) << c.mention << "\n" << r.err;
    EXPECT_NE(r.err.find(c.mention), std::string::npos) << r.err;
  }
  Result r = Call(tessera::cli::RunCmd, {"run", "--memory", "1GiB"});
  EXPECT_EQ(r.code, 2);
  EXPECT_NE(r.err.find("no command"), std::string::npos) << r.err;
}

TEST_F(CliRunTest, CreatesASliceAndTheWallHolds) {
  Result r = Call(tessera::cli::RunCmd,
                  RunArgs({"--memory", "1GiB", "--slice", "s1", "--cores", "50", "--priority", "high"},
                          {TESSERA_PROBE_PATH, "alloc", "2000"}));
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("alloc-result 2"), std::string::npos) << r.out << r.err;
  std::string conf = Slurp(state_ + "/s1/slice.conf");
  EXPECT_NE(conf.find("gpu=GPU-fa4e0000-0000-0000-0000-000000000000 memory=1073741824 cores=50"),
            std::string::npos)
      << conf;
  EXPECT_NE(conf.find("priority=0"), std::string::npos) << conf;
  // Joining keeps the slice's limits; a fitting allocation succeeds.
  r = Call(tessera::cli::RunCmd, RunArgs({"--slice", "s1"}, {TESSERA_PROBE_PATH, "alloc", "200"}));
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("alloc-result 0"), std::string::npos) << r.out << r.err;
  // Each run (creating, then joining) recorded its process as a root of the slice, for the watchdog.
  std::istringstream roots(Slurp(state_ + "/s1/roots"));
  std::string line;
  int n = 0;
  while (std::getline(roots, line)) {
    int pid = 0;
    unsigned long long start = 0;
    EXPECT_EQ(sscanf(line.c_str(), "%d %llu", &pid, &start), 2) << line;
    EXPECT_GT(pid, 0);
    EXPECT_GT(start, 0u);
    ++n;
  }
  EXPECT_EQ(n, 2);
}

TEST_F(CliRunTest, PercentagesGpuListsAndEnvironment) {
  Result r = Call(
      tessera::cli::RunCmd,
      RunArgs({"--memory", "25%", "--gpu", "0,GPU-fa4e0000-0000-0000-0000-000000000001", "--slice", "two"},
              {"/bin/sh", "-c", "echo $CUDA_VISIBLE_DEVICES; echo $TESSERA_SLICE_CONFIG; echo $LD_PRELOAD"}));
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("GPU-fa4e0000-0000-0000-0000-000000000000,GPU-fa4e0000-0000-0000-0000-000000000001"),
            std::string::npos)
      << r.out;
  EXPECT_NE(r.out.find(state_ + "/two/slice.conf"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find(TESSERA_SHIM_PATH), std::string::npos) << r.out;
  std::string conf = Slurp(state_ + "/two/slice.conf");
  EXPECT_NE(conf.find("GPU-fa4e0000-0000-0000-0000-000000000000 memory=4294967296"), std::string::npos)
      << conf;
  EXPECT_NE(conf.find("GPU-fa4e0000-0000-0000-0000-000000000001 memory=4294967296"), std::string::npos)
      << conf;
}

// --memory GPU=SIZE|PCT,...: each GPU of the slice gets its own wall; without --gpu the named GPUs make the
// slice, in the order given; UUIDs and indices mix.
TEST_F(CliRunTest, PerGpuMemoryLimits) {
  Result r = Call(tessera::cli::RunCmd, RunArgs({"--memory", "1=6GiB,0=25%", "--slice", "per"},
                                                {"/bin/sh", "-c", "echo $CUDA_VISIBLE_DEVICES"}));
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("GPU-fa4e0000-0000-0000-0000-000000000001,GPU-fa4e0000-0000-0000-0000-000000000000"),
            std::string::npos)
      << r.out;
  std::string conf = Slurp(state_ + "/per/slice.conf");
  EXPECT_NE(conf.find("gpu=GPU-fa4e0000-0000-0000-0000-000000000001 memory=6442450944"), std::string::npos)
      << conf;
  EXPECT_NE(conf.find("gpu=GPU-fa4e0000-0000-0000-0000-000000000000 memory=4294967296"), std::string::npos)
      << conf;
  // With --gpu: the same GPUs, the order of --gpu.
  r = Call(tessera::cli::RunCmd,
           RunArgs({"--gpu", "0,1", "--memory", "GPU-fa4e0000-0000-0000-0000-000000000001=3GiB,0=1GiB",
                    "--slice", "both"},
                   {"/bin/true"}));
  ASSERT_EQ(r.code, 0) << r.err;
  conf = Slurp(state_ + "/both/slice.conf");
  size_t g0 = conf.find("gpu=GPU-fa4e0000-0000-0000-0000-000000000000 memory=1073741824");
  size_t g1 = conf.find("gpu=GPU-fa4e0000-0000-0000-0000-000000000001 memory=3221225472");
  EXPECT_NE(g0, std::string::npos) << conf;
  EXPECT_NE(g1, std::string::npos) << conf;
  EXPECT_LT(g0, g1) << conf;
}

// A slice of only the second GPU: the process sees it as its device 0 and its wall is GPU 1's.
TEST_F(CliRunTest, SliceOfTheSecondGpuOnly) {
  Result r = Call(tessera::cli::RunCmd, RunArgs({"--memory", "1=2GiB", "--slice", "second"},
                                                {TESSERA_PROBE_PATH, "alloc", "3000"}));
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("alloc-result 2"), std::string::npos) << r.out << r.err;
  EXPECT_NE(r.err.find("GPU-fa4e0000-0000-0000-0000-000000000001"), std::string::npos) << r.err;
  r = Call(tessera::cli::RunCmd, RunArgs({"--slice", "second"}, {TESSERA_PROBE_PATH, "alloc", "1000"}));
  EXPECT_NE(r.out.find("alloc-result 0"), std::string::npos) << r.out << r.err;
}

TEST_F(CliRunTest, SlicesListsLiveProcesses) {
  // A process holding memory in slice "held".
  int o[2];
  ASSERT_EQ(pipe(o), 0);
  pid_t holder = fork();
  if (holder == 0) {
    dup2(o[1], 1);
    close(o[0]);
    std::vector<std::string> args =
        RunArgs({"--memory", "2GiB", "--slice", "held"}, {TESSERA_PROBE_PATH, "hold", "300"});
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    _exit(tessera::cli::RunCmd(static_cast<int>(args.size()), argv.data()));
  }
  close(o[1]);
  std::string line;
  char ch;
  while (read(o[0], &ch, 1) == 1 && ch != '\n') line += ch;
  ASSERT_EQ(line, "hold 0");
  Result r = Call(tessera::cli::SlicesCmd, {"slices", "--json", "--state-dir", state_});
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("\"slice\":\"held\""), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("\"pid\":" + std::to_string(holder)), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("\"limit_bytes\":2147483648"), std::string::npos) << r.out;
  EXPECT_EQ(r.out.find("\"used_bytes\":0,"), std::string::npos) << r.out;  // 300 MiB + context are counted
  r = Call(tessera::cli::SlicesCmd, {"slices", "--state-dir", state_});
  EXPECT_NE(r.out.find("held"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("pid " + std::to_string(holder)), std::string::npos) << r.out;
  // A host pid published by the node agent (a process in a container) is listed with the process.
  {
    tessera::slice::SliceConfig cfg;
    tessera::slice::Region region;
    char err[256];
    ASSERT_TRUE(tessera::slice::LoadSliceConfig((state_ + "/held/slice.conf").c_str(), false, &cfg, err,
                                                sizeof(err)))
        << err;
    ASSERT_TRUE(tessera::slice::OpenRegion(cfg.region, true, &region, err, sizeof(err))) << err;
    const uint64_t owner = region.hdr->rows[0].owner.load();
    ASSERT_EQ(tessera::slice::OwnerPid(owner), holder);
    ASSERT_TRUE(tessera::slice::PublishHostPid(region.hdr, 0, owner, 424242));
    tessera::slice::CloseRegion(&region);
  }
  r = Call(tessera::cli::SlicesCmd, {"slices", "--json", "--state-dir", state_});
  EXPECT_NE(r.out.find("\"pid\":" + std::to_string(holder) + ",\"host_pid\":424242"), std::string::npos) << r.out;
  r = Call(tessera::cli::SlicesCmd, {"slices", "--state-dir", state_});
  EXPECT_NE(r.out.find("pid " + std::to_string(holder) + " (host pid 424242)"), std::string::npos) << r.out;
  // Once the process is gone, the listing drops it (its row is reclaimed by the reader).
  kill(holder, SIGKILL);
  waitpid(holder, nullptr, 0);
  close(o[0]);
  r = Call(tessera::cli::SlicesCmd, {"slices", "--json", "--state-dir", state_});
  EXPECT_EQ(r.out.find("\"pid\":" + std::to_string(holder)), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("\"used_bytes\":0,"), std::string::npos) << r.out;
  r = Call(tessera::cli::SlicesCmd, {"slices", "--nope"});
  EXPECT_EQ(r.code, 2);
}

}  // namespace
