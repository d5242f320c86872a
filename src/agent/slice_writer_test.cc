#include "agent/slice_writer.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fstream>
#include <sstream>

#include "slice/config.h"
#include "slice/fs.h"

namespace tessera::agent {
namespace {

namespace fs = std::filesystem;

class SliceWriterTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = fs::temp_directory_path() / ("tessera-sw-" + std::to_string(getpid()));
    fs::remove_all(root_);
  }
  void TearDown() override { fs::remove_all(root_); }
  fs::path root_;
};

ContainerAssignment Two() {
  ContainerAssignment a;
  a.pod_uid = "uid-1";
  a.namespace_ = "team";
  a.pod_name = "worker";
  a.container = "main";
  a.device_count = 2;
  a.priority = 0;
  a.grants = {{"GPU-aaaa", 3276, 25}, {"GPU-bbbb", 0, 0}};
  return a;
}

TEST(SliceName, FromFirstDeviceId) {
  EXPECT_EQ(SliceNameForDevices({"GPU-B::1", "GPU-A::3"}), "gpu-a-3");
  EXPECT_TRUE(
      slice::ValidSliceName(SliceNameForDevices({"GPU-5f7a2c1e-0000-4000-8000-000000000001::12"}).c_str()));
  std::string long_id(80, 'x');
  auto n = SliceNameForDevices({long_id + "::7"});
  EXPECT_LE(n.size(), 63u);
  EXPECT_EQ(n.substr(n.size() - 2), "-7");
}

TEST_F(SliceWriterTest, WritesConfigMountsAndEnvs) {
  SliceWriter w({root_ / "state", "/opt/tessera/libtessera.so", root_ / "node"});
  ASSERT_TRUE(w.Prepare().ok());
  std::ifstream pre(root_ / "state" / "ld.so.preload");
  std::string line;
  std::getline(pre, line);
  EXPECT_EQ(line, "/usr/local/lib/tessera/libtessera.so");

  ContainerSlice out;
  auto st = w.Write(Two(), {"GPU-aaaa::4", "GPU-bbbb::0"}, {{"GPU-bbbb", 80ull << 30}}, &out);
  ASSERT_TRUE(st.ok()) << st.message();
  EXPECT_EQ(out.slice, "gpu-aaaa-4");
  EXPECT_EQ(out.envs.at("NVIDIA_VISIBLE_DEVICES"), "GPU-aaaa,GPU-bbbb");
  EXPECT_EQ(out.envs.at("CUDA_VISIBLE_DEVICES"), "GPU-aaaa,GPU-bbbb");
  const fs::path dir = root_ / "state" / "slices" / "gpu-aaaa-4";
  std::vector<Mount> want = {
      {"/run/tessera/slice.conf", (dir / "slice.conf").string(), true},
      {"/run/tessera/region", (dir / "region").string(), true},
      {"/usr/local/lib/tessera/libtessera.so", "/opt/tessera/libtessera.so", true},
      {"/etc/ld.so.preload", (root_ / "state" / "ld.so.preload").string(), true},
      // A high-priority slice: both priority files of each of its GPUs writable.
      {"/run/tessera/node/GPU-aaaa", (root_ / "node" / "GPU-aaaa").string(), false},
      {"/run/tessera/node/GPU-aaaa.high", (root_ / "node" / "GPU-aaaa.high").string(), false},
      {"/run/tessera/node/GPU-bbbb", (root_ / "node" / "GPU-bbbb").string(), false},
      {"/run/tessera/node/GPU-bbbb.high", (root_ / "node" / "GPU-bbbb.high").string(), false},
  };
  EXPECT_EQ(out.mounts, want);
  // The agent's books: the region, its live part and the socket exist before the config names them.
  for (const char* f : {"slice.region", "live", "agent.sock"}) EXPECT_TRUE(fs::exists(dir / "region" / f)) << f;

  // The config reads back through the shim's own parser, with trusted-file checks.
  slice::SliceConfig cfg;
  char err[256] = {};
  ASSERT_TRUE(slice::LoadSliceConfig((dir / "slice.conf").c_str(), true, &cfg, err, sizeof(err))) << err;
  EXPECT_STREQ(cfg.name, "gpu-aaaa-4");
  EXPECT_STREQ(cfg.region, "/run/tessera/region/slice.region");
  EXPECT_STREQ(cfg.agent, "/run/tessera/region/agent.sock");
  EXPECT_EQ(cfg.priority, 0);
  EXPECT_EQ(cfg.cap_mode, slice::CapMode::kHard);
  ASSERT_EQ(cfg.gpu_count, 2);
  EXPECT_STREQ(cfg.gpus[0].uuid, "GPU-aaaa");
  EXPECT_EQ(cfg.gpus[0].memory_bytes, 3276ull << 20);
  EXPECT_EQ(cfg.gpus[0].cores, 25);
  EXPECT_EQ(cfg.gpus[1].memory_bytes, 80ull << 30);  // 0 MiB = the whole card
  EXPECT_EQ(cfg.gpus[1].cores, 100);
  struct stat sb;
  ASSERT_EQ(stat((dir / "slice.conf").c_str(), &sb), 0);
  EXPECT_EQ(sb.st_mode & 0777, 0644u);
  // Nothing of the books is writable but by the agent (processes get their rows through the socket).
  for (const fs::path& p : {dir / "region", dir / "region" / "rows", root_ / "node"}) {
    ASSERT_EQ(stat(p.c_str(), &sb), 0) << p;
    EXPECT_EQ(sb.st_mode & 0777, 0755u) << p;
  }
  for (const fs::path& p : {dir / "region" / "slice.region", dir / "region" / "live"}) {
    ASSERT_EQ(stat(p.c_str(), &sb), 0) << p;
    EXPECT_EQ(sb.st_mode & 0777, 0644u) << p;
  }
  // A best-effort slice on the same GPU gets the high-priority file read-only.
  ContainerAssignment be = Two();
  be.pod_name = "batch";
  be.priority = 1;
  be.grants = {{"GPU-aaaa", 1024, 50}};
  ContainerSlice out_be;
  ASSERT_TRUE(w.Write(be, {"GPU-aaaa::5"}, {}, &out_be).ok());
  std::map<std::string, bool> ro;
  for (const auto& m : out_be.mounts) ro[m.container_path] = m.read_only;
  EXPECT_EQ(ro.at("/run/tessera/node/GPU-aaaa"), false);
  EXPECT_EQ(ro.at("/run/tessera/node/GPU-aaaa.high"), true);
  ASSERT_TRUE(w.Remove(root_ / "state" / "slices" / "gpu-aaaa-5").ok());

  SliceOwner owner;
  ASSERT_TRUE(SliceWriter::ReadOwner(dir, &owner).ok());
  EXPECT_EQ(owner.pod, "worker");
  EXPECT_EQ(owner.device_ids.size(), 2u);
  EXPECT_EQ(owner.grants[0], (Grant{"GPU-aaaa", 3276, 25}));
  EXPECT_FALSE(owner.verified);
  EXPECT_EQ(w.ListSlices(), std::vector<fs::path>{dir});
  ASSERT_TRUE(w.Remove(dir).ok());
  EXPECT_TRUE(w.ListSlices().empty());
}

// Disk-full faults through the writers' seam (slice/fs.h): the owner file's write, or every write.
ssize_t FullWrite(int, const void*, size_t) {
  errno = ENOSPC;
  return -1;
}
int OwnerFull(const char* path, int flags, mode_t mode) {
  if (std::string(path).find("owner.json") != std::string::npos) {
    errno = ENOSPC;
    return -1;
  }
  return slice::PosixFs().open(path, flags, mode);
}

TEST_F(SliceWriterTest, ADiskFullMidWriteLeavesNoHalfSliceAndKeepsAnOldOneWhole) {
  SliceWriter w({root_ / "state", "/x/libtessera.so", root_ / "node"});
  ASSERT_TRUE(w.Prepare().ok());
  slice::Fs owner_full = slice::PosixFs();
  owner_full.open = &OwnerFull;
  slice::SetFsForTesting(&owner_full);
  ContainerSlice out;
  auto st = w.Write(Two(), {"GPU-aaaa::4", "GPU-bbbb::0"}, {{"GPU-bbbb", 80ull << 30}}, &out);
  slice::SetFsForTesting(nullptr);
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.message().find("owner.json"), std::string::npos) << st.message();
  EXPECT_NE(st.message().find("No space left on device"), std::string::npos) << st.message();
  // The config and region it had written already are gone with the slice; nothing lists it.
  EXPECT_FALSE(fs::exists(root_ / "state" / "slices" / "gpu-aaaa-4"));
  EXPECT_TRUE(w.ListSlices().empty());

  // A slice that exists keeps its old config whole when a rewrite meets a full disk.
  ASSERT_TRUE(w.Write(Two(), {"GPU-aaaa::4", "GPU-bbbb::0"}, {{"GPU-bbbb", 80ull << 30}}, &out).ok());
  const fs::path conf = root_ / "state" / "slices" / "gpu-aaaa-4" / "slice.conf";
  std::stringstream before;
  before << std::ifstream(conf).rdbuf();
  ContainerAssignment bigger = Two();
  bigger.grants[0].memory_mib = 6000;
  slice::Fs full = slice::PosixFs();
  full.write = &FullWrite;
  slice::SetFsForTesting(&full);
  st = w.Write(bigger, {"GPU-aaaa::4", "GPU-bbbb::0"}, {{"GPU-bbbb", 80ull << 30}}, &out);
  slice::SetFsForTesting(nullptr);
  ASSERT_FALSE(st.ok());
  std::stringstream after;
  after << std::ifstream(conf).rdbuf();
  EXPECT_EQ(after.str(), before.str());
  EXPECT_EQ(w.ListSlices().size(), 1u);
  for (const auto& e : fs::directory_iterator(conf.parent_path()))
    EXPECT_EQ(e.path().filename().string().find(".tmp"), std::string::npos) << e.path();
}

TEST_F(SliceWriterTest, AnOwnerFileReplacedByADeviceIsRefusedAtItsLimit) {
  const fs::path dir = root_ / "slice";
  fs::create_directories(dir);
  fs::create_symlink("/dev/zero", dir / "owner.json");
  SliceOwner owner;
  auto st = SliceWriter::ReadOwner(dir, &owner);
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.message(), (dir / "owner.json").string() + ": larger than 64 KiB, the limit for a slice's owner file");
}

TEST_F(SliceWriterTest, UnknownWholeCardIsAnError) {
  SliceWriter w({root_ / "state", "/x/libtessera.so", {}});
  ASSERT_TRUE(w.Prepare().ok());
  ContainerSlice out;
  auto st = w.Write(Two(), {"GPU-aaaa::4", "GPU-bbbb::0"}, {}, &out);
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.message().find("GPU-bbbb is not on this node"), std::string::npos);
}

}  // namespace
}  // namespace tessera::agent
