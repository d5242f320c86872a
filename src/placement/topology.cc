#include "placement/topology.h"

#include <algorithm>
#include <array>
#include <charconv>

namespace tessera::placement {

uint8_t LinkRank(std::string_view link) {
  if (link == "SYS") return 1;
  if (link == "NODE") return 2;
  if (link == "PHB") return 3;
  if (link == "PXB") return 4;
  if (link == "PIX") return 5;
  if (link.size() > 2 && link.substr(0, 2) == "NV") {
    int n = 0;
    auto [p, ec] = std::from_chars(link.data() + 2, link.data() + link.size(), n);
    if (ec == std::errc() && p == link.data() + link.size() && n >= 1 && n <= 64) return uint8_t(10 + n);
  }
  return 0;
}

namespace {

struct Measure {
  int min = 0;
  int sum = 0;
  bool Better(const Measure& o) const { return min != o.min ? min > o.min : sum > o.sum; }
};

Measure MeasureOf(const Node& n, const int* set, int k) {
  Measure m{k > 1 ? 1 << 30 : 0, 0};
  for (int i = 0; i < k; ++i) {
    for (int j = i + 1; j < k; ++j) {
      const int r = PairRank(n, set[i], set[j]);
      m.min = std::min(m.min, r);
      m.sum += r;
    }
  }
  return m;
}

// C(n, k), saturating at `cap`.
uint64_t Choose(int n, int k, uint64_t cap) {
  uint64_t c = 1;
  for (int i = 1; i <= k; ++i) {
    c = c * uint64_t(n - k + i) / uint64_t(i);
    if (c > cap) return cap + 1;
  }
  return c;
}

}  // namespace

double SetQuality(const Node& n, const int* set, int k) {
  if (k < 2) return 0;
  return double(MeasureOf(n, set, k).sum) / (double(k) * (k - 1) / 2);
}

void PickByTopology(const Node& n, const int* cand, int nc, int k, int* out) {
  k = std::min(k, nc);
  std::copy(cand, cand + k, out);  // the policy's own choice, kept when nothing is better
  if (k < 2 || n.links.empty()) return;
  std::array<int, kMaxGpusPerNode> set;
  Measure best = MeasureOf(n, out, k);
  if (Choose(nc, k, 4096) <= 4096) {
    // Subsets in lexicographic order of candidate positions: the first best one is earliest in policy order.
    std::array<int, kMaxGpusPerNode> pos;
    for (int i = 0; i < k; ++i) pos[i] = i;
    while (true) {
      for (int i = 0; i < k; ++i) set[i] = cand[pos[i]];
      Measure m = MeasureOf(n, set.data(), k);
      if (m.Better(best)) {
        best = m;
        std::copy(set.begin(), set.begin() + k, out);
      }
      int i = k - 1;
      while (i >= 0 && pos[i] == nc - k + i) --i;
      if (i < 0) break;
      ++pos[i];
      for (int j = i + 1; j < k; ++j) pos[j] = pos[j - 1] + 1;
    }
    return;
  }
  // Greedy: the best pair, then repeatedly the candidate whose slowest link to the set is fastest.
  int a = 0, b = 1;
  for (int i = 0; i < nc; ++i)
    for (int j = i + 1; j < nc; ++j)
      if (PairRank(n, cand[i], cand[j]) > PairRank(n, cand[a], cand[b])) a = i, b = j;
  std::array<bool, kMaxGpusPerNode> used{};
  set[0] = cand[a];
  set[1] = cand[b];
  used[a] = used[b] = true;
  for (int have = 2; have < k; ++have) {
    int pick = -1;
    Measure pm;
    for (int i = 0; i < nc; ++i) {
      if (used[i]) continue;
      Measure m{1 << 30, 0};
      for (int j = 0; j < have; ++j) {
        const int r = PairRank(n, cand[i], set[j]);
        m.min = std::min(m.min, r);
        m.sum += r;
      }
      if (pick < 0 || m.Better(pm)) pick = i, pm = m;
    }
    used[pick] = true;
    set[have] = cand[pick];
  }
  if (MeasureOf(n, set.data(), k).Better(best)) std::copy(set.begin(), set.begin() + k, out);
}

}  // namespace tessera::placement
