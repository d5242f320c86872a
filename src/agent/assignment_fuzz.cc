// Fuzz target (bench/fuzz): agent::ParseAssignments on any pod JSON (what the agent reads from the API
// server at Allocate), for node "n1" and nvidia.com/gpu, and ParseRfc3339 on the raw text. A container is
// returned only with exactly as many grants as it asks for; an error returns nothing; a parsed time
// formats and parses back to the same instant.
#include <cstdint>
#include <cstdio>
#include <ctime>

#include "agent/assignment.h"
#include "fuzz_check.h"

namespace agent = tessera::agent;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  int64_t ns = 0;
  if (agent::ParseRfc3339(tessera::fuzz::Text(data, size), &ns)) {
    const time_t secs = static_cast<time_t>(ns >= 0 ? ns / 1000000000 : (ns - 999999999) / 1000000000);
    const int64_t frac = ns - static_cast<int64_t>(secs) * 1000000000;
    std::tm tm{};
    FUZZ_CHECK(gmtime_r(&secs, &tm) != nullptr);
    FUZZ_CHECK(tm.tm_year + 1900 >= 1 && tm.tm_year + 1900 <= 9999);  // ns since 1970 cover 1677..2262
    char text[64];
    snprintf(text, sizeof(text), "%04d-%02d-%02dT%02d:%02d:%02d.%09lldZ", tm.tm_year + 1900, tm.tm_mon + 1,
             tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, static_cast<long long>(frac));
    int64_t again = 0;
    FUZZ_CHECK(agent::ParseRfc3339(text, &again));
    FUZZ_CHECK(again == ns);
  }

  const nlohmann::json pod = tessera::fuzz::Json(data, size);
  if (pod.is_discarded()) return 0;
  std::string error;
  auto got = agent::ParseAssignments(pod, "n1", "nvidia.com/gpu", &error);
  if (!error.empty()) FUZZ_CHECK(got.empty());
  for (const auto& a : got) {
    FUZZ_CHECK(a.device_count >= 1 && static_cast<size_t>(a.device_count) == a.grants.size());
    FUZZ_CHECK(a.priority == 0 || a.priority == 1);
    for (const auto& g : a.grants) FUZZ_CHECK(g.memory_mib >= 0 && g.cores >= 0);
    a.Signature();
  }
  return 0;
}
