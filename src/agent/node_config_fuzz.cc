// Fuzz target (bench/fuzz): the agent's per-node ConfigMap (agent::ApplyNodeConfig, for node "n1") and the
// tessera.dev/cordon annotation (agent::ParseCordon) on any text. What is applied is in range and is the
// number the file says (none truncated into range); a refused file leaves nothing half-applied.
#include <cstdint>

#include "agent/node_config.h"
#include "fuzz_check.h"

namespace agent = tessera::agent;
using nlohmann::json;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text = tessera::fuzz::Text(data, size);
  for (const std::string& item : agent::ParseCordon(text)) {
    FUZZ_CHECK(!item.empty() && item.find(',') == std::string::npos);
    FUZZ_CHECK(item.front() != ' ' && item.front() != '\t' && item.back() != ' ' && item.back() != '\t');
  }

  agent::NodeSettings base, out;
  base.cordon = {"GPU-cordoned"};
  out.split = -1;
  bool matched = false;
  tessera::gpu::Status st = agent::ApplyNodeConfig(text, "n1", base, &out, &matched);
  if (!st.ok()) {
    FUZZ_CHECK(out.split == -1 && !st.message().empty());
    return 0;
  }
  FUZZ_CHECK(out.split >= 1 && out.split <= 64);
  FUZZ_CHECK(out.memory_scaling >= 0.1 && out.memory_scaling <= 16);
  FUZZ_CHECK(out.core_scaling >= 0.1 && out.core_scaling <= 16);
  FUZZ_CHECK(out.cordon == base.cordon);
  for (int i : out.exclude.indexes) FUZZ_CHECK(i >= 0 && i <= 1023);
  for (int i : out.include.indexes) FUZZ_CHECK(i >= 0 && i <= 1023);
  if (!matched) {
    FUZZ_CHECK(out == base);
    return 0;
  }
  // The entry for n1, as the JSON says it.
  const json doc = tessera::fuzz::Json(data, size);
  for (const json& e : doc["nodeconfig"]) {
    if (e["name"] != "n1") continue;
    if (e.contains("devicesplitcount")) FUZZ_CHECK(e["devicesplitcount"].get<double>() == out.split);
    for (const char* k : {"filterdevices", "includedevices"}) {
      if (!e.contains(k) || !e[k].contains("index")) continue;
      const auto& set = k[0] == 'f' ? out.exclude.indexes : out.include.indexes;
      for (const json& i : e[k]["index"]) FUZZ_CHECK(set.count(static_cast<int>(i.get<double>())) == 1);
    }
  }
  return 0;
}
