// Fuzz target (bench/fuzz): cli::ParsePromText, how `tessera top --endpoint` and `tessera doctor` read an
// agent's /metrics, on any text. Samples have names; an error names its line.
#include <cstdint>

#include "cli/top_prom.h"
#include "fuzz_check.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::vector<tessera::cli::PromSample> samples;
  std::string err;
  if (!tessera::cli::ParsePromText(tessera::fuzz::Text(data, size), &samples, &err))
    FUZZ_CHECK(err.rfind("line ", 0) == 0);
  for (const auto& s : samples) {
    FUZZ_CHECK(!s.name.empty());
    for (const auto& [k, v] : s.labels) FUZZ_CHECK(!k.empty());
  }
  return 0;
}
