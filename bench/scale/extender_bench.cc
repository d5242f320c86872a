// tessera_extender_bench: the extender's filter and prioritize handlers at 5,000 nodes, without HTTP or an
// API server, so their own cost can be read apart from the machine's TLS and kube-scheduler work.
//
//   tessera_extender_bench [--nodes 5000] [--calls 2000] [--full-percent 60] [--profile CALLS]
//
// Builds a ClusterView of --nodes simulated nodes (8 GPUs each, the inventory of bench/scale/run), fills
// --full-percent of them with exclusive pods so those fail the filter, then times FilterBody and
// PrioritizeBody the way kube-scheduler calls them with nodeCacheCapable (the pod plus every node name;
// prioritize gets the nodes filter passed). Two phases: "quiet" (nothing else running) and "busy" (a
// watch thread upserting pods, ~2,000 events/s, and a bind thread reserving slices, ~500/s, meanwhile, as
// during a burst). Prints
// p50 / p99 / max in ms of wall time and of the calling thread's CPU time per verb and phase, one JSON
// line each. --profile N only calls FilterBody N times on one body (to run under `perf record`).
// Not part of `make test`.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <ctime>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "kube/annotations.h"
#include "scheduler/extender.h"

using nlohmann::json;
namespace kube = tessera::kube;
namespace sched = tessera::scheduler;

namespace {

json NodeJson(const std::string& name, int i) {
  std::vector<kube::GpuInfo> inv;
  for (int g = 0; g < 8; ++g)
    inv.push_back({"GPU-" + name + "-" + std::to_string(g), i % 3 ? "A100" : "T4", i % 3 ? 40960 : 15360, 100, g / 4,
                   true});
  json res = {{"cpu", "64"}, {"memory", "256Gi"}, {"pods", "1000"}, {"nvidia.com/gpu", "80"}};
  return {{"metadata",
           {{"name", name},
            {"labels", {{"kubernetes.io/hostname", name}}},
            {"annotations", {{kube::kAnnoGpus, kube::EncodeGpus(inv)}}}}},
          {"status", {{"capacity", res}, {"allocatable", res}}}};
}

// A pod the way kube-scheduler sends it: metadata with managedFields, spec, status.
json PodJson(const std::string& name, const std::string& uid, const std::string& node, const json& limits,
             const std::map<std::string, std::string>& annotations = {}) {
  json pod = {
      {"metadata",
       {{"name", name},
        {"namespace", "bench"},
        {"uid", uid},
        {"resourceVersion", "1234"},
        {"creationTimestamp", "2026-11-25T19:00:00Z"},
        {"annotations", annotations},
        {"managedFields",
         json::array({{{"manager", "tessera_scale_bench"},
                       {"operation", "Update"},
                       {"apiVersion", "v1"},
                       {"time", "2026-11-25T19:00:00Z"},
                       {"fieldsType", "FieldsV1"},
                       {"fieldsV1", {{"f:spec", {{"f:containers", {{"k:{\"name\":\"c\"}", json::object()}}}}}}}}})}}},
      {"spec",
       {{"schedulerName", "tessera-bench"},
        {"containers",
         json::array({{{"name", "c"},
                       {"image", "busybox"},
                       {"resources", {{"requests", {{"cpu", "10m"}, {"memory", "16Mi"}}}, {"limits", limits}}},
                       {"terminationMessagePath", "/dev/termination-log"},
                       {"imagePullPolicy", "Always"}}})},
        {"restartPolicy", "Always"},
        {"dnsPolicy", "ClusterFirst"},
        {"priority", 0},
        {"tolerations",
         json::array({{{"key", "node.kubernetes.io/not-ready"}, {"operator", "Exists"}, {"effect", "NoExecute"}},
                      {{"key", "node.kubernetes.io/unreachable"}, {"operator", "Exists"}, {"effect", "NoExecute"}}})}}},
      {"status", {{"phase", "Pending"}, {"qosClass", "Burstable"}}}};
  if (!node.empty()) pod["spec"]["nodeName"] = node;
  return pod;
}

double ThreadCpuMs() {
  timespec ts{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

// Wall time (what kube-scheduler waits) and this thread's CPU time (what the handler costs, apart from
// the other processes sharing the machine).
struct Stats {
  std::vector<double> wall, cpu;
  std::chrono::steady_clock::time_point t0;
  double c0 = 0;
  void Start() {
    c0 = ThreadCpuMs();
    t0 = std::chrono::steady_clock::now();
  }
  void Stop() {
    wall.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
    cpu.push_back(ThreadCpuMs() - c0);
  }
  static double Q(std::vector<double>& v, double p) {
    std::sort(v.begin(), v.end());
    return v.empty() ? 0 : v[std::min(v.size() - 1, static_cast<size_t>(p * v.size()))];
  }
};

}  // namespace

int main(int argc, char** argv) {
  std::map<std::string, std::string> f;
  for (int i = 1; i + 1 < argc; i += 2) f[argv[i]] = argv[i + 1];
  int nodes = f.count("--nodes") ? std::stoi(f["--nodes"]) : 5000;
  int calls = f.count("--calls") ? std::stoi(f["--calls"]) : 2000;
  int full_percent = f.count("--full-percent") ? std::stoi(f["--full-percent"]) : 60;

  sched::ParseOptions po;
  sched::ClusterView view(po);
  std::vector<json> items;
  std::vector<std::string> names;
  for (int i = 0; i < nodes; ++i) {
    names.push_back("sn-" + std::to_string(i));
    items.push_back(NodeJson(names.back(), i));
  }
  view.ReplaceNodes(items);
  std::vector<json> pods;
  for (int i = 0; i < nodes; ++i) {
    if (i % 100 >= full_percent) continue;
    for (int g = 0; g < 8; ++g) {
      kube::ContainerDevices devs = {{{"GPU-" + names[i] + "-" + std::to_string(g), i % 3 ? 40960 : 15360, 100}}};
      std::string n = "full-" + std::to_string(i) + "-" + std::to_string(g);
      pods.push_back(PodJson(n, "uid-" + n, names[i], {{"nvidia.com/gpu", "1"}},
                             {{kube::kAnnoAssignedNode, names[i]}, {kube::kAnnoDevices, kube::EncodeDevices(devs)}}));
    }
  }
  view.ReplacePods(pods);
  pods.clear();

  sched::ExtenderOptions eo;
  sched::Metrics metrics;
  sched::Extender ext(eo, &view, nullptr, &metrics, [] { return true; });
  const json limits = {{"nvidia.com/gpu", "1"}, {"nvidia.com/gpucores", "10"}, {"nvidia.com/gpumem-percentage", "10"}};

  if (f.count("--profile")) {  // only FilterBody on one body, for `perf record`
    json args = {{"Pod", PodJson("p", "uid-p", "", limits)}, {"NodeNames", names}};
    std::string body = args.dump();
    size_t n = 0;
    for (int c = 0; c < std::stoi(f["--profile"]); ++c) n += ext.FilterBody(body).size();
    std::printf("{\"profiled_calls\": %s, \"bytes\": %zu}\n", f["--profile"].c_str(), n);
    return 0;
  }
  for (const char* phase : {"quiet", "busy"}) {
    bool busy = std::string(phase) == "busy";
    std::atomic<bool> stop{false};
    std::vector<std::thread> bg;
    if (busy) {
      // The watch: pending pods arriving and changing (no holdings), as kube-scheduler's burst creates them.
      bg.emplace_back([&] {
        for (int k = 0; !stop; ++k) {
          std::string n = "pending-" + std::to_string(k % 20000);
          view.OnPod(kube::EventType::kModified, PodJson(n, "uid-" + n, "", limits));
          std::this_thread::sleep_for(std::chrono::microseconds(500));  // ~2,000 watch events/s
        }
      });
      // Binds: a slice reserved on a node with room, as the bind verb does.
      bg.emplace_back([&] {
        auto parsed = sched::ParsePod(PodJson("b", "", "", limits), po);
        tessera::placement::Engine engine;
        for (int k = 0; !stop; ++k) {
          parsed->uid = "bind-" + std::to_string(k);
          parsed->name = parsed->uid;
          int node = full_percent + (k % (100 - full_percent)) + 100 * (k % (nodes / 100));
          (void)view.Reserve(*parsed, names[node % nodes], engine);
          std::this_thread::sleep_for(std::chrono::microseconds(2000));  // ~500 binds/s offered
        }
      });
    }
    Stats filter, prioritize;
    size_t failed_nodes = 0, passed_nodes = 0;
    for (int c = 0; c < calls; ++c) {
      std::string uid = std::string(phase) + "-" + std::to_string(c);
      json args = {{"Pod", PodJson("p-" + uid, uid, "", limits)}, {"NodeNames", names}};
      std::string body = args.dump();
      filter.Start();
      std::string out = ext.FilterBody(body);
      filter.Stop();
      json res = json::parse(out);
      passed_nodes = res["NodeNames"].size();
      failed_nodes = res["FailedNodes"].size();
      args["NodeNames"] = res["NodeNames"];
      body = args.dump();
      prioritize.Start();
      out = ext.PrioritizeBody(body);
      prioritize.Stop();
    }
    stop = true;
    for (auto& t : bg) t.join();
    for (auto* s : {&filter, &prioritize}) {
      std::printf(
          "{\"phase\": \"%s\", \"verb\": \"%s\", \"nodes\": %d, \"passed\": %zu, \"failed\": %zu, \"calls\": %d, "
          "\"wall_ms\": [%.3f, %.3f, %.3f], \"cpu_ms\": [%.3f, %.3f, %.3f]}\n",
          phase, s == &filter ? "filter" : "prioritize", nodes, passed_nodes, failed_nodes, calls,
          Stats::Q(s->wall, 0.5), Stats::Q(s->wall, 0.99), Stats::Q(s->wall, 1.0), Stats::Q(s->cpu, 0.5),
          Stats::Q(s->cpu, 0.99), Stats::Q(s->cpu, 1.0));
    }
    std::fflush(stdout);
  }
  std::printf("{\"snapshot_rebuilds\": %llu}\n", static_cast<unsigned long long>(view.rebuilds()));
  return 0;
}
