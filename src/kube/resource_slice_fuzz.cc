// Fuzz target (bench/fuzz): the DRA driver's reading of a ResourceClaim (kube::ParseClaimAllocation, with
// the opaque SliceConfig through ParseDraSliceConfig and ConfigFor) on any JSON. What it accepts is in
// range: consumed memory > 0 (or absent), cores 0..100 (or absent), priority 0 or 1.
#include <cstdint>

#include "fuzz_check.h"
#include "kube/resource_slice.h"

namespace kube = tessera::kube;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const nlohmann::json doc = tessera::fuzz::Json(data, size);
  if (doc.is_discarded()) return 0;
  kube::DraSliceConfig direct;
  if (kube::ParseDraSliceConfig(doc, "parameters", &direct).ok())
    FUZZ_CHECK(direct.priority == 0 || direct.priority == 1);
  auto alloc = kube::ParseClaimAllocation(doc);
  if (!alloc.ok()) return 0;
  for (const auto& d : alloc->devices) {
    FUZZ_CHECK(!d.pool.empty() && !d.device.empty());
    FUZZ_CHECK(d.memory_bytes == -1 || d.memory_bytes > 0);
    FUZZ_CHECK(d.cores >= -1 && d.cores <= 100);
    const kube::DraSliceConfig cfg = alloc->ConfigFor(d.request);
    FUZZ_CHECK(cfg.priority == 0 || cfg.priority == 1);
  }
  return 0;
}
