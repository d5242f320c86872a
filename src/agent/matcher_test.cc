#include "agent/matcher.h"

#include <gtest/gtest.h>

namespace tessera::agent {
namespace {

ContainerAssignment C(const std::string& uid, int64_t bind, std::vector<Grant> grants,
                      const std::string& ctr = "c", int index = 0) {
  ContainerAssignment a;
  a.pod_uid = uid;
  a.namespace_ = "ns";
  a.pod_name = "pod-" + uid;
  a.container = ctr;
  a.index = index;
  a.device_count = static_cast<int>(grants.size());
  a.grants = std::move(grants);
  a.bind_time_ns = bind;
  a.state = "pending";
  return a;
}

const Grant kA25{"GPU-a", 1024, 25}, kA40{"GPU-a", 2048, 40}, kB25{"GPU-b", 1024, 25};

struct Case {
  const char* name;
  std::vector<ContainerAssignment> candidates;
  std::set<std::string> claimed;
  std::vector<std::string> devices;
  bool found;
  std::string want_key;
  bool gpu_set_matched;
  bool ambiguous;
};

TEST(MatchAllocate, Table) {
  const Case cases[] = {
      {"single pending pod", {C("1", 10, {kA25})}, {}, {"GPU-a::0"}, true, "1/c", true, false},
      {"oldest bind first",
       {C("2", 20, {kA25}), C("1", 10, {kA25})},
       {},
       {"GPU-a::3"},
       true,
       "1/c",
       true,
       false},
      {"claimed skipped",
       {C("2", 20, {kA25}), C("1", 10, {kA25})},
       {"1/c"},
       {"GPU-a::3"},
       true,
       "2/c",
       true,
       false},
      {"gpu set narrows the guess",
       {C("1", 10, {kA25}), C("2", 20, {kB25})},
       {},
       {"GPU-b::1"},
       true,
       "2/c",
       true,
       false},
      {"count must match",
       {C("1", 10, {kA25}), C("2", 20, {kA25, kB25})},
       {},
       {"GPU-a::1", "GPU-b::0"},
       true,
       "2/c",
       true,
       false},
      {"identical requests are interchangeable",
       {C("1", 10, {kA25}), C("2", 10, {kA25})},
       {},
       {"GPU-a::5"},
       true,
       "1/c",
       true,
       false},
      {"different requests on same GPU are ambiguous",
       {C("1", 10, {kA25}), C("2", 20, {kA40})},
       {},
       {"GPU-a::5"},
       true,
       "1/c",
       true,
       true},
      {"kubelet ignored preference: fall back to count",
       {C("1", 10, {kA25})},
       {},
       {"GPU-b::2"},
       true,
       "1/c",
       false,
       false},
      {"nothing pending", {}, {}, {"GPU-a::0"}, false, "", false, false},
      {"all claimed", {C("1", 10, {kA25})}, {"1/c"}, {"GPU-a::0"}, false, "", false, false},
  };
  for (const auto& c : cases) {
    auto r = MatchAllocate(c.candidates, c.claimed, c.devices);
    EXPECT_EQ(r.found, c.found) << c.name;
    if (!c.found) {
      EXPECT_NE(r.reason.find("waiting for"), std::string::npos) << c.name;
      continue;
    }
    EXPECT_EQ(r.chosen.Key(), c.want_key) << c.name;
    EXPECT_EQ(r.gpu_set_matched, c.gpu_set_matched) << c.name;
    EXPECT_EQ(r.ambiguous, c.ambiguous) << c.name;
  }
}

TEST(MatchAllocate, AllocatedPodsAreNotCandidates) {
  auto done = C("1", 10, {kA25});
  done.state = "allocated";
  auto r = MatchAllocate({done, C("2", 20, {kA25})}, {}, {"GPU-a::0"});
  ASSERT_TRUE(r.found);
  EXPECT_EQ(r.chosen.pod_uid, "2");
}

TEST(MatchAllocate, InitContainersBeforeContainersWithinAPod) {
  auto init = C("1", 10, {kA25}, "init", 0);
  init.init = true;
  auto app = C("1", 10, {kA25}, "app", 0);
  auto r = MatchAllocate({app, init}, {}, {"GPU-a::0"});
  ASSERT_TRUE(r.found);
  EXPECT_EQ(r.chosen.container, "init");
}

TEST(PreferDevices, SteersOntoAssignedGpus) {
  std::vector<std::string> avail = {"GPU-a::0", "GPU-a::1", "GPU-b::0", "GPU-b::1", "GPU-c::0"};
  auto got = PreferDevices({C("1", 10, {kB25})}, {}, avail, {}, 1);
  EXPECT_EQ(got, (std::vector<std::string>{"GPU-b::0"}));
  got = PreferDevices({C("1", 10, {kA25, kB25})}, {}, avail, {}, 2);
  EXPECT_EQ(got, (std::vector<std::string>{"GPU-a::0", "GPU-b::0"}));
  // Nothing to steer by: distinct GPUs first.
  got = PreferDevices({}, {}, avail, {}, 3);
  EXPECT_EQ(got, (std::vector<std::string>{"GPU-a::0", "GPU-b::0", "GPU-c::0"}));
  // must_include is kept.
  got = PreferDevices({C("1", 10, {kB25})}, {}, avail, {"GPU-c::0"}, 1);
  EXPECT_EQ(got, (std::vector<std::string>{"GPU-c::0"}));
}

TEST(GpusOfDevices, Dedup) {
  EXPECT_EQ(GpusOfDevices({"GPU-b::1", "GPU-a::0", "GPU-b::2"}),
            (std::vector<std::string>{"GPU-a", "GPU-b"}));
  EXPECT_EQ(GpuOfDevice("plain"), "plain");
}

}  // namespace
}  // namespace tessera::agent

namespace tessera::agent {
namespace {

TEST(NarrowToAdmitting, PicksThePodTheKubeletIsAdmitting) {
  auto a = C("1", 10, {kA25}, "c");
  a.pod_name = "a";
  auto b = C("2", 10, {kA40}, "c");
  b.pod_name = "b";
  auto two = C("3", 5, {kA25}, "first");
  two.pod_name = "two";
  auto two2 = C("3", 5, {kB25}, "second");
  two2.pod_name = "two";
  struct Case {
    const char* name;
    PodResourcesView view;
    std::vector<std::string> want;  // keys
  } cases[] = {
      {"nothing listed: unchanged", {}, {"1/c", "2/c", "3/first", "3/second"}},
      {"b is being admitted", {{"ns/b", {{"c", {}}}}}, {"2/c"}},
      {"a running, b admitted", {{"ns/a", {{"c", {"GPU-a::0"}}}}, {"ns/b", {{"c", {}}}}}, {"2/c"}},
      {"second container of a pod", {{"ns/two", {{"first", {"GPU-a::1"}}, {"second", {}}}}}, {"3/second"}},
      {"only running pods listed: unchanged",
       {{"ns/a", {{"c", {"GPU-a::0"}}}}},
       {"1/c", "2/c", "3/first", "3/second"}},
  };
  for (const auto& c : cases) {
    std::vector<std::string> got;
    for (const auto& x : NarrowToAdmitting({a, b, two, two2}, c.view)) got.push_back(x.Key());
    EXPECT_EQ(got, c.want) << c.name;
  }
}

}  // namespace
}  // namespace tessera::agent
