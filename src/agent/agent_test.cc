// The agent end to end inside one process: a fake kubelet (Registration + PodResources servers on
// unix sockets), the simulated GPU backend and an in-memory cluster.
#include "agent/agent.h"

#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <condition_variable>
#include <fstream>
#include <functional>
#include <thread>

#include "agent/proto/deviceplugin_v1beta1.grpc.pb.h"
#include "agent/proto/podresources_v1.grpc.pb.h"
#include "gpu/fault_backend.h"
#include "gpu/sim_backend.h"
#include "slice/config.h"
#include "slice/agent_rows.h"
#include "slice/region.h"

namespace tessera::agent {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

// Polls `cond` until it holds or `timeout` passes: the agent reacts on its own threads.
bool Eventually(const std::function<bool()>& cond,
                std::chrono::milliseconds timeout = std::chrono::seconds(10)) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    if (cond()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return cond();
}

class FakeCluster : public Cluster {
 public:
  std::mutex mu;
  std::vector<json> pods;
  json node_patch, node_status;
  std::vector<std::string> events;

  int fresh_lists = 0;
  kube::Result<std::vector<json>> PodsOnNode(const std::string& node, bool fresh) override {
    std::lock_guard<std::mutex> l(mu);
    fresh_lists += fresh;
    std::vector<json> out;
    for (const auto& p : pods) {
      if (p["spec"].value("nodeName", "") == node) out.push_back(p);
    }
    return out;
  }
  kube::Result<json> GetPod(const std::string& ns, const std::string& name) override {
    std::lock_guard<std::mutex> l(mu);
    for (const auto& p : pods) {
      if (p["metadata"]["namespace"] == ns && p["metadata"]["name"] == name) return p;
    }
    return kube::Error{404, "NotFound", "no pod"};
  }
  // Patches seen; `hold` keeps a patch in flight until cleared; `lag` leaves the pod list unchanged, as
  // a watch cache that has not caught up yet would.
  int annotate_calls = 0;
  bool hold = false, lag = false;
  std::condition_variable hold_cv;
  kube::Status AnnotatePod(const std::string& ns, const std::string& name, const json& ann) override {
    std::unique_lock<std::mutex> l(mu);
    ++annotate_calls;
    hold_cv.wait(l, [this] { return !hold; });
    if (lag) return kube::Ok{};
    for (auto& p : pods) {
      if (p["metadata"]["namespace"] == ns && p["metadata"]["name"] == name) {
        for (auto& [k, v] : ann.items()) p["metadata"]["annotations"][k] = v;
        return kube::Ok{};
      }
    }
    return kube::Error{404, "NotFound", "no pod"};
  }
  kube::Status PatchNode(const std::string&, const json& patch, const json& status) override {
    std::lock_guard<std::mutex> l(mu);
    node_patch = patch;
    node_status = status;
    return kube::Ok{};
  }
  void PodEvent(const json&, const std::string&, const std::string& reason, const std::string&) override {
    std::lock_guard<std::mutex> l(mu);
    events.push_back(reason);
  }
  std::string State(const std::string& name) {
    std::lock_guard<std::mutex> l(mu);
    for (auto& p : pods) {
      if (p["metadata"]["name"] == name)
        return p["metadata"]["annotations"].value("tessera.dev/allocation-state", "");
    }
    return "";
  }
};

json Pod(const std::string& name, const std::string& uid, int bind_s, const std::string& devices,
         int count = 1) {
  char bind[64];
  std::snprintf(bind, sizeof(bind), "2026-11-25T10:00:%02dZ", bind_s);
  return {{"metadata",
           {{"name", name},
            {"namespace", "default"},
            {"uid", uid},
            {"creationTimestamp", "2026-11-25T09:00:00Z"},
            {"annotations",
             {{"tessera.dev/assigned-node", "node-a"},
              {"tessera.dev/bind-time", bind},
              {"tessera.dev/allocation-state", "pending"},
              {"tessera.dev/devices", devices}}}}},
          {"spec",
           {{"nodeName", "node-a"},
            {"containers",
             json::array({{{"name", "main"},
                           {"resources", {{"limits", {{"nvidia.com/gpu", std::to_string(count)}}}}}}})}}}};
}

// The kubelet's side: Registration on kubelet.sock, PodResources on pod-resources/kubelet.sock.
class FakeKubelet final : public v1beta1::Registration::Service, public v1::PodResourcesLister::Service {
 public:
  std::mutex mu;
  std::vector<v1beta1::RegisterRequest> registrations;
  v1::ListPodResourcesResponse pod_resources;

  grpc::Status Register(grpc::ServerContext*, const v1beta1::RegisterRequest* req, v1beta1::Empty*) override {
    std::lock_guard<std::mutex> l(mu);
    registrations.push_back(*req);
    return grpc::Status::OK;
  }
  grpc::Status List(grpc::ServerContext*, const v1::ListPodResourcesRequest*,
                    v1::ListPodResourcesResponse* resp) override {
    std::lock_guard<std::mutex> l(mu);
    *resp = pod_resources;
    return grpc::Status::OK;
  }
  size_t Registrations() {
    std::lock_guard<std::mutex> l(mu);
    return registrations.size();
  }
};

std::unique_ptr<grpc::Server> Serve(const fs::path& sock, grpc::Service* svc) {
  ::unlink(sock.c_str());
  grpc::ServerBuilder b;
  b.AddListeningPort("unix://" + sock.string(), grpc::InsecureServerCredentials());
  b.RegisterService(svc);
  return b.BuildAndStart();
}

class AgentTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = fs::temp_directory_path() / ("tessera-agent-" + std::to_string(getpid()));
    fs::remove_all(root_);
    fs::create_directories(root_ / "kubelet" / "device-plugins");
    fs::create_directories(root_ / "kubelet" / "pod-resources");
    std::ofstream(root_ / "libtessera.so") << "not really a library";
    registration_ = Serve(root_ / "kubelet" / "device-plugins" / "kubelet.sock",
                          static_cast<v1beta1::Registration::Service*>(&kubelet_));
    podres_ = Serve(root_ / "kubelet" / "pod-resources" / "kubelet.sock",
                    static_cast<v1::PodResourcesLister::Service*>(&kubelet_));
    gpu::SimSpec spec;
    ASSERT_TRUE(gpu::ParseSimSpec(R"(
gpus:
  - {uuid: GPU-aaaa, model: NVIDIA A100-SXM4-80GB, memory_mib: 81920, numa: 0}
  - {uuid: GPU-bbbb, model: NVIDIA A100-SXM4-80GB, memory_mib: 81920, numa: 1}
)",
                                  "t", &spec)
                    .ok());
    auto backend = std::make_unique<gpu::SimBackend>(spec);
    sim_ = backend.get();
    cluster_ = std::make_shared<FakeCluster>();
    AgentOptions o;
    o.node = "node-a";
    o.split = 4;
    o.kubelet_dir = root_ / "kubelet";
    o.slices.state_dir = root_ / "state";
    o.slices.shim_path = root_ / "libtessera.so";
    o.metrics_port = 0;
    o.verify_period_s = 3600;  // tests drive verification with VerifyNow()
    o.proc_root = (root_ / "proc").string();  // a /proc lookalike (HostPidsOfContainerProcesses)
    o.host_pid_period_s = 3600;               // tests drive it with MapHostPidsNow()
    agent_ = std::make_unique<Agent>(o, std::move(backend), cluster_);
    auto st = agent_->Start();
    ASSERT_TRUE(st.ok()) << st.message();
    auto channel =
        grpc::CreateChannel("unix://" + agent_->plugin_socket().string(), grpc::InsecureChannelCredentials());
    plugin_ = v1beta1::DevicePlugin::NewStub(channel);
  }
  void TearDown() override {
    if (cluster_) {
      {
        std::lock_guard<std::mutex> l(cluster_->mu);
        cluster_->hold = false;  // a marker patch held by a failed test must not block the agent's stop
      }
      cluster_->hold_cv.notify_all();
    }
    agent_.reset();
    if (registration_) registration_->Shutdown();
    if (podres_) podres_->Shutdown();
    fs::remove_all(root_);
  }

  // Allocates `device_id` for a pod whose assignment is `devices`, then opens the slice's region as the
  // shim in the container does (with the host path of the mounted region directory).
  void AllocateAndOpenRegion(const std::string& pod, const std::string& uid, const std::string& devices,
                             const std::string& device_id, const std::string& slice, slice::Region* region) {
    {
      std::lock_guard<std::mutex> l(cluster_->mu);
      cluster_->pods = {Pod(pod, uid, 10, devices)};
    }
    v1beta1::AllocateRequest req;
    req.add_container_requests()->add_devices_ids(device_id);
    v1beta1::AllocateResponse resp;
    grpc::ClientContext ctx;
    ASSERT_TRUE(plugin_->Allocate(&ctx, req, &resp).ok());
    const fs::path dir = root_ / "state" / "slices" / slice;
    slice::SliceConfig cfg;
    char err[256];
    ASSERT_TRUE(slice::LoadSliceConfig((dir / "slice.conf").c_str(), false, &cfg, err, sizeof(err))) << err;
    // The agent keeps the region; the test takes a row as the container's process would get one.
    ASSERT_TRUE(slice::OpenRegion((dir / "region" / "slice.region").c_str(), true, region, err, sizeof(err))) << err;
    int slot = -1, row_fd = -1, live_fd = -1;
    ASSERT_TRUE(slice::AssignAgentRow(region, getpid(), &slot, &row_fd, &live_fd, err, sizeof(err))) << err;
    close(row_fd);
    close(live_fd);
    row_ = slot;
  }

  int row_ = -1;  // the row AllocateAndOpenRegion took
  fs::path root_;
  FakeKubelet kubelet_;
  std::unique_ptr<grpc::Server> registration_, podres_;
  gpu::SimBackend* sim_ = nullptr;
  std::shared_ptr<FakeCluster> cluster_;
  std::unique_ptr<Agent> agent_;
  std::unique_ptr<v1beta1::DevicePlugin::Stub> plugin_;
};

TEST_F(AgentTest, RegistersAndAdvertisesSplitDevicesWithTopology) {
  ASSERT_EQ(kubelet_.Registrations(), 1u);
  {
    std::lock_guard<std::mutex> l(kubelet_.mu);
    EXPECT_EQ(kubelet_.registrations[0].resource_name(), "nvidia.com/gpu");
    EXPECT_EQ(kubelet_.registrations[0].version(), "v1beta1");
    EXPECT_EQ(kubelet_.registrations[0].endpoint(), "tessera-gpu.sock");
    EXPECT_TRUE(kubelet_.registrations[0].options().get_preferred_allocation_available());
  }
  grpc::ClientContext octx;
  v1beta1::Empty empty;
  v1beta1::DevicePluginOptions opts;
  ASSERT_TRUE(plugin_->GetDevicePluginOptions(&octx, empty, &opts).ok());
  EXPECT_TRUE(opts.get_preferred_allocation_available());
  EXPECT_TRUE(opts.pre_start_required());

  grpc::ClientContext ctx;
  auto stream = plugin_->ListAndWatch(&ctx, empty);
  v1beta1::ListAndWatchResponse list;
  ASSERT_TRUE(stream->Read(&list));
  ASSERT_EQ(list.devices_size(), 8);
  EXPECT_EQ(list.devices(0).id(), "GPU-aaaa::0");
  EXPECT_EQ(list.devices(0).health(), "Healthy");
  EXPECT_EQ(list.devices(0).topology().nodes(0).id(), 0);
  EXPECT_EQ(list.devices(7).id(), "GPU-bbbb::3");
  EXPECT_EQ(list.devices(7).topology().nodes(0).id(), 1);

  // A health event reaches the kubelet as a new list.
  ASSERT_TRUE(sim_->InjectHealthEvent({"GPU-bbbb", false, "Xid 79"}).ok());
  ASSERT_TRUE(stream->Read(&list));
  for (const auto& d : list.devices()) {
    EXPECT_EQ(d.health(), d.id().rfind("GPU-bbbb", 0) == 0 ? "Unhealthy" : "Healthy") << d.id();
  }
  ctx.TryCancel();
  // And the Node shows it.
  ASSERT_TRUE(Eventually([&] {
    std::lock_guard<std::mutex> l(cluster_->mu);
    return cluster_->node_status.dump().find("\"allocatable\":{\"nvidia.com/gpu\":\"4\"}") !=
           std::string::npos;
  }));
  std::lock_guard<std::mutex> l(cluster_->mu);
  EXPECT_EQ(cluster_->node_status["status"]["capacity"]["nvidia.com/gpu"], "8");
  auto gpus =
      json::parse(cluster_->node_patch["metadata"]["annotations"]["tessera.dev/gpus"].get<std::string>());
  ASSERT_EQ(gpus.size(), 2u);
  EXPECT_EQ(gpus[1]["numa"], 1);
  EXPECT_EQ(gpus[1]["healthy"], false);
  EXPECT_EQ(gpus[0]["memory_mib"], 81920);
  EXPECT_EQ(cluster_->node_patch["metadata"]["labels"]["nvidia.com/gpu.present"], "true");
  EXPECT_EQ(cluster_->node_patch["metadata"]["labels"]["nvidia.com/gpu.product"], "NVIDIA-A100-SXM4-80GB");
}

TEST_F(AgentTest, PreferredAllocationAndAllocateServeTheOldestMatchingPod) {
  {
    std::lock_guard<std::mutex> l(cluster_->mu);
    cluster_->pods = {Pod("late", "u2", 20, R"([[{"uuid":"GPU-aaaa","memory_mib":2048,"cores":40}]])"),
                      Pod("early", "u1", 10, R"([[{"uuid":"GPU-bbbb","memory_mib":16384,"cores":25}]])")};
  }
  v1beta1::PreferredAllocationRequest preq;
  auto* c = preq.add_container_requests();
  for (auto id : {"GPU-aaaa::0", "GPU-aaaa::1", "GPU-bbbb::0", "GPU-bbbb::1"}) c->add_available_deviceids(id);
  c->set_allocation_size(1);
  v1beta1::PreferredAllocationResponse presp;
  grpc::ClientContext pctx;
  ASSERT_TRUE(plugin_->GetPreferredAllocation(&pctx, preq, &presp).ok());
  ASSERT_EQ(presp.container_responses(0).deviceids_size(), 1);
  EXPECT_EQ(presp.container_responses(0).deviceids(0), "GPU-bbbb::0");  // the early pod's GPU

  v1beta1::AllocateRequest areq;
  areq.add_container_requests()->add_devices_ids("GPU-bbbb::0");
  v1beta1::AllocateResponse aresp;
  grpc::ClientContext actx;
  auto s = plugin_->Allocate(&actx, areq, &aresp);
  ASSERT_TRUE(s.ok()) << s.error_message();
  ASSERT_EQ(aresp.container_responses_size(), 1);
  const auto& r = aresp.container_responses(0);
  EXPECT_EQ(r.envs().at("NVIDIA_VISIBLE_DEVICES"), "GPU-bbbb");
  EXPECT_EQ(r.envs().at("CUDA_VISIBLE_DEVICES"), "GPU-bbbb");
  std::map<std::string, std::pair<std::string, bool>> mounts;
  for (const auto& m : r.mounts()) mounts[m.container_path()] = {m.host_path(), m.read_only()};
  const fs::path dir = root_ / "state" / "slices" / "gpu-bbbb-0";
  EXPECT_EQ(mounts["/run/tessera/slice.conf"], std::make_pair((dir / "slice.conf").string(), true));
  EXPECT_EQ(mounts["/run/tessera/region"], std::make_pair((dir / "region").string(), true));  // the agent's books
  EXPECT_EQ(mounts["/usr/local/lib/tessera/libtessera.so"],
            std::make_pair((root_ / "libtessera.so").string(), true));
  EXPECT_EQ(mounts["/etc/ld.so.preload"].second, true);
  EXPECT_EQ(r.devices_size(), 0);  // nothing else
  slice::SliceConfig cfg;
  char err[256];
  ASSERT_TRUE(slice::LoadSliceConfig((dir / "slice.conf").c_str(), true, &cfg, err, sizeof(err))) << err;
  EXPECT_EQ(cfg.gpus[0].memory_bytes, 16384ull << 20);
  EXPECT_EQ(cfg.gpus[0].cores, 25);
  EXPECT_TRUE(Eventually([&] { return cluster_->State("early") == "allocated"; }));
  EXPECT_EQ(cluster_->State("late"), "pending");

  // The next request goes to the other pod; nothing is left after that.
  v1beta1::AllocateRequest areq2;
  areq2.add_container_requests()->add_devices_ids("GPU-aaaa::2");
  v1beta1::AllocateResponse aresp2;
  grpc::ClientContext actx2;
  ASSERT_TRUE(plugin_->Allocate(&actx2, areq2, &aresp2).ok());
  EXPECT_EQ(aresp2.container_responses(0).envs().at("NVIDIA_VISIBLE_DEVICES"), "GPU-aaaa");
  EXPECT_TRUE(Eventually([&] { return cluster_->State("late") == "allocated"; }));
  {
    std::lock_guard<std::mutex> l(cluster_->mu);
    EXPECT_EQ(cluster_->fresh_lists, 0);  // the watch cache knew both pods
  }
  v1beta1::AllocateResponse aresp3;
  grpc::ClientContext actx3;
  v1beta1::AllocateRequest areq3;
  areq3.add_container_requests()->add_devices_ids("GPU-aaaa::3");
  auto s3 = plugin_->Allocate(&actx3, areq3, &aresp3);
  EXPECT_FALSE(s3.ok());
  EXPECT_NE(s3.error_message().find("no pod bound to this node is waiting"), std::string::npos);
  {
    std::lock_guard<std::mutex> l(cluster_->mu);
    EXPECT_EQ(cluster_->fresh_lists, 1);  // asked etcd before giving up
  }
  EXPECT_EQ(agent_->counters().allocations, 2u);
  EXPECT_EQ(agent_->counters().allocation_failures, 1u);

  // Metrics show both slices with their limits.
  std::string text = agent_->RenderMetricsNow();
  EXPECT_NE(
      text.find(
          "vGPU_device_memory_limit_in_bytes{podnamespace=\"default\",podname=\"early\",ctrname=\"main\","
          "vdeviceid=\"0\",deviceuuid=\"GPU-bbbb\"} 17179869184"),
      std::string::npos)
      << text;
  EXPECT_NE(text.find("tessera_slice_compute_cap_ratio{namespace=\"default\",pod=\"late\",container=\"main\","
                      "slice=\"gpu-aaaa-2\",gpu_uuid=\"GPU-aaaa\"} 0.4"),
            std::string::npos);
}

TEST_F(AgentTest, PodResourcesVerifiesAndRepairsAWrongGuess) {
  // Two pods with different requests on the same GPU: Allocate has to guess.
  {
    std::lock_guard<std::mutex> l(cluster_->mu);
    cluster_->pods = {Pod("p1", "u1", 10, R"([[{"uuid":"GPU-aaaa","memory_mib":1000,"cores":10}]])"),
                      Pod("p2", "u2", 11, R"([[{"uuid":"GPU-aaaa","memory_mib":3000,"cores":30}]])")};
  }
  for (auto id : {"GPU-aaaa::0", "GPU-aaaa::1"}) {
    v1beta1::AllocateRequest req;
    req.add_container_requests()->add_devices_ids(id);
    v1beta1::AllocateResponse resp;
    grpc::ClientContext ctx;
    ASSERT_TRUE(plugin_->Allocate(&ctx, req, &resp).ok());
  }
  EXPECT_GE(agent_->counters().ambiguous_matches, 1u);
  // The kubelet really admitted p2 first: p2 holds ::0 (written for p1), p1 holds ::1.
  {
    std::lock_guard<std::mutex> l(kubelet_.mu);
    auto add = [&](const std::string& pod, const std::string& id) {
      auto* p = kubelet_.pod_resources.add_pod_resources();
      p->set_name(pod);
      p->set_namespace_("default");
      auto* c = p->add_containers();
      c->set_name("main");
      auto* d = c->add_devices();
      d->set_resource_name("nvidia.com/gpu");
      d->add_device_ids(id);
    };
    add("p2", "GPU-aaaa::0");
    add("p1", "GPU-aaaa::1");
  }
  ASSERT_TRUE(agent_->VerifyNow());
  EXPECT_EQ(agent_->counters().repairs, 2u);
  slice::SliceConfig cfg;
  char err[256];
  ASSERT_TRUE(slice::LoadSliceConfig((root_ / "state/slices/gpu-aaaa-0/slice.conf").c_str(), true, &cfg, err,
                                     sizeof(err)));
  EXPECT_EQ(cfg.gpus[0].memory_bytes, 3000ull << 20);  // p2's limit now
  EXPECT_EQ(cfg.gpus[0].cores, 30);
  SliceOwner owner;
  ASSERT_TRUE(SliceWriter::ReadOwner(root_ / "state/slices/gpu-aaaa-0", &owner).ok());
  EXPECT_EQ(owner.pod, "p2");
  EXPECT_TRUE(owner.verified);
  {
    std::lock_guard<std::mutex> l(cluster_->mu);
    EXPECT_EQ(cluster_->events.size(), 2u);
  }
  // A second pass finds nothing to do.
  ASSERT_TRUE(agent_->VerifyNow());
  EXPECT_EQ(agent_->counters().repairs, 2u);

  // The pod goes away: its slice is removed once PodResources no longer lists it.
  {
    std::lock_guard<std::mutex> l(cluster_->mu);
    cluster_->pods.erase(cluster_->pods.begin());  // p1
  }
  {
    std::lock_guard<std::mutex> l(kubelet_.mu);
    kubelet_.pod_resources.mutable_pod_resources()->RemoveLast();
  }
  ASSERT_TRUE(agent_->VerifyNow());
  EXPECT_FALSE(fs::exists(root_ / "state/slices/gpu-aaaa-1"));
  EXPECT_TRUE(fs::exists(root_ / "state/slices/gpu-aaaa-0"));
}

// A pod the kubelet holds while the watch cache still says pending (the patch is slow, or the cache
// lags) is patched once, not once per verification pass: repeated passes must not pile up a backlog that
// holds back the pods behind it.
TEST_F(AgentTest, AHeldPodStillPendingInTheCacheIsMarkedOnce) {
  {
    std::lock_guard<std::mutex> l(cluster_->mu);
    cluster_->pods = {Pod("held", "u-held", 10, R"([[{"uuid":"GPU-aaaa","memory_mib":1000,"cores":10}]])")};
    cluster_->hold = true;
    cluster_->lag = true;
  }
  {
    std::lock_guard<std::mutex> l(kubelet_.mu);
    auto* p = kubelet_.pod_resources.add_pod_resources();
    p->set_name("held");
    p->set_namespace_("default");
    auto* c = p->add_containers();
    c->set_name("main");
    auto* d = c->add_devices();
    d->set_resource_name("nvidia.com/gpu");
    d->add_device_ids("GPU-aaaa::0");
  }
  ASSERT_TRUE(agent_->VerifyNow());
  ASSERT_TRUE(Eventually([&] {
    std::lock_guard<std::mutex> l(cluster_->mu);
    return cluster_->annotate_calls == 1;
  }));
  // The patch is in flight; more passes see the pod still pending and held.
  for (int i = 0; i < 5; ++i) ASSERT_TRUE(agent_->VerifyNow());
  EXPECT_EQ(agent_->PendingMarks(), 0u);
  {
    std::lock_guard<std::mutex> l(cluster_->mu);
    cluster_->hold = false;
  }
  cluster_->hold_cv.notify_all();
  // The patch landed but the cache still says pending: no second patch is queued.
  for (int i = 0; i < 5; ++i) ASSERT_TRUE(agent_->VerifyNow());
  EXPECT_EQ(agent_->PendingMarks(), 0u);
  std::lock_guard<std::mutex> l(cluster_->mu);
  EXPECT_EQ(cluster_->annotate_calls, 1);
}

TEST_F(AgentTest, ReRegistersWhenTheKubeletRestarts) {
  ASSERT_EQ(kubelet_.Registrations(), 1u);
  // A kubelet restart: its socket goes away, the plugin directory is wiped, a new socket appears.
  registration_->Shutdown();
  registration_.reset();
  fs::remove(root_ / "kubelet" / "device-plugins" / "kubelet.sock");
  fs::remove(agent_->plugin_socket());
  registration_ = Serve(root_ / "kubelet" / "device-plugins" / "kubelet.sock",
                        static_cast<v1beta1::Registration::Service*>(&kubelet_));
  ASSERT_TRUE(Eventually([&] { return kubelet_.Registrations() == 2u; }));
  ASSERT_TRUE(Eventually([&] { return agent_->registered(); }));
  EXPECT_TRUE(fs::exists(agent_->plugin_socket()));
  // The new server answers.
  auto channel =
      grpc::CreateChannel("unix://" + agent_->plugin_socket().string(), grpc::InsecureChannelCredentials());
  auto stub = v1beta1::DevicePlugin::NewStub(channel);
  grpc::ClientContext ctx;
  v1beta1::Empty empty;
  auto stream = stub->ListAndWatch(&ctx, empty);
  v1beta1::ListAndWatchResponse list;
  ASSERT_TRUE(stream->Read(&list));
  EXPECT_EQ(list.devices_size(), 8);
  ctx.TryCancel();
  EXPECT_EQ(agent_->counters().registrations, 2u);
}

TEST(AgentOptions, Validation) {
  AgentOptions o;
  o.slices.shim_path = "/x";
  EXPECT_NE(ValidateOptions(o).message().find("--node"), std::string::npos);
  o.node = "n";
  o.split = 0;
  EXPECT_NE(ValidateOptions(o).message().find("--split: 0 is out of range [1, 64]"), std::string::npos);
  o.split = 10;
  o.metrics_port = 70000;
  EXPECT_NE(ValidateOptions(o).message().find("--metrics-port"), std::string::npos);
  o.metrics_port = 9394;
  EXPECT_TRUE(ValidateOptions(o).ok());
}

}  // namespace
}  // namespace tessera::agent

namespace tessera::agent {
namespace {

// The kubelet abandons a pod after its first container was allocated (a later container failed) and
// admits it again: the first container must be served again, not refused as "already served".
TEST_F(AgentTest, ReadmissionAfterAnAbandonedAllocationIsServed) {
  json pod = Pod(
      "two", "u9", 10,
      R"([[{"uuid":"GPU-aaaa","memory_mib":100,"cores":10}],[{"uuid":"GPU-bbbb","memory_mib":200,"cores":20}]])");
  pod["spec"]["containers"].push_back(
      {{"name", "second"}, {"resources", {{"limits", {{"nvidia.com/gpu", "1"}}}}}});
  {
    std::lock_guard<std::mutex> l(cluster_->mu);
    cluster_->pods = {pod};
  }
  auto set_view = [&](bool first_holds) {
    std::lock_guard<std::mutex> l(kubelet_.mu);
    kubelet_.pod_resources.Clear();
    auto* p = kubelet_.pod_resources.add_pod_resources();
    p->set_name("two");
    p->set_namespace_("default");
    auto* c0 = p->add_containers();
    c0->set_name("main");
    if (first_holds) {
      auto* d = c0->add_devices();
      d->set_resource_name("nvidia.com/gpu");
      d->add_device_ids("GPU-aaaa::0");
    }
    p->add_containers()->set_name("second");
  };
  auto allocate = [&](const char* id) {
    v1beta1::AllocateRequest req;
    req.add_container_requests()->add_devices_ids(id);
    v1beta1::AllocateResponse resp;
    grpc::ClientContext ctx;
    auto s = plugin_->Allocate(&ctx, req, &resp);
    return s.ok() ? resp.container_responses(0).envs().at("NVIDIA_VISIBLE_DEVICES")
                  : "error: " + s.error_message();
  };
  set_view(false);
  EXPECT_EQ(allocate("GPU-aaaa::0"), "GPU-aaaa");
  // Admission abandoned; the kubelet starts over: both containers listed without devices.
  set_view(false);
  EXPECT_EQ(allocate("GPU-aaaa::1"), "GPU-aaaa");
  set_view(true);
  EXPECT_EQ(allocate("GPU-bbbb::1"), "GPU-bbbb");
  EXPECT_TRUE(Eventually([&] { return cluster_->State("two") == "allocated"; }));
}

}  // namespace
}  // namespace tessera::agent

namespace tessera::agent {
namespace {

// Usage comes from the slice's accounting region, as the shim in the container writes it.
TEST_F(AgentTest, MetricsReadUsageFromTheSliceRegion) {
  slice::Region region;
  ASSERT_NO_FATAL_FAILURE(AllocateAndOpenRegion(
      "user", "u5", R"([[{"uuid":"GPU-bbbb","memory_mib":4096,"cores":30}]])", "GPU-bbbb::2", "gpu-bbbb-2", &region));
  int row = row_;
  ASSERT_GE(row, 0);
  ASSERT_EQ(slice::TryCharge(region.hdr, row, 0, 1ull << 30, false).result, slice::ChargeResult::kOk);
  region.hdr->gpus[0].throttled_ns.store(2'500'000'000);
  region.hdr->gpus[0].priority_waits.store(3);
  const std::string text = agent_->RenderMetricsNow();
  slice::ReleaseRow(region.hdr, row);
  slice::CloseRegion(&region);
  EXPECT_NE(
      text.find(
          "vGPU_device_memory_usage_in_bytes{podnamespace=\"default\",podname=\"user\",ctrname=\"main\","
          "vdeviceid=\"0\",deviceuuid=\"GPU-bbbb\"} 1073741824"),
      std::string::npos)
      << text;
  const std::string labels =
      "{namespace=\"default\",pod=\"user\",container=\"main\",slice=\"gpu-bbbb-2\",gpu_uuid=\"GPU-bbbb\"}";
  EXPECT_NE(text.find("tessera_slice_memory_used_bytes" + labels + " 1073741824"), std::string::npos);
  EXPECT_NE(text.find("tessera_slice_memory_limit_bytes" + labels + " 4294967296"), std::string::npos);
  EXPECT_NE(text.find("tessera_slice_throttled_seconds_total" + labels + " 2.5"), std::string::npos);
  EXPECT_NE(text.find("tessera_slice_priority_waits_total" + labels + " 3"), std::string::npos);
  EXPECT_NE(text.find("tessera_slice_compute_cap_ratio" + labels + " 0.3"), std::string::npos);
}

// A process in a container (its own pid namespace) is known to the driver by its host pid: the agent finds
// it under the host's /proc and publishes it in the process's row, where the shim matches NVML against it.
TEST_F(AgentTest, PublishesHostPidsOfContainerProcesses) {
  slice::Region region;
  ASSERT_NO_FATAL_FAILURE(AllocateAndOpenRegion(
      "user", "u6", R"([[{"uuid":"GPU-aaaa","memory_mib":2048,"cores":100}]])", "GPU-aaaa::1", "gpu-aaaa-1", &region));
  // The container's process: pid 12 in namespace 4026532100, host pid 31337, started at tick 900.
  const uint64_t owner = slice::PackOwner(12, 900);
  region.hdr->rows[0].owner.store(owner);
  region.hdr->rows[0].pidns.store(4026532100);
  region.hdr->rows_high_water.store(1);
  EXPECT_EQ(agent_->MapHostPidsNow(), 0);  // not in /proc (yet): nothing published
  const fs::path p = root_ / "proc" / "31337";
  fs::create_directories(p / "ns");
  fs::create_symlink("pid:[4026532100]", p / "ns" / "pid");
  std::ofstream(p / "status") << "Name:\tpython3\nNSpid:\t31337\t12\n";
  std::ofstream(p / "stat") << "31337 (python3) S 1 1 1 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 900 0 0\n";
  EXPECT_EQ(agent_->MapHostPidsNow(), 1);
  EXPECT_EQ(slice::RowHostPid(region.hdr, 0), 31337);
  EXPECT_EQ(agent_->MapHostPidsNow(), 0);  // already published
  region.hdr->rows[0].owner.store(0);
  slice::CloseRegion(&region);
}

}  // namespace
}  // namespace tessera::agent

namespace tessera::agent {
namespace {

// NVML not ready yet at boot: Init fails twice, the agent retries and starts; when it keeps failing,
// Start() fails with the backend's message.
TEST(AgentStart, RetriesBackendInitThenGivesUp) {
  auto root = fs::temp_directory_path() / ("tessera-agent-init-" + std::to_string(getpid()));
  fs::remove_all(root);
  fs::create_directories(root / "kubelet" / "device-plugins");
  gpu::SimSpec spec;
  ASSERT_TRUE(gpu::ParseSimSpec("gpus: [{uuid: GPU-a, model: m, memory_mib: 1}]", "t", &spec).ok());
  AgentOptions o;
  o.node = "n";
  o.kubelet_dir = root / "kubelet";
  o.slices.state_dir = root / "state";
  o.slices.shim_path = root / "libtessera.so";
  o.metrics_port = 0;
  o.init_attempts = 3;
  o.init_retry_ms = 1;
  for (int failures : {2, 3}) {
    gpu::FaultPlan plan;
    plan.fail_init = failures;
    auto backend = std::make_unique<gpu::FaultBackend>(std::make_unique<gpu::SimBackend>(spec), plan);
    Agent a(o, std::move(backend), std::make_shared<FakeCluster>());
    gpu::Status st = a.Start();
    if (failures < 3) {
      EXPECT_TRUE(st.ok()) << st.message();
    } else {
      ASSERT_FALSE(st.ok());
      EXPECT_NE(st.message().find("injected fault: Init failed"), std::string::npos) << st.message();
    }
  }
  fs::remove_all(root);
}

}  // namespace
}  // namespace tessera::agent
