// Fuzz target (bench/fuzz): the trace CSV of `tessera sim` (placement::trace::ParseNodes and ParsePods)
// on any text, then the engine's view of what parsed (ToNodes, ToRequest, TypicalWorkload). What parses
// is in the documented ranges.
#include <cstdint>
#include <string_view>

#include "fuzz_check.h"
#include "placement/engine.h"
#include "placement/trace.h"

namespace tr = tessera::placement::trace;
using tessera::placement::kMaxGpusPerNode;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view csv(reinterpret_cast<const char*>(data), size);
  auto nodes = tr::ParseNodes(csv);
  if (nodes.ok()) {
    for (const auto& n : nodes.value) {
      FUZZ_CHECK(n.gpus >= 0 && n.gpus <= kMaxGpusPerNode);
      FUZZ_CHECK(n.cpu_milli >= 0 && n.memory_mib >= 0);
      FUZZ_CHECK(n.gpus == 0 || !n.model.empty());
    }
    tr::ToNodes(nodes.value);
  } else {
    FUZZ_CHECK(!nodes.error.empty());
  }
  auto pods = tr::ParsePods(csv);
  if (!pods.ok()) {
    FUZZ_CHECK(!pods.error.empty());
    return 0;
  }
  for (const auto& p : pods.value) {
    FUZZ_CHECK(p.num_gpu >= 0 && p.num_gpu <= kMaxGpusPerNode);
    FUZZ_CHECK(p.gpu_milli >= 0 && p.gpu_milli <= 1000);
    FUZZ_CHECK((p.gpu_milli > 0) == (p.num_gpu > 0));
    FUZZ_CHECK(p.cpu_milli >= 0 && p.memory_mib >= 0);
    tr::ToRequest(p, tessera::placement::Policy::kBinpack);
  }
  tr::TypicalWorkload(pods.value, 0.95);
  return 0;
}
