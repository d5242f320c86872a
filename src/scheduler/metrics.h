// Scheduler metrics in Prometheus text format (port 9395): HAMi's allocation gauges under their usual
// names and labels (GPUDeviceSharedNum, GPUDeviceCoreLimit/Allocated, GPUDeviceMemoryLimit/Allocated,
// vGPUCoreAllocated, vGPUMemoryAllocated, QuotaUsed) so existing dashboards keep working, plus tessera_*
// metrics: extender latency histograms per verb, binds and bind failures by reason, leader status.
//
// Counters and histograms are updated by extender threads (lock-free atomics / a small mutex);
// Render() is called by the metrics HTTP thread and reads the ClusterView. Thread-safe.
#pragma once

#include <array>
#include <atomic>
#include <map>
#include <mutex>
#include <ostream>
#include <string>

#include "scheduler/view.h"

namespace tessera::scheduler {

class Metrics {
 public:
  enum Verb { kFilter = 0, kPrioritize, kBind, kMutate, kValidate, kVerbCount };
  static const char* VerbName(Verb v);

  void ObserveLatency(Verb v, double seconds);
  void CountBind();
  void CountBindFailure(const std::string& reason);  // reason: a short CamelCase tag
  void CountAdmission(bool allowed);
  void SetLeader(bool leader) { leader_.store(leader); }
  bool leader() const { return leader_.load(); }

  // hami_names=false drops the HAMi-named gauges: their camelCase names are what dashboards expect, but
  // promtool's linter reports them.
  std::string Render(const ClusterView& view, bool hami_names = true) const;

 private:
  void RenderHami(const ClusterView& view, std::ostream& o) const;
  void RenderTessera(const ClusterView& view, std::ostream& o) const;
  static constexpr std::array<double, 14> kBuckets = {0.00025, 0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075,
                                                       0.01,    0.025,  0.05,  0.1,   0.25,  0.5,   1.0};
  struct Hist {
    std::array<std::atomic<uint64_t>, kBuckets.size() + 1> counts{};
    std::atomic<uint64_t> sum_ns{0};
    std::atomic<uint64_t> n{0};
  };
  std::array<Hist, kVerbCount> hist_;
  std::atomic<uint64_t> binds_{0};
  std::atomic<uint64_t> admissions_allowed_{0};
  std::atomic<uint64_t> admissions_denied_{0};
  mutable std::mutex mu_;
  std::map<std::string, uint64_t> bind_failures_;
  std::atomic<bool> leader_{false};
};

}  // namespace tessera::scheduler
