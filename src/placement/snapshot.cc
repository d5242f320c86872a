// Snapshot, Workload and policy names (see engine.h).
#include <algorithm>
#include <cctype>
#include <map>
#include <numeric>
#include <tuple>

#include "placement/engine.h"
#include "placement/snapshot_impl.h"
#include "placement/spatial.h"

namespace tessera::placement {

namespace {

constexpr Policy kAll[] = {Policy::kRandom, Policy::kBinpack, Policy::kSpread,
                           Policy::kBestFit, Policy::kFgd,     Policy::kTessera};

bool IEquals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    if (std::tolower(static_cast<unsigned char>(a[i])) != std::tolower(static_cast<unsigned char>(b[i])))
      return false;
  }
  return true;
}

}  // namespace

std::string_view PolicyName(Policy p) {
  switch (p) {
    case Policy::kRandom: return "random";
    case Policy::kBinpack: return "binpack";
    case Policy::kSpread: return "spread";
    case Policy::kBestFit: return "bestfit";
    case Policy::kFgd: return "fgd";
    case Policy::kTessera: return "tessera";
  }
  return "unknown";
}

std::optional<Policy> ParsePolicy(std::string_view name) {
  for (Policy p : kAll) {
    if (IEquals(name, PolicyName(p))) return p;
  }
  if (IEquals(name, "best-fit")) return Policy::kBestFit;
  return std::nullopt;
}

std::span<const Policy> AllPolicies() { return kAll; }

// ------------------------------------------------------------------------------ Workload

std::shared_ptr<const Workload> Workload::Make(std::vector<TypicalRequest> requests, double coverage) {
  auto w = std::make_shared<Workload>();
  std::erase_if(requests, [](const TypicalRequest& r) { return !(r.weight > 0); });
  // Most frequent first; ties by shape so the result does not depend on input order.
  std::stable_sort(requests.begin(), requests.end(), [](const TypicalRequest& a, const TypicalRequest& b) {
    if (a.weight != b.weight) return a.weight > b.weight;
    if (a.gpus != b.gpus) return a.gpus < b.gpus;
    if (a.cores != b.cores) return a.cores < b.cores;
    if (a.cpu_milli != b.cpu_milli) return a.cpu_milli < b.cpu_milli;
    return a.memory_mib < b.memory_mib;
  });
  double total = 0;
  for (const auto& r : requests) total += r.weight;
  if (total <= 0) return w;
  coverage = std::clamp(coverage, 0.0, 1.0);
  double kept = 0;
  size_t n = 0;
  while (n < requests.size() && (n == 0 || kept < coverage * total - 1e-12)) kept += requests[n++].weight;
  requests.resize(n);
  for (auto& r : requests) r.weight /= kept;
  w->requests_ = std::move(requests);
  return w;
}

// ------------------------------------------------------------------------------ Snapshot

uint16_t Snapshot::Impl::InternModel(const std::string& m) {
  for (size_t i = 0; i < model_names.size(); ++i) {
    if (model_names[i] == m) return uint16_t(i);
  }
  model_names.push_back(m);
  return uint16_t(model_names.size() - 1);
}

// Model filter semantics shared with request filters: case-insensitive substring.
bool ModelMatches(std::string_view model, std::string_view pattern) {
  if (pattern.empty()) return true;
  if (pattern.size() > model.size()) return false;
  for (size_t i = 0; i + pattern.size() <= model.size(); ++i) {
    if (IEquals(model.substr(i, pattern.size()), pattern)) return true;
  }
  return false;
}


void Snapshot::Impl::Build(std::vector<Node> in, std::shared_ptr<const Workload> wl) {
  nodes = std::move(in);
  workload = std::move(wl);
  const size_t n = nodes.size();
  gpu_begin.assign(n + 1, 0);
  cpu_free.resize(n);
  mem_free.resize(n);
  version.assign(n, 0);
  total_free.assign(n, 0);
  frag.assign(n, 0);
  frag_mix.assign(n, 0);
  mix_norm.assign(n, 0);
  invalid.assign(n, nullptr);
  by_name.clear();
  by_name.reserve(n * 2);
  gpus.clear();
  total_cores = used_cores = 0;
  max_cpu = 1;
  max_gpu_amount = 100;
  for (uint32_t i = 0; i < n; ++i) {
    const Node& node = nodes[i];
    by_name.emplace(node.name, i);
    cpu_free[i] = node.cpu_milli - node.cpu_used_milli;
    mem_free[i] = node.memory_mib - node.memory_used_mib;
    max_cpu = std::max(max_cpu, node.cpu_milli);
    if (node.gpus.size() > size_t(kMaxGpusPerNode)) invalid[i] = "node has more GPUs than the engine supports";
    gpu_begin[i] = uint32_t(gpus.size());
    double amount = 0;
    for (const Gpu& g : node.gpus) {
      GpuState s;
      s.mem_total = g.memory_mib;
      s.mem_free = g.memory_mib - g.used.memory_mib;
      s.cores_total = g.cores;
      s.cores_free = g.cores - g.used.cores;
      s.sharers = g.used.sharers;
      s.numa = int16_t(g.numa);
      s.model = InternModel(g.model);
      s.healthy = g.healthy;
      s.exclusive = g.used.exclusive;
      s.mode = g.used.mode;
      if (s.healthy && s.cores_total > 0) {
        total_cores += s.cores_total;
        used_cores += s.cores_total - s.cores_free;
        amount += 100;
      }
      gpus.push_back(s);
    }
    max_gpu_amount = std::max(max_gpu_amount, amount);
  }
  gpu_begin[n] = uint32_t(gpus.size());

  kinds.clear();
  if (workload) {
    double demand_total = 0, cpu_total = 0, mem_total = 0;
    for (const auto& r : workload->requests()) {
      demand_total += r.weight * (r.gpus * r.cores / 100.0);
      cpu_total += r.weight * double(r.cpu_milli);
      mem_total += r.weight * double(r.memory_mib);
    }
    // All CPU and memory of the workload (GPU pods' and CPU-only pods') per card-percent of GPU.
    cpu_per_pct = demand_total > 0 ? cpu_total / (demand_total * 100) : 0;
    mem_per_pct = demand_total > 0 ? mem_total / (demand_total * 100) : 0;
    for (const auto& r : workload->requests()) {
      TypicalKind k;
      k.cpu_milli = r.cpu_milli;
      k.memory_mib = r.memory_mib;
      k.gpus = r.gpus;
      k.pct = std::clamp(r.cores, 0, 100);
      k.w_count = r.weight;
      const double demand = demand_total > 0 ? r.weight * (r.gpus * r.cores / 100.0) / demand_total : 0;
      k.w_mix = 0.5 * r.weight + 0.5 * demand;
      k.model_ok.resize(model_names.size());
      for (size_t m = 0; m < model_names.size(); ++m) {
        bool ok = r.models.empty();
        for (const auto& pat : r.models) ok = ok || ModelMatches(model_names[m], pat);
        k.model_ok[m] = ok;
      }
      kinds.push_back(std::move(k));
    }
  }
  // Expected waste of one card by its free share: fractional kinds that still fit keep landing on it
  // (each by its share of arrivals) with a chance that grows with how common they are; what is left
  // when none comes is wasted. sliver[0] = 0; without fractional kinds sliver[x] = x.
  auto build_sliver = [&](std::array<double, 101>* t) {
    for (int x = 0; x <= 100; ++x) {
      double fit_share = 0, next = 0;
      for (const TypicalKind& k : kinds) {
        if (k.gpus != 1 || k.pct <= 0 || k.pct >= 100 || k.pct > x) continue;
        fit_share += k.w_count;
        next += k.w_count * (*t)[size_t(x - k.pct)];
      }
      const double q = std::min(1.0, kSliverHorizon * fit_share);
      (*t)[size_t(x)] = fit_share > 0 ? (1 - q) * x + q * next / fit_share : double(x);
    }
  };
  build_sliver(&sliver);
  stats.assign(n * kinds.size(), KindStat{});
  node_model.assign(n, -1);
  for (uint32_t i = 0; i < n; ++i) {
    const GpuState* g = gpu_ptr(i);
    const int cnt = gpu_count(i);
    if (cnt == 0) continue;
    node_model[i] = g[0].model;
    for (int j = 1; j < cnt; ++j) {
      if (g[j].model != g[0].model) node_model[i] = -1;
    }
  }
  merged_kinds.assign(model_names.size(), {});
  merged_stride = 0;
  for (size_t m = 0; m < model_names.size(); ++m) {
    std::map<std::tuple<int64_t, int64_t, int, int>, size_t> at;
    auto& out = merged_kinds[m];
    for (const TypicalKind& k : kinds) {
      if (k.gpus > 0 && !k.model_ok[m]) continue;
      auto [it, fresh] = at.emplace(std::make_tuple(k.cpu_milli, k.memory_mib, k.gpus, k.pct), out.size());
      if (fresh) {
        TypicalKind c = k;
        c.model_ok.assign(model_names.size(), 1);
        out.push_back(std::move(c));
      } else {
        out[it->second].w_count += k.w_count;
        out[it->second].w_mix += k.w_mix;
      }
    }
    merged_stride = std::max(merged_stride, out.size());
  }
  merged_stats.assign(n * merged_stride, KindStat{});
  for (uint32_t i = 0; i < n; ++i) RefreshNode(i);
}

void Snapshot::Impl::RefreshNode(uint32_t n) {
  const GpuState* g = gpu_ptr(n);
  const int cnt = gpu_count(n);
  double tot = 0;
  for (int j = 0; j < cnt; ++j) tot += g[j].Amount();
  total_free[n] = tot;
  double f = 0;
  KindStat* st = stats.data() + size_t(n) * kinds.size();
  for (size_t k = 0; k < kinds.size(); ++k) {
    const TypicalKind& kind = kinds[k];
    KindStat s;
    for (int j = 0; j < cnt; ++j) {
      if (g[j].healthy && kind.model_ok[g[j].model]) s.access = true;
      if (kind.Fits(g[j])) {
        ++s.fit;
      } else {
        s.nonfit += g[j].Amount();
      }
    }
    st[k] = s;
    const bool usable = kind.gpus > 0 && cpu_free[n] >= kind.cpu_milli && s.fit >= kind.gpus;
    f += kind.w_count * (usable ? s.nonfit : tot);
  }
  // tessera: a kind that can never use this node's cards is no measure of its fragmentation (that
  // capacity is not lost to it, it was never its); the others are renormalised over the node.
  const bool merged = node_model[n] >= 0;
  const std::vector<TypicalKind>& mk = merged ? merged_kinds[size_t(node_model[n])] : kinds;
  KindStat* ms = merged ? merged_stats.data() + size_t(n) * merged_stride : st;
  double fm = 0, wsum = 0;
  for (size_t k = 0; k < mk.size(); ++k) {
    const TypicalKind& kind = mk[k];
    if (merged) {
      KindStat s;
      s.access = true;
      for (int j = 0; j < cnt; ++j) {
        if (kind.Fits(g[j])) {
          ++s.fit;
        } else {
          s.nonfit += g[j].Amount();
        }
      }
      ms[k] = s;
    }
    if (!ms[k].access && kind.gpus > 0) continue;
    wsum += kind.w_mix;
    const bool usable_mix = kind.gpus > 0 && cpu_free[n] >= kind.cpu_milli && ms[k].fit >= kind.gpus &&
                            mem_free[n] >= kind.memory_mib;
    fm += kind.w_mix * (usable_mix ? ms[k].nonfit : tot);
  }
  mix_norm[n] = wsum > 0 ? 1.0 / wsum : 0;
  fm *= mix_norm[n];
  frag[n] = tot > 0 ? f : 0;
  frag_mix[n] = tot > 0 ? fm : 0;
}

Snapshot::Snapshot(std::vector<Node> nodes, std::shared_ptr<const Workload> workload)
    : impl_(std::make_unique<Impl>()) {
  impl_->Build(std::move(nodes), std::move(workload));
}
Snapshot::~Snapshot() = default;
Snapshot::Snapshot(Snapshot&&) noexcept = default;
Snapshot& Snapshot::operator=(Snapshot&&) noexcept = default;
Snapshot::Snapshot(const Snapshot& o) : impl_(std::make_unique<Impl>(*o.impl_)) {}
Snapshot& Snapshot::operator=(const Snapshot& o) {
  if (this != &o) impl_ = std::make_unique<Impl>(*o.impl_);
  return *this;
}

size_t Snapshot::size() const { return impl_->nodes.size(); }
const Node& Snapshot::node(uint32_t i) const { return impl_->nodes[i]; }
std::optional<uint32_t> Snapshot::Find(std::string_view name) const {
  auto it = impl_->by_name.find(name);
  if (it == impl_->by_name.end()) return std::nullopt;
  return it->second;
}
const std::shared_ptr<const Workload>& Snapshot::workload() const { return impl_->workload; }
uint64_t Snapshot::version(uint32_t i) const { return impl_->version[i]; }
int64_t Snapshot::total_gpu_cores() const { return impl_->total_cores; }
int64_t Snapshot::used_gpu_cores() const { return impl_->used_cores; }
double Snapshot::fragmentation(uint32_t i) const { return impl_->frag[i]; }
double Snapshot::expected_sliver(int free_percent) const {
  return impl_->sliver[size_t(std::clamp(free_percent, 0, 100))];
}

void Snapshot::Commit(uint32_t n, const PodRequest& req, const Assignment& a) {
  Impl& s = *impl_;
  Node& node = s.nodes[n];
  node.cpu_used_milli += req.cpu_milli;
  node.memory_used_mib += req.memory_mib;
  s.cpu_free[n] -= req.cpu_milli;
  s.mem_free[n] -= req.memory_mib;
  GpuState* g = s.gpu_ptr(n);
  for (size_t c = 0; c < a.containers.size(); ++c) {
    const auto& container = a.containers[c];
    for (const GpuGrant& grant : container) {
      if (grant.gpu >= node.gpus.size()) continue;
      Gpu& gpu = node.gpus[grant.gpu];
      gpu.used.memory_mib += grant.memory_mib;
      gpu.used.cores += grant.cores;
      gpu.used.sharers += 1;
      gpu.used.exclusive = gpu.used.exclusive || grant.exclusive;
      GpuState& st = g[grant.gpu];
      st.mem_free -= grant.memory_mib;
      st.cores_free -= grant.cores;
      st.sharers += 1;
      st.exclusive = st.exclusive || grant.exclusive;
      if (c < req.containers.size()) {
        ApplyMode(node.default_mode, req.containers[c], &gpu.used.mode);
        st.mode = gpu.used.mode;
      }
      if (st.healthy && st.cores_total > 0) s.used_cores += grant.cores;
    }
  }
  ++s.version[n];
  s.RefreshNode(n);
}

}  // namespace tessera::placement
