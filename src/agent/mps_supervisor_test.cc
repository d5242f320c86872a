// The MPS supervisor and spatial slices against the fake control daemon (no GPU): start on first use,
// restart after the daemon dies, stop and clean up after the last slice, adopt after a restart.
#include "agent/mps_supervisor.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>
#include <vector>

#include "agent/slice_writer.h"

namespace tessera::agent {
namespace {

namespace fs = std::filesystem;

std::string Read(const fs::path& p) {
  std::ifstream in(p);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// A container asking for a spatial slice of GPU-a: 1024 MiB, 30 cores.
ContainerAssignment SpatialOnGpuA() {
  ContainerAssignment a;
  a.pod_uid = "u1";
  a.namespace_ = "ns";
  a.pod_name = "p";
  a.container = "c";
  a.device_count = 1;
  a.grants = {{"GPU-a", 1024, 30}};
  a.spatial = true;
  return a;
}

int Lines(const fs::path& p) {
  std::ifstream in(p);
  int n = 0;
  std::string l;
  while (std::getline(in, l)) ++n;
  return n;
}

class MpsSupervisorTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = fs::temp_directory_path() / ("tessera-mps-test-" + std::to_string(getpid()));
    fs::remove_all(root_);
    fs::create_directories(root_ / "bin");
    fs::create_symlink(TESSERA_FAKE_MPS, root_ / "bin" / "nvidia-cuda-mps-control");
    const char* path = std::getenv("PATH");
    old_path_ = path ? path : "";
    setenv("PATH", ((root_ / "bin").string() + ":" + old_path_).c_str(), 1);
  }
  void TearDown() override {
    // Stop any fake daemon left behind (the fake exits once its control file is gone).
    std::error_code ec;
    for (auto it = fs::recursive_directory_iterator(root_, ec); it != fs::recursive_directory_iterator(); ++it)
      if (it->path().filename() == "control") fs::remove(it->path(), ec);
    setenv("PATH", old_path_.c_str(), 1);
    fs::remove_all(root_, ec);
  }
  MpsSupervisor::Options Opts() {
    MpsSupervisor::Options o;
    o.base_dir = (root_ / "mps").string();
    o.check_period = std::chrono::milliseconds(50);
    o.on_restart = [this](const std::string& uuid, const std::string&) { restarted_ = uuid; };
    return o;
  }
  // As the fake's own check: a killed daemon may linger as a zombie.
  bool Alive(const std::string& pipe) {
    std::string pid = Read(fs::path(pipe) / "daemon.pid");
    if (pid.empty() || !fs::exists(fs::path(pipe) / "control")) return false;
    std::string stat = Read("/proc/" + std::to_string(std::stoi(pid)) + "/stat");
    auto paren = stat.rfind(')');
    return paren != std::string::npos && paren + 2 < stat.size() && stat[paren + 2] != 'Z';
  }
  fs::path root_;
  std::string old_path_;
  std::string restarted_;
};

TEST_F(MpsSupervisorTest, OneDaemonPerGpuStartedRestartedAndStoppedWithItsLastSlice) {
  MpsSupervisor mps(Opts());
  std::string pipe_a, pipe_a2, pipe_b;
  ASSERT_TRUE(mps.Acquire("GPU-a", "s1", &pipe_a).ok());
  ASSERT_TRUE(mps.Acquire("GPU-a", "s2", &pipe_a2).ok());
  ASSERT_TRUE(mps.Acquire("GPU-b", "s3", &pipe_b).ok());
  EXPECT_EQ(pipe_a, pipe_a2);
  EXPECT_NE(pipe_a, pipe_b);
  EXPECT_EQ(pipe_a, (root_ / "mps" / "GPU-a" / "pipe").string());
  EXPECT_EQ(Lines(fs::path(pipe_a) / "starts"), 1) << "the second slice reuses the running daemon";
  EXPECT_EQ(Read(fs::path(pipe_a) / "gpu"), "GPU-a\n") << "the daemon sees only its GPU";
  ASSERT_TRUE(Alive(pipe_a));
  // Containers get the client directory: the daemon's control socket and nothing else.
  const fs::path client_a = mps.ClientDir("GPU-a");
  EXPECT_EQ(client_a, root_ / "mps" / "GPU-a" / "client");
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(client_a)) names.push_back(e.path().filename().string());
  EXPECT_EQ(names, std::vector<std::string>{"control"});
  EXPECT_TRUE(fs::equivalent(client_a / "control", fs::path(pipe_a) / "control"));

  // The daemon dies: the next check starts it again and reports it.
  kill(std::stoi(Read(fs::path(pipe_a) / "daemon.pid")), SIGKILL);
  for (int i = 0; i < 500 && Alive(pipe_a); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  mps.Check();
  EXPECT_EQ(mps.restarts(), 1u);
  EXPECT_EQ(restarted_, "GPU-a");
  EXPECT_TRUE(Alive(pipe_a));
  EXPECT_EQ(Lines(fs::path(pipe_a) / "starts"), 2);
  EXPECT_TRUE(fs::equivalent(client_a / "control", fs::path(pipe_a) / "control"))
      << "the client directory follows the restarted daemon's socket";
  // Someone else restarts the daemon (a new socket); a healthy check relinks.
  fs::remove(fs::path(pipe_a) / "control");
  for (int i = 0; i < 500 && Alive(pipe_a); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  ASSERT_EQ(std::system(("CUDA_MPS_PIPE_DIRECTORY=" + pipe_a + " nvidia-cuda-mps-control -d").c_str()), 0);
  mps.Check();
  EXPECT_EQ(mps.restarts(), 1u);
  EXPECT_TRUE(fs::equivalent(client_a / "control", fs::path(pipe_a) / "control"));
  mps.Check();  // healthy: nothing more
  EXPECT_EQ(mps.restarts(), 1u);

  // Releasing one of two slices keeps the daemon; the last one stops it and removes its directories.
  mps.Release("s1");
  EXPECT_TRUE(Alive(pipe_a));
  mps.Release("s2");
  EXPECT_FALSE(fs::exists(root_ / "mps" / "GPU-a"));
  EXPECT_TRUE(Alive(pipe_b));
  EXPECT_EQ(mps.Users().size(), 1u);
}

TEST_F(MpsSupervisorTest, TheThreadRestartsADeadDaemon) {
  MpsSupervisor mps(Opts());
  std::string pipe;
  ASSERT_TRUE(mps.Acquire("GPU-a", "s1", &pipe).ok());
  mps.Start();
  fs::remove(fs::path(pipe) / "control");  // the fake daemon exits
  for (int i = 0; i < 1000 && mps.restarts() == 0; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  EXPECT_GE(mps.restarts(), 1u);
  EXPECT_TRUE(Alive(pipe));
  mps.Stop();
}

TEST_F(MpsSupervisorTest, SpatialSliceConfigCarriesPipeAndSmsAndMountsTheClientDirReadOnly) {
  MpsSupervisor mps(Opts());
  SliceWriter::Options wo;
  wo.state_dir = root_ / "state";
  wo.shim_path = root_ / "libtessera.so";
  wo.mps = &mps;
  SliceWriter w(wo);
  ASSERT_TRUE(w.Prepare().ok());
  w.SetSmCounts({{"GPU-a", 132}});
  const ContainerAssignment a = SpatialOnGpuA();
  ContainerSlice out;
  ASSERT_TRUE(w.Write(a, {"GPU-a::0"}, {{"GPU-a", 16ull << 30}}, &out).ok());
  const std::string pipe = (root_ / "mps" / "GPU-a" / "pipe").string();
  std::string conf = Read(out.dir / "slice.conf");
  EXPECT_NE(conf.find("mps_pipe=" + pipe + "\n"), std::string::npos) << conf;
  EXPECT_NE(conf.find("mps_sms=132\n"), std::string::npos) << conf;
  EXPECT_NE(conf.find("cores=30"), std::string::npos) << conf;
  bool mounted = false;
  // Read-only, and the client directory rather than the pipe directory (no control_privileged).
  for (const auto& m : out.mounts)
    mounted |= m.container_path == pipe && m.host_path == mps.ClientDir("GPU-a") && m.read_only;
  EXPECT_TRUE(mounted);
  EXPECT_TRUE(Alive(pipe));

  // A time-sliced slice on the same writer has neither key nor mount.
  ContainerAssignment t = a;
  t.pod_uid = "u2";
  t.spatial = false;
  ContainerSlice tout;
  ASSERT_TRUE(w.Write(t, {"GPU-b::0"}, {{"GPU-a", 16ull << 30}}, &tout).ok());
  EXPECT_EQ(Read(tout.dir / "slice.conf").find("mps_pipe"), std::string::npos);

  // Two GPUs in one spatial container: refused, naming why.
  ContainerAssignment two = a;
  two.pod_uid = "u3";
  two.grants = {{"GPU-a", 1024, 30}, {"GPU-b", 1024, 30}};
  two.device_count = 2;
  ContainerSlice bad;
  auto st = w.Write(two, {"GPU-a::1", "GPU-b::1"}, {}, &bad);
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.message().find("a spatial slice has exactly one GPU"), std::string::npos) << st.message();

  // An agent restart: a new supervisor adopts the running slice; removing it stops the daemon.
  MpsSupervisor again(Opts());
  SliceWriter::Options wo2 = wo;
  wo2.mps = &again;
  SliceWriter w2(wo2);
  w2.AdoptSpatialSlices();
  ASSERT_EQ(again.Users().count("GPU-a"), 1u);
  EXPECT_EQ(again.Users().at("GPU-a").count(out.slice), 1u);
  ASSERT_TRUE(w2.Remove(out.dir).ok());
  EXPECT_FALSE(fs::exists(root_ / "mps" / "GPU-a"));
}

TEST_F(MpsSupervisorTest, WithoutSpatialModeASpatialSliceIsRefused) {
  SliceWriter::Options wo;
  wo.state_dir = root_ / "state";
  SliceWriter w(wo);
  ASSERT_TRUE(w.Prepare().ok());
  ContainerSlice out;
  auto st = w.Write(SpatialOnGpuA(), {"GPU-a::0"}, {}, &out);
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.message().find("--mps-dir"), std::string::npos) << st.message();
}

}  // namespace
}  // namespace tessera::agent
