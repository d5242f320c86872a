#include "agent/slice_writer.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fstream>
#include <sstream>

#include "slice/config.h"

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
      {"/run/tessera/region", (dir / "region").string(), false},
      {"/usr/local/lib/tessera/libtessera.so", "/opt/tessera/libtessera.so", true},
      {"/etc/ld.so.preload", (root_ / "state" / "ld.so.preload").string(), true},
      {"/run/tessera/node", (root_ / "node").string(), false},
  };
  EXPECT_EQ(out.mounts, want);

  // The config reads back through the shim's own parser, with trusted-file checks.
  slice::SliceConfig cfg;
  char err[256] = {};
  ASSERT_TRUE(slice::LoadSliceConfig((dir / "slice.conf").c_str(), true, &cfg, err, sizeof(err))) << err;
  EXPECT_STREQ(cfg.name, "gpu-aaaa-4");
  EXPECT_STREQ(cfg.region, "/run/tessera/region/slice.region");
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
  ASSERT_EQ(stat((dir / "region").c_str(), &sb), 0);
  EXPECT_EQ(sb.st_mode & 0777, 0777u);

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
