#include "gpu/topology.h"

#include <gtest/gtest.h>

#include "gpu/sim_backend.h"

namespace tessera::gpu {
namespace {

TEST(Topology, LinkNames) {
  for (const char* ok : {"NV1", "NV12", "NV64", "PIX", "PXB", "PHB", "NODE", "SYS"}) EXPECT_TRUE(ValidLinkName(ok)) << ok;
  for (const char* bad : {"NV", "NV0", "NV65", "NV01", "nv4", "PCI", "", "NV4x"}) EXPECT_FALSE(ValidLinkName(bad)) << bad;
  EXPECT_EQ(LinkFromCommonAncestor(0), "PIX");
  EXPECT_EQ(LinkFromCommonAncestor(10), "PIX");
  EXPECT_EQ(LinkFromCommonAncestor(20), "PXB");
  EXPECT_EQ(LinkFromCommonAncestor(30), "PHB");
  EXPECT_EQ(LinkFromCommonAncestor(40), "NODE");
  EXPECT_EQ(LinkFromCommonAncestor(50), "SYS");
}

const char* kFour = R"(
gpus:
  - {uuid: GPU-a, model: H100, memory_mib: 81920, numa: 0, links: {GPU-b: NV18, GPU-c: SYS}}
  - {uuid: GPU-b, model: H100, memory_mib: 81920, numa: 0}
  - {uuid: GPU-c, model: H100, memory_mib: 81920, numa: 1, links: {GPU-d: NV18, GPU-a: SYS}}
  - {uuid: GPU-d, model: H100, memory_mib: 81920, numa: 1}
)";

TEST(Topology, SimulatorLinksAreMadeSymmetric) {
  SimSpec spec;
  Status st = ParseSimSpec(kFour, "t", &spec);
  ASSERT_TRUE(st.ok()) << st.message();
  EXPECT_EQ(spec.gpus[1].info.links.at("GPU-a"), "NV18");
  EXPECT_EQ(spec.gpus[3].info.links.at("GPU-c"), "NV18");
  EXPECT_EQ(spec.gpus[0].info.links.at("GPU-c"), "SYS");
  EXPECT_EQ(spec.gpus[1].info.links.count("GPU-c"), 0u);  // not given: unknown
}

TEST(Topology, SimulatorRejectsBadLinksNamingTheField) {
  struct Case {
    const char* yaml;
    const char* want;
  } cases[] = {
      {"gpus:\n - {uuid: GPU-a, model: m, memory_mib: 1, links: {GPU-b: NVX}}\n - {uuid: GPU-b, model: m, memory_mib: 1}\n",
       "t: gpus[0].links.GPU-b: 'NVX' is not a link"},
      {"gpus:\n - {uuid: GPU-a, model: m, memory_mib: 1, links: {GPU-z: PIX}}\n", "t: gpus[0].links.GPU-z: no GPU"},
      {"gpus:\n - {uuid: GPU-a, model: m, memory_mib: 1, links: {GPU-a: PIX}}\n", "link to itself"},
      {"gpus:\n - {uuid: GPU-a, model: m, memory_mib: 1, links: {GPU-b: PIX}}\n - {uuid: GPU-b, model: m, memory_mib: 1, "
       "links: {GPU-a: SYS}}\n",
       "GPU-a says PIX to GPU-b but GPU-b says SYS"},
      {"gpus:\n - {uuid: GPU-a, model: m, memory_mib: 1, links: [PIX]}\n", "gpus[0].links: must be a mapping"},
  };
  for (const auto& c : cases) {
    SimSpec spec;
    Status st = ParseSimSpec(c.yaml, "t", &spec);
    ASSERT_FALSE(st.ok()) << c.yaml;
    EXPECT_NE(st.message().find(c.want), std::string::npos) << st.message();
  }
}

}  // namespace
}  // namespace tessera::gpu
