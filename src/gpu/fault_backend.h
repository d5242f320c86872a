// FaultBackend: wraps a Backend and makes chosen calls fail, to test the agent under errors.
//
// Tests (and `tessera agent --backend sim` with TESSERA_GPU_FAULTS set, see ParseFaultPlan) set a
// FaultPlan; every call first consults it. Counters count down ("fail the next N calls"), so a test can
// express "NVML init fails twice, then works" exactly. Thread-safe: the plan may change while another
// thread waits for events.
#pragma once

#include <memory>
#include <mutex>
#include <set>
#include <string>

#include "gpu/backend.h"

namespace tessera::gpu {

struct FaultPlan {
  int fail_init = 0;             // fail the next N Init() calls
  int fail_discover = 0;         // fail the next N Discover() calls
  int fail_usage = 0;            // fail the next N Usage() calls
  int fail_wait = 0;             // fail the next N WaitHealthEvent() calls
  int fail_processes = 0;        // fail the next N Processes() calls
  std::set<std::string> hidden;  // UUIDs Discover() leaves out (a GPU that vanished)
};

// "init=2,discover=1,usage=3,wait=1,processes=2,hide=GPU-a;GPU-b" → FaultPlan. Error names the bad item.
Status ParseFaultPlan(const std::string& text, FaultPlan* out);

class FaultBackend : public Backend {
 public:
  explicit FaultBackend(std::unique_ptr<Backend> inner, FaultPlan plan = {});

  void SetPlan(FaultPlan plan);
  FaultPlan plan() const;
  Backend* inner() { return inner_.get(); }

  std::string Name() const override { return "fault(" + inner_->Name() + ")"; }
  Status Init() override;
  Status Discover(std::vector<GpuInfo>* out) override;
  Status Usage(const std::string& uuid, GpuUsage* out) override;
  Status Processes(const std::string& uuid, std::vector<ProcessUsage>* out) override;
  Status WaitHealthEvent(std::chrono::milliseconds timeout, std::optional<HealthEvent>* event) override;

 private:
  bool Take(int FaultPlan::*counter);

  std::unique_ptr<Backend> inner_;
  mutable std::mutex mu_;
  FaultPlan plan_;
};

}  // namespace tessera::gpu
