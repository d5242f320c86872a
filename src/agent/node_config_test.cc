// Per-node settings: HAMi's nodeconfig entries, their errors, device filters and the cordon.
#include "agent/node_config.h"

#include <gtest/gtest.h>

#include "agent/inventory.h"
#include "kube/annotations.h"

namespace tessera::agent {
namespace {

std::vector<gpu::GpuInfo> Gpus() {
  std::vector<gpu::GpuInfo> g(3);
  for (int i = 0; i < 3; ++i) {
    g[i].index = i;
    g[i].uuid = "GPU-" + std::to_string(i);
    g[i].model = "T4";
    g[i].memory_bytes = 16ull << 30;
  }
  return g;
}

const char* kConfig = R"({"nodeconfig": [
  {"name": "a", "devicesplitcount": 4, "devicememoryscaling": 1.5, "devicecorescaling": 2,
   "operatingmode": "mps", "filterdevices": {"uuid": ["GPU-1"]}},
  {"name": "b", "operatingmode": "hami-core", "includedevices": {"index": [0, 2]}, "migstrategy": "none"}]})";

TEST(NodeConfig, EntryForThisNodeOnlyOverridesTheFlags) {
  NodeSettings base;
  base.split = 10;
  NodeSettings a, b, c;
  bool matched = false;
  ASSERT_TRUE(ApplyNodeConfig(kConfig, "a", base, &a, &matched).ok());
  EXPECT_TRUE(matched);
  EXPECT_EQ(a.split, 4);
  EXPECT_DOUBLE_EQ(a.memory_scaling, 1.5);
  EXPECT_DOUBLE_EQ(a.core_scaling, 2);
  EXPECT_TRUE(a.spatial);
  ASSERT_TRUE(ApplyNodeConfig(kConfig, "b", base, &b, &matched).ok());
  EXPECT_EQ(b.split, 10);  // not named: the flag's
  EXPECT_FALSE(b.spatial);
  ASSERT_TRUE(ApplyNodeConfig(kConfig, "elsewhere", base, &c, &matched).ok());
  EXPECT_FALSE(matched);
  EXPECT_EQ(c, base);

  auto offered_a = OfferedGpus(Gpus(), a);
  ASSERT_EQ(offered_a.size(), 2u);
  EXPECT_EQ(offered_a[1].uuid, "GPU-2");
  auto offered_b = OfferedGpus(Gpus(), b);
  ASSERT_EQ(offered_b.size(), 2u);
  EXPECT_EQ(offered_b[0].uuid, "GPU-0");
  EXPECT_EQ(offered_b[1].uuid, "GPU-2");

  // What the node publishes with node a's settings: scaled memory and cores, the mode.
  auto patch = NodeMetadataPatch(offered_a, a.split, "v", &a);
  auto gpus = kube::DecodeGpus(patch["metadata"]["annotations"][kube::kAnnoGpus].get<std::string>());
  ASSERT_TRUE(gpus.ok());
  EXPECT_EQ((*gpus)[0].memory_mib, 16384 * 3 / 2);
  EXPECT_EQ((*gpus)[0].cores, 200);
  EXPECT_EQ(patch["metadata"]["annotations"][kube::kAnnoComputeMode], "spatial");
  EXPECT_EQ(patch["metadata"]["annotations"]["tessera.dev/split"], "4");
}

TEST(NodeConfig, ErrorsNameEntryAndKeyAndNothingIsApplied) {
  struct Case {
    const char* text;
    const char* want;
  } cases[] = {
      {R"({"nodeconfig":[{"name":"a","devicesplitcount":0}]})", "nodeconfig[0].devicesplitcount: 0 is out of range (1..64)"},
      {R"({"nodeconfig":[{"name":"x"},{"name":"a","devicememoryscaling":20}]})",
       "nodeconfig[1].devicememoryscaling: 20 is out of range (0.1..16)"},
      {R"({"nodeconfig":[{"name":"a","operatingmode":"mig"}]})", "nodeconfig[0].operatingmode: \"mig\" is not allowed"},
      {R"({"nodeconfig":[{"name":"a","devicesplit":3}]})", "nodeconfig[0].devicesplit: unknown key"},
      {R"({"nodeconfig":[{"name":"b","devicesplitcount":99},{"name":"a"}]})", "nodeconfig[0].devicesplitcount"},
      {R"({"nodeconfig":[{"name":"a","filterdevices":{"serial":["x"]}}]})", "filterdevices.serial: unknown key"},
      {R"({"nodeconfig":[{"devicesplitcount":3}]})", "nodeconfig[0].name: required"},
      {R"({"nodeconfig":[{"name":"a"},{"name":"a"}]})", "a has two entries"},
      {R"({"nodes":[]})", "expected {\"nodeconfig\""},
      {"not json", "not JSON"},
  };
  NodeSettings base;
  for (const auto& c : cases) {
    NodeSettings out = base;
    out.split = 77;  // must stay untouched
    bool matched = false;
    auto st = ApplyNodeConfig(c.text, "a", base, &out, &matched);
    ASSERT_FALSE(st.ok()) << c.text;
    EXPECT_NE(st.message().find(c.want), std::string::npos) << st.message();
    EXPECT_EQ(out.split, 77) << c.text;
  }
}

TEST(NodeConfig, CordonedGpusStayPublishedButUnhealthy) {
  NodeSettings s;
  s.cordon = ParseCordon(" GPU-0, 2 ,");
  EXPECT_EQ(s.cordon, (std::set<std::string>{"GPU-0", "2"}));
  auto offered = OfferedGpus(Gpus(), s);
  ASSERT_EQ(offered.size(), 3u);
  EXPECT_TRUE(offered[0].cordoned);
  EXPECT_FALSE(offered[0].healthy);
  EXPECT_TRUE(offered[1].healthy);
  EXPECT_TRUE(offered[2].cordoned);
  auto devices = PluginDevices(offered, 2);
  int healthy = 0;
  for (const auto& d : devices) healthy += d.healthy;
  EXPECT_EQ(healthy, 2);  // GPU-1's two devices only
  auto patch = NodeMetadataPatch(offered, 2, "v", &s);
  auto gpus = kube::DecodeGpus(patch["metadata"]["annotations"][kube::kAnnoGpus].get<std::string>());
  ASSERT_TRUE(gpus.ok());
  EXPECT_TRUE((*gpus)[0].cordoned);
  EXPECT_FALSE((*gpus)[0].healthy);
}

}  // namespace
}  // namespace tessera::agent
