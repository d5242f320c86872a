// tessera_scale_bench: the load generator and stopwatch for bench/scale/run.
//
//   nodes  --kubeconfig F --count N --prefix P [--gpus 8] [--dra 1]
//                                              create N simulated GPU nodes (parallel); with --dra also each
//                                              node's ResourceSlice of driver gpu.tessera.io, as its agent in
//                                              --mode=dra publishes it (kube/resource_slice.h)
//   pods   --kubeconfig F --ns NS --count M --scheduler S --kind plain|gpu|dra [--start I] [--class C]
//          dra: each pod with its own ResourceClaim (DeviceClass C) asking the same mixed slices as gpu, by
//          consumable capacity (memory, cores; two devices for one pod in four)
//   wait   --kubeconfig F --ns NS --count M [--timeout S]        block until M pods in NS are bound
//                                                                (watch), print seconds and pods/s as JSON
// Objects are created through tessera_kube with 16 client threads. Nothing here runs in `make test`.
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_set>
#include <vector>

#include "kube/annotations.h"
#include "kube/client.h"
#include "kube/reflector.h"
#include "kube/resource_slice.h"

using tessera::kube::Json;
namespace kube = tessera::kube;

namespace {

std::map<std::string, std::string> Flags(int argc, char** argv) {
  std::map<std::string, std::string> f;
  for (int i = 2; i + 1 < argc; i += 2) f[argv[i]] = argv[i + 1];
  return f;
}

std::shared_ptr<kube::Client> Connect(const std::string& kubeconfig) {
  auto cfg = kube::LoadKubeconfig(kubeconfig);
  if (!cfg) {
    std::fprintf(stderr, "scale_bench: %s\n", cfg.error().ToString().c_str());
    std::exit(1);
  }
  auto c = kube::Client::Create(*cfg);
  if (!c) {
    std::fprintf(stderr, "scale_bench: %s\n", c.error().ToString().c_str());
    std::exit(1);
  }
  return *c;
}

void Parallel(int n, const std::function<void(int)>& fn) {
  std::atomic<int> next{0};
  std::vector<std::thread> ts;
  for (int t = 0; t < 16; ++t)
    ts.emplace_back([&] {
      for (int i; (i = next++) < n;) fn(i);
    });
  for (auto& t : ts) t.join();
}

int Nodes(const std::map<std::string, std::string>& f) {
  auto c = Connect(f.at("--kubeconfig"));
  int n = std::stoi(f.at("--count"));
  int gpus = f.count("--gpus") ? std::stoi(f.at("--gpus")) : 8;
  std::string prefix = f.at("--prefix");
  const bool dra = f.count("--dra") && f.at("--dra") == "1";
  std::atomic<int> failed{0};
  Parallel(n, [&](int i) {
    std::string name = prefix + "-" + std::to_string(i);
    std::vector<kube::GpuInfo> inv;
    for (int g = 0; g < gpus; ++g)
      inv.push_back({"GPU-" + name + "-" + std::to_string(g), i % 3 ? "A100" : "T4", i % 3 ? 40960 : 15360, 100, g * 2 / gpus, true});
    Json node = {{"apiVersion", "v1"},
                 {"kind", "Node"},
                 {"metadata",
                  {{"name", name},
                   {"labels", {{"kubernetes.io/hostname", name}, {"tessera.dev/bench", prefix}}},
                   {"annotations", {{kube::kAnnoGpus, kube::EncodeGpus(inv)}}}}}};
    auto r = c->Create(kube::kNodes, "", node);
    if (!r && !r.error().AlreadyExists()) {
      ++failed;
      return;
    }
    if (dra) {
      std::vector<kube::DraGpu> devs;
      for (int g = 0; g < gpus; ++g) {
        kube::DraGpu d;
        d.index = g;
        d.uuid = inv[g].uuid;
        d.model = inv[g].model;
        d.memory_bytes = static_cast<uint64_t>(inv[g].memory_mib) << 20;
        d.numa_node = inv[g].numa;
        devs.push_back(d);
      }
      auto s = c->Create(kube::kResourceSlices, "", kube::BuildResourceSlice(name, r ? kube::Uid(*r) : "", devs, 1));
      if (!s && !s.error().AlreadyExists()) {
        ++failed;
        return;
      }
    }
    Json res = {{"cpu", "64"}, {"memory", "256Gi"}, {"pods", "1000"}, {"nvidia.com/gpu", std::to_string(gpus * 10)}};
    Json st = {{"status",
                {{"capacity", res},
                 {"allocatable", res},
                 {"conditions", Json::array({{{"type", "Ready"}, {"status", "True"}, {"reason", "KubeletReady"},
                                              {"message", "simulated"}, {"lastHeartbeatTime", "2026-01-01T00:00:00Z"},
                                              {"lastTransitionTime", "2026-01-01T00:00:00Z"}}})}}}};
    if (!c->PatchStatus(kube::kNodes, "", name, st)) ++failed;
  });
  std::printf("{\"nodes\": %d, \"failed\": %d}\n", n, failed.load());
  return failed ? 1 : 0;
}

int Pods(const std::map<std::string, std::string>& f) {
  auto c = Connect(f.at("--kubeconfig"));
  int n = std::stoi(f.at("--count"));
  int start = f.count("--start") ? std::stoi(f.at("--start")) : 0;
  std::string ns = f.at("--ns"), sched = f.at("--scheduler"), kind = f.at("--kind");
  std::atomic<int> failed{0};
  auto t0 = std::chrono::steady_clock::now();
  Parallel(n, [&](int k) {
    int i = start + k;
    Json limits;
    if (kind == "plain") {
      limits = {{"nvidia.com/gpu", "1"}};
    } else {
      switch (i % 4) {  // the mixed requests: percent and MiB slices, cores, two-GPU pods
        case 0: limits = {{"nvidia.com/gpu", "1"}, {"nvidia.com/gpucores", "10"}, {"nvidia.com/gpumem-percentage", "10"}}; break;
        case 1: limits = {{"nvidia.com/gpu", "1"}, {"nvidia.com/gpucores", "5"}, {"nvidia.com/gpumem", "1000"}}; break;
        case 2: limits = {{"nvidia.com/gpu", "1"}, {"nvidia.com/gpucores", "20"}, {"nvidia.com/gpumem", "2000"}}; break;
        default: limits = {{"nvidia.com/gpu", "2"}, {"nvidia.com/gpucores", "10"}, {"nvidia.com/gpumem", "1000"}}; break;
      }
    }
    const std::string name = kind + "-" + std::to_string(i);
    Json resources = {{"requests", {{"cpu", "10m"}, {"memory", "16Mi"}}}, {"limits", limits}};
    if (kind == "dra") {
      // The gpu kind's shapes by capacity (a percentage has no capacity form: 1536Mi, a tenth of a T4).
      static const struct { int count; const char* memory; const char* cores; } kShapes[] = {
          {1, "1536Mi", "10"}, {1, "1000Mi", "5"}, {1, "2000Mi", "20"}, {2, "1000Mi", "10"}};
      const auto& sh = kShapes[i % 4];
      Json exactly = {{"deviceClassName", f.at("--class")},
                      {"allocationMode", "ExactCount"},
                      {"count", sh.count},
                      {"capacity", {{"requests", {{"memory", sh.memory}, {"cores", sh.cores}}}}}};
      Json claim = {{"apiVersion", "resource.k8s.io/v1"},
                    {"kind", "ResourceClaim"},
                    {"metadata", {{"name", name}}},
                    {"spec", {{"devices", {{"requests", Json::array({{{"name", "gpu"}, {"exactly", exactly}}})}}}}}};
      bool made = false;
      for (int attempt = 0; attempt < 5 && !made; ++attempt) {
        auto r = c->Create(kube::kResourceClaims, ns, claim);
        made = r || r.error().AlreadyExists();
      }
      if (!made) {
        ++failed;
        return;
      }
      resources = {{"requests", {{"cpu", "10m"}, {"memory", "16Mi"}}}, {"claims", Json::array({{{"name", "gpu"}}})}};
    }
    Json pod = {{"apiVersion", "v1"},
                {"kind", "Pod"},
                {"metadata", {{"name", name}}},
                {"spec",
                 {{"schedulerName", sched},
                  {"containers", Json::array({{{"name", "c"}, {"image", "busybox"}, {"resources", resources}}})}}}};
    if (kind == "dra") pod["spec"]["resourceClaims"] = Json::array({{{"name", "gpu"}, {"resourceClaimName", name}}});
    for (int attempt = 0; attempt < 5; ++attempt) {
      auto r = c->Create(kube::kPods, ns, pod);
      if (r || r.error().AlreadyExists()) return;
    }
    ++failed;
  });
  double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf("{\"pods\": %d, \"failed\": %d, \"seconds\": %.2f}\n", n, failed.load(), s);
  return failed ? 1 : 0;
}

int Wait(const std::map<std::string, std::string>& f) {
  auto c = Connect(f.at("--kubeconfig"));
  size_t want = std::stoul(f.at("--count"));
  double timeout = f.count("--timeout") ? std::stod(f.at("--timeout")) : 1800;
  std::mutex mu;
  std::condition_variable cv;
  std::unordered_set<std::string> bound;
  auto t0 = std::chrono::steady_clock::now();
  std::chrono::steady_clock::time_point first{}, last{};
  auto see = [&](const Json& p) {
    if (p.contains("spec") && !p["spec"].value("nodeName", "").empty()) {
      std::lock_guard<std::mutex> l(mu);
      if (bound.insert(kube::Uid(p)).second) {
        last = std::chrono::steady_clock::now();
        if (first == std::chrono::steady_clock::time_point{}) first = last;
      }
      cv.notify_all();
    }
  };
  kube::ReflectorHandler h;
  h.on_replace = [&](const std::vector<Json>& items) {
    for (const auto& p : items) see(p);
  };
  h.on_event = [&](kube::EventType, const Json& p) { see(p); };
  kube::ReflectorOptions o;
  o.ns = f.at("--ns");
  kube::Reflector r(c, kube::kPods, o, h);
  r.Start();
  std::unique_lock<std::mutex> l(mu);
  bool ok = cv.wait_for(l, std::chrono::duration<double>(timeout), [&] { return bound.size() >= want; });
  double total = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  double active = first == std::chrono::steady_clock::time_point{} ? 0
                  : std::chrono::duration<double>(last - first).count();
  std::printf("{\"bound\": %zu, \"want\": %zu, \"seconds\": %.3f, \"pods_per_s\": %.1f, \"first_to_last_s\": %.3f}\n",
              bound.size(), want, total, bound.size() / total, active);
  l.unlock();
  r.Stop();
  return ok ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: tessera_scale_bench nodes|pods|wait --flag value ... (see the source header)\n");
    return 2;
  }
  auto f = Flags(argc, argv);
  std::string cmd = argv[1];
  try {
    if (cmd == "nodes") return Nodes(f);
    if (cmd == "pods") return Pods(f);
    if (cmd == "wait") return Wait(f);
  } catch (const std::out_of_range&) {
    std::fprintf(stderr, "tessera_scale_bench %s: a required flag is missing (see the source header)\n", cmd.c_str());
    return 2;
  }
  std::fprintf(stderr, "tessera_scale_bench: unknown command %s\n", cmd.c_str());
  return 2;
}
