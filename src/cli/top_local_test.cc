// `tessera top`'s local source against real slice files: a config and a region written through the
// slice library, read back as a snapshot. Also the endpoint URL rules and a fetch from a live HTTP server.
#include <gtest/gtest.h>
#include <httplib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <thread>

#include "cli/top_fetch.h"
#include "cli/top_local.h"
#include "slice/config.h"
#include "slice/region.h"

namespace tessera::cli {
namespace {

namespace fs = std::filesystem;

class TopLocal : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/tessera-top-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    root_ = tmpl;
  }
  void TearDown() override { fs::remove_all(root_); }

  // Writes <root>/<name>/slice.conf and returns the config.
  slice::SliceConfig WriteSlice(const std::string& name, const std::string& region_path, uint64_t mem, int cores,
                                int priority) {
    fs::create_directories(root_ + "/" + name);
    slice::SliceConfig cfg;
    slice::InitSliceConfig(&cfg);
    snprintf(cfg.name, sizeof cfg.name, "%s", name.c_str());
    snprintf(cfg.region, sizeof cfg.region, "%s", region_path.c_str());
    cfg.priority = priority;
    cfg.gpu_count = 1;
    snprintf(cfg.gpus[0].uuid, sizeof cfg.gpus[0].uuid, "GPU-11111111-2222-3333-4444-555555555555");
    cfg.gpus[0].memory_bytes = mem;
    cfg.gpus[0].cores = cores;
    char err[256];
    EXPECT_TRUE(slice::WriteSliceConfig((root_ + "/" + name + "/slice.conf").c_str(), cfg, err, sizeof err)) << err;
    return cfg;
  }

  std::string root_;
};

TEST_F(TopLocal, ReadsLimitsUsageAndProcessesFromARegion) {
  slice::SliceConfig cfg = WriteSlice("web", root_ + "/web/region", 1 << 30, 40, 0);
  slice::Region r;
  char err[256];
  ASSERT_TRUE(slice::OpenRegionForSlice(cfg, &r, err, sizeof err)) << err;
  int row = slice::ClaimRow(r.hdr);
  ASSERT_GE(row, 0);
  ASSERT_EQ(slice::TryCharge(r.hdr, row, 0, 300 << 20, false).result, slice::ChargeResult::kOk);
  // Over the wall: refused and counted.
  EXPECT_EQ(slice::TryCharge(r.hdr, row, 0, 1ull << 30, false).result, slice::ChargeResult::kOverLimit);

  // A second slice with no region yet: listed with its limits and nothing used.
  WriteSlice("batch", root_ + "/batch/region", 2ull << 30, 60, 1);

  std::vector<std::string> warnings;
  TopSnapshot snap = ReadLocalSnapshot({root_, root_ + "/does-not-exist"}, &warnings);
  EXPECT_TRUE(warnings.empty()) << warnings[0];
  ASSERT_EQ(snap.slices.size(), 2u);
  ASSERT_EQ(snap.gpus.size(), 1u);
  EXPECT_EQ(snap.gpus[0].slices, 2);
  EXPECT_EQ(snap.gpus[0].allocated_bytes, (1ull << 30) + (2ull << 30));
  const TopSlice& batch = snap.slices[0];  // sorted by name within the GPU
  const TopSlice& web = snap.slices[1];
  EXPECT_EQ(batch.name, "batch");
  EXPECT_EQ(batch.limit_bytes, 2ull << 30);
  EXPECT_EQ(batch.used_bytes, 0u);
  EXPECT_EQ(batch.cap_percent, 60);
  EXPECT_EQ(batch.priority, 1);
  EXPECT_EQ(web.name, "web");
  EXPECT_EQ(web.limit_bytes, 1u << 30);
  EXPECT_EQ(web.used_bytes, 300u << 20);
  EXPECT_EQ(web.cap_percent, 40);
  EXPECT_EQ(web.priority, 0);
  EXPECT_EQ(web.wall_refusals, 1);
  ASSERT_EQ(web.process_count, 1);
  ASSERT_EQ(web.processes.size(), 1u);
  EXPECT_EQ(web.processes[0].pid, getpid());
  EXPECT_EQ(web.processes[0].bytes, 300u << 20);
  slice::ReleaseRow(r.hdr, row);
  slice::CloseRegion(&r);
}

TEST_F(TopLocal, FindsTheRegionUnderTheNodeLayout) {
  // The agent writes the container's path into the config; on the host the file sits under region/.
  fs::create_directories(root_ + "/pod-a/region");
  slice::SliceConfig cfg = WriteSlice("pod-a", root_ + "/pod-a/region/pod-a.region", 512 << 20, 25, 1);
  slice::Region r;
  char err[256];
  ASSERT_TRUE(slice::OpenRegionForSlice(cfg, &r, err, sizeof err)) << err;
  slice::CloseRegion(&r);
  cfg = WriteSlice("pod-a", "/run/tessera/region/pod-a.region", 512 << 20, 25, 1);
  std::vector<std::string> warnings;
  TopSnapshot snap = ReadLocalSnapshot({root_}, &warnings);
  ASSERT_EQ(snap.slices.size(), 1u);
  EXPECT_EQ(snap.slices[0].limit_bytes, 512u << 20);
  EXPECT_EQ(snap.slices[0].process_count, 0);
  EXPECT_GE(snap.slices[0].throttled_seconds, 0);  // read from the region, not the config-only fallback
}

TEST_F(TopLocal, NamesSlicesByTheirPodOnANode) {
  WriteSlice("s-1", root_ + "/s-1/region/slice.region", 1 << 20, 50, 1);
  std::ofstream(root_ + "/s-1/owner.json")
      << R"({"namespace":"ml","pod":"trainer-0","pod_uid":"u","container":"main","device_ids":[],"verified":true})";
  std::vector<std::string> warnings;
  TopSnapshot snap = ReadLocalSnapshot({root_}, &warnings);
  ASSERT_EQ(snap.slices.size(), 1u);
  EXPECT_EQ(snap.slices[0].name, "ml/trainer-0/main");
  EXPECT_EQ(snap.slices[0].pod, "trainer-0");
  // A broken owner.json leaves the slice under its own name.
  std::ofstream(root_ + "/s-1/owner.json") << "{not json";
  snap = ReadLocalSnapshot({root_}, &warnings);
  ASSERT_EQ(snap.slices.size(), 1u);
  EXPECT_EQ(snap.slices[0].name, "s-1");
}

TEST_F(TopLocal, BrokenConfigIsAWarningNotAFailure) {
  fs::create_directories(root_ + "/bad");
  FILE* f = fopen((root_ + "/bad/slice.conf").c_str(), "w");
  fputs("version=1\nslice=bad\n", f);
  fclose(f);
  std::vector<std::string> warnings;
  TopSnapshot snap = ReadLocalSnapshot({root_}, &warnings);
  EXPECT_TRUE(snap.slices.empty());
  ASSERT_EQ(warnings.size(), 1u);
  EXPECT_NE(warnings[0].find("bad/slice.conf"), std::string::npos) << warnings[0];
}

TEST(TopFetch, NormalizesEndpoints) {
  std::string url, err;
  ASSERT_TRUE(NormalizeMetricsUrl("node1:9394", &url, &err)) << err;
  EXPECT_EQ(url, "http://node1:9394/metrics");
  ASSERT_TRUE(NormalizeMetricsUrl("http://10.0.0.1:31992/", &url, &err));
  EXPECT_EQ(url, "http://10.0.0.1:31992/metrics");
  ASSERT_TRUE(NormalizeMetricsUrl("http://h:1/custom", &url, &err));
  EXPECT_EQ(url, "http://h:1/custom");
  ASSERT_TRUE(NormalizeMetricsUrl("[::1]:9394", &url, &err));
  EXPECT_EQ(url, "http://[::1]:9394/metrics");
  EXPECT_FALSE(NormalizeMetricsUrl("node1", &url, &err));
  EXPECT_NE(err.find("expected host:port"), std::string::npos);
  EXPECT_FALSE(NormalizeMetricsUrl("node1:70000", &url, &err));
  EXPECT_NE(err.find("1..65535"), std::string::npos);
  EXPECT_FALSE(NormalizeMetricsUrl("https://node1:9394", &url, &err));
  EXPECT_NE(err.find("https"), std::string::npos);
}

TEST(TopFetch, FetchesFromALiveServerAndReportsHttpErrors) {
  httplib::Server srv;
  srv.Get("/metrics", [](const httplib::Request&, httplib::Response& res) {
    res.set_content("m 1\n", "text/plain; version=0.0.4");
  });
  int port = srv.bind_to_any_port("127.0.0.1");
  ASSERT_GT(port, 0);
  // bind_to_any_port already listens, so requests queue until the loop starts.
  std::thread t([&] { srv.listen_after_bind(); });
  std::string body, err;
  EXPECT_TRUE(FetchText("http://127.0.0.1:" + std::to_string(port) + "/metrics", 5, &body, &err)) << err;
  EXPECT_EQ(body, "m 1\n");
  EXPECT_FALSE(FetchText("http://127.0.0.1:" + std::to_string(port) + "/nope", 5, &body, &err));
  EXPECT_NE(err.find("HTTP 404"), std::string::npos) << err;
  srv.stop();
  t.join();
  EXPECT_FALSE(FetchText("http://127.0.0.1:" + std::to_string(port) + "/metrics", 1, &body, &err));
}

}  // namespace
}  // namespace tessera::cli
