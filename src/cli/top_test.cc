// Tests of `tessera top`'s pieces that need no GPU and no agent: the Prometheus text parser, the snapshot
// built from an agent's metrics, rates from local counters, and both renderings.
#include <gtest/gtest.h>

#include <cmath>

#include <nlohmann/json.hpp>

#include "cli/top_model.h"
#include "cli/top_prom.h"
#include "cli/top_render.h"

namespace tessera::cli {
namespace {

TEST(PromText, ParsesSamplesLabelsEscapesAndTimestamps) {
  std::vector<PromSample> s;
  std::string err;
  const char* text =
      "# HELP a_total A counter.\n"
      "# TYPE a_total counter\n"
      "a_total 3\n"
      "b{x=\"1\",y=\"q\\\"uote\\\\ \\n\"} 2.5e3 1700000000000\n"
      "c{} +Inf\n"
      "d{z=\"\"} NaN\r\n"
      "   \n"
      "# a free comment\n"
      "e{trailing=\"comma\",} -1\n";
  ASSERT_TRUE(ParsePromText(text, &s, &err)) << err;
  ASSERT_EQ(s.size(), 5u);
  EXPECT_EQ(s[0].name, "a_total");
  EXPECT_EQ(s[0].value, 3);
  EXPECT_EQ(s[1].Label("x"), "1");
  EXPECT_EQ(s[1].Label("y"), "q\"uote\\ \n");
  EXPECT_EQ(s[1].value, 2500);
  EXPECT_TRUE(std::isinf(s[2].value));
  EXPECT_TRUE(std::isnan(s[3].value));
  EXPECT_EQ(s[3].Label("z"), "");
  EXPECT_EQ(s[4].Label("trailing"), "comma");
  EXPECT_EQ(s[4].Label("absent"), "");
}

TEST(PromText, RejectsMalformedLinesWithTheLineNumber) {
  struct Case {
    const char* text;
    const char* want;
  } cases[] = {
      {"ok 1\n9bad 1\n", "line 2: metric name"},
      {"m{a=1} 2\n", "line 1: m: expected '\"'"},
      {"m{a=\"x} 2\n", "unterminated value of label a"},
      {"m{a=\"x\",a=\"y\"} 2\n", "duplicate label a"},
      {"m abc\n", "bad value 'abc'"},
      {"m\n", "expected a space before the value"},
      {"m 1 2 3\n", "junk after the value"},
      {"m{a=\"\\q\"} 1\n", "bad escape"},
      {"# TYPE\n", "# TYPE without a metric name"},
  };
  for (const Case& c : cases) {
    std::vector<PromSample> s;
    std::string err;
    EXPECT_FALSE(ParsePromText(c.text, &s, &err)) << c.text;
    EXPECT_NE(err.find(c.want), std::string::npos) << "text: " << c.text << " err: " << err;
  }
}

// Both families as the agent writes them (src/agent/metrics.h), in an order where the HAMi name comes
// after the tessera_* one, plus a standalone slice known only by its slice name.
const char* kAgentMetrics =
    "# TYPE HostGPUMemoryUsage gauge\n"
    "HostGPUMemoryUsage{nodeid=\"n1\",deviceidx=\"0\",deviceuuid=\"GPU-aaaa\",devicetype=\"NVIDIA-Tesla T4\"} 2147483648\n"
    "HostCoreUtilization{nodeid=\"n1\",deviceidx=\"0\",deviceuuid=\"GPU-aaaa\",devicetype=\"NVIDIA-Tesla T4\"} 90\n"
    "tessera_gpu_memory_total_bytes{node=\"n1\",gpu_uuid=\"GPU-aaaa\",gpu_index=\"0\",model=\"Tesla T4\"} 17179869184\n"
    "tessera_gpu_utilization_ratio{node=\"n1\",gpu_uuid=\"GPU-aaaa\",gpu_index=\"0\",model=\"Tesla T4\"} 0.37\n"
    "tessera_slice_memory_used_bytes{namespace=\"default\",pod=\"worker-a\",container=\"gpu-worker\","
    "slice=\"s1\",gpu_uuid=\"GPU-aaaa\"} 1048576\n"
    "vGPU_device_memory_usage_in_bytes{podnamespace=\"default\",podname=\"worker-a\",ctrname=\"gpu-worker\","
    "vdeviceid=\"0\",deviceuuid=\"GPU-aaaa\"} 1000\n"
    "vGPU_device_memory_limit_in_bytes{podnamespace=\"default\",podname=\"worker-a\",ctrname=\"gpu-worker\","
    "vdeviceid=\"0\",deviceuuid=\"GPU-aaaa\"} 3435973836\n"
    "Device_utilization_desc_of_container{podnamespace=\"default\",podname=\"worker-a\",ctrname=\"gpu-worker\","
    "vdeviceid=\"0\",deviceuuid=\"GPU-aaaa\"} 12\n"
    "tessera_slice_compute_cap_ratio{namespace=\"default\",pod=\"worker-a\",container=\"gpu-worker\","
    "slice=\"s1\",gpu_uuid=\"GPU-aaaa\"} 0.25\n"
    "tessera_slice_priority{namespace=\"default\",pod=\"worker-a\",container=\"gpu-worker\","
    "slice=\"s1\",gpu_uuid=\"GPU-aaaa\"} 1\n"
    "tessera_slice_processes{namespace=\"default\",pod=\"worker-a\",container=\"gpu-worker\","
    "slice=\"s1\",gpu_uuid=\"GPU-aaaa\"} 2\n"
    "tessera_slice_wall_refusals_total{namespace=\"default\",pod=\"worker-a\",container=\"gpu-worker\","
    "slice=\"s1\",gpu_uuid=\"GPU-aaaa\"} 4\n"
    "tessera_slice_throttled_seconds_total{namespace=\"\",pod=\"\",container=\"\",slice=\"solo\",gpu_uuid=\"GPU-bbbb\"} 1.5\n"
    "tessera_slice_memory_limit_bytes{namespace=\"\",pod=\"\",container=\"\",slice=\"solo\",gpu_uuid=\"GPU-bbbb\"} 2048\n"
    "unrelated_metric{gpu_uuid=\"GPU-aaaa\"} 99\n";

TEST(TopModel, SnapshotFromAgentMetricsPrefersTesseraNames) {
  std::vector<PromSample> s;
  std::string err;
  ASSERT_TRUE(ParsePromText(kAgentMetrics, &s, &err)) << err;
  TopSnapshot snap = SnapshotFromMetrics(s, "http://n1:9394/metrics");
  ASSERT_EQ(snap.gpus.size(), 2u);  // GPU-bbbb appears only through a slice
  const TopGpu& a = snap.gpus[0];
  EXPECT_EQ(a.uuid, "GPU-aaaa");
  EXPECT_EQ(a.model, "Tesla T4");
  EXPECT_EQ(a.used_bytes, 2147483648);
  EXPECT_EQ(a.total_bytes, 17179869184);
  EXPECT_DOUBLE_EQ(a.utilization_percent, 37);  // tessera ratio wins over HostCoreUtilization
  EXPECT_EQ(a.slices, 1);
  EXPECT_EQ(a.allocated_bytes, 3435973836u);
  EXPECT_EQ(snap.gpus[1].uuid, "GPU-bbbb");
  EXPECT_EQ(snap.gpus[1].used_bytes, -1);

  ASSERT_EQ(snap.slices.size(), 2u);
  const TopSlice& w = snap.slices[0];
  EXPECT_EQ(w.name, "default/worker-a/gpu-worker");
  EXPECT_EQ(w.pod, "worker-a");
  EXPECT_EQ(w.used_bytes, 1048576u);  // tessera_* wins over the HAMi name whatever the order
  EXPECT_EQ(w.limit_bytes, 3435973836u);
  EXPECT_EQ(w.cap_percent, 25);
  EXPECT_EQ(w.share_percent, 12);
  EXPECT_EQ(w.priority, 1);
  EXPECT_EQ(w.process_count, 2);
  EXPECT_EQ(w.wall_refusals, 4);
  EXPECT_EQ(w.throttled_seconds, -1);
  const TopSlice& solo = snap.slices[1];
  EXPECT_EQ(solo.name, "solo");
  EXPECT_EQ(solo.limit_bytes, 2048u);
  EXPECT_EQ(solo.throttled_seconds, 1.5);
}

TEST(TopModel, RatesFromLocalCounters) {
  TopSnapshot prev, cur;
  prev.time_ms = 1000;
  cur.time_ms = 3000;
  TopSlice s;
  s.name = "a";
  s.gpu = "GPU-1";
  s.busy_ns = 1'000'000'000;
  prev.slices.push_back(s);
  s.busy_ns = 1'500'000'000;  // 0.5 s busy over 2 s
  cur.slices.push_back(s);
  TopSlice fresh;
  fresh.name = "b";
  fresh.gpu = "GPU-1";
  cur.slices.push_back(fresh);
  ApplyRates(prev, &cur);
  EXPECT_DOUBLE_EQ(cur.slices[0].share_percent, 25.0);
  EXPECT_EQ(cur.slices[1].share_percent, -1);

  // A rebuilt region (counter back to zero) gives no rate rather than a huge one.
  TopSnapshot again = cur;
  again.time_ms = 4000;
  again.slices[0].busy_ns = 0;
  again.slices[0].share_percent = -1;
  ApplyRates(cur, &again);
  EXPECT_EQ(again.slices[0].share_percent, -1);
}

TEST(TopRender, FormatBytes) {
  EXPECT_EQ(FormatBytes(0), "0 B");
  EXPECT_EQ(FormatBytes(1023), "1023 B");
  EXPECT_EQ(FormatBytes(1536), "1.5 KiB");
  EXPECT_EQ(FormatBytes(8ull << 30), "8.0 GiB");
}

TEST(TopRender, TableShowsEveryColumnAndColoursNearTheWall) {
  std::vector<PromSample> s;
  std::string err;
  ASSERT_TRUE(ParsePromText(kAgentMetrics, &s, &err)) << err;
  TopSnapshot snap = SnapshotFromMetrics(s, "http://n1:9394/metrics");
  RenderOptions opt;
  opt.clock = "12:00:00";
  std::string t = RenderTable(snap, opt);
  EXPECT_NE(t.find("tessera top - 12:00:00  source: http://n1:9394/metrics  GPUs: 2  slices: 2  processes: 2"),
            std::string::npos)
      << t;
  for (const char* col : {"GPU", "MODEL", "MEMORY USED / TOTAL", "SLICE", "MEMORY USED / LIMIT", "CAP", "SHARE",
                          "PRIO", "PROCS", "REFUSED", "THROTTLED"}) {
    EXPECT_NE(t.find(col), std::string::npos) << col;
  }
  EXPECT_NE(t.find("Tesla T4"), std::string::npos);
  EXPECT_NE(t.find("2.0 GiB / 16.0 GiB  12%"), std::string::npos) << t;
  EXPECT_NE(t.find("default/worker-a/gpu-worker"), std::string::npos);
  EXPECT_NE(t.find("1.0 MiB / 3.2 GiB"), std::string::npos) << t;
  EXPECT_NE(t.find("best"), std::string::npos);
  EXPECT_NE(t.find("1.5s"), std::string::npos);
  EXPECT_EQ(t.find("\x1b["), std::string::npos);  // no colour unless asked

  snap.slices[0].used_bytes = snap.slices[0].limit_bytes;  // at the wall
  opt.color = true;
  t = RenderTable(snap, opt);
  EXPECT_NE(t.find("\x1b[31m"), std::string::npos);
  EXPECT_NE(t.find("\x1b[1m"), std::string::npos);
}

TEST(TopRender, NarrowTerminalShortensNamesFromTheFront) {
  TopSnapshot snap;
  snap.source = "local";
  TopSlice s;
  s.name = std::string(100, 'x') + "-tail";
  s.gpu = "GPU-12345678-aaaa-bbbb-cccc-dddddddddddd";
  s.limit_bytes = 1;
  snap.slices.push_back(s);
  FinishSnapshot(&snap);
  RenderOptions opt;
  opt.width = 80;
  std::string t = RenderTable(snap, opt);
  EXPECT_NE(t.find("~xxxxxxxxxx-tail"), std::string::npos) << t;
  EXPECT_NE(t.find("GPU-12345678 "), std::string::npos) << t;
}

TEST(TopRender, EmptySnapshotSaysSo) {
  TopSnapshot snap;
  snap.source = "local";
  std::string t = RenderTable(snap, {});
  EXPECT_NE(t.find("(no GPUs)"), std::string::npos);
  EXPECT_NE(t.find("(no slices)"), std::string::npos);
  nlohmann::json j = nlohmann::json::parse(RenderJson(snap));
  EXPECT_TRUE(j["gpus"].empty());
  EXPECT_TRUE(j["slices"].empty());
}

TEST(TopRender, JsonCarriesValuesAndNullsForUnknowns) {
  std::vector<PromSample> s;
  std::string err;
  ASSERT_TRUE(ParsePromText(kAgentMetrics, &s, &err)) << err;
  TopSnapshot snap = SnapshotFromMetrics(s, "src");
  snap.slices[0].processes.push_back({42, 777});
  nlohmann::json j = nlohmann::json::parse(RenderJson(snap));
  EXPECT_EQ(j["source"], "src");
  ASSERT_EQ(j["gpus"].size(), 2u);
  EXPECT_EQ(j["gpus"][0]["memory_total_bytes"], 17179869184ll);
  EXPECT_TRUE(j["gpus"][1]["memory_used_bytes"].is_null());
  ASSERT_EQ(j["slices"].size(), 2u);
  const auto& w = j["slices"][0];
  EXPECT_EQ(w["namespace"], "default");
  EXPECT_EQ(w["pod"], "worker-a");
  EXPECT_EQ(w["container"], "gpu-worker");
  EXPECT_EQ(w["memory_limit_bytes"], 3435973836ull);
  EXPECT_EQ(w["cap_percent"], 25);
  EXPECT_EQ(w["processes"][0]["pid"], 42);
  EXPECT_TRUE(w["throttled_seconds"].is_null());
  EXPECT_FALSE(j["slices"][1].contains("pod"));
}

}  // namespace
}  // namespace tessera::cli
