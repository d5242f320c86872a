// The topology, NUMA and compute-mode steps of the engine: which GPUs a multi-GPU container gets on a
// node whose links are published, which node wins under the node modifiers, and the spatial filter.
#include "placement/topology.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <string>
#include <vector>

#include "placement/spatial.h"

namespace tessera::placement {
namespace {

// 8 GPUs: two NVLink islands {0,1,2,3} (NUMA 0) and {4,5,6,7} (NUMA 1) of NV4 inside, SYS across;
// inside island 0 the pair {2,3} is NV12.
Node Islands(const std::string& name) {
  Node n;
  n.name = name;
  n.cpu_milli = 64000;
  n.memory_mib = 262144;
  for (int i = 0; i < 8; ++i) {
    Gpu g;
    g.uuid = name + "-gpu" + std::to_string(i);
    g.model = "H100";
    g.memory_mib = 81920;
    g.numa = i / 4;
    n.gpus.push_back(g);
  }
  n.links.assign(64, 0);
  for (int a = 0; a < 8; ++a)
    for (int b = 0; b < 8; ++b)
      if (a != b) n.links[a * 8 + b] = a / 4 == b / 4 ? LinkRank("NV4") : LinkRank("SYS");
  n.links[2 * 8 + 3] = n.links[3 * 8 + 2] = LinkRank("NV12");
  return n;
}

PodRequest Multi(int gpus, Policy gp, bool topology) {
  PodRequest r;
  ContainerRequest c;
  c.gpus = gpus;
  c.cores = 10;
  c.memory_mib = 1024;
  c.gpu_policy = gp;
  c.topology_aware = topology;
  r.containers.push_back(c);
  return r;
}

std::vector<int> Chosen(const Snapshot& snap, const PodRequest& req, uint32_t node = 0) {
  Engine e;
  Assignment a;
  const char* why = nullptr;
  EXPECT_TRUE(e.Assign(snap, req, node, &a, &why)) << (why ? why : "");
  std::vector<int> out;
  for (const auto& g : a.containers.at(0)) out.push_back(g.gpu);
  std::sort(out.begin(), out.end());
  return out;
}

TEST(Topology, LinkRanksOrderTheLinks) {
  EXPECT_LT(LinkRank("SYS"), LinkRank("NODE"));
  EXPECT_LT(LinkRank("NODE"), LinkRank("PHB"));
  EXPECT_LT(LinkRank("PHB"), LinkRank("PXB"));
  EXPECT_LT(LinkRank("PXB"), LinkRank("PIX"));
  EXPECT_LT(LinkRank("PIX"), LinkRank("NV1"));
  EXPECT_LT(LinkRank("NV4"), LinkRank("NV18"));
  EXPECT_EQ(LinkRank("bogus"), 0);
  EXPECT_EQ(LinkRank("NV0"), 0);
}

TEST(Topology, TwoGpusTakeTheFastestPair) {
  // Spread alone would take the emptiest GPUs in index order (0 and 1); topology takes the NV12 pair.
  Snapshot snap({Islands("n")});
  EXPECT_EQ(Chosen(snap, Multi(2, Policy::kSpread, false)), (std::vector<int>{0, 1}));
  EXPECT_EQ(Chosen(snap, Multi(2, Policy::kSpread, true)), (std::vector<int>{2, 3}));
}

TEST(Topology, FourGpusStayInsideOneIsland) {
  Node n = Islands("n");
  // GPU 1 and 6 already carry a slice: binpack alone would take them first and cross the islands.
  n.gpus[1].used = {1024, 10, false, 1};
  n.gpus[6].used = {1024, 10, false, 1};
  Snapshot snap({n});
  auto plain = Chosen(snap, Multi(4, Policy::kBinpack, false));
  EXPECT_TRUE(std::count_if(plain.begin(), plain.end(), [](int g) { return g < 4; }) % 4 != 0);
  auto topo = Chosen(snap, Multi(4, Policy::kBinpack, true));
  EXPECT_TRUE(topo == (std::vector<int>{0, 1, 2, 3}) || topo == (std::vector<int>{4, 5, 6, 7}));
}

TEST(Topology, UnhealthyOrFullGpusAreNeverChosenForTopology) {
  Node n = Islands("n");
  n.gpus[2].healthy = false;
  n.gpus[3].used = {81920, 100, true, 1};
  Snapshot snap({n});
  auto topo = Chosen(snap, Multi(2, Policy::kSpread, true));
  EXPECT_EQ(std::count(topo.begin(), topo.end(), 2) + std::count(topo.begin(), topo.end(), 3), 0);
  EXPECT_EQ(topo[0] / 4, topo[1] / 4);  // still one island
}

TEST(Topology, WithoutPublishedLinksThePolicyDecides) {
  Node n = Islands("n");
  n.links.clear();
  Snapshot snap({n});
  EXPECT_EQ(Chosen(snap, Multi(2, Policy::kSpread, true)), (std::vector<int>{0, 1}));
}

TEST(Topology, GreedyAboveTheSubsetLimitStillFindsAnIsland) {
  // 32 GPUs in 4 islands of 8; 16 of 32 is far above 4096 subsets.
  Node n;
  n.name = "big";
  n.cpu_milli = 64000;
  n.memory_mib = 262144;
  for (int i = 0; i < 32; ++i) {
    Gpu g;
    g.uuid = "g" + std::to_string(i);
    g.memory_mib = 4096;
    n.gpus.push_back(g);
  }
  n.links.assign(32 * 32, 0);
  for (int a = 0; a < 32; ++a)
    for (int b = 0; b < 32; ++b)
      if (a != b) n.links[a * 32 + b] = a / 8 == b / 8 ? LinkRank("NV8") : (a / 16 == b / 16 ? LinkRank("PHB") : LinkRank("SYS"));
  Snapshot snap({n});
  auto topo = Chosen(snap, Multi(8, Policy::kSpread, true));
  for (int g : topo) EXPECT_EQ(g / 8, topo[0] / 8);
  auto half = Chosen(snap, Multi(16, Policy::kSpread, true));
  for (int g : half) EXPECT_EQ(g / 16, half[0] / 16);  // never SYS
}

TEST(Numa, PreferenceKeepsOneNodeAndFallsBack) {
  Node n = Islands("n");
  n.links.clear();
  n.gpus[0].used = {1024, 10, false, 1};  // binpack would start on GPU 0 and then take GPU 4..
  n.gpus[4].used = {1024, 10, false, 1};
  Snapshot snap({n});
  auto plain = Chosen(snap, Multi(2, Policy::kBinpack, false));
  EXPECT_EQ(plain, (std::vector<int>{0, 4}));
  PodRequest pref = Multi(2, Policy::kBinpack, false);
  pref.containers[0].numa_prefer = true;
  auto p = Chosen(snap, pref);
  EXPECT_EQ(n.gpus[p[0]].numa, n.gpus[p[1]].numa);
  // Five GPUs fit on no NUMA node: the preference yields, numa_bind refuses.
  pref.containers[0].gpus = 5;
  EXPECT_EQ(Chosen(snap, pref).size(), 5u);
  pref.containers[0].numa_bind = true;
  Engine e;
  Assignment a;
  const char* why = nullptr;
  EXPECT_FALSE(e.Assign(snap, pref, 0, &a, &why));
  EXPECT_STREQ(why, "not enough GPUs on one NUMA node");
}

TEST(Topology, NodeModifierPrefersTheNodeWithTheBetterSet) {
  // "pcie": same GPUs, PHB everywhere; "nvl": the islands. Binpack by usage alone prefers the fuller
  // pcie node; topology-aware at node level prefers nvl.
  Node pcie = Islands("pcie");
  for (auto& r : pcie.links) r = r ? LinkRank("PHB") : 0;
  pcie.gpus[7].used = {40960, 50, false, 1};
  Node nvl = Islands("nvl");
  Snapshot snap({pcie, nvl});
  Engine e;
  Evaluation ev;
  PodRequest r = Multi(2, Policy::kBinpack, true);
  e.Evaluate(snap, r, {}, &ev);
  EXPECT_GT(ev.verdicts[0].score, ev.verdicts[1].score);
  r.node_topology_aware = true;
  e.Evaluate(snap, r, {}, &ev);
  EXPECT_LT(ev.verdicts[0].score, ev.verdicts[1].score);
  EXPECT_EQ(ev.verdicts[1].score, 100);
  // numa at node level: a node whose free GPUs sit on two NUMA nodes loses to one with a full NUMA node.
  Node split = Islands("split");
  Node whole = Islands("whole");
  split.links.clear();
  whole.links.clear();
  for (int g : {1, 2, 3, 5, 6, 7}) split.gpus[g].used = {81920, 100, true, 1};
  for (int g : {4, 5, 6}) whole.gpus[g].used = {81920, 100, true, 1};
  Snapshot s2({split, whole});
  PodRequest q = Multi(2, Policy::kBinpack, false);
  e.Evaluate(s2, q, {}, &ev);
  EXPECT_GT(ev.verdicts[0].score, ev.verdicts[1].score);  // binpack: split is fuller
  q.node_numa = true;
  q.containers[0].numa_prefer = true;
  e.Evaluate(s2, q, {}, &ev);
  EXPECT_LT(ev.verdicts[0].score, ev.verdicts[1].score);
}

// ---------------------------------------------------------------- compute mode

ContainerRequest Slice(ComputeMode m, int32_t tenant, bool share = false) {
  ContainerRequest c;
  c.gpus = 1;
  c.cores = 10;
  c.memory_mib = 1024;
  c.mode = m;
  c.tenant = tenant;
  c.share_tenants = share;
  return c;
}

TEST(Spatial, ModesNeverShareAGpuAndTenantsStayApart) {
  const auto T = ComputeMode::kTimeSliced, S = ComputeMode::kSpatial, D = ComputeMode::kNodeDefault;
  ModeUse empty;
  ModeUse timed;
  ApplyMode(T, Slice(T, 1), &timed);
  ModeUse spatial1;
  ApplyMode(T, Slice(S, 1), &spatial1);
  EXPECT_EQ(ModeAllows(T, empty, Slice(S, 1)), ModeVerdict::kOk);
  EXPECT_EQ(ModeAllows(T, timed, Slice(S, 1)), ModeVerdict::kOtherMode);
  EXPECT_EQ(ModeAllows(T, spatial1, Slice(T, 1)), ModeVerdict::kOtherMode);
  EXPECT_EQ(ModeAllows(T, spatial1, Slice(D, 1)), ModeVerdict::kOtherMode);  // default is time-sliced here
  EXPECT_EQ(ModeAllows(S, spatial1, Slice(D, 1)), ModeVerdict::kOk);         // and spatial there
  EXPECT_EQ(ModeAllows(T, spatial1, Slice(S, 1)), ModeVerdict::kOk);
  EXPECT_EQ(ModeAllows(T, spatial1, Slice(S, 2)), ModeVerdict::kOtherTenant);
  EXPECT_EQ(ModeAllows(T, spatial1, Slice(S, 2, true)), ModeVerdict::kOtherTenant);  // tenant 1 did not allow it
  ModeUse sharing;
  ApplyMode(T, Slice(S, 1, true), &sharing);
  EXPECT_EQ(ModeAllows(T, sharing, Slice(S, 2, true)), ModeVerdict::kOk);
  EXPECT_EQ(ModeAllows(T, sharing, Slice(S, 2, false)), ModeVerdict::kOtherTenant);
  ApplyMode(T, Slice(S, 2, true), &sharing);
  EXPECT_EQ(sharing.tenant, kMixedTenants);
  // Once two namespaces share it, a pod of either that does not allow sharing stays out.
  EXPECT_EQ(ModeAllows(T, sharing, Slice(S, 1, false)), ModeVerdict::kOtherTenant);
}

TEST(Spatial, EngineSeparatesModesAndCommitKeepsThem) {
  Node n = Islands("n");
  n.gpus.resize(2);
  n.links.clear();
  n.gpus[0].used.mode.time_sliced = 1;
  n.gpus[0].used.sharers = 1;
  Snapshot snap({n});
  Engine e;
  PodRequest r;
  r.containers.push_back(Slice(ComputeMode::kSpatial, 7));
  r.containers[0].gpu_policy = Policy::kBinpack;
  Assignment a;
  const char* why = nullptr;
  ASSERT_TRUE(e.Assign(snap, r, 0, &a, &why));
  EXPECT_EQ(a.containers[0][0].gpu, 1);  // binpack would take the used GPU 0
  snap.Commit(0, r, a);
  EXPECT_EQ(snap.node(0).gpus[1].used.mode.spatial, 1);
  EXPECT_EQ(snap.node(0).gpus[1].used.mode.tenant, 7);
  // Both GPUs now taken by one mode each: another namespace's spatial pod and a time-sliced pod of
  // namespace 7 both find one GPU; a third namespace finds none.
  r.containers[0].tenant = 8;
  EXPECT_FALSE(e.Assign(snap, r, 0, &a, &why));
  EXPECT_STREQ(why, "spatial GPUs hold another namespace's pods (tessera.dev/spatial-share-namespaces)");
  PodRequest t;
  t.containers.push_back(Slice(ComputeMode::kTimeSliced, 7));
  ASSERT_TRUE(e.Assign(snap, t, 0, &a, &why));
  EXPECT_EQ(a.containers[0][0].gpu, 0);
  PodRequest two;
  two.containers.push_back(Slice(ComputeMode::kTimeSliced, 7));
  two.containers[0].gpus = 2;
  EXPECT_FALSE(e.Assign(snap, two, 0, &a, &why));
}

}  // namespace
}  // namespace tessera::placement
