// The contract between the agent's /metrics and `tessera top --endpoint`: text rendered by the agent's
// own RenderMetrics, parsed and read back by top, with and without HAMi's names.
#include <gtest/gtest.h>

#include "agent/metrics.h"
#include "cli/top_model.h"
#include "cli/top_prom.h"

namespace tessera::cli {
namespace {

agent::MetricsSnapshot Sample() {
  agent::MetricsSnapshot s;
  s.node = "node-1";
  agent::GpuSample g;
  g.uuid = "GPU-0a0a0a0a-1111-2222-3333-444444444444";
  g.model = "NVIDIA L40S";
  g.memory_total_bytes = 48ull << 30;
  g.memory_used_bytes = 5ull << 30;
  g.utilization_percent = 40;
  s.gpus.push_back(g);
  agent::SliceSample sl;
  sl.namespace_ = "default";
  sl.pod = "gpu-worker-a-7c9";
  sl.container = "gpu-worker";
  sl.slice = "default.gpu-worker-a-7c9.0";
  agent::SliceGpuSample sg;
  sg.uuid = g.uuid;
  sg.used_bytes = 3ull << 30;
  sg.limit_bytes = 9830ull << 20;
  sg.cap_ratio = 0.25;
  sg.share_ratio = 0.2;
  sg.throttled_seconds = 7.5;
  sg.wall_refusals = 3;
  sl.gpus.push_back(sg);
  s.slices.push_back(sl);
  return s;
}

void Check(const TopSnapshot& snap) {
  ASSERT_EQ(snap.gpus.size(), 1u);
  EXPECT_EQ(snap.gpus[0].model, "NVIDIA L40S");
  EXPECT_EQ(snap.gpus[0].total_bytes, int64_t{48} << 30);
  EXPECT_EQ(snap.gpus[0].used_bytes, int64_t{5} << 30);
  ASSERT_EQ(snap.slices.size(), 1u) << "both families must merge into one row";
  const TopSlice& s = snap.slices[0];
  EXPECT_EQ(s.name, "default/gpu-worker-a-7c9/gpu-worker");
  EXPECT_EQ(s.used_bytes, 3ull << 30);
  EXPECT_EQ(s.limit_bytes, 9830ull << 20);
  EXPECT_EQ(s.cap_percent, 25);
  EXPECT_NEAR(s.share_percent, 20, 1e-9);
  EXPECT_NEAR(s.throttled_seconds, 7.5, 1e-9);
  EXPECT_EQ(s.wall_refusals, 3);
}

TEST(TopAgentContract, ReadsWhatTheAgentRenders) {
  for (bool hami : {true, false}) {
    agent::RenderOptions opt;
    opt.hami_names = hami;
    std::string text = agent::RenderMetrics(Sample(), opt);
    std::vector<PromSample> samples;
    std::string err;
    ASSERT_TRUE(ParsePromText(text, &samples, &err)) << err << "\n" << text;
    SCOPED_TRACE(hami ? "with HAMi names" : "tessera_* only");
    Check(SnapshotFromMetrics(samples, "test"));
  }
}

}  // namespace
}  // namespace tessera::cli
