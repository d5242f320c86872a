// The topology step of the placement engine: which set of GPUs inside a node a multi-GPU container
// takes when it asks for topology-aware placement, and how good a set is.
//
// A node publishes the link between each pair of its GPUs (src/gpu/topology.h names: NV<n>, PIX, PXB,
// PHB, NODE, SYS); LinkRank orders them by how fast peers talk: SYS 1 < NODE 2 < PHB 3 < PXB 4 < PIX 5
// < NV1 11 < ... < NV64 74 (0: unknown). A set is better when its slowest pair is faster, then when the
// sum over its pairs is larger (more NVLinks between more pairs). Among equally good sets the one that
// comes first in the GPU policy's order (binpack/spread) wins, so the policy still decides among equals.
// Pure functions, no allocation; thread-safe.
#pragma once

#include <cstdint>
#include <string_view>

#include "placement/engine.h"

namespace tessera::placement {

uint8_t LinkRank(std::string_view link);

// Rank of the link between GPUs a and b of `n` (0 when the node published none).
inline int PairRank(const Node& n, int a, int b) {
  const size_t g = n.gpus.size();
  return n.links.size() == g * g ? n.links[size_t(a) * g + size_t(b)] : 0;
}

// Mean pair rank of the `k` GPUs in `set` (0 for fewer than two GPUs or no topology).
double SetQuality(const Node& n, const int* set, int k);

// Picks `k` of the `nc` candidates `cand` (given in policy order) into `out`: the best set as above.
// Searches every subset when there are at most 4096, else grows the set greedily from the best pair.
void PickByTopology(const Node& n, const int* cand, int nc, int k, int* out);

}  // namespace tessera::placement
