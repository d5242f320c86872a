#include "agent/assignment.h"

#include <gtest/gtest.h>

namespace tessera::agent {
namespace {

nlohmann::json Pod(const std::string& devices, const std::string& node = "n1") {
  return nlohmann::json::parse(R"({
    "metadata": {"name": "p", "namespace": "ns", "uid": "u1",
                 "creationTimestamp": "2026-11-25T10:00:00Z",
                 "annotations": {"tessera.dev/assigned-node": ")" +
                               node + R"(",
                                 "tessera.dev/bind-time": "2026-11-25T10:00:01.5Z",
                                 "tessera.dev/allocation-state": "pending",
                                 "tessera.dev/devices": )" +
                               nlohmann::json(devices).dump() + R"(}},
    "spec": {"nodeName": ")" + node +
                               R"(",
             "containers": [
               {"name": "a", "resources": {"limits": {"nvidia.com/gpu": "1"}}},
               {"name": "sidecar"},
               {"name": "b", "resources": {"limits": {"nvidia.com/gpu": 2, "nvidia.com/priority": "0"}}}]}})");
}

TEST(ParseRfc3339, Forms) {
  int64_t ns = 0;
  ASSERT_TRUE(ParseRfc3339("1970-01-01T00:00:01Z", &ns));
  EXPECT_EQ(ns, 1000000000);
  ASSERT_TRUE(ParseRfc3339("1970-01-01T00:00:01.25Z", &ns));
  EXPECT_EQ(ns, 1250000000);
  ASSERT_TRUE(ParseRfc3339("1970-01-01T01:00:00+01:00", &ns));
  EXPECT_EQ(ns, 0);
  EXPECT_FALSE(ParseRfc3339("1970-01-01 00:00:01Z", &ns));
  EXPECT_FALSE(ParseRfc3339("1970-01-01T00:00:01", &ns));
  EXPECT_FALSE(ParseRfc3339("yesterday", &ns));
}

TEST(ParseAssignments, ReadsEveryGpuContainer) {
  std::string err;
  auto got = ParseAssignments(
      Pod(R"([[{"uuid":"GPU-a","memory_mib":1024,"cores":25}],[],[{"uuid":"GPU-a","memory_mib":0,"cores":0},{"uuid":"GPU-b","memory_mib":2048,"cores":50}]])"),
      "n1", "nvidia.com/gpu", &err);
  ASSERT_TRUE(err.empty()) << err;
  ASSERT_EQ(got.size(), 2u);
  EXPECT_EQ(got[0].container, "a");
  EXPECT_EQ(got[0].device_count, 1);
  EXPECT_EQ(got[0].grants[0], (Grant{"GPU-a", 1024, 25}));
  EXPECT_EQ(got[0].priority, 1);
  EXPECT_EQ(got[0].state, "pending");
  EXPECT_EQ(got[0].bind_time_ns - got[0].creation_time_ns, 1500000000);
  EXPECT_EQ(got[1].container, "b");
  EXPECT_EQ(got[1].index, 2);
  EXPECT_EQ(got[1].device_count, 2);
  EXPECT_EQ(got[1].priority, 0);
  EXPECT_EQ(got[1].Key(), "u1/b");
}

TEST(ParseAssignments, TheSchedulersSettingsWinOverThePodSpec) {
  const std::string devices =
      R"([[{"uuid":"GPU-a","memory_mib":1024,"cores":25}],[],[{"uuid":"GPU-a","memory_mib":0,"cores":0},{"uuid":"GPU-b","memory_mib":2048,"cores":50}]])";
  auto pod = Pod(devices);
  // The scheduler resolved container a to high priority (say its priority resource has another name) and
  // b to best effort with a burst cap; the spec's nvidia.com/priority and a forged cap-mode are not read.
  pod["metadata"]["annotations"]["tessera.dev/cap-mode"] = "hard";
  pod["metadata"]["annotations"]["tessera.dev/container-settings"] =
      R"({"containers":[{"priority":0,"cap_mode":"hard"},{},{"priority":1,"cap_mode":"burst"}]})";
  std::string err;
  auto got = ParseAssignments(pod, "n1", "nvidia.com/gpu", &err);
  ASSERT_EQ(err, "");
  ASSERT_EQ(got.size(), 2u);
  EXPECT_EQ(got[0].priority, 0);
  EXPECT_FALSE(got[0].burst);
  EXPECT_EQ(got[1].priority, 1);
  EXPECT_TRUE(got[1].burst);
  // Settings that do not cover a GPU container, or do not parse, are an error naming the field.
  pod["metadata"]["annotations"]["tessera.dev/container-settings"] = R"({"containers":[{"priority":0}]})";
  EXPECT_TRUE(ParseAssignments(pod, "n1", "nvidia.com/gpu", &err).empty());
  EXPECT_EQ(err, "pod ns/p: tessera.dev/container-settings.containers[2]: missing");
  pod["metadata"]["annotations"]["tessera.dev/container-settings"] = R"({"containers":[{"priority":5}]})";
  EXPECT_TRUE(ParseAssignments(pod, "n1", "nvidia.com/gpu", &err).empty());
  EXPECT_EQ(err, "pod ns/p: tessera.dev/container-settings.containers[0].priority: must be 0 or 1");
}

TEST(ParseAssignments, OtherNodeOrNoAnnotationIsNotOurs) {
  std::string err;
  EXPECT_TRUE(ParseAssignments(Pod("[[]]", "n2"), "n1", "nvidia.com/gpu", &err).empty());
  auto pod = Pod("[]");
  pod["metadata"]["annotations"].erase("tessera.dev/devices");
  EXPECT_TRUE(ParseAssignments(pod, "n1", "nvidia.com/gpu", &err).empty());
  EXPECT_TRUE(err.empty());
}

TEST(ParseAssignments, BadAnnotationsNameTheField) {
  struct Case {
    const char* devices;
    const char* expect;
  } cases[] = {
      {"not json", "tessera.dev/devices"},
      {R"([[{"uuid":"GPU-a","memory_mib":1,"cores":1}]])", "tessera.dev/devices[2]: missing"},
      {R"([[{"uuid":"GPU-a","memory_mib":1,"cores":1}],[],[{"uuid":"GPU-a","memory_mib":1,"cores":1}]])",
       "tessera.dev/devices[2]: 1 GPUs assigned but the container asks for 2"},
  };
  for (const auto& c : cases) {
    std::string err;
    auto got = ParseAssignments(Pod(c.devices), "n1", "nvidia.com/gpu", &err);
    EXPECT_TRUE(got.empty()) << c.devices;
    EXPECT_NE(err.find(c.expect), std::string::npos) << "got: " << err;
    EXPECT_NE(err.find("pod ns/p"), std::string::npos) << err;
  }
  auto pod = Pod(R"([[{"uuid":"GPU-a","memory_mib":1,"cores":1}],[],[]])");
  pod["metadata"]["annotations"]["tessera.dev/bind-time"] = "soon";
  std::string err;
  EXPECT_TRUE(ParseAssignments(pod, "n1", "nvidia.com/gpu", &err).empty());
  EXPECT_NE(err.find("tessera.dev/bind-time"), std::string::npos);
}

TEST(ParseAssignments, InitContainers) {
  auto pod = Pod(
      R"([[{"uuid":"GPU-a","memory_mib":1,"cores":1}],[],[{"uuid":"GPU-a","memory_mib":1,"cores":1},{"uuid":"GPU-b","memory_mib":1,"cores":1}]])");
  pod["spec"]["initContainers"] =
      nlohmann::json::parse(R"([{"name": "init", "resources": {"limits": {"nvidia.com/gpu": "1"}}}])");
  pod["metadata"]["annotations"]["tessera.dev/init-devices"] =
      R"([[{"uuid":"GPU-b","memory_mib":7,"cores":10}]])";
  std::string err;
  auto got = ParseAssignments(pod, "n1", "nvidia.com/gpu", &err);
  ASSERT_TRUE(err.empty()) << err;
  ASSERT_EQ(got.size(), 3u);
  EXPECT_TRUE(got[0].init);
  EXPECT_EQ(got[0].grants[0].memory_mib, 7);
}

}  // namespace
}  // namespace tessera::agent
