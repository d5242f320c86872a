// SimBackend: GPUs described in a file, for tests, the demo and CI machines without a GPU.
//
// The file is YAML (JSON is accepted too, YAML being its superset):
//
//   gpus:
//     - uuid: GPU-5f7a2c1e-0000-4000-8000-000000000001   # required, unique, "GPU-" + letters/digits/dashes
//       model: NVIDIA A100-SXM4-80GB                     # required
//       memory_mib: 81920                                 # required, 1..16777216
//       numa: 0                                           # optional, -1..1023 (default -1: unknown)
//       healthy: true                                     # optional (default true)
//       utilization: 0                                    # optional percent 0..100 (default 0)
//       memory_used_mib: 0                                # optional, <= memory_mib (default 0)
//       processes:                                        # optional: what Processes() lists
//         - pid: 4242                                     # required, 1..4194304, unique per GPU
//           memory_used_mib: 512                          # required, <= memory_mib; or
//           # memory_unknown: true                        # listed without a figure
//       compute_capability: "8.0"                         # optional, at most 16 characters (default unknown)
//       driver_version: "570.86.15"                       # optional, at most 32 characters (default unknown)
//       sms: 132                                          # optional, SM count 1..4096 (default unknown)
//       links: {GPU-...-0002: NV4, GPU-...-0003: SYS}     # optional, link to other GPUs (gpu/topology.h);
//                                                         # one side is enough, both must agree
//   events:                                               # optional scripted health changes
//     - after_ms: 1500                                    # since Init()
//       uuid: GPU-5f7a2c1e-0000-4000-8000-000000000001
//       healthy: false
//       reason: "Xid 79"
//
// Editing the file while the agent runs also produces events: when `healthy` of a GPU changes, the
// next WaitHealthEvent() reports it (the set of GPUs itself may not change without a restart).
// Unknown keys are errors, so a typo is caught instead of silently ignored. Thread-safe.
#pragma once

#include <chrono>
#include <condition_variable>
#include <deque>
#include <filesystem>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "gpu/backend.h"

namespace tessera::gpu {

struct SimEvent {
  std::chrono::milliseconds after{0};
  HealthEvent event;
};

struct SimSpec {
  struct Gpu {
    GpuInfo info;
    int utilization_percent = 0;
    uint64_t memory_used_bytes = 0;
    std::vector<ProcessUsage> processes;
  };
  std::vector<Gpu> gpus;
  std::vector<SimEvent> events;  // sorted by `after`
};

// Parses and validates a simulator description. `source` names the text in error messages.
Status ParseSimSpec(const std::string& text, const std::string& source, SimSpec* out);

class SimBackend : public Backend {
 public:
  // From a file; the file is re-read when it changes (see above). Empty path: `spec` only.
  static Status FromFile(const std::filesystem::path& path, std::unique_ptr<SimBackend>* out);
  explicit SimBackend(SimSpec spec, std::filesystem::path path = {});

  std::string Name() const override { return "sim"; }
  Status Init() override;
  Status Discover(std::vector<GpuInfo>* out) override;
  Status Usage(const std::string& uuid, GpuUsage* out) override;
  Status WaitHealthEvent(std::chrono::milliseconds timeout, std::optional<HealthEvent>* event) override;

  // Queues a health change as if the hardware had reported it (tests, `tessera agent` debug hooks).
  // Fails for an unknown UUID.
  Status InjectHealthEvent(const HealthEvent& event);
  // Sets what Usage() reports for one GPU (tests of the metrics path).
  Status SetUsage(const std::string& uuid, uint64_t memory_used_bytes, int utilization_percent);
  // Sets the processes one GPU lists (tests of the watchdog). Fails for an unknown UUID.
  Status SetProcesses(const std::string& uuid, std::vector<ProcessUsage> processes);
  Status Processes(const std::string& uuid, std::vector<ProcessUsage>* out) override;

 private:
  // Re-reads the file when its modification time changed; queues health changes. Caller holds mu_.
  Status ReloadIfChangedLocked();
  SimSpec::Gpu* FindLocked(const std::string& uuid);
  void ApplyLocked(const HealthEvent& event);

  std::mutex mu_;
  std::condition_variable cv_;
  SimSpec spec_;
  std::filesystem::path path_;
  std::filesystem::file_time_type mtime_{};
  std::chrono::steady_clock::time_point started_{};
  bool initialised_ = false;
  size_t next_scripted_ = 0;
  std::deque<HealthEvent> pending_;
};

}  // namespace tessera::gpu
