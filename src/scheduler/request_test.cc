#include "scheduler/request.h"

#include <gtest/gtest.h>

namespace tessera::scheduler {
namespace {

using nlohmann::json;

json PodWith(json limits, json annotations = json::object()) {
  return {{"metadata", {{"name", "p"}, {"namespace", "ns"}, {"uid", "u1"}, {"annotations", annotations}}},
          {"spec", {{"containers", json::array({{{"name", "w"}, {"resources", {{"limits", limits}}}}})}}}};
}

TEST(RequestTest, SeedWorkerA) {
  auto p = ParsePod(PodWith({{"nvidia.com/gpu", "1"}, {"nvidia.com/gpucores", "25"}, {"nvidia.com/gpumem-percentage", "20"}}),
                    ParseOptions{});
  ASSERT_TRUE(p.ok()) << p.error().message;
  ASSERT_EQ(p->request.containers.size(), 1u);
  const auto& c = p->request.containers[0];
  EXPECT_EQ(c.gpus, 1);
  EXPECT_EQ(c.memory_percent, 20);
  EXPECT_EQ(c.memory_mib, 0);
  EXPECT_EQ(c.cores, 25);
  EXPECT_FALSE(c.exclusive);
  EXPECT_EQ(p->refs[0].index, 0);
  EXPECT_FALSE(p->refs[0].init);
}

TEST(RequestTest, SettingsCarryEachContainersPriorityAndThePodsCapMode) {
  ParseOptions o;
  o.names.priority = "example.com/latency";  // a renamed priority resource
  json pod = {{"metadata", {{"name", "p"}, {"namespace", "ns"}, {"uid", "u1"},
                            {"annotations", {{"tessera.dev/cap-mode", "burst"}}}}},
              {"spec", {{"initContainers", json::array({{{"name", "i"}, {"resources", {{"limits", {{"nvidia.com/gpu", "1"}}}}}}})},
                        {"containers", json::array({{{"name", "cpu"}},
                                                    {{"name", "live"},
                                                     {"resources", {{"limits", {{"nvidia.com/gpu", "1"},
                                                                                {"example.com/latency", "0"}}}}}}})}}}};
  auto p = ParsePod(pod, o);
  ASSERT_TRUE(p.ok()) << p.error().message;
  EXPECT_TRUE(p->burst);
  kube::PodSettings s = p->Settings();
  ASSERT_EQ(s.containers.size(), 2u);
  EXPECT_EQ(s.containers[1], (kube::ContainerSettings{0, true}));
  EXPECT_EQ(s.containers[0], (kube::ContainerSettings{1, true}));
  ASSERT_EQ(s.init_containers.size(), 1u);
  EXPECT_EQ(s.init_containers[0], (kube::ContainerSettings{1, true}));
  // What the bind writes is what the agent decodes.
  auto back = kube::DecodeSettings(kube::EncodeSettings(s));
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(*back, s);
}

TEST(RequestTest, AnUnknownCapModeIsRefusedNamingTheValues) {
  auto p = ParsePod(PodWith({{"nvidia.com/gpu", "1"}}, {{"tessera.dev/cap-mode", "bursty"}}), ParseOptions{});
  ASSERT_FALSE(p.ok());
  EXPECT_EQ(p.error().message, "annotation tessera.dev/cap-mode=bursty is not allowed (hard or burst; absent: hard)");
  p = ParsePod(PodWith({{"nvidia.com/gpu", "1"}}), ParseOptions{});
  ASSERT_TRUE(p.ok());
  EXPECT_FALSE(p->burst);
}

TEST(RequestTest, OnlyGpuMeansWholeExclusiveCard) {
  auto p = ParsePod(PodWith({{"nvidia.com/gpu", "2"}}), ParseOptions{});
  ASSERT_TRUE(p.ok());
  const auto& c = p->request.containers[0];
  EXPECT_EQ(c.gpus, 2);
  EXPECT_EQ(c.memory_percent, 100);
  EXPECT_EQ(c.cores, 100);
  EXPECT_TRUE(c.exclusive);
}

TEST(RequestTest, MemoryWithoutGpuMeansOneGpuAndCores100IsExclusive) {
  auto p = ParsePod(PodWith({{"nvidia.com/gpumem", "3000"}, {"nvidia.com/gpucores", "100"}}), ParseOptions{});
  ASSERT_TRUE(p.ok());
  EXPECT_TRUE(p->gpu_defaulted);
  EXPECT_EQ(p->request.containers[0].gpus, 1);
  EXPECT_EQ(p->request.containers[0].memory_mib, 3000);
  EXPECT_TRUE(p->request.containers[0].exclusive);
}

TEST(RequestTest, AnnotationsAndPolicies) {
  auto p = ParsePod(PodWith({{"nvidia.com/gpu", "1"}, {"nvidia.com/gpumem", "1000"}},
                            {{"nvidia.com/use-gputype", "A100, H100"},
                             {"nvidia.com/nouse-gpuuuid", "GPU-x"},
                             {"nvidia.com/numa-bind", "true"},
                             {"hami.io/node-scheduler-policy", "spread"},
                             {"hami.io/gpu-scheduler-policy", "binpack"}}),
                    ParseOptions{});
  ASSERT_TRUE(p.ok()) << p.error().message;
  const auto& c = p->request.containers[0];
  EXPECT_EQ(c.type_include, (std::vector<std::string>{"A100", "H100"}));
  EXPECT_EQ(c.uuid_exclude, (std::vector<std::string>{"GPU-x"}));
  EXPECT_TRUE(c.numa_bind);
  EXPECT_EQ(c.gpu_policy, placement::Policy::kBinpack);
  EXPECT_EQ(p->request.node_policy, placement::Policy::kSpread);
  auto bad = ParsePod(PodWith({{"nvidia.com/gpu", "1"}}, {{"hami.io/gpu-scheduler-policy", "fast"}}), ParseOptions{});
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.error().message,
            "annotation hami.io/gpu-scheduler-policy=fast is not allowed: \"fast\" is not one of binpack, spread, "
            "topology-aware, numa (a comma-separated list may join one packing policy with topology-aware and numa)");
}

TEST(RequestTest, EveryHamiPolicyValueAndCommaLists) {
  struct Case {
    const char* node;
    const char* gpu;
    placement::Policy node_base, gpu_base;  // defaults: binpack / spread
    bool node_topo, node_numa, gpu_topo, gpu_numa;
  } cases[] = {
      {"", "topology-aware", placement::Policy::kBinpack, placement::Policy::kSpread, false, false, true, false},
      {"", "numa", placement::Policy::kBinpack, placement::Policy::kSpread, false, false, false, true},
      {"spread", "binpack,topology-aware", placement::Policy::kSpread, placement::Policy::kBinpack, false, false, true, false},
      {"binpack, numa", "spread , numa, topology-aware", placement::Policy::kBinpack, placement::Policy::kSpread, false,
       true, true, true},
      {"topology-aware", "binpack,binpack", placement::Policy::kBinpack, placement::Policy::kBinpack, true, false, false,
       false},
      {"tessera,topology-aware", "", placement::Policy::kTessera, placement::Policy::kSpread, true, false, false, false},
  };
  for (const auto& c : cases) {
    json ann = json::object();
    if (*c.node) ann["hami.io/node-scheduler-policy"] = c.node;
    if (*c.gpu) ann["hami.io/gpu-scheduler-policy"] = c.gpu;
    auto p = ParsePod(PodWith({{"nvidia.com/gpu", "2"}, {"nvidia.com/gpucores", "10"}}, ann), ParseOptions{});
    ASSERT_TRUE(p.ok()) << c.node << " / " << c.gpu << ": " << p.error().message;
    const auto& r = p->request;
    EXPECT_EQ(r.node_policy, c.node_base) << c.node;
    EXPECT_EQ(r.node_topology_aware, c.node_topo) << c.node;
    EXPECT_EQ(r.node_numa, c.node_numa) << c.node;
    EXPECT_EQ(r.containers[0].gpu_policy, c.gpu_base) << c.gpu;
    EXPECT_EQ(r.containers[0].topology_aware, c.gpu_topo) << c.gpu;
    EXPECT_EQ(r.containers[0].numa_prefer, c.gpu_numa) << c.gpu;
  }
  struct Bad {
    const char* key;
    const char* value;
    const char* want;
  } bad[] = {
      {"hami.io/gpu-scheduler-policy", "binpack,spread",
       "annotation hami.io/gpu-scheduler-policy=binpack,spread is not allowed: it names two packing policies (binpack "
       "and spread)"},
      {"hami.io/gpu-scheduler-policy", "fgd", "\"fgd\" is not one of binpack, spread, topology-aware, numa"},
      {"hami.io/gpu-scheduler-policy", "numa,,spread", "hami.io/gpu-scheduler-policy=numa,,spread: empty entry"},
      {"hami.io/gpu-scheduler-policy", "numa,", "hami.io/gpu-scheduler-policy=numa,: empty entry"},
      {"hami.io/node-scheduler-policy", "topology", "annotation hami.io/node-scheduler-policy=topology is not allowed: "
                                                    "\"topology\" is not one of binpack, spread, bestfit, fgd, tessera, "
                                                    "random, topology-aware, numa"},
      {"tessera.dev/compute-mode", "mps", "annotation tessera.dev/compute-mode=mps is not allowed (time-sliced or spatial"},
      {"tessera.dev/spatial-share-namespaces", "yes", "tessera.dev/spatial-share-namespaces=yes is not allowed (true or false)"},
  };
  for (const auto& b : bad) {
    auto p = ParsePod(PodWith({{"nvidia.com/gpu", "1"}}, {{b.key, b.value}}), ParseOptions{});
    ASSERT_FALSE(p.ok()) << b.value;
    EXPECT_NE(p.error().message.find(b.want), std::string::npos) << p.error().message;
  }
}

TEST(RequestTest, ComputeModeAndTenant) {
  auto none = ParsePod(PodWith({{"nvidia.com/gpu", "1"}, {"nvidia.com/gpucores", "10"}}), ParseOptions{});
  ASSERT_TRUE(none.ok());
  EXPECT_EQ(none->request.containers[0].mode, placement::ComputeMode::kNodeDefault);
  EXPECT_FALSE(none->request.containers[0].share_tenants);
  ParseOptions share;
  share.spatial_share_namespaces = true;
  auto p = ParsePod(PodWith({{"nvidia.com/gpu", "1"}, {"nvidia.com/gpucores", "10"}},
                            {{"tessera.dev/compute-mode", "spatial"}}),
                    share);
  ASSERT_TRUE(p.ok());
  EXPECT_EQ(p->request.containers[0].mode, placement::ComputeMode::kSpatial);
  EXPECT_TRUE(p->request.containers[0].share_tenants);
  EXPECT_EQ(p->request.containers[0].tenant, NamespaceId("ns"));
  EXPECT_NE(NamespaceId("ns"), NamespaceId("other"));
  auto no = ParsePod(PodWith({{"nvidia.com/gpu", "1"}, {"nvidia.com/gpucores", "10"}},
                             {{"tessera.dev/compute-mode", "time-sliced"}, {"tessera.dev/spatial-share-namespaces", "false"}}),
                     share);
  ASSERT_TRUE(no.ok());
  EXPECT_EQ(no->request.containers[0].mode, placement::ComputeMode::kTimeSliced);
  auto two = ParsePod(PodWith({{"nvidia.com/gpu", "2"}}, {{"tessera.dev/compute-mode", "spatial"}}), share);
  ASSERT_FALSE(two.ok());
  EXPECT_EQ(two.error().message,
            "container \"w\": nvidia.com/gpu=2 with tessera.dev/compute-mode=spatial is out of range (1: a process is "
            "the client of one GPU's MPS server)");
  EXPECT_FALSE(no->request.containers[0].share_tenants);
}

TEST(RequestTest, RejectionsNameFieldValueAndRange) {
  struct Case {
    json limits;
    std::string want;
  } cases[] = {
      {{{"nvidia.com/gpumem-percentage", "0"}}, "container \"w\": nvidia.com/gpumem-percentage=0 is out of range (1..100)"},
      {{{"nvidia.com/gpumem-percentage", "101"}}, "container \"w\": nvidia.com/gpumem-percentage=101 is out of range (1..100)"},
      {{{"nvidia.com/gpucores", "120"}}, "container \"w\": nvidia.com/gpucores=120 is out of range (0..100)"},
      {{{"nvidia.com/gpumem", "-5"}}, "container \"w\": nvidia.com/gpumem=-5 is negative (must be >= 0)"},
      {{{"nvidia.com/gpumem", "1.5"}}, "container \"w\": nvidia.com/gpumem=1.5 is not a whole number"},
      {{{"nvidia.com/gpumem", "500m"}}, "container \"w\": nvidia.com/gpumem=500m is not a whole number"},
      {{{"nvidia.com/gpu", "x"}}, "container \"w\": nvidia.com/gpu=x is not a quantity (expected a whole number)"},
      {{{"nvidia.com/gpumem", "50000"}}, "container \"w\": nvidia.com/gpumem=50000 MiB is larger than any GPU in the cluster (1..40960 MiB)"},
      {{{"nvidia.com/gpu", "0"}, {"nvidia.com/gpucores", "5"}}, "container \"w\": nvidia.com/gpu=0 together with GPU memory or cores (nvidia.com/gpu must be >= 1)"},
      {{{"nvidia.com/priority", "2"}}, "container \"w\": nvidia.com/priority=2 is out of range (0 or 1)"},
  };
  for (const auto& c : cases) {
    auto p = ParsePod(PodWith(c.limits), ParseOptions{}, 40960);
    ASSERT_FALSE(p.ok()) << c.limits.dump();
    EXPECT_EQ(p.error().message, c.want);
  }
}

TEST(RequestTest, InitContainersAndCustomNames) {
  json pod = {{"metadata", {{"name", "p"}}},
              {"spec",
               {{"initContainers", json::array({{{"name", "i"}, {"resources", {{"limits", {{"x/gpu", "1"}, {"x/mem", "100"}}}}}}})},
                {"containers", json::array({{{"name", "a"}},
                                            {{"name", "b"},
                                             {"resources", {{"limits", {{"x/gpu", "2"}, {"x/mem", "200"}}},
                                                            {"requests", {{"cpu", "500m"}, {"memory", "1Gi"}}}}}}})}}}};
  ParseOptions o;
  o.names.gpu = "x/gpu";
  o.names.memory = "x/mem";
  auto p = ParsePod(pod, o);
  ASSERT_TRUE(p.ok()) << p.error().message;
  ASSERT_EQ(p->request.containers.size(), 2u);
  EXPECT_TRUE(p->refs[0].init);
  EXPECT_EQ(p->refs[1].index, 1);
  EXPECT_EQ(p->request.containers[1].gpus, 2);
  EXPECT_EQ(p->num_containers, 2);
  EXPECT_EQ(p->num_init_containers, 1);
  EXPECT_EQ(p->request.cpu_milli, 500);
  EXPECT_EQ(p->request.memory_mib, 1024);
  EXPECT_TRUE(WantsGpu(pod, o.names));
  EXPECT_FALSE(WantsGpu(pod, ResourceNames{}));
}

// The API server accepts requests up to the int64 limit; found by the request fuzzer (a signed overflow
// under UBSan). Each container counts for at most 2^40, and the pod's sums stay positive.
TEST(RequestTest, HugeCpuAndMemoryRequestsDoNotOverflow) {
  json big = {{"requests", {{"cpu", "9223372036854775807"}, {"memory", "9223372036854775807"}}}};
  json pod = {{"spec", {{"containers", json::array({{{"name", "a"}, {"resources", big}}, {{"name", "b"}, {"resources", big}}})},
                        {"initContainers", json::array({{{"name", "i"}, {"resources", big}}})}}}};
  int64_t cpu = 0, mem = 0;
  PodCpuMemory(pod, &cpu, &mem);
  EXPECT_EQ(cpu, int64_t{2} << 40);
  EXPECT_EQ(mem, int64_t{2} << 40);
  json small = {{"spec", {{"containers", json::array({{{"name", "a"}, {"resources", {{"requests", {{"cpu", "1500m"}, {"memory", "1Mi"}}}}}},
                                                      {{"name", "b"}, {"resources", {{"requests", {{"memory", "1025Ki"}}}}}}})}}}};
  PodCpuMemory(small, &cpu, &mem);
  EXPECT_EQ(cpu, 1500);
  EXPECT_EQ(mem, 3);  // 1 MiB, and 1025 KiB rounded up to 2
}

}  // namespace
}  // namespace tessera::scheduler
