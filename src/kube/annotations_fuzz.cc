// Fuzz target (bench/fuzz): the Node and Pod annotations the agent and the scheduler read from each other
// (tessera.dev/gpus, tessera.dev/devices) on any text. What decodes encodes and decodes to the same, and
// every number decoded is the number the JSON says (none truncated into range).
#include <cstdint>

#include "fuzz_check.h"
#include "kube/annotations.h"

namespace kube = tessera::kube;
using nlohmann::json;

namespace {

// The field's JSON number equals `v` (absent fields are not compared).
bool Same(const json& e, const char* key, double v) { return !e.contains(key) || e[key].get<double>() == v; }

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text = tessera::fuzz::Text(data, size);
  const json doc = tessera::fuzz::Json(data, size);
  if (auto gpus = kube::DecodeGpus(text); gpus.ok()) {
    auto again = kube::DecodeGpus(kube::EncodeGpus(*gpus));
    FUZZ_CHECK(again.ok());
    FUZZ_CHECK(*again == *gpus);
    FUZZ_CHECK(doc.is_array() && doc.size() == gpus->size());
    for (size_t i = 0; i < gpus->size(); ++i) {
      const kube::GpuInfo& g = (*gpus)[i];
      FUZZ_CHECK(!g.uuid.empty() && g.memory_mib > 0 && g.cores >= 1 && g.cores <= 10000);
      FUZZ_CHECK(Same(doc[i], "memory_mib", static_cast<double>(g.memory_mib)));
      FUZZ_CHECK(Same(doc[i], "cores", g.cores));
      FUZZ_CHECK(Same(doc[i], "numa", g.numa));
    }
  }
  if (auto devices = kube::DecodeDevices(text); devices.ok()) {
    auto again = kube::DecodeDevices(kube::EncodeDevices(*devices));
    FUZZ_CHECK(again.ok());
    FUZZ_CHECK(*again == *devices);
    FUZZ_CHECK(doc.is_array() && doc.size() == devices->size());
    for (size_t i = 0; i < devices->size(); ++i)
      for (size_t j = 0; j < (*devices)[i].size(); ++j) {
        const kube::DeviceSlice& s = (*devices)[i][j];
        FUZZ_CHECK(s.memory_mib >= 0 && s.cores >= 0);
        FUZZ_CHECK(Same(doc[i][j], "memory_mib", static_cast<double>(s.memory_mib)));
        FUZZ_CHECK(Same(doc[i][j], "cores", s.cores));
      }
    kube::EncodeHamiDevices(*devices);
  }
  if (auto settings = kube::DecodeSettings(text); settings.ok()) {
    auto again = kube::DecodeSettings(kube::EncodeSettings(*settings));
    FUZZ_CHECK(again.ok());
    FUZZ_CHECK(*again == *settings);
    FUZZ_CHECK(doc.is_object());
    for (const auto* list : {&settings->containers, &settings->init_containers})
      for (const auto& c : *list) FUZZ_CHECK(c.priority == 0 || c.priority == 1);
  }
  return 0;
}
