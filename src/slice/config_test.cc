#include "slice/config.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

namespace tessera::slice {
namespace {

const char kGood[] =
    "# written by test\n"
    "version=1\n"
    "slice=train-a\n"
    "region=/run/tessera/slices/train-a/region\n"
    "priority=0\n"
    "cap_mode=burst\n"
    "future_key=whatever\n"
    "gpu=GPU-11111111-2222-3333-4444-555555555555 memory=2147483648 cores=50\n"
    "gpu=GPU-aaaaaaaa-2222-3333-4444-555555555555 memory=1024   # trailing comment\n";

TEST(SliceConfig, ParsesAllKeys) {
  SliceConfig c;
  char err[256] = "";
  ASSERT_TRUE(ParseSliceConfig(kGood, sizeof(kGood) - 1, &c, err, sizeof(err))) << err;
  EXPECT_EQ(c.version, 1);
  EXPECT_STREQ(c.name, "train-a");
  EXPECT_STREQ(c.region, "/run/tessera/slices/train-a/region");
  EXPECT_EQ(c.priority, 0);
  EXPECT_EQ(c.cap_mode, CapMode::kBurst);
  ASSERT_EQ(c.gpu_count, 2);
  EXPECT_EQ(c.gpus[0].memory_bytes, 2147483648ull);
  EXPECT_EQ(c.gpus[0].cores, 50);
  EXPECT_EQ(c.gpus[1].memory_bytes, 1024u);
  EXPECT_EQ(c.gpus[1].cores, 100);
  EXPECT_EQ(FindGpu(c, "GPU-aaaaaaaa-2222-3333-4444-555555555555"), 1);
  EXPECT_EQ(FindGpu(c, "GPU-nope"), -1);
}

struct BadCase {
  const char* text;
  const char* must_mention;
};

TEST(SliceConfig, RejectsBadInputNamingTheField) {
  const std::string base = "version=1\nslice=s\nregion=/r\n";
  const BadCase cases[] = {
      {"slice=s\nregion=/r\ngpu=GPU-1 memory=1\n", "version"},
      {"version=2\nslice=s\nregion=/r\ngpu=GPU-1 memory=1\n", "version"},
      {"version=1\nregion=/r\ngpu=GPU-1 memory=1\n", "slice"},
      {"version=1\nslice=Bad_Name\nregion=/r\ngpu=GPU-1 memory=1\n", "slice"},
      {"version=1\nslice=s\ngpu=GPU-1 memory=1\n", "region"},
      {"version=1\nslice=s\nregion=relative\ngpu=GPU-1 memory=1\n", "region"},
      {"version=1\nslice=s\nregion=/r\n", "gpu"},
      {"version=1\nslice=s\nregion=/r\ngpu=GPU-1\n", "memory"},
      {"version=1\nslice=s\nregion=/r\ngpu=GPU-1 memory=12x\n", "memory"},
      {"version=1\nslice=s\nregion=/r\ngpu=GPU-1 memory=0\n", "memory"},
      {"version=1\nslice=s\nregion=/r\ngpu=GPU-1 memory=1 cores=0\n", "cores"},
      {"version=1\nslice=s\nregion=/r\ngpu=GPU-1 memory=1 cores=101\n", "cores"},
      {"version=1\nslice=s\nregion=/r\ngpu=GPU-1 memory=1\ngpu=GPU-1 memory=2\n", "twice"},
      {"version=1\nslice=s\nregion=/r\npriority=2\ngpu=GPU-1 memory=1\n", "priority"},
      {"version=1\nslice=s\nregion=/r\ncap_mode=soft\ngpu=GPU-1 memory=1\n", "cap_mode"},
      {"version=1\nslice=s\nregion=/r\njunk line\ngpu=GPU-1 memory=1\n", "key=value"},
      {"version=1\nslice=s\nregion=/r\nagent=sock\ngpu=GPU-1 memory=1\n", "agent"},
      {"version=1\nslice=s\nregion=/r\nmps_pipe=\ngpu=GPU-1 memory=1\n", "mps_pipe"},
      {"version=1\nslice=s\nregion=/r\nmps_percentage=0\ngpu=GPU-1 memory=1\n", "mps_percentage"},
      {"version=1\nslice=s\nregion=/r\nmps_percentage=101\ngpu=GPU-1 memory=1\n", "1..100"},
      {"version=1\nslice=s\nregion=/r\nmps_sms=4097\ngpu=GPU-1 memory=1\n", "mps_sms"},
  };
  for (const BadCase& bc : cases) {
    SliceConfig c;
    char err[256] = "";
    EXPECT_FALSE(ParseSliceConfig(bc.text, strlen(bc.text), &c, err, sizeof(err))) << bc.text;
    EXPECT_NE(std::string(err).find(bc.must_mention), std::string::npos) << "error '" << err << "' for:\n" << bc.text;
  }
}

// The node agent's socket and the spatial-mode keys are part of the one schema (the shim has no second
// parser for them), and survive a write and a read.
TEST(SliceConfig, ParsesAgentAndSpatialKeys) {
  const char text[] =
      "version=1\nslice=s\nregion=/run/tessera/region/slice.region\nagent=/run/tessera/region/agent.sock\n"
      "mps_pipe=/run/tessera/mps/GPU-1/pipe\nmps_percentage=40\nmps_sms=132\ngpu=GPU-1 memory=1\n";
  SliceConfig c;
  char err[256] = "";
  ASSERT_TRUE(ParseSliceConfig(text, sizeof(text) - 1, &c, err, sizeof(err))) << err;
  EXPECT_STREQ(c.agent, "/run/tessera/region/agent.sock");
  EXPECT_STREQ(c.mps_pipe, "/run/tessera/mps/GPU-1/pipe");
  EXPECT_EQ(c.mps_percentage, 40);
  EXPECT_EQ(c.mps_sms, 132);
  char buf[4096];
  ASSERT_GT(FormatSliceConfig(c, buf, sizeof(buf), err, sizeof(err)), 0) << err;
  SliceConfig back;
  ASSERT_TRUE(ParseSliceConfig(buf, strlen(buf), &back, err, sizeof(err))) << err;
  EXPECT_STREQ(back.agent, c.agent);
  EXPECT_STREQ(back.mps_pipe, c.mps_pipe);
  EXPECT_EQ(back.mps_percentage, 40);
  EXPECT_EQ(back.mps_sms, 132);
}

TEST(SliceConfig, FormatThenParseRoundTrips) {
  SliceConfig c;
  char err[256];
  ASSERT_TRUE(ParseSliceConfig(kGood, sizeof(kGood) - 1, &c, err, sizeof(err)));
  char buf[4096];
  int n = FormatSliceConfig(c, buf, sizeof(buf), err, sizeof(err));
  ASSERT_GT(n, 0) << err;
  SliceConfig d;
  ASSERT_TRUE(ParseSliceConfig(buf, static_cast<size_t>(n), &d, err, sizeof(err))) << err;
  EXPECT_EQ(memcmp(&c, &d, sizeof(c)), 0);
  char tiny[16];
  EXPECT_EQ(FormatSliceConfig(c, tiny, sizeof(tiny), err, sizeof(err)), -1);
}

TEST(SliceConfig, LoadChecksTrust) {
  char dir[] = "/tmp/tessera-cfg-XXXXXX";
  ASSERT_NE(mkdtemp(dir), nullptr);
  std::string path = std::string(dir) + "/slice.conf";
  SliceConfig c;
  char err[256];
  ASSERT_TRUE(ParseSliceConfig(kGood, sizeof(kGood) - 1, &c, err, sizeof(err)));
  ASSERT_TRUE(WriteSliceConfig(path.c_str(), c, err, sizeof(err))) << err;
  SliceConfig d;
  ASSERT_TRUE(LoadSliceConfig(path.c_str(), true, &d, err, sizeof(err))) << err;
  EXPECT_EQ(d.gpus[0].memory_bytes, 2147483648ull);
  // Group-writable: an app (or anyone in the group) could edit its own limit.
  ASSERT_EQ(chmod(path.c_str(), 0664), 0);
  EXPECT_FALSE(LoadSliceConfig(path.c_str(), true, &d, err, sizeof(err)));
  EXPECT_NE(std::string(err).find("writable"), std::string::npos) << err;
  EXPECT_TRUE(LoadSliceConfig(path.c_str(), false, &d, err, sizeof(err))) << err;
  EXPECT_FALSE(LoadSliceConfig((std::string(dir) + "/missing").c_str(), true, &d, err, sizeof(err)));
  unlink(path.c_str());
  rmdir(dir);
}

TEST(ParseBytes, Forms) {
  uint64_t v = 0;
  EXPECT_TRUE(ParseBytes("2GiB", &v));
  EXPECT_EQ(v, 2ull << 30);
  EXPECT_TRUE(ParseBytes("2gib", &v));
  EXPECT_EQ(v, 2ull << 30);
  EXPECT_TRUE(ParseBytes("1.5GiB", &v));
  EXPECT_EQ(v, 3ull << 29);
  EXPECT_TRUE(ParseBytes("512M", &v));
  EXPECT_EQ(v, 512000000ull);
  EXPECT_TRUE(ParseBytes("100", &v));
  EXPECT_EQ(v, 100u);
  EXPECT_TRUE(ParseBytes("4KiB", &v));
  EXPECT_EQ(v, 4096u);
  EXPECT_FALSE(ParseBytes("", &v));
  EXPECT_FALSE(ParseBytes("GiB", &v));
  EXPECT_FALSE(ParseBytes("2XB", &v));
  EXPECT_FALSE(ParseBytes("2GiBs", &v));
  EXPECT_FALSE(ParseBytes("99999999999999999999", &v));
  EXPECT_FALSE(ParseBytes("1.5", &v));
}

// Which file the shim trusts: $TESSERA_SLICE_CONFIG only where the agent mounted nothing.
TEST(SliceConfigPath, EnvironmentOnlyWithoutTheAgentsMount) {
  struct stat st;
  const bool mounted = stat(kContainerSliceConfig, &st) == 0;
  const char* old = getenv("TESSERA_SLICE_CONFIG");
  std::string saved = old ? old : "";
  setenv("TESSERA_SLICE_CONFIG", "/tmp/app-written.conf", 1);
  EXPECT_STREQ(SliceConfigPath(), mounted ? kContainerSliceConfig : "/tmp/app-written.conf");
  setenv("TESSERA_SLICE_CONFIG", "", 1);
  if (mounted) EXPECT_STREQ(SliceConfigPath(), kContainerSliceConfig);
  else EXPECT_EQ(SliceConfigPath(), nullptr);
  if (old) setenv("TESSERA_SLICE_CONFIG", saved.c_str(), 1);
  else unsetenv("TESSERA_SLICE_CONFIG");
}

}  // namespace
}  // namespace tessera::slice
