// Fuzz target (bench/fuzz): agent::ParsePodCgroup on any /proc/<pid>/cgroup text (a container's process
// can shape its own cgroup path only within what the runtime made, but the parser must take anything).
// A pod uid found has the uuid shape; a container id found is hex.
#include <cctype>
#include <cstdint>

#include "agent/watchdog.h"
#include "fuzz_check.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const tessera::agent::PodCgroup c = tessera::agent::ParsePodCgroup(tessera::fuzz::Text(data, size));
  if (!c.pod_uid.empty()) {
    FUZZ_CHECK(c.pod_uid.size() == 36);
    for (size_t i = 0; i < c.pod_uid.size(); ++i) {
      const bool dash = i == 8 || i == 13 || i == 18 || i == 23;
      FUZZ_CHECK(dash ? c.pod_uid[i] == '-' : isxdigit(static_cast<unsigned char>(c.pod_uid[i])) != 0);
    }
  }
  if (!c.container_id.empty()) {
    FUZZ_CHECK(!c.pod_uid.empty() && c.container_id.size() >= 12);
    for (char ch : c.container_id) FUZZ_CHECK(isxdigit(static_cast<unsigned char>(ch)) != 0);
  }
  return 0;
}
