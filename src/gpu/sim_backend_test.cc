#include "gpu/sim_backend.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <thread>

namespace tessera::gpu {
namespace {

const char* kTwoGpus = R"(
gpus:
  - uuid: GPU-00000000-0000-4000-8000-000000000001
    model: NVIDIA A100-SXM4-80GB
    memory_mib: 81920
    numa: 0
  - uuid: GPU-00000000-0000-4000-8000-000000000002
    model: NVIDIA A100-SXM4-80GB
    memory_mib: 81920
    numa: 1
    healthy: false
    utilization: 40
    memory_used_mib: 1024
)";

TEST(SimSpec, ParsesYaml) {
  SimSpec spec;
  Status st = ParseSimSpec(kTwoGpus, "t", &spec);
  ASSERT_TRUE(st.ok()) << st.message();
  ASSERT_EQ(spec.gpus.size(), 2u);
  EXPECT_EQ(spec.gpus[0].info.uuid, "GPU-00000000-0000-4000-8000-000000000001");
  EXPECT_EQ(spec.gpus[0].info.memory_bytes, 81920ull << 20);
  EXPECT_EQ(spec.gpus[0].info.numa_node, 0);
  EXPECT_TRUE(spec.gpus[0].info.healthy);
  EXPECT_EQ(spec.gpus[1].info.index, 1);
  EXPECT_EQ(spec.gpus[1].info.numa_node, 1);
  EXPECT_FALSE(spec.gpus[1].info.healthy);
  EXPECT_EQ(spec.gpus[1].utilization_percent, 40);
  EXPECT_EQ(spec.gpus[1].memory_used_bytes, 1024ull << 20);
}

TEST(SimSpec, ParsesJson) {
  SimSpec spec;
  Status st = ParseSimSpec(
      R"({"gpus": [{"uuid": "GPU-abc", "model": "T4", "memory_mib": 15360}],
          "events": [{"after_ms": 5, "uuid": "GPU-abc", "healthy": false, "reason": "Xid 79"}]})",
      "j", &spec);
  ASSERT_TRUE(st.ok()) << st.message();
  ASSERT_EQ(spec.gpus.size(), 1u);
  EXPECT_EQ(spec.gpus[0].info.numa_node, -1);
  ASSERT_EQ(spec.events.size(), 1u);
  EXPECT_EQ(spec.events[0].event.reason, "Xid 79");
}

struct BadCase {
  const char* name;
  const char* text;
  const char* expect;  // substring of the error
};

TEST(SimSpec, RejectsBadInputNamingTheField) {
  const BadCase cases[] = {
      {"not yaml", "gpus: [", "not valid YAML"},
      {"no gpus", "events: []", "gpus: must be a non-empty list"},
      {"empty gpus", "gpus: []", "gpus: must be a non-empty list"},
      {"scalar top", "42", "top level must be a mapping"},
      {"unknown top key", "gpus: [{uuid: GPU-a, model: m, memory_mib: 1}]\nextra: 1", "unknown key 'extra'"},
      {"missing uuid", "gpus: [{model: m, memory_mib: 1}]", "gpus[0].uuid: required"},
      {"bad uuid", "gpus: [{uuid: gpu-1, model: m, memory_mib: 1}]", "gpus[0].uuid: 'gpu-1'"},
      {"uuid odd chars", "gpus: [{uuid: GPU-x_y, model: m, memory_mib: 1}]", "must be 'GPU-'"},
      {"missing model", "gpus: [{uuid: GPU-a, memory_mib: 1}]", "gpus[0].model: required"},
      {"memory zero", "gpus: [{uuid: GPU-a, model: m, memory_mib: 0}]",
       "memory_mib: '0' is not an integer in [1, 16777216]"},
      {"memory float", "gpus: [{uuid: GPU-a, model: m, memory_mib: 1.5}]", "memory_mib: '1.5'"},
      {"memory text", "gpus: [{uuid: GPU-a, model: m, memory_mib: lots}]", "memory_mib: 'lots'"},
      {"numa range", "gpus: [{uuid: GPU-a, model: m, memory_mib: 1, numa: 5000}]",
       "numa: '5000' is not an integer in [-1, 1023]"},
      {"healthy word", "gpus: [{uuid: GPU-a, model: m, memory_mib: 1, healthy: maybe}]",
       "healthy: must be true or false"},
      {"util range", "gpus: [{uuid: GPU-a, model: m, memory_mib: 1, utilization: 101}]",
       "utilization: '101'"},
      {"used > total", "gpus: [{uuid: GPU-a, model: m, memory_mib: 10, memory_used_mib: 11}]",
       "memory_used_mib: '11' is not an integer in [0, 10]"},
      {"dup uuid", "gpus: [{uuid: GPU-a, model: m, memory_mib: 1}, {uuid: GPU-a, model: m, memory_mib: 1}]",
       "gpus[1].uuid: 'GPU-a' appears twice"},
      {"typo key", "gpus: [{uuid: GPU-a, model: m, memory_mb: 1}]", "unknown key 'memory_mb'"},
      {"event unknown gpu",
       "gpus: [{uuid: GPU-a, model: m, memory_mib: 1}]\nevents: [{after_ms: 1, uuid: GPU-b, healthy: false}]",
       "events[0].uuid: 'GPU-b' is not one of the gpus"},
      {"event no healthy",
       "gpus: [{uuid: GPU-a, model: m, memory_mib: 1}]\nevents: [{after_ms: 1, uuid: GPU-a}]",
       "events[0].healthy: required"},
      {"event negative",
       "gpus: [{uuid: GPU-a, model: m, memory_mib: 1}]\nevents: [{after_ms: -1, uuid: GPU-a, healthy: true}]",
       "after_ms: '-1'"},
  };
  for (const auto& c : cases) {
    SimSpec spec;
    spec.gpus.resize(3);  // must stay untouched on failure
    Status st = ParseSimSpec(c.text, "f.yaml", &spec);
    EXPECT_FALSE(st.ok()) << c.name;
    EXPECT_NE(st.message().find(c.expect), std::string::npos) << c.name << ": got '" << st.message() << "'";
    EXPECT_EQ(spec.gpus.size(), 3u) << c.name << ": half-applied";
  }
}

TEST(SimBackend, DiscoverAndUsage) {
  SimSpec spec;
  ASSERT_TRUE(ParseSimSpec(kTwoGpus, "t", &spec).ok());
  SimBackend b(spec);
  std::vector<GpuInfo> gpus;
  EXPECT_FALSE(b.Discover(&gpus).ok());  // before Init
  ASSERT_TRUE(b.Init().ok());
  ASSERT_TRUE(b.Discover(&gpus).ok());
  ASSERT_EQ(gpus.size(), 2u);
  GpuUsage u;
  ASSERT_TRUE(b.Usage(gpus[1].uuid, &u).ok());
  EXPECT_EQ(u.utilization_percent, 40);
  EXPECT_EQ(u.memory_used_bytes, 1024ull << 20);
  EXPECT_FALSE(b.Usage("GPU-nope", &u).ok());
  ASSERT_TRUE(b.SetUsage(gpus[0].uuid, 5, 7).ok());
  ASSERT_TRUE(b.Usage(gpus[0].uuid, &u).ok());
  EXPECT_EQ(u.utilization_percent, 7);
  EXPECT_FALSE(b.SetUsage(gpus[0].uuid, 5, 101).ok());
}

TEST(SimBackend, InjectedEventChangesHealth) {
  SimSpec spec;
  ASSERT_TRUE(ParseSimSpec(kTwoGpus, "t", &spec).ok());
  SimBackend b(spec);
  ASSERT_TRUE(b.Init().ok());
  std::optional<HealthEvent> ev;
  ASSERT_TRUE(b.WaitHealthEvent(std::chrono::milliseconds(0), &ev).ok());
  EXPECT_FALSE(ev.has_value());
  EXPECT_FALSE(b.InjectHealthEvent({"GPU-unknown", false, "x"}).ok());
  std::thread t([&] {
    EXPECT_TRUE(b.InjectHealthEvent({"GPU-00000000-0000-4000-8000-000000000001", false, "Xid 79"}).ok());
  });
  ASSERT_TRUE(b.WaitHealthEvent(std::chrono::seconds(10), &ev).ok());
  t.join();
  ASSERT_TRUE(ev.has_value());
  EXPECT_EQ(ev->reason, "Xid 79");
  std::vector<GpuInfo> gpus;
  ASSERT_TRUE(b.Discover(&gpus).ok());
  EXPECT_FALSE(gpus[0].healthy);
  EXPECT_EQ(gpus[0].health_reason, "Xid 79");
}

TEST(SimBackend, ScriptedEventsArriveInOrder) {
  SimSpec spec;
  ASSERT_TRUE(ParseSimSpec(R"(
gpus: [{uuid: GPU-a, model: m, memory_mib: 1}]
events:
  - {after_ms: 30, uuid: GPU-a, healthy: true}
  - {after_ms: 10, uuid: GPU-a, healthy: false, reason: "Xid 48"}
)",
                           "t", &spec)
                  .ok());
  SimBackend b(spec);
  ASSERT_TRUE(b.Init().ok());
  std::optional<HealthEvent> ev;
  ASSERT_TRUE(b.WaitHealthEvent(std::chrono::seconds(10), &ev).ok());
  ASSERT_TRUE(ev.has_value());
  EXPECT_FALSE(ev->healthy);
  EXPECT_EQ(ev->reason, "Xid 48");
  ASSERT_TRUE(b.WaitHealthEvent(std::chrono::seconds(10), &ev).ok());
  ASSERT_TRUE(ev.has_value());
  EXPECT_TRUE(ev->healthy);
}

TEST(SimBackend, FileEditBecomesEvent) {
  auto dir = std::filesystem::temp_directory_path() / ("tessera-sim-" + std::to_string(getpid()));
  std::filesystem::create_directories(dir);
  auto path = dir / "gpus.yaml";
  auto write = [&](bool healthy) {
    std::ofstream out(path, std::ios::trunc);
    out << "gpus: [{uuid: GPU-a, model: m, memory_mib: 1, healthy: " << (healthy ? "true" : "false")
        << "}]\n";
  };
  write(true);
  std::unique_ptr<SimBackend> b;
  ASSERT_TRUE(SimBackend::FromFile(path, &b).ok());
  ASSERT_TRUE(b->Init().ok());
  write(false);
  // mtime granularity: make the change visible even on coarse-timestamp filesystems.
  std::filesystem::last_write_time(path,
                                   std::filesystem::file_time_type::clock::now() + std::chrono::seconds(2));
  std::optional<HealthEvent> ev;
  ASSERT_TRUE(b->WaitHealthEvent(std::chrono::seconds(10), &ev).ok());
  ASSERT_TRUE(ev.has_value());
  EXPECT_EQ(ev->uuid, "GPU-a");
  EXPECT_FALSE(ev->healthy);
  // A broken edit is reported and the previous GPUs stay.
  {
    std::ofstream out(path, std::ios::trunc);
    out << "gpus: [";
  }
  std::filesystem::last_write_time(path,
                                   std::filesystem::file_time_type::clock::now() + std::chrono::seconds(4));
  Status st = b->WaitHealthEvent(std::chrono::seconds(1), &ev);
  EXPECT_FALSE(st.ok());
  EXPECT_NE(st.message().find("keeping the previous GPUs"), std::string::npos);
  std::vector<GpuInfo> gpus;
  ASSERT_TRUE(b->Discover(&gpus).ok());
  EXPECT_EQ(gpus.size(), 1u);
  std::filesystem::remove_all(dir);
}

TEST(SimBackend, MissingFile) {
  std::unique_ptr<SimBackend> b;
  Status st = SimBackend::FromFile("/nonexistent/gpus.yaml", &b);
  EXPECT_FALSE(st.ok());
  EXPECT_NE(st.message().find("/nonexistent/gpus.yaml"), std::string::npos);
}

TEST(SimSpec, ProcessesListedPerGpuAndSetByTests) {
  SimSpec spec;
  Status st = ParseSimSpec(R"(
gpus:
  - uuid: GPU-a
    model: m
    memory_mib: 1024
    processes:
      - {pid: 41, memory_used_mib: 300}
      - {pid: 42, memory_unknown: true}
  - {uuid: GPU-b, model: m, memory_mib: 1024}
)",
                           "p", &spec);
  ASSERT_TRUE(st.ok()) << st.message();
  SimBackend b(spec);
  ASSERT_TRUE(b.Init().ok());
  std::vector<ProcessUsage> procs;
  ASSERT_TRUE(b.Processes("GPU-a", &procs).ok());
  EXPECT_EQ(procs, (std::vector<ProcessUsage>{{41, 300ull << 20, true}, {42, 0, false}}));
  GpuUsage u;
  ASSERT_TRUE(b.Usage("GPU-a", &u).ok());
  EXPECT_EQ(u.processes, procs);  // Usage() carries the same list
  ASSERT_TRUE(b.Processes("GPU-b", &procs).ok());
  EXPECT_TRUE(procs.empty());
  ASSERT_TRUE(b.SetProcesses("GPU-b", {{7, 5ull << 20, true}}).ok());
  ASSERT_TRUE(b.Processes("GPU-b", &procs).ok());
  EXPECT_EQ(procs, (std::vector<ProcessUsage>{{7, 5ull << 20, true}}));
  EXPECT_FALSE(b.SetProcesses("GPU-zz", {}).ok());
  EXPECT_FALSE(b.Processes("GPU-zz", &procs).ok());
}

TEST(SimSpec, BadProcessesNameTheField) {
  struct Case {
    const char* procs;
    const char* expect;
  } cases[] = {
      {"processes: 3", "gpus[0].processes: must be a list"},
      {"processes: [{memory_used_mib: 1}]", "gpus[0].processes[0].pid: required"},
      {"processes: [{pid: 0, memory_used_mib: 1}]", "gpus[0].processes[0].pid: '0' is not an integer in [1, 4194304]"},
      {"processes: [{pid: 5, memory_used_mib: 2048}]", "processes[0].memory_used_mib: '2048' is not an integer in [0, 1024]"},
      {"processes: [{pid: 5}]", "processes[0]: give exactly one of memory_used_mib and memory_unknown: true"},
      {"processes: [{pid: 5, memory_used_mib: 1}, {pid: 5, memory_used_mib: 2}]", "processes[1].pid: 5 appears twice"},
      {"processes: [{pid: 5, memory_used_mib: 1, rss: 2}]", "processes[0]: unknown key 'rss'"},
  };
  for (const auto& c : cases) {
    SimSpec spec;
    Status st = ParseSimSpec(std::string("gpus: [{uuid: GPU-a, model: m, memory_mib: 1024, ") +
                                 c.procs + "}]",
                             "f", &spec);
    ASSERT_FALSE(st.ok()) << c.procs;
    EXPECT_NE(st.message().find(c.expect), std::string::npos) << st.message();
  }
}

}  // namespace
}  // namespace tessera::gpu
