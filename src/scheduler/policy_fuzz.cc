// Fuzz target (bench/fuzz): scheduler::ParsePolicyChoice, the hami.io/{node,gpu}-scheduler-policy
// annotations, at both levels. The GPU level takes only binpack or spread; a choice, written back as the
// names it holds, parses to itself.
#include <cstdint>
#include <string>

#include "fuzz_check.h"
#include "placement/engine.h"
#include "scheduler/policy.h"

namespace sched = tessera::scheduler;
using tessera::placement::Policy;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text = tessera::fuzz::Text(data, size);
  const sched::PolicyChoice def{Policy::kSpread, true, true};
  for (sched::PolicyLevel level : {sched::PolicyLevel::kNode, sched::PolicyLevel::kGpu}) {
    auto c = sched::ParsePolicyChoice("annotation fuzz", text, level, def);
    if (!c.ok()) {
      FUZZ_CHECK(!c.error().message.empty());
      continue;
    }
    if (level == sched::PolicyLevel::kGpu)
      FUZZ_CHECK(c->base == Policy::kBinpack || c->base == Policy::kSpread);
    std::string names(tessera::placement::PolicyName(c->base));
    if (c->topology_aware) names += ",topology-aware";
    if (c->numa) names += ", numa";
    auto again = sched::ParsePolicyChoice("annotation fuzz", names, level, def);
    FUZZ_CHECK(again.ok());
    FUZZ_CHECK(*again == *c);
  }
  return 0;
}
