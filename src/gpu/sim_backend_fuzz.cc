// Fuzz target (bench/fuzz): gpu::ParseSimSpec, the simulated GPUs' file of `tessera agent --backend sim`,
// on any text (YAML or JSON). It returns a status, never throws; what it accepts is in the documented
// ranges and names each GPU once.
#include <cstdint>
#include <set>

#include "fuzz_check.h"
#include "gpu/sim_backend.h"

namespace gpu = tessera::gpu;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  gpu::SimSpec spec;
  gpu::Status st = gpu::ParseSimSpec(tessera::fuzz::Text(data, size), "fuzz.yaml", &spec);
  if (!st.ok()) {
    FUZZ_CHECK(!st.message().empty());
    return 0;
  }
  std::set<std::string> uuids;
  for (const auto& g : spec.gpus) {
    FUZZ_CHECK(uuids.insert(g.info.uuid).second);
    FUZZ_CHECK(g.info.memory_bytes >= (uint64_t{1} << 20) && g.info.memory_bytes <= (uint64_t{16} << 40));
    FUZZ_CHECK(g.info.numa_node >= -1 && g.info.numa_node <= 1023);
    FUZZ_CHECK(g.utilization_percent >= 0 && g.utilization_percent <= 100);
    FUZZ_CHECK(g.memory_used_bytes <= g.info.memory_bytes);
    FUZZ_CHECK(g.info.sm_count >= 0 && g.info.sm_count <= 4096);
    std::set<uint32_t> pids;
    for (const auto& p : g.processes) {
      FUZZ_CHECK(p.pid >= 1 && p.pid <= 4194304 && pids.insert(p.pid).second);
      FUZZ_CHECK(p.used_bytes <= g.info.memory_bytes);
    }
  }
  for (size_t i = 0; i < spec.events.size(); ++i) {
    FUZZ_CHECK(uuids.count(spec.events[i].event.uuid) == 1);
    FUZZ_CHECK(spec.events[i].after.count() >= 0);
    if (i > 0) FUZZ_CHECK(spec.events[i - 1].after <= spec.events[i].after);
  }
  return 0;
}
