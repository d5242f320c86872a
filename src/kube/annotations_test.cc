#include "kube/annotations.h"

#include <gtest/gtest.h>

namespace tessera::kube {
namespace {

TEST(AnnotationsTest, GpusRoundTripAndDefaults) {
  std::vector<GpuInfo> g = {{"GPU-a", "A100", 40960, 100, 0, true}, {"GPU-b", "T4", 15360, 100, 1, false}};
  auto back = DecodeGpus(EncodeGpus(g));
  ASSERT_TRUE(back.ok()) << back.error().message;
  ASSERT_EQ(back->size(), 2u);
  EXPECT_EQ((*back)[1].model, "T4");
  EXPECT_EQ((*back)[1].numa, 1);
  EXPECT_FALSE((*back)[1].healthy);
  auto minimal = DecodeGpus(R"([{"uuid":"GPU-x","memory_mib":1024}])");
  ASSERT_TRUE(minimal.ok());
  EXPECT_EQ((*minimal)[0].cores, 100);
  EXPECT_TRUE((*minimal)[0].healthy);
}

TEST(AnnotationsTest, GpuLinksAndCordonRoundTrip) {
  GpuInfo a{"GPU-a", "H100", 81920, 100, 0, false};
  a.cordoned = true;
  a.links = {{"GPU-b", "NV18"}};
  auto back = DecodeGpus(EncodeGpus({a}));
  ASSERT_TRUE(back.ok()) << back.error().message;
  EXPECT_EQ((*back)[0], a);
  auto bad = DecodeGpus(R"([{"uuid":"GPU-a","memory_mib":1,"links":{"GPU-b":4}}])");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.error().message.find("tessera.dev/gpus[0].links.GPU-b"), std::string::npos) << bad.error().message;
}

TEST(AnnotationsTest, GpusErrorsNameTheField) {
  auto e = DecodeGpus(R"([{"uuid":"GPU-x","memory_mib":1024},{"uuid":"GPU-y","memory_mib":0}])");
  ASSERT_FALSE(e.ok());
  EXPECT_EQ(e.error().message, "tessera.dev/gpus[1].memory_mib: required integer > 0");
  EXPECT_FALSE(DecodeGpus("{}").ok());
  EXPECT_FALSE(DecodeGpus(R"([{"memory_mib":1}])").ok());
  EXPECT_FALSE(DecodeGpus(R"([{"uuid":"g","memory_mib":1,"cores":0}])").ok());
}

TEST(AnnotationsTest, DevicesRoundTripAndHamiForm) {
  ContainerDevices d = {{{"GPU-a", 3276, 25}}, {}, {{"GPU-a", 100, 10}, {"GPU-b", 100, 10}}};
  std::string s = EncodeDevices(d);
  EXPECT_EQ(s, R"([[{"cores":25,"memory_mib":3276,"uuid":"GPU-a"}],[],[{"cores":10,"memory_mib":100,"uuid":"GPU-a"},{"cores":10,"memory_mib":100,"uuid":"GPU-b"}]])");
  auto back = DecodeDevices(s);
  ASSERT_TRUE(back.ok());
  ASSERT_EQ(back->size(), 3u);
  EXPECT_EQ((*back)[2][1].uuid, "GPU-b");
  EXPECT_EQ(EncodeHamiDevices(d), "GPU-a,NVIDIA,3276,25:;;GPU-a,NVIDIA,100,10:GPU-b,NVIDIA,100,10:;");
  EXPECT_FALSE(DecodeDevices(R"([[{"uuid":"x","memory_mib":-1,"cores":1}]])").ok());
  EXPECT_FALSE(DecodeDevices(R"({"0":[]})").ok());
}

TEST(AnnotationsTest, SettingsRoundTripAndDefaults) {
  PodSettings s;
  s.containers = {{0, true}, {1, false}};
  s.init_containers = {{1, true}};
  auto back = DecodeSettings(EncodeSettings(s));
  ASSERT_TRUE(back.ok()) << back.error().message;
  EXPECT_EQ(*back, s);
  // Absent fields take the defaults: best effort, hard cap.
  auto d = DecodeSettings(R"({"containers":[{}]})");
  ASSERT_TRUE(d.ok()) << d.error().message;
  ASSERT_EQ(d->containers.size(), 1u);
  EXPECT_EQ(d->containers[0], (ContainerSettings{1, false}));
  EXPECT_TRUE(d->init_containers.empty());
}

TEST(AnnotationsTest, SettingsErrorsNameTheField) {
  auto e = DecodeSettings(R"({"containers":[{"priority":0},{"priority":2}]})");
  ASSERT_FALSE(e.ok());
  EXPECT_EQ(e.error().message, "tessera.dev/container-settings.containers[1].priority: must be 0 or 1");
  e = DecodeSettings(R"({"initContainers":[{"cap_mode":"bursty"}]})");
  ASSERT_FALSE(e.ok());
  EXPECT_EQ(e.error().message, "tessera.dev/container-settings.initContainers[0].cap_mode: must be hard or burst");
  EXPECT_FALSE(DecodeSettings("[]").ok());
  EXPECT_FALSE(DecodeSettings(R"({"containers":{}})").ok());
  EXPECT_FALSE(DecodeSettings("{").ok());
}

}  // namespace
}  // namespace tessera::kube
