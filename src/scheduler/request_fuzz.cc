// Fuzz target (bench/fuzz): scheduler::ParsePod (HAMi's resources and annotations → the placement
// request) on any pod JSON, with and without a known largest GPU, plus PodCpuMemory and WantsGpu. What it
// accepts is in range: 1..32 GPUs, memory 1..largest MiB or 1..100 %, cores 0..100.
// The HTTP server answers 500 to a handler that throws (cpp-httplib catches it), so a json exception on
// a pod of an odd shape is a refusal, not a crash: it is caught here as the server does.
#include <cstdint>

#include "fuzz_check.h"
#include "placement/engine.h"
#include "scheduler/request.h"

namespace sched = tessera::scheduler;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const nlohmann::json pod = tessera::fuzz::Json(data, size);
  if (pod.is_discarded()) return 0;
  const sched::ParseOptions opts;
  try {
    int64_t cpu = 0, mem = 0;
    sched::PodCpuMemory(pod, &cpu, &mem);
    const bool wants = sched::WantsGpu(pod, opts.names);
    for (int64_t max_mib : {int64_t{0}, int64_t{81920}}) {
      auto p = sched::ParsePod(pod, opts, max_mib);
      if (!p.ok()) {
        FUZZ_CHECK(!p.error().message.empty());
        continue;
      }
      FUZZ_CHECK(p->wants_gpu == wants);
      FUZZ_CHECK(p->refs.size() == p->request.containers.size());
      for (const auto& c : p->request.containers) {
        FUZZ_CHECK(c.gpus >= 1 && c.gpus <= tessera::placement::kMaxGpusPerNode);
        FUZZ_CHECK(c.memory_mib >= 0 && (max_mib == 0 || c.memory_mib <= max_mib));
        FUZZ_CHECK(c.memory_percent >= 0 && c.memory_percent <= 100);
        FUZZ_CHECK((c.memory_mib > 0) != (c.memory_percent > 0));
        FUZZ_CHECK(c.cores >= 0 && c.cores <= 100);
      }
      p->HasSequentialInitGpu();
    }
  } catch (const nlohmann::json::exception&) {
  }
  return 0;
}
