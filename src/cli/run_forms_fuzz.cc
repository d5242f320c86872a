// Fuzz target (bench/fuzz): the value forms of `tessera run --memory` and `--cores` (cli/run_forms.h) on
// any argument. Each limit is a byte count > 0 or a share 1..100 %, GPUs are named once, cores are 1..100.
#include <cstdint>
#include <set>
#include <string>

#include "cli/run_forms.h"
#include "fuzz_check.h"

namespace cli = tessera::cli;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string arg = tessera::fuzz::Text(data, size);
  std::vector<cli::MemoryLimit> limits;
  std::string err;
  if (cli::ParseMemory(arg.c_str(), &limits, &err)) {
    FUZZ_CHECK(!limits.empty());
    std::set<std::string> gpus;
    for (const auto& m : limits) {
      FUZZ_CHECK((m.bytes > 0) != (m.percent > 0));
      FUZZ_CHECK(m.percent >= 0 && m.percent <= 100);
      FUZZ_CHECK(gpus.insert(m.gpu).second);
      FUZZ_CHECK(limits.size() == 1 || !m.gpu.empty());
    }
  } else {
    FUZZ_CHECK(err.rfind("--memory '", 0) == 0);
  }
  int cores = 0;
  if (cli::ParseCores(arg.c_str(), &cores)) FUZZ_CHECK(cores >= 1 && cores <= 100);
  return 0;
}
