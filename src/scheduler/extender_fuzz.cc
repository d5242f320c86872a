// Fuzz target (bench/fuzz): the extender's HTTP bodies (scheduler::Extender::FilterBody and
// PrioritizeBody, the hand-written fast paths kube-scheduler calls for every GPU pod) on any bytes, over a
// view of two nodes (n1: two T4s, n2: one A100) and no API client (filter and prioritize never use it).
// Every answer is JSON: a filter result naming only nodes the request named, a priority list of
// scores 0..10.
// The HTTP server answers 500 to a handler that throws (cpp-httplib catches it), so a json exception is
// caught here as the server does.
#include <cstdint>
#include <set>
#include <string>

#include "fuzz_check.h"
#include "kube/annotations.h"
#include "scheduler/extender.h"

namespace sched = tessera::scheduler;
namespace kube = tessera::kube;
using nlohmann::json;

namespace {

json Node(const std::string& name, const std::string& model, int gpus, int64_t mib) {
  std::vector<kube::GpuInfo> g;
  for (int i = 0; i < gpus; ++i)
    g.push_back({name + "-gpu" + std::to_string(i), model, mib, 100, i % 2, true});
  return {{"metadata", {{"name", name}, {"annotations", {{kube::kAnnoGpus, kube::EncodeGpus(g)}}}}},
          {"status", {{"allocatable", {{"cpu", "64"}, {"memory", "256Gi"}}}}}};
}

sched::ClusterView* View() {
  static sched::ClusterView* view = [] {
    auto* v = new sched::ClusterView(sched::ParseOptions{});
    v->ReplaceNodes({Node("n1", "Tesla T4", 2, 15360), Node("n2", "NVIDIA A100", 1, 40960)});
    return v;
  }();
  return view;
}

// Every string anywhere in the request (the node names the answer may list are among them), and "".
void Strings(const json& j, std::set<std::string>* out) {
  if (j.is_string()) out->insert(j.get<std::string>());
  if (j.is_structured())
    for (const auto& e : j) Strings(e, out);
  if (j.is_object())
    for (const auto& [k, v] : j.items()) out->insert(k);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static sched::Metrics metrics;
  // One extender for the process (its score cache carries from one input's filter to the next's
  // prioritize only for the same pod uid, as between kube-scheduler's calls).
  static sched::Extender ext(sched::ExtenderOptions{}, View(), nullptr, &metrics, [] { return false; });
  const std::string body = tessera::fuzz::Text(data, size);
  const json args = tessera::fuzz::Json(data, size);
  try {
    const json filtered = json::parse(ext.FilterBody(body), nullptr, false);
    FUZZ_CHECK(filtered.is_object());
    if (!args.is_discarded() && filtered.contains("NodeNames") && filtered["NodeNames"].is_array()) {
      std::set<std::string> candidates = {""};
      Strings(args, &candidates);
      for (const auto& n : filtered["NodeNames"])
        FUZZ_CHECK(n.is_string() && candidates.count(n.get<std::string>()));
    }
  } catch (const json::exception&) {
  }
  try {
    // Twice: once after the filter above (its scores are reused), once without.
    for (int i = 0; i < 2; ++i) {
      const json prioritized = json::parse(ext.PrioritizeBody(body), nullptr, false);
      FUZZ_CHECK(prioritized.is_array());
      for (const auto& h : prioritized) {
        FUZZ_CHECK(h.is_object() && h.contains("Host") && h.contains("Score"));
        FUZZ_CHECK(h["Score"].is_number_integer() && h["Score"].get<int64_t>() >= 0 &&
                   h["Score"].get<int64_t>() <= 10);
      }
    }
  } catch (const json::exception&) {
  }
  return 0;
}
