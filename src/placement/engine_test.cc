// Table tests for the placement engine: every filter reason, every scorer's preference, GPU choice
// inside a node, and Commit's bookkeeping.
#include "placement/engine.h"
#include "placement/snapshot_impl.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace tessera::placement {
namespace {

Gpu MakeGpu(const std::string& uuid, const std::string& model = "A100", int numa = 0, int64_t mem = 40960) {
  Gpu g;
  g.uuid = uuid;
  g.model = model;
  g.memory_mib = mem;
  g.numa = numa;
  return g;
}

Node MakeNode(const std::string& name, int gpus, const std::string& model = "A100", int64_t cpu = 64000,
              int64_t mem = 262144) {
  Node n;
  n.name = name;
  n.cpu_milli = cpu;
  n.memory_mib = mem;
  for (int i = 0; i < gpus; ++i) n.gpus.push_back(MakeGpu(name + "-gpu" + std::to_string(i), model, i * 2 / std::max(gpus, 1)));
  return n;
}

// A typical request for a share of one GPU (cores %) with arrival weight w.
TypicalRequest OneGpuKind(int cores, double w) {
  TypicalRequest t;
  t.gpus = 1;
  t.cores = cores;
  t.weight = w;
  return t;
}

PodRequest Req(int gpus, int cores, int64_t mem_mib = 0, Policy p = Policy::kBinpack) {
  PodRequest r;
  r.cpu_milli = 1000;
  r.memory_mib = 1024;
  r.node_policy = p;
  ContainerRequest c;
  c.gpus = gpus;
  c.cores = cores;
  c.memory_mib = mem_mib;
  r.containers.push_back(c);
  return r;
}

struct FilterCase {
  const char* name;
  Node node;
  PodRequest req;
  const char* want;  // nullptr: feasible
};

TEST(EngineFilter, Table) {
  std::vector<FilterCase> cases;
  cases.push_back({"fits", MakeNode("n", 2), Req(1, 50, 1000), nullptr});
  {
    PodRequest r = Req(1, 50);
    r.cpu_milli = 100000;
    cases.push_back({"cpu", MakeNode("n", 2), r, "insufficient CPU"});
  }
  {
    PodRequest r = Req(1, 50);
    r.memory_mib = 1 << 30;
    cases.push_back({"host memory", MakeNode("n", 2), r, "insufficient memory"});
  }
  cases.push_back({"no gpu on node", MakeNode("n", 0), Req(1, 10), "node has no GPU"});
  cases.push_back({"gpu memory", MakeNode("n", 2), Req(1, 10, 50000), "insufficient GPU memory"});
  {
    Node n = MakeNode("n", 1);
    n.gpus[0].used.cores = 80;
    n.gpus[0].used.sharers = 1;
    cases.push_back({"gpu cores", n, Req(1, 30), "insufficient GPU cores"});
  }
  {
    Node n = MakeNode("n", 2);
    n.gpus[0].healthy = false;
    n.gpus[1].healthy = false;
    cases.push_back({"all unhealthy", n, Req(1, 10), "no healthy GPU"});
  }
  {
    Node n = MakeNode("n", 2);
    n.gpus[0].healthy = false;
    cases.push_back({"one unhealthy, one left", n, Req(1, 10), nullptr});
    cases.push_back({"one unhealthy, two wanted", n, Req(2, 100), "not enough GPUs"});
  }
  {
    PodRequest r = Req(1, 10);
    r.containers[0].type_include = {"T4"};
    cases.push_back({"type include miss", MakeNode("n", 2, "A100"), r, "no GPU of the requested type"});
    cases.push_back({"type include hit (substring, any case)", MakeNode("n", 2, "Tesla-t4"), r, nullptr});
  }
  {
    PodRequest r = Req(1, 10);
    r.containers[0].type_exclude = {"a100"};
    cases.push_back({"type exclude", MakeNode("n", 2, "NVIDIA-A100-SXM4"), r, "no GPU of the requested type"});
  }
  {
    PodRequest r = Req(1, 10);
    r.containers[0].uuid_include = {"x-gpu1"};
    cases.push_back({"uuid include hit", MakeNode("x", 2), r, nullptr});
    r.containers[0].uuid_include = {"other"};
    cases.push_back({"uuid include miss", MakeNode("x", 2), r, "no GPU matching the requested uuids"});
  }
  {
    PodRequest r = Req(1, 10);
    r.containers[0].uuid_exclude = {"x-gpu0"};
    cases.push_back({"uuid exclude leaves one", MakeNode("x", 1), r, "no GPU matching the requested uuids"});
  }
  {
    Node n = MakeNode("n", 1);
    n.gpus[0].used.cores = 10;
    n.gpus[0].used.sharers = 1;
    PodRequest r = Req(1, 10);
    r.containers[0].exclusive = true;
    cases.push_back({"exclusive wants an idle card", n, r, "GPUs are shared or held exclusively"});
  }
  {
    Node n = MakeNode("n", 1);
    n.gpus[0].used.cores = 10;
    n.gpus[0].used.exclusive = true;
    n.gpus[0].used.sharers = 1;
    cases.push_back({"card held exclusively", n, Req(1, 10), "GPUs are shared or held exclusively"});
  }
  {
    Node n = MakeNode("n", 2);
    n.gpus[0].used.cores = 10;
    n.gpus[0].used.sharers = 1;
    cases.push_back({"whole cards: one busy", n, Req(2, 100), "not enough GPUs"});
  }
  {
    Node n = MakeNode("n", 4);  // NUMA 0: gpu0, gpu1; NUMA 1: gpu2, gpu3
    n.gpus[0].used.cores = 100;
    n.gpus[2].used.cores = 100;
    PodRequest r = Req(2, 100);
    cases.push_back({"two whole cards across NUMA", n, r, nullptr});
    r.containers[0].numa_bind = true;
    cases.push_back({"two whole cards on one NUMA", n, r, "not enough GPUs on one NUMA node"});
  }
  {
    PodRequest r = Req(1, 10);
    r.containers[0].memory_percent = 60;
    Node n = MakeNode("n", 1);
    n.gpus[0].used.memory_mib = 20000;
    n.gpus[0].used.sharers = 1;
    cases.push_back({"memory percent", n, r, "insufficient GPU memory"});
  }
  Engine engine;
  for (const auto& c : cases) {
    Snapshot snap({c.node});
    NodeVerdict v = engine.ScoreNode(snap, c.req, 0);
    if (c.want == nullptr) {
      EXPECT_EQ(v.reason, nullptr) << c.name << ": " << (v.reason ? v.reason : "");
    } else {
      ASSERT_NE(v.reason, nullptr) << c.name;
      EXPECT_STREQ(v.reason, c.want) << c.name;
    }
    // Assign must agree with the filter.
    Assignment a;
    const char* why = nullptr;
    EXPECT_EQ(engine.Assign(snap, c.req, 0, &a, &why), c.want == nullptr) << c.name;
  }
}

TEST(EngineAssign, NumaBindKeepsCardsTogether) {
  Node n = MakeNode("n", 4);
  n.gpus[0].used.cores = 100;  // NUMA 0 has one free card, NUMA 1 two
  PodRequest r = Req(2, 100);
  r.containers[0].numa_bind = true;
  Snapshot snap({n});
  Assignment a;
  const char* why = nullptr;
  ASSERT_TRUE(Engine().Assign(snap, r, 0, &a, &why)) << why;
  ASSERT_EQ(a.containers[0].size(), 2u);
  EXPECT_EQ(a.containers[0][0].gpu / 2, 1);
  EXPECT_EQ(a.containers[0][1].gpu / 2, 1);
}

TEST(EngineAssign, WholeCardsAreDistinctAndExclusiveTakesAll) {
  Snapshot snap({MakeNode("n", 4)});
  PodRequest r = Req(3, 100, 0);
  r.containers[0].memory_percent = 100;
  Assignment a;
  const char* why = nullptr;
  ASSERT_TRUE(Engine().Assign(snap, r, 0, &a, &why));
  ASSERT_EQ(a.containers[0].size(), 3u);
  EXPECT_NE(a.containers[0][0].gpu, a.containers[0][1].gpu);
  EXPECT_NE(a.containers[0][1].gpu, a.containers[0][2].gpu);
  EXPECT_EQ(a.containers[0][0].memory_mib, 40960);

  PodRequest ex = Req(1, 20);
  ex.containers[0].exclusive = true;
  ASSERT_TRUE(Engine().Assign(snap, ex, 0, &a, &why));
  EXPECT_EQ(a.containers[0][0].cores, 100);
  EXPECT_TRUE(a.containers[0][0].exclusive);
}

TEST(EngineAssign, GpuLevelBinpackAndSpread) {
  Node n = MakeNode("n", 3);
  n.gpus[0].used.cores = 50;
  n.gpus[0].used.sharers = 1;
  n.gpus[2].used.cores = 20;
  n.gpus[2].used.sharers = 1;
  Snapshot snap({n});
  Assignment a;
  const char* why = nullptr;
  PodRequest r = Req(1, 30);
  ASSERT_TRUE(Engine().Assign(snap, r, 0, &a, &why));
  EXPECT_EQ(a.containers[0][0].gpu, 0) << "binpack takes the fullest card that fits";
  r.containers[0].gpu_policy = Policy::kSpread;
  ASSERT_TRUE(Engine().Assign(snap, r, 0, &a, &why));
  EXPECT_EQ(a.containers[0][0].gpu, 1) << "spread takes the emptiest card";
}

TEST(EngineAssign, MultiContainerSharesTheNodeState) {
  Snapshot snap({MakeNode("n", 1)});
  PodRequest r = Req(1, 60);
  r.containers.push_back(r.containers[0]);  // two containers of 60 cores on one card: no
  Assignment a;
  const char* why = nullptr;
  EXPECT_FALSE(Engine().Assign(snap, r, 0, &a, &why));
  EXPECT_STREQ(why, "insufficient GPU cores");
  r.containers[1].cores = 40;
  EXPECT_TRUE(Engine().Assign(snap, r, 0, &a, &why));
}

// Node-level scorers: which of two nodes each policy prefers.
struct ScoreCase {
  const char* name;
  Policy policy;
  int want;  // index of the preferred node
};

TEST(EngineScore, PolicyPreferences) {
  // node 0: half its cards busy; node 1: idle.
  Node busy = MakeNode("busy", 2);
  busy.gpus[0].used.cores = 100;
  busy.gpus[0].used.memory_mib = 40960;
  busy.gpus[0].used.sharers = 1;
  busy.cpu_used_milli = 32000;
  Node idle = MakeNode("idle", 2);
  const ScoreCase cases[] = {
      {"binpack fills the busy node", Policy::kBinpack, 0},
      {"spread takes the idle node", Policy::kSpread, 1},
      {"bestfit leaves least free", Policy::kBestFit, 0},
  };
  Engine engine;
  for (const auto& c : cases) {
    Snapshot snap({busy, idle});
    Evaluation ev;
    engine.Evaluate(snap, Req(1, 100, 0, c.policy), {}, &ev);
    ASSERT_EQ(ev.feasible, 2u) << c.name;
    const int best = ev.verdicts[0].raw > ev.verdicts[1].raw ? 0 : 1;
    EXPECT_EQ(best, c.want) << c.name;
    EXPECT_EQ(ev.verdicts[c.want].score, 100) << c.name;
    EXPECT_EQ(ev.verdicts[1 - c.want].score, 0) << c.name;
  }
}

TEST(EngineScore, RandomScoresAllFeasibleEqually) {
  Snapshot snap({MakeNode("a", 1), MakeNode("b", 2)});
  Evaluation ev;
  Engine().Evaluate(snap, Req(1, 10, 0, Policy::kRandom), {}, &ev);
  ASSERT_EQ(ev.feasible, 2u);
  EXPECT_EQ(ev.verdicts[0].score, 100);
  EXPECT_EQ(ev.verdicts[1].score, 100);
}

// A workload of half-card and whole-card requests: a half-card pod belongs on the card that is
// already half used (it completes it), not on an idle node (where it would break a whole card).
std::shared_ptr<const Workload> HalfAndWhole() {
  TypicalRequest half;
  half.gpus = 1;
  half.cores = 50;
  half.cpu_milli = 1000;
  half.weight = 1;
  TypicalRequest whole = half;
  whole.cores = 100;
  return Workload::Make({half, whole});
}

TEST(EngineScore, FragmentationPoliciesCompleteHalfUsedCards) {
  Node half = MakeNode("half", 2);
  half.gpus[1].used.cores = 50;
  half.gpus[1].used.memory_mib = 20480;
  half.gpus[1].used.sharers = 1;
  Node idle = MakeNode("idle", 2);
  for (Policy p : {Policy::kFgd, Policy::kTessera}) {
    Snapshot snap({idle, half}, HalfAndWhole());
    EXPECT_GT(snap.fragmentation(1), snap.fragmentation(0));
    Evaluation ev;
    PodRequest r = Req(1, 50, 0, p);
    r.containers[0].memory_percent = 50;
    Engine().Evaluate(snap, r, {}, &ev);
    ASSERT_EQ(ev.feasible, 2u);
    EXPECT_GT(ev.verdicts[1].raw, ev.verdicts[0].raw) << PolicyName(p);
    Assignment a;
    const char* why = nullptr;
    ASSERT_TRUE(Engine().Assign(snap, r, 1, &a, &why));
    EXPECT_EQ(a.containers[0][0].gpu, 1) << PolicyName(p) << " picks the half-used card inside the node";
  }
}

TEST(EngineScore, TesseraAvoidsStrandingGpusBehindCpu) {
  // A CPU-only pod: on the GPU-dense node it would leave cards without CPU to drive them.
  TypicalRequest t;
  t.gpus = 1;
  t.cores = 100;
  t.cpu_milli = 8000;
  t.weight = 1;
  auto wl = Workload::Make({t});
  Node dense = MakeNode("dense", 8, "A100", 64000);
  Node roomy = MakeNode("roomy", 2, "A100", 64000);
  Snapshot snap({dense, roomy}, wl);
  PodRequest cpu_only;
  cpu_only.cpu_milli = 32000;
  cpu_only.node_policy = Policy::kTessera;
  Evaluation ev;
  Engine().Evaluate(snap, cpu_only, {}, &ev);
  ASSERT_EQ(ev.feasible, 2u);
  EXPECT_GT(ev.verdicts[1].raw, ev.verdicts[0].raw);
}

// FGD's measure on a hand-built node, term by term (docs/placement.md): 4 cards with 100, 60, 30 and
// 0 % free (190 % in all), 10 cores free, four kinds of equal share.
TEST(Snapshot, FgdFragmentationFollowsTheDefinition) {
  Node n = MakeNode("n", 4, "A100", 64000);
  n.cpu_used_milli = 54000;
  const int used[] = {0, 40, 70, 100};
  for (int j = 0; j < 4; ++j) {
    n.gpus[size_t(j)].used.cores = used[j];
    n.gpus[size_t(j)].used.memory_mib = n.gpus[size_t(j)].memory_mib * used[j] / 100;
    n.gpus[size_t(j)].used.sharers = used[j] > 0;
  }
  auto kind = [](int gpus, int cores, int64_t cpu) {
    TypicalRequest t;
    t.gpus = gpus;
    t.cores = cores;
    t.cpu_milli = cpu;
    t.weight = 1;
    return t;
  };
  auto wl = Workload::Make({
      kind(1, 50, 4000),   // fits the 100 and 60 cards: only the 30 % card is fragment for it
      kind(2, 100, 4000),  // one whole card is free, two are needed: all 190 % are fragment
      kind(0, 0, 1000),    // asks for no GPU: all 190 %
      kind(1, 20, 20000),  // 20 cores > 10 free: all 190 %
  });
  Snapshot snap({n}, wl);
  EXPECT_DOUBLE_EQ(snap.fragmentation(0), 0.25 * (30 + 190 + 190 + 190));
}

// tessera's sliver table: what is left on a card that no kind can fill is wasted; what a common
// kind fills exactly is not; a remainder only a rare kind fits is still mostly waste.
TEST(Snapshot, ExpectedSliverFollowsTheFillModel) {
  Snapshot common({MakeNode("n", 1)}, Workload::Make({OneGpuKind(50, 1), OneGpuKind(100, 1)}));
  EXPECT_DOUBLE_EQ(common.expected_sliver(0), 0);
  EXPECT_DOUBLE_EQ(common.expected_sliver(30), 30) << "no fractional kind fits 30 %";
  EXPECT_DOUBLE_EQ(common.expected_sliver(50), 0) << "a 50 % pod fills it exactly";
  EXPECT_DOUBLE_EQ(common.expected_sliver(80), 30) << "a 50 % pod leaves 30 % nothing fills";
  EXPECT_DOUBLE_EQ(common.expected_sliver(100), 0) << "two 50 % pods";
  // A 10 % kind with 1 % of arrivals: a 19 % remainder gets one with probability 30 x 1 % = 0.3.
  Snapshot rare({MakeNode("n", 1)}, Workload::Make({OneGpuKind(10, 1), OneGpuKind(100, 99)}));
  EXPECT_NEAR(rare.expected_sliver(19), 0.7 * 19 + 0.3 * rare.expected_sliver(9), 1e-9);
  EXPECT_DOUBLE_EQ(rare.expected_sliver(9), 9);
  EXPECT_GT(rare.expected_sliver(19), 15);
}

// The trace's pattern: 81 % pods leave 19 % that only rare small pods fit. A 16 % pod goes beside an
// 81 % pod (19 -> 3 % left) rather than beside a 47 % pod, where it would turn 53 % that another 47 %
// pod fills into 37 % that almost nothing fills.
TEST(EngineScore, TesseraPutsSmallPodsIntoSliversOnlyTheyFit) {
  auto wl = Workload::Make({OneGpuKind(81, 10), OneGpuKind(47, 10), OneGpuKind(16, 0.2)});
  auto used = [](int pct) {
    Node n = MakeNode(pct == 81 ? "beside81" : "beside47", 1);
    n.gpus[0].used = {n.gpus[0].memory_mib * pct / 100, pct, false, 1};
    return n;
  };
  Snapshot snap({used(81), used(47)}, wl);
  EXPECT_GT(snap.expected_sliver(19), 14) << "19 % is mostly waste";
  EXPECT_LT(snap.expected_sliver(53), 7) << "53 % is mostly filled by a 47 % pod";
  PodRequest r = Req(1, 16, 0, Policy::kTessera);
  r.containers[0].memory_percent = 16;
  Evaluation ev;
  Engine().Evaluate(snap, r, {}, &ev);
  ASSERT_EQ(ev.feasible, 2u);
  EXPECT_GT(ev.verdicts[0].raw, ev.verdicts[1].raw);
}

// tessera measures a node's fragmentation only against the kinds that can use its cards: a restriction
// the node satisfies counts as if the kind had none (on a one-model node the engine merges such kinds),
// and a kind restricted to a model the node lacks does not count the node's free capacity as lost.
TEST(EngineScore, TesseraIgnoresKindsThatCannotUseTheNode) {
  std::vector<Node> nodes = {MakeNode("t4", 4, "T4")};
  nodes[0].gpus[0].used.cores = 60;
  nodes[0].gpus[0].used.memory_mib = 16384;
  nodes[0].gpus[0].used.sharers = 1;
  TypicalRequest small = OneGpuKind(30, 1);
  TypicalRequest whole = OneGpuKind(100, 1);
  TypicalRequest elsewhere = OneGpuKind(30, 1);
  elsewhere.models = {"V100"};
  TypicalRequest here = OneGpuKind(30, 1);
  here.models = {"T4"};
  const Engine e;
  PodRequest pod = Req(1, 30, 0, Policy::kTessera);
  auto raw = [&](std::vector<TypicalRequest> kinds) {
    Snapshot snap(nodes, Workload::Make(std::move(kinds)));
    NodeVerdict v = e.ScoreNode(snap, pod, 0);
    EXPECT_EQ(v.reason, nullptr);
    return v.raw;
  };
  const double base = raw({small, whole});
  TypicalRequest half = small;
  half.weight = 0.5;
  here.weight = 0.5;
  EXPECT_NEAR(raw({half, here, whole}), base, 1e-9) << "a T4-only kind on a T4 node is an unconstrained one";
  // The node's tessera fragmentation before placing: the 30 % kind fits every card, the whole-card kind
  // not the 40 %-free one. A V100-only kind would count all 340 % free if it counted: it must not.
  Snapshot with(nodes, Workload::Make({small, whole, elsewhere}));
  Snapshot without(nodes, Workload::Make({small, whole}));
  EXPECT_LT(with.impl().frag_mix[0], 40.0) << "only the 40 % card is lost, and only to the whole-card kind";
  EXPECT_GT(with.impl().frag_mix[0], 0.0);
  EXPECT_LT(without.impl().frag_mix[0], 40.0);
}

TEST(EngineEvaluate, CandidatesReasonsAndUnknownNode) {
  Snapshot snap({MakeNode("a", 0), MakeNode("b", 2)});
  Evaluation ev;
  const uint32_t cand[] = {1, 0, 7};
  Engine().Evaluate(snap, Req(1, 10), cand, &ev);
  ASSERT_EQ(ev.verdicts.size(), 3u);
  EXPECT_EQ(ev.feasible, 1u);
  EXPECT_EQ(ev.verdicts[0].node, 1u);
  EXPECT_EQ(ev.verdicts[0].reason, nullptr);
  EXPECT_STREQ(ev.verdicts[1].reason, "node has no GPU");
  EXPECT_STREQ(ev.verdicts[2].reason, "unknown node");
}

TEST(Snapshot, CommitUpdatesUsageVersionAndLookups) {
  Snapshot snap({MakeNode("a", 2), MakeNode("b", 1)});
  EXPECT_EQ(snap.Find("b"), 1u);
  EXPECT_FALSE(snap.Find("zzz").has_value());
  EXPECT_EQ(snap.total_gpu_cores(), 300);
  EXPECT_EQ(snap.used_gpu_cores(), 0);
  Engine engine;
  PodRequest r = Req(1, 30, 1000);
  Assignment a;
  const char* why = nullptr;
  ASSERT_TRUE(engine.Assign(snap, r, 0, &a, &why));
  const uint64_t v = snap.version(0);
  snap.Commit(0, r, a);
  EXPECT_EQ(snap.version(0), v + 1);
  EXPECT_EQ(snap.version(1), 0u);
  EXPECT_EQ(snap.used_gpu_cores(), 30);
  EXPECT_EQ(snap.node(0).cpu_used_milli, 1000);
  EXPECT_EQ(snap.node(0).memory_used_mib, 1024);
  const Gpu& g = snap.node(0).gpus[a.containers[0][0].gpu];
  EXPECT_EQ(g.used.cores, 30);
  EXPECT_EQ(g.used.memory_mib, 1000);
  EXPECT_EQ(g.used.sharers, 1);
  // The committed state is what the next call sees: binpack now prefers the used card.
  ASSERT_TRUE(engine.Assign(snap, r, 0, &a, &why));
  EXPECT_EQ(a.containers[0][0].gpu, &g - &snap.node(0).gpus[0]);
  // Copies are independent.
  Snapshot copy = snap;
  copy.Commit(0, r, a);
  EXPECT_EQ(copy.used_gpu_cores(), 60);
  EXPECT_EQ(snap.used_gpu_cores(), 30);
}

TEST(Snapshot, TooManyGpusIsAReasonNotACrash) {
  Snapshot snap({MakeNode("huge", kMaxGpusPerNode + 1)});
  NodeVerdict v = Engine().ScoreNode(snap, Req(1, 10), 0);
  ASSERT_NE(v.reason, nullptr);
  EXPECT_STREQ(v.reason, "node has more GPUs than the engine supports");
}

TEST(Workload, CoverageKeepsTheMostFrequentAndRenormalises) {
  std::vector<TypicalRequest> r(3);
  r[0].weight = 6;
  r[0].cores = 10;
  r[1].weight = 3;
  r[1].cores = 20;
  r[2].weight = 1;
  r[2].cores = 30;
  auto all = Workload::Make(r, 1.0);
  ASSERT_EQ(all->requests().size(), 3u);
  EXPECT_DOUBLE_EQ(all->requests()[0].weight, 0.6);
  auto top = Workload::Make(r, 0.85);
  ASSERT_EQ(top->requests().size(), 2u);
  EXPECT_DOUBLE_EQ(top->requests()[0].weight, 6.0 / 9.0);
  EXPECT_EQ(top->requests()[1].cores, 20);
  r[2].weight = 0;
  EXPECT_EQ(Workload::Make(r)->requests().size(), 2u);
}

TEST(Policy, NamesRoundTrip) {
  for (Policy p : AllPolicies()) EXPECT_EQ(ParsePolicy(PolicyName(p)), p);
  EXPECT_EQ(ParsePolicy("BestFit"), Policy::kBestFit);
  EXPECT_FALSE(ParsePolicy("nope").has_value());
}

}  // namespace
}  // namespace tessera::placement
