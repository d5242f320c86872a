// Tests for the simulator's building blocks: trace parsing, the arrival protocol (shuffle +
// inflation) and the arrived / unallocated metrics on tiny hand-made traces with known answers.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <set>

#include "placement/replay.h"
#include "placement/trace.h"

namespace tessera::placement::trace {
namespace {

const char kNodes[] =
    "sn,cpu_milli,memory_mib,gpu,model\n"
    "node-a,32000,131072,2,T4\n"
    "node-b,8000,65536,0,\n";

const char kPodsHeader[] = "name,cpu_milli,memory_mib,num_gpu,gpu_milli,gpu_spec,qos,pod_phase,creation_time\n";

TEST(TraceParse, Nodes) {
  auto r = ParseNodes(kNodes);
  ASSERT_TRUE(r.ok()) << r.error;
  ASSERT_EQ(r.value.size(), 2u);
  EXPECT_EQ(r.value[0].name, "node-a");
  EXPECT_EQ(r.value[0].cpu_milli, 32000);
  EXPECT_EQ(r.value[0].gpus, 2);
  EXPECT_EQ(r.value[0].model, "T4");
  EXPECT_EQ(r.value[1].gpus, 0);
  auto nodes = ToNodes(r.value);
  ASSERT_EQ(nodes[0].gpus.size(), 2u);
  EXPECT_EQ(nodes[0].gpus[1].uuid, "GPU-node-a-1");
  EXPECT_EQ(nodes[0].gpus[0].memory_mib, ModelMemoryMib("T4"));
  EXPECT_EQ(nodes[0].gpus[1].numa, 1);
}

TEST(TraceParse, Pods) {
  std::string csv = std::string(kPodsHeader) +
                    "p0,4000,8192,1,500,,LS,Running,0\n"
                    "p1,8000,16384,2,1000,V100M16|V100M32,LS,Running,0\r\n"
                    "\n"
                    "p2,1000,1024,0,0,,BE,Running,0\n"
                    "p3,4000,8192,1,500,,LS,Running,5\n";
  auto r = ParsePods(csv);
  ASSERT_TRUE(r.ok()) << r.error;
  ASSERT_EQ(r.value.size(), 4u);
  EXPECT_EQ(r.value[0].gpu_milli, 500);
  EXPECT_EQ(r.value[1].gpu_spec, (std::vector<std::string>{"V100M16", "V100M32"}));
  EXPECT_EQ(r.value[1].gpu_milli_total(), 2000);
  EXPECT_EQ(r.value[2].num_gpu, 0);
  EXPECT_EQ(r.value[0].shape, r.value[3].shape) << "equal requests share a shape";
  EXPECT_NE(r.value[0].shape, r.value[1].shape);
  PodRequest req = ToRequest(r.value[1], Policy::kFgd);
  ASSERT_EQ(req.containers.size(), 1u);
  EXPECT_EQ(req.containers[0].gpus, 2);
  EXPECT_EQ(req.containers[0].cores, 100);
  EXPECT_EQ(req.containers[0].memory_percent, 100);
  EXPECT_EQ(req.containers[0].type_include.size(), 2u);
  EXPECT_EQ(req.node_policy, Policy::kFgd);
  EXPECT_TRUE(ToRequest(r.value[2], Policy::kFgd).containers.empty());
}

struct BadCase {
  const char* row;
  const char* want;  // substring of the error
};

TEST(TraceParse, PodErrorsNameLineAndField) {
  const BadCase cases[] = {
      {"p,abc,1,1,500,,LS,Running,0", "line 2, field 'cpu_milli'"},
      {"p,1,-5,1,500,,LS,Running,0", "field 'memory_mib'"},
      {"p,1,1,99,1000,,LS,Running,0", "field 'num_gpu': want an integer in 0..32"},
      {"p,1,1,1,1500,,LS,Running,0", "field 'gpu_milli': want an integer in 0..1000"},
      {"p,1,1,0,500,,LS,Running,0", "must be > 0 exactly when num_gpu > 0"},
      {"p,1,1,x,500,,LS,Running,0", "field 'num_gpu'"},
      {"p,1,1", "field 'num_gpu'"},
  };
  for (const auto& c : cases) {
    auto r = ParsePods(std::string(kPodsHeader) + c.row + "\n");
    ASSERT_FALSE(r.ok()) << c.row;
    EXPECT_NE(r.error.find(c.want), std::string::npos) << c.row << " -> " << r.error;
  }
  auto missing = ParsePods("name,cpu_milli,memory_mib\np,1,1\n");
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.error.find("'num_gpu' column"), std::string::npos) << missing.error;
  auto no_cpu = ParsePods("name,num_gpu\np,1\n");
  ASSERT_FALSE(no_cpu.ok());
  EXPECT_NE(no_cpu.error.find("'cpu_milli'"), std::string::npos) << no_cpu.error;
  EXPECT_FALSE(ParsePods("").ok());
  auto bad_node = ParseNodes("sn,cpu_milli,memory_mib,gpu,model\nn,1,1,2,\n");
  ASSERT_FALSE(bad_node.ok());
  EXPECT_NE(bad_node.error.find("field 'model'"), std::string::npos);
}

// The dataset's other formats: multigpu* lists have no gpu_spec column, nomem* lists no memory_mib;
// columns may come in any order and unknown ones are ignored.
TEST(TraceParse, OptionalColumnsAbsentAndExtraIgnored) {
  auto multi = ParsePods(
      "name,cpu_milli,memory_mib,num_gpu,gpu_milli,qos,pod_phase,creation_time,deletion_time,scheduled_time\n"
      "m0,24000,32768,2,1000,LS,Running,0,12537496,0\n"
      "m1,6000,12288,1,460,LS,Running,427061,12902960,427061\n");
  ASSERT_TRUE(multi.ok()) << multi.error;
  ASSERT_EQ(multi.value.size(), 2u);
  EXPECT_EQ(multi.value[0].num_gpu, 2);
  EXPECT_TRUE(multi.value[0].gpu_spec.empty());
  EXPECT_EQ(multi.value[1].gpu_milli, 460);

  auto nomem = ParsePods("name,cpu_milli,num_gpu,gpu_milli,gpu_spec,qos\nn0,12000,1,1000,,LS\nn1,3000,0,0,,BE\n");
  ASSERT_TRUE(nomem.ok()) << nomem.error;
  EXPECT_EQ(nomem.value[0].memory_mib, 0);
  EXPECT_EQ(nomem.value[0].cpu_milli, 12000);

  // Minimal: GPUs and CPU in cores, columns reordered, unknown ones ignored, no gpu_milli (whole cards).
  auto minimal = ParsePods("extra,num_gpu,cpu\nx,4,8\ny,0,2\n");
  ASSERT_TRUE(minimal.ok()) << minimal.error;
  EXPECT_EQ(minimal.value[0].cpu_milli, 8000);
  EXPECT_EQ(minimal.value[0].gpu_milli, 1000);
  EXPECT_EQ(minimal.value[0].name, "pod-1");
  EXPECT_EQ(minimal.value[1].gpu_milli, 0);

  // A fractional share on several cards is a request the engine can serve, not a malformed row.
  auto frac = ParsePods(std::string(kPodsHeader) + "f,1000,1024,2,500,,LS,Running,0\n");
  ASSERT_TRUE(frac.ok()) << frac.error;
  EXPECT_EQ(frac.value[0].gpu_milli_total(), 1000);

  auto nodes = ParseNodes("model,gpu,cpu_milli,rack\nT4,2,32000,r1\n,0,8000,r2\n");
  ASSERT_TRUE(nodes.ok()) << nodes.error;
  EXPECT_EQ(nodes.value[0].name, "node-1");
  EXPECT_EQ(nodes.value[0].memory_mib, kUnlimitedMemory) << "no memory column: memory not enforced";
  EXPECT_EQ(nodes.value[0].model, "T4");
  auto no_gpu_col = ParseNodes("sn,cpu_milli\nn,1\n");
  ASSERT_FALSE(no_gpu_col.ok());
  EXPECT_NE(no_gpu_col.error.find("'gpu' column"), std::string::npos) << no_gpu_col.error;
}

std::vector<TracePod> Pods(std::initializer_list<std::pair<int, int>> gpus_milli) {
  std::vector<TracePod> out;
  int i = 0;
  for (auto [num, milli] : gpus_milli) {
    TracePod p;
    p.name = "p" + std::to_string(i);
    p.cpu_milli = 1000;
    p.memory_mib = 1024;
    p.num_gpu = num;
    p.gpu_milli = milli;
    p.shape = i++;
    out.push_back(p);
  }
  return out;
}

TEST(ArrivalOrder, ShuffleIsASeededPermutationThenInflationToTheRatio) {
  auto pods = Pods({{1, 1000}, {1, 500}, {1, 250}, {0, 0}, {2, 1000}});
  const int64_t capacity = 10000;  // 10 cards
  auto a = ArrivalOrder(pods, capacity, 1.3, 42);
  auto b = ArrivalOrder(pods, capacity, 1.3, 42);
  auto c = ArrivalOrder(pods, capacity, 1.3, 43);
  EXPECT_EQ(a, b) << "same seed, same order";
  EXPECT_NE(a, c) << "another seed, another order";
  // The first pods.size() entries are a permutation of the list.
  std::vector<uint32_t> head(a.begin(), a.begin() + pods.size());
  std::sort(head.begin(), head.end());
  EXPECT_EQ(head, (std::vector<uint32_t>{0, 1, 2, 3, 4}));
  // Inflation: total GPU requests within 130 % of capacity, and no more than one pod short of it.
  int64_t total = 0;
  for (uint32_t i : a) total += pods[i].gpu_milli_total();
  EXPECT_LE(total, 13000);
  EXPECT_GT(total, 13000 - 2000);
  EXPECT_GT(a.size(), pods.size());
  // No inflation when the list alone reaches the ratio.
  EXPECT_EQ(ArrivalOrder(pods, 1000, 1.3, 42).size(), pods.size());
}

TEST(Replay, KnownAnswersOnATinyCluster) {
  // One node with two cards; pods: half, half, whole. Capacity 2000 milli = exactly the requests,
  // so with inflation 1.0 nothing is appended and the run ends at 100 % arrived.
  std::vector<TraceNode> nodes = {{"n", 64000, 262144, 2, "T4"}};
  auto pods = Pods({{1, 500}, {1, 500}, {1, 1000}});
  ReplayOptions opts;
  opts.inflation = 1.0;
  for (Policy p : {Policy::kBinpack, Policy::kSpread, Policy::kBestFit, Policy::kFgd, Policy::kTessera}) {
    for (uint64_t seed = 42; seed < 52; ++seed) {
      auto order = ArrivalOrder(pods, 2000, 1.0, seed);
      ASSERT_EQ(order.size(), 3u);
      ReplayResult r = Replay(nodes, pods, p, seed, opts);
      ASSERT_EQ(r.curve.size(), 3u);
      // Arrived after each pod is the running sum of requests over capacity.
      double arrived = 0;
      for (size_t i = 0; i < 3; ++i) {
        arrived += pods[order[i]].gpu_milli_total() / 20.0;
        EXPECT_DOUBLE_EQ(r.curve[i].arrived_pct, arrived);
      }
      // Spread puts the two halves on different cards, so a whole card that arrives last fails:
      // 50 % of the cluster stays unallocated. Every other policy (or any other order) fits all.
      const bool whole_last = order[2] == 2;
      const double want = (p == Policy::kSpread && whole_last) ? 50.0 : 0.0;
      EXPECT_DOUBLE_EQ(r.curve.back().unallocated_pct, want) << PolicyName(p) << " seed " << seed;
      EXPECT_DOUBLE_EQ(r.unallocated_at_100, want);
      EXPECT_EQ(r.failed, want > 0 ? 1u : 0u);
      EXPECT_EQ(r.placed + r.failed, 3u);
    }
  }
}

TEST(Replay, FailedPodsCountAsArrivedButNotAllocated) {
  // One card; two pods of 60 %: the second cannot fit.
  std::vector<TraceNode> nodes = {{"n", 64000, 262144, 1, "T4"}};
  auto pods = Pods({{1, 600}, {1, 600}});
  ReplayOptions opts;
  opts.inflation = 1.0;
  ReplayResult r = Replay(nodes, pods, Policy::kBestFit, 42, opts);
  ASSERT_EQ(r.curve.size(), 2u);
  EXPECT_DOUBLE_EQ(r.curve[0].arrived_pct, 60);
  EXPECT_DOUBLE_EQ(r.curve[0].unallocated_pct, 40);
  EXPECT_DOUBLE_EQ(r.curve[1].arrived_pct, 120);
  EXPECT_DOUBLE_EQ(r.curve[1].unallocated_pct, 40);
  EXPECT_EQ(r.failed, 1u);
  EXPECT_EQ(r.failed_gpu_pods, 1u);
  EXPECT_TRUE(std::isnan(r.unallocated_at_100)) << "no point within 1 % of 100 % arrived";
}

TEST(Replay, CpuAndMemoryCount) {
  // The GPU requests match capacity (no inflation), but the second pod's CPU does not fit.
  std::vector<TraceNode> nodes = {{"n", 3000, 262144, 2, "T4"}};
  auto pods = Pods({{1, 1000}, {1, 1000}});
  for (auto& p : pods) p.cpu_milli = 2000;
  ReplayOptions opts;
  opts.inflation = 1.0;
  ReplayResult r = Replay(nodes, pods, Policy::kBinpack, 42, opts);
  EXPECT_EQ(r.failed, 1u);
  for (auto& p : pods) {
    p.cpu_milli = 1000;
    p.memory_mib = 200000;
  }
  r = Replay(nodes, pods, Policy::kBinpack, 42, opts);
  EXPECT_EQ(r.failed, 1u);
}

TEST(Replay, GpuSpecRestrictsModels) {
  std::vector<TraceNode> nodes = {{"t4", 64000, 262144, 1, "T4"}, {"p100", 64000, 262144, 1, "P100"}};
  auto pods = Pods({{1, 1000}, {1, 1000}});
  pods[0].gpu_spec = {"P100"};
  pods[1].gpu_spec = {"P100"};
  ReplayOptions opts;
  opts.inflation = 1.0;
  ReplayResult r = Replay(nodes, pods, Policy::kSpread, 42, opts);
  EXPECT_EQ(r.placed, 1u);
  EXPECT_EQ(r.failed, 1u);
}

TEST(Metrics, UnallocatedAtAveragesTheRoundedBin) {
  std::vector<CurvePoint> c = {{98.0, 10}, {99.4, 8}, {99.6, 6}, {100.2, 4}, {100.6, 2}};
  EXPECT_DOUBLE_EQ(UnallocatedAt(c, 100), 5.0);  // 99.6 and 100.2 round to 100
  EXPECT_DOUBLE_EQ(UnallocatedAt(c, 98), 10.0);
  std::vector<CurvePoint> gap = {{99.2, 7}, {101.4, 3}};
  EXPECT_DOUBLE_EQ(UnallocatedAt(gap, 100), 7.0);  // none rounds to 100: within +-1 point
  EXPECT_TRUE(std::isnan(UnallocatedAt({{50, 1}}, 100)));
}

}  // namespace
}  // namespace tessera::placement::trace
