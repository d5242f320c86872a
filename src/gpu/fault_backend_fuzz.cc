// Fuzz target (bench/fuzz): gpu::ParseFaultPlan, the TESSERA_GPU_FAULTS text, on any input. A plan it
// accepts counts no negative failures.
#include <cstdint>

#include "fuzz_check.h"
#include "gpu/fault_backend.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  tessera::gpu::FaultPlan plan;
  tessera::gpu::Status st = tessera::gpu::ParseFaultPlan(tessera::fuzz::Text(data, size), &plan);
  if (!st.ok()) {
    FUZZ_CHECK(!st.message().empty());
    return 0;
  }
  FUZZ_CHECK(plan.fail_init >= 0 && plan.fail_discover >= 0 && plan.fail_usage >= 0 && plan.fail_wait >= 0 &&
             plan.fail_processes >= 0);
  for (const auto& u : plan.hidden) FUZZ_CHECK(!u.empty());
  return 0;
}
