// Engine: filter, score and GPU choice (see engine.h and docs/placement.md).
#include "placement/engine.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <limits>

#include "placement/snapshot_impl.h"
#include "placement/spatial.h"
#include "placement/topology.h"

namespace tessera::placement {

namespace {

// A working copy of one node's free capacity, edited as containers are placed. Lives on the stack:
// scoring a node never allocates.
struct Local {
  std::array<GpuState, kMaxGpusPerNode> g;
  int n = 0;
  int64_t cpu_free = 0;
  int64_t mem_free = 0;
  ComputeMode default_mode = ComputeMode::kTimeSliced;
};

void LoadLocal(const Snapshot::Impl& s, uint32_t node, Local* l) {
  // Nodes with more cards are marked invalid by the snapshot; never copy past the stack array.
  l->n = std::min(s.gpu_count(node), kMaxGpusPerNode);
  const GpuState* g = s.gpu_ptr(node);
  std::copy(g, g + l->n, l->g.begin());
  l->cpu_free = s.cpu_free[node];
  l->mem_free = s.mem_free[node];
  l->default_mode = s.nodes[node].default_mode;
}

int64_t NeedMemory(const ContainerRequest& c, const GpuState& g) {
  if (c.memory_mib > 0) return c.memory_mib;
  return int64_t(c.memory_percent) * g.mem_total / 100;
}

bool RequestsGpu(const PodRequest& req) {
  for (const auto& c : req.containers) {
    if (c.gpus > 0) return true;
  }
  return false;
}

bool ListHas(const std::vector<std::string>& list, std::string_view v) {
  return std::find(list.begin(), list.end(), v) != list.end();
}

// Static filters: model and uuid lists and health. Why a GPU fails is recorded in *why so the node's
// reason names the most specific obstacle.
enum Why : int { kNone = 0, kUnhealthy, kType, kUuid, kExclusive, kMode, kTenant, kCores, kMemory };

Why GpuRejects(const Snapshot::Impl& s, uint32_t node, int j, const GpuState& g, const ContainerRequest& c) {
  if (!g.healthy) return kUnhealthy;
  if (!c.type_include.empty() || !c.type_exclude.empty()) {
    const std::string& model = s.model_names[g.model];
    bool ok = c.type_include.empty();
    for (const auto& t : c.type_include) ok = ok || ModelMatches(model, t);
    for (const auto& t : c.type_exclude) ok = ok && !ModelMatches(model, t);
    if (!ok) return kType;
  }
  if (!c.uuid_include.empty() || !c.uuid_exclude.empty()) {
    const std::string& uuid = s.nodes[node].gpus[j].uuid;
    if (!c.uuid_include.empty() && !ListHas(c.uuid_include, uuid)) return kUuid;
    if (ListHas(c.uuid_exclude, uuid)) return kUuid;
  }
  if (g.exclusive) return kExclusive;
  if (c.exclusive && (g.sharers > 0 || g.cores_free < g.cores_total || g.mem_free < g.mem_total))
    return kExclusive;
  switch (ModeAllows(s.nodes[node].default_mode, g.mode, c)) {
    case ModeVerdict::kOtherMode: return kMode;
    case ModeVerdict::kOtherTenant: return kTenant;
    case ModeVerdict::kOk: break;
  }
  if (g.cores_free < c.cores) return kCores;
  if (g.mem_free < NeedMemory(c, g)) return kMemory;
  return kNone;
}

const char* WhyText(int why, bool numa) {
  switch (why) {
    case kUnhealthy: return "no healthy GPU";
    case kType: return "no GPU of the requested type";
    case kUuid: return "no GPU matching the requested uuids";
    case kExclusive: return "GPUs are shared or held exclusively";
    case kMode: return "GPUs hold slices of the other compute mode (time-sliced and spatial never share a GPU)";
    case kTenant: return "spatial GPUs hold another namespace's pods (tessera.dev/spatial-share-namespaces)";
    case kCores: return "insufficient GPU cores";
    case kMemory: return "insufficient GPU memory";
    default: break;
  }
  return numa ? "not enough GPUs on one NUMA node" : "not enough GPUs";
}

// ------------------------------------------------------------------ fragmentation measure

// Expected fragmentation of a node state (in card-percent), over the snapshot's typical kinds:
// for each kind, the GPU capacity it cannot use there (all of it when the kind cannot be placed at
// all: no CPU, no host memory (tessera only), or too few GPUs that fit; otherwise the capacity of
// the GPUs it does not fit on), weighted by the kind's share.
// Computed for `l` from the snapshot's per-(node, kind) statistics of `node`
// plus the GPUs where `l` differs from the snapshot: O(kinds x changed GPUs) instead of
// O(kinds x GPUs), which is what keeps a 5,000-node Evaluate within budget.
double FragFromStats(const Snapshot::Impl& s, uint32_t node, const Local& l, bool demand_weights) {
  const GpuState* base = s.gpu_ptr(node);
  std::array<int, kMaxGpusPerNode> changed;
  int nc = 0;
  double total = s.total_free[node];
  for (int j = 0; j < l.n; ++j) {
    const GpuState& a = base[j];
    const GpuState& b = l.g[j];
    if (a.cores_free != b.cores_free || a.mem_free != b.mem_free || a.exclusive != b.exclusive) {
      changed[nc++] = j;
      total += b.Amount() - a.Amount();
    }
  }
  if (total <= 0) return 0;
  // tessera on a one-model node: that model's merged kinds (snapshot_impl.h), all of which accept it.
  const bool merged = demand_weights && s.node_model[node] >= 0;
  const std::vector<TypicalKind>& kinds = merged ? s.merged_kinds[size_t(s.node_model[node])] : s.kinds;
  const KindStat* st = merged ? s.merged_stat_ptr(node) : s.stat_ptr(node);
  double f = 0;
  for (size_t k = 0; k < kinds.size(); ++k) {
    const TypicalKind& kind = kinds[k];
    const double w = demand_weights ? kind.w_mix * s.mix_norm[node] : kind.w_count;
    if (w <= 0) continue;
    if (demand_weights && !st[k].access && kind.gpus > 0) continue;
    bool usable = kind.gpus > 0 && l.cpu_free >= kind.cpu_milli && (!demand_weights || l.mem_free >= kind.memory_mib);
    double nonfit = 0;
    if (usable) {
      int fit = st[k].fit;
      nonfit = st[k].nonfit;
      for (int c = 0; c < nc; ++c) {
        const GpuState& a = base[changed[c]];
        const GpuState& b = l.g[changed[c]];
        if (kind.Fits(a)) {
          --fit;
        } else {
          nonfit -= a.Amount();
        }
        if (kind.Fits(b)) {
          ++fit;
        } else {
          nonfit += b.Amount();
        }
      }
      usable = fit >= kind.gpus;
    }
    f += w * (usable ? nonfit : total);
  }
  return f;
}

// GPU capacity (card-percent) the node cannot use for lack of host CPU or memory, if future GPU
// requests bring the workload's typical CPU and memory per unit of GPU.
double Stranded(const Snapshot::Impl& s, double gpu, int64_t cpu_free, int64_t mem_free) {
  if (gpu <= 0) return 0;
  double usable = gpu;
  if (s.cpu_per_pct > 0) usable = std::min(usable, double(cpu_free) / s.cpu_per_pct);
  if (s.mem_per_pct > 0) usable = std::min(usable, double(mem_free) / s.mem_per_pct);
  return gpu - std::max(0.0, usable);
}

// Growth of the expected sliver waste (Snapshot::Impl::sliver) over the cards where `l` differs from
// the snapshot: O(GPUs of the node), no allocation.
double SliverGrowth(const Snapshot::Impl& s, uint32_t node, const Local& l) {
  const GpuState* base = s.gpu_ptr(node);
  auto waste = [&](const GpuState& g) {
    const int x = std::clamp(int(std::lround(g.Amount())), 0, 100);
    return s.sliver[size_t(x)];
  };
  double d = 0;
  for (int j = 0; j < l.n; ++j) {
    if (base[j].cores_free == l.g[j].cores_free && base[j].exclusive == l.g[j].exclusive) continue;
    d += waste(l.g[j]) - waste(base[j]);
  }
  return d;
}

// ------------------------------------------------------------------ GPU choice

struct Choice {
  std::array<GpuGrant, kMaxGpusPerNode> grants;
  int n = 0;
};

void Grant(const ContainerRequest& c, int j, Local* l, Choice* out) {
  GpuState& g = l->g[j];
  GpuGrant gr;
  gr.gpu = uint16_t(j);
  gr.exclusive = c.exclusive;
  gr.cores = c.exclusive ? g.cores_free : c.cores;
  gr.memory_mib = c.exclusive ? g.mem_free : NeedMemory(c, g);
  g.cores_free -= gr.cores;
  g.mem_free -= gr.memory_mib;
  g.sharers += 1;
  g.exclusive = g.exclusive || c.exclusive;
  ApplyMode(l->default_mode, c, &g.mode);
  out->grants[out->n++] = gr;
}

// Orders candidate GPUs: binpack takes the fullest first, spread the emptiest; index breaks ties.
bool Before(const Local& l, const ContainerRequest& c, Policy gp, int a, int b) {
  const GpuState& x = l.g[a];
  const GpuState& y = l.g[b];
  const double fx = x.Amount(), fy = y.Amount();
  if (fx != fy) return gp == Policy::kSpread ? fx > fy : fx < fy;
  if (x.mem_free != y.mem_free) return gp == Policy::kSpread ? x.mem_free > y.mem_free : x.mem_free < y.mem_free;
  return a < b;
}

// Places one container on the local state. Returns nullptr or the reason it cannot.
const char* PlaceContainer(const Snapshot::Impl& s, const EngineOptions& opts, uint32_t node,
                           const ContainerRequest& c, Policy node_policy, Local* l, Choice* out) {
  if (c.gpus <= 0) return nullptr;
  std::array<int, kMaxGpusPerNode> cand;
  int nc = 0;
  int worst = kNone;
  for (int j = 0; j < l->n; ++j) {
    Why w = GpuRejects(s, node, j, l->g[j], c);
    if (w == kNone) {
      cand[nc++] = j;
    } else {
      worst = std::max(worst, int(w));
    }
  }
  if (l->n == 0) return "node has no GPU";
  if (nc < c.gpus) return WhyText(nc == 0 ? worst : kNone, false);

  const bool frag_policy = node_policy == Policy::kFgd || node_policy == Policy::kTessera;
  Policy gp = c.gpu_policy == Policy::kSpread ? Policy::kSpread : Policy::kBinpack;

  if (frag_policy && c.gpus == 1 && !s.kinds.empty()) {
    // Try each distinct candidate (GPUs with the same free capacity give the same result).
    const bool demand = node_policy == Policy::kTessera;
    double best = std::numeric_limits<double>::infinity();
    int pick = -1;
    std::sort(cand.begin(), cand.begin() + nc, [&](int a, int b) { return Before(*l, c, Policy::kBinpack, a, b); });
    for (int i = 0; i < nc; ++i) {
      const int j = cand[i];
      if (i > 0) {
        const GpuState& p = l->g[cand[i - 1]];
        const GpuState& q = l->g[j];
        if (p.cores_free == q.cores_free && p.mem_free == q.mem_free && p.model == q.model &&
            p.sharers == q.sharers)
          continue;
      }
      // Try in place and undo: cheaper than copying the node's state per candidate.
      const GpuState saved = l->g[j];
      Choice tmp;
      Grant(c, j, l, &tmp);
      double f = FragFromStats(s, node, *l, demand);
      if (demand) f += opts.tessera_sliver_weight * SliverGrowth(s, node, *l);
      l->g[j] = saved;
      if (f < best - 1e-9) {
        best = f;
        pick = j;
      }
    }
    Grant(c, pick, l, out);
    return nullptr;
  }

  if (c.numa_bind || c.numa_prefer) {
    // Pick the NUMA node whose best `gpus` candidates come first in policy order.
    int best_numa = -1;
    std::array<int, kMaxGpusPerNode> sel;
    int best_first = -1;
    for (int i = 0; i < nc; ++i) {
      const int numa = l->g[cand[i]].numa;
      int count = 0;
      for (int k = 0; k < nc; ++k) count += l->g[cand[k]].numa == numa;
      if (count < c.gpus) continue;
      // Compare groups by their total free capacity: binpack wants the least, spread the most.
      if (best_numa < 0) {
        best_numa = numa;
        best_first = cand[i];
        continue;
      }
      double a = 0, b = 0;
      for (int k = 0; k < nc; ++k) {
        if (l->g[cand[k]].numa == numa) a += l->g[cand[k]].Amount();
        if (l->g[cand[k]].numa == best_numa) b += l->g[cand[k]].Amount();
      }
      if (gp == Policy::kSpread ? a > b : a < b) {
        best_numa = numa;
        best_first = cand[i];
      }
    }
    (void)best_first;
    if (best_numa < 0 && c.numa_bind) return WhyText(kNone, true);
    if (best_numa >= 0) {  // numa_prefer without a NUMA node that fits all: any GPUs, below
      int ns = 0;
      for (int i = 0; i < nc; ++i) {
        if (l->g[cand[i]].numa == best_numa) sel[ns++] = cand[i];
      }
      std::copy(sel.begin(), sel.begin() + ns, cand.begin());
      nc = ns;
    }
  }

  std::sort(cand.begin(), cand.begin() + nc, [&](int a, int b) { return Before(*l, c, gp, a, b); });
  if (c.topology_aware && c.gpus > 1) {
    std::array<int, kMaxGpusPerNode> pick;
    PickByTopology(s.nodes[node], cand.data(), nc, c.gpus, pick.data());
    std::copy(pick.begin(), pick.begin() + c.gpus, cand.begin());
  }
  for (int i = 0; i < c.gpus; ++i) Grant(c, cand[i], l, out);
  return nullptr;
}

// How local the multi-GPU containers' GPUs are, for the node modifiers: per such container the mean
// link rank of its set (topology) plus 1 when all its GPUs share a NUMA node (numa); 0 without any.
double Locality(const Node& n, const PodRequest& req, const Local& l, const Choice& ch) {
  if (ch.n < 2) return 0;
  std::array<int, kMaxGpusPerNode> set;
  bool one_numa = true;
  for (int i = 0; i < ch.n; ++i) {
    set[i] = ch.grants[i].gpu;
    one_numa = one_numa && l.g[set[i]].numa == l.g[set[0]].numa;
  }
  double v = 0;
  if (req.node_topology_aware) v += SetQuality(n, set.data(), ch.n);
  if (req.node_numa && one_numa) v += 1;
  return v;
}

// Places the whole pod on the local copy; per-container grants go to `choices` when not null, the sum
// of Locality() over its containers to `locality` when not null.
const char* PlacePod(const Snapshot::Impl& s, const EngineOptions& opts, uint32_t node, const PodRequest& req,
                     Local* l, std::vector<std::vector<GpuGrant>>* choices, double* locality = nullptr) {
  if (s.invalid[node]) return s.invalid[node];
  if (l->cpu_free < req.cpu_milli) return "insufficient CPU";
  if (l->mem_free < req.memory_mib) return "insufficient memory";
  l->cpu_free -= req.cpu_milli;
  l->mem_free -= req.memory_mib;
  for (size_t i = 0; i < req.containers.size(); ++i) {
    Choice ch;
    const char* why = PlaceContainer(s, opts, node, req.containers[i], req.node_policy, l, &ch);
    if (why) return why;
    if (choices) (*choices)[i].assign(ch.grants.begin(), ch.grants.begin() + ch.n);
    if (locality) *locality += Locality(s.nodes[node], req, *l, ch);
  }
  return nullptr;
}

double GpuUsageShare(const Local& l) {
  double cap = 0, used = 0;
  for (int j = 0; j < l.n; ++j) {
    const GpuState& g = l.g[j];
    if (!g.healthy || g.cores_total <= 0) continue;
    cap += 2;
    used += double(g.cores_total - g.cores_free) / g.cores_total;
    if (g.mem_total > 0) used += double(g.mem_total - g.mem_free) / g.mem_total;
  }
  return cap > 0 ? used / cap : 0;
}

}  // namespace

Engine::Engine(EngineOptions opts) : opts_(opts) {}

NodeVerdict Engine::ScoreNode(const Snapshot& snap, const PodRequest& req, uint32_t node) const {
  const Snapshot::Impl& s = snap.impl();
  NodeVerdict v;
  v.node = node;
  if (node >= s.nodes.size()) {
    v.reason = "unknown node";
    return v;
  }
  Local l;
  LoadLocal(s, node, &l);
  const bool modifiers = req.node_topology_aware || req.node_numa;
  double locality = 0;
  v.reason = PlacePod(s, opts_, node, req, &l, nullptr, modifiers ? &locality : nullptr);
  if (v.reason) return v;
  const bool gpu = RequestsGpu(req);
  const Node& n = s.nodes[node];
  switch (req.node_policy) {
    case Policy::kRandom:
      v.raw = 0;
      break;
    case Policy::kBinpack:
    case Policy::kSpread: {
      double u = gpu ? GpuUsageShare(l) : (n.cpu_milli > 0 ? 1.0 - double(l.cpu_free) / n.cpu_milli : 0);
      v.raw = req.node_policy == Policy::kBinpack ? u : 1.0 - u;
      break;
    }
    case Policy::kBestFit: {
      double gfree = 0;
      for (int j = 0; j < l.n; ++j) gfree += l.g[j].Amount();
      v.raw = 1.0 - (opts_.bestfit_cpu_weight * double(l.cpu_free) / double(s.max_cpu) +
                     opts_.bestfit_gpu_weight * gfree / s.max_gpu_amount);
      break;
    }
    case Policy::kFgd: {
      const double df = FragFromStats(s, node, l, false) - s.frag[node];
      v.raw = -df;
      break;
    }
    case Policy::kTessera: {
      double gfree_after = 0;
      for (int j = 0; j < l.n; ++j) gfree_after += l.g[j].Amount();
      const double lam = opts_.tessera_balance_weight;
      const double df = FragFromStats(s, node, l, true) - s.frag_mix[node] +
                        opts_.tessera_sliver_weight * SliverGrowth(s, node, l) +
                        lam * (Stranded(s, gfree_after, l.cpu_free, l.mem_free) -
                               Stranded(s, s.total_free[node], s.cpu_free[node], s.mem_free[node]));
      // Equal fragmentation growth: prefer the node left with less free GPU, then less free CPU,
      // so whole nodes stay whole for the large requests that come later.
      const double fit = gfree_after / s.max_gpu_amount + 0.1 * double(l.cpu_free) / double(s.max_cpu);
      v.raw = -df - opts_.tessera_fit_weight * fit;
      break;
    }
  }
  // The modifiers come first: every policy's own measure is far below this weight.
  if (modifiers) v.raw += 1e6 * locality;
  return v;
}

void Engine::Evaluate(const Snapshot& snap, const PodRequest& req, std::span<const uint32_t> candidates,
                      Evaluation* out) const {
  const size_t n = candidates.empty() ? snap.size() : candidates.size();
  out->verdicts.resize(n);
  out->feasible = 0;
  double lo = std::numeric_limits<double>::infinity(), hi = -lo;
  for (size_t i = 0; i < n; ++i) {
    const uint32_t node = candidates.empty() ? uint32_t(i) : candidates[i];
    NodeVerdict v = ScoreNode(snap, req, node);
    if (!v.reason) {
      ++out->feasible;
      lo = std::min(lo, v.raw);
      hi = std::max(hi, v.raw);
    }
    out->verdicts[i] = v;
  }
  for (auto& v : out->verdicts) {
    if (v.reason) continue;
    v.score = hi > lo ? int(std::lround(100.0 * (v.raw - lo) / (hi - lo))) : 100;
  }
}

bool Engine::Assign(const Snapshot& snap, const PodRequest& req, uint32_t node, Assignment* out,
                    const char** reason) const {
  const Snapshot::Impl& s = snap.impl();
  if (node >= s.nodes.size()) {
    if (reason) *reason = "unknown node";
    return false;
  }
  Local l;
  LoadLocal(s, node, &l);
  out->containers.resize(req.containers.size());
  for (auto& c : out->containers) c.clear();
  const char* why = PlacePod(s, opts_, node, req, &l, &out->containers);
  if (reason) *reason = why;
  return why == nullptr;
}

}  // namespace tessera::placement
