// DraDriver: the ResourceSlice it publishes and follows with GPU health, and NodePrepareResources /
// NodeUnprepareResources turning a claim's allocation into a slice + CDI spec, idempotently and across a
// restart. The kubelet side (registration, the real DRA manager) is covered by the integration tests.
#include "agent/dra_driver.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <condition_variable>
#include <fstream>
#include <map>
#include <mutex>
#include <sstream>

#include "agent/proto/dra_v1.pb.h"
#include "gpu/sim_backend.h"
#include "slice/config.h"

namespace tessera::agent {
namespace {

namespace fs = std::filesystem;
using kube::Json;

class FakeApi final : public DraApi {
 public:
  std::mutex mu;
  std::condition_variable cv;
  std::map<std::string, Json> claims;  // "ns/name"
  std::map<std::string, Json> slices;
  int writes = 0;
  kube::Result<Json> GetClaim(const std::string& ns, const std::string& name) override {
    std::lock_guard<std::mutex> l(mu);
    auto it = claims.find(ns + "/" + name);
    if (it == claims.end()) return kube::Error{404, "NotFound", "resourceclaims " + name + " not found"};
    return it->second;
  }
  kube::Result<Json> GetSlice(const std::string& name) override {
    std::lock_guard<std::mutex> l(mu);
    auto it = slices.find(name);
    if (it == slices.end()) return kube::Error{404, "NotFound", "not found"};
    return it->second;
  }
  kube::Result<Json> CreateSlice(const Json& s) override {
    std::lock_guard<std::mutex> l(mu);
    Json stored = s;
    stored["metadata"]["resourceVersion"] = std::to_string(++writes);
    slices[kube::Name(s)] = stored;
    cv.notify_all();
    return stored;
  }
  kube::Result<Json> UpdateSlice(const Json& s) override {
    std::lock_guard<std::mutex> l(mu);
    auto& cur = slices[kube::Name(s)];
    if (kube::ResourceVersionOf(cur) != kube::ResourceVersionOf(s)) return kube::Error{409, "Conflict", "changed"};
    cur = s;
    cur["metadata"]["resourceVersion"] = std::to_string(++writes);
    cv.notify_all();
    return cur;
  }
  kube::Result<std::string> NodeUid(const std::string&) override { return std::string("node-uid-1"); }
};

class DraDriverTest : public ::testing::Test {
 protected:
  void SetUp() override {
    static int n = 0;  // short: unix socket paths are limited to 107 bytes
    root_ = fs::temp_directory_path() / ("tdra-" + std::to_string(getpid()) + "-" + std::to_string(++n));
    fs::remove_all(root_);
    fs::create_directories(root_);
    std::ofstream(root_ / "libtessera.so") << "not really a library";
  }
  void TearDown() override {
    driver_.reset();
    fs::remove_all(root_);
  }
  void StartDriver() {
    gpu::SimSpec spec;
    ASSERT_TRUE(gpu::ParseSimSpec(R"(
gpus:
  - {uuid: GPU-aaaa, model: NVIDIA A100-SXM4-80GB, memory_mib: 81920, numa: 0, compute_capability: "8.0"}
  - {uuid: GPU-bbbb, model: NVIDIA A100-SXM4-80GB, memory_mib: 40960, numa: 1}
)",
                                  "t", &spec)
                    .ok());
    auto backend = std::make_unique<gpu::SimBackend>(spec);
    sim_ = backend.get();
    auto api = std::make_unique<FakeApi>();
    if (api_) {  // a restart keeps the API server's state
      api->claims = api_->claims;
      api->slices = api_->slices;
    }
    api_ = api.get();
    DraOptions o;
    o.node = "node-a";
    o.kubelet_dir = root_ / "kubelet";
    o.cdi_dir = root_ / "cdi";
    o.slices.state_dir = root_ / "state";
    o.slices.shim_path = root_ / "libtessera.so";
    o.driver_version = "570.86.15";
    o.retry_period_s = 0.05;
    o.resync_period_s = 0.2;
    driver_.reset();
    driver_ = std::make_unique<DraDriver>(o, std::move(backend), std::move(api));
    start_status_ = driver_->Start();
    if (expect_start_ok_) {
      ASSERT_TRUE(start_status_.ok()) << start_status_.message();
    }
  }
  bool expect_start_ok_ = true;
  gpu::Status start_status_ = gpu::Status::Ok();
  void AddClaim(const std::string& name, const std::string& uid, Json results, Json config = Json::array()) {
    std::lock_guard<std::mutex> l(api_->mu);
    api_->claims["default/" + name] = {
        {"metadata", {{"namespace", "default"}, {"name", name}, {"uid", uid}}},
        {"status", {{"allocation", {{"devices", {{"results", results}, {"config", config}}}}}}}};
  }
  static Json Result(const std::string& request, const std::string& device, const std::string& memory,
                     const std::string& cores) {
    Json r = {{"request", request}, {"driver", "gpu.tessera.io"}, {"pool", "node-a"}, {"device", device},
              {"shareID", "share-" + request}};
    if (!memory.empty()) r["consumedCapacity"]["memory"] = memory;
    if (!cores.empty()) r["consumedCapacity"]["cores"] = cores;
    return r;
  }
  drapb::NodePrepareResourcesResponse Prepare(const std::string& name, const std::string& uid) {
    drapb::NodePrepareResourcesRequest req;
    auto* c = req.add_claims();
    c->set_namespace_("default");
    c->set_name(name);
    c->set_uid(uid);
    drapb::NodePrepareResourcesResponse resp;
    driver_->NodePrepareResources(req, &resp);
    return resp;
  }
  std::string Unprepare(const std::string& uid) {
    drapb::NodeUnprepareResourcesRequest req;
    req.add_claims()->set_uid(uid);
    drapb::NodeUnprepareResourcesResponse resp;
    driver_->NodeUnprepareResources(req, &resp);
    return resp.claims().at(uid).error();
  }
  Json Slice() {
    std::lock_guard<std::mutex> l(api_->mu);
    return api_->slices.at("node-a-gpu.tessera.io");
  }

  fs::path root_;
  gpu::SimBackend* sim_ = nullptr;
  FakeApi* api_ = nullptr;
  std::unique_ptr<DraDriver> driver_;
};

TEST_F(DraDriverTest, PublishesOneSharedDevicePerGpuAndTaintsAnUnhealthyOne) {
  StartDriver();
  Json s = Slice();
  EXPECT_EQ(s["spec"]["nodeName"], "node-a");
  EXPECT_EQ(s["metadata"]["ownerReferences"][0]["uid"], "node-uid-1");
  ASSERT_EQ(s["spec"]["devices"].size(), 2u);
  EXPECT_EQ(s["spec"]["devices"][1]["name"], "gpu-bbbb");
  EXPECT_EQ(s["spec"]["devices"][1]["capacity"]["memory"]["value"], "40Gi");
  EXPECT_EQ(s["spec"]["devices"][1]["attributes"]["driverVersion"]["string"], "570.86.15");
  EXPECT_EQ(s["spec"]["devices"][0]["attributes"]["computeCapability"]["string"], "8.0");
  EXPECT_EQ(s["spec"]["devices"][0]["attributes"]["numaNode"]["int"], 0);
  EXPECT_EQ(s["spec"]["pool"]["generation"], 1);
  EXPECT_TRUE(fs::exists(driver_->plugin_socket()));
  EXPECT_TRUE(fs::exists(driver_->registration_socket()));

  ASSERT_TRUE(sim_->InjectHealthEvent({"GPU-bbbb", false, "Xid 79"}).ok());
  {
    std::unique_lock<std::mutex> l(api_->mu);
    ASSERT_TRUE(api_->cv.wait_for(l, std::chrono::seconds(10), [&] {
      return api_->slices["node-a-gpu.tessera.io"]["spec"]["devices"][1].contains("taints");
    }));
  }
  s = Slice();
  EXPECT_EQ(s["spec"]["pool"]["generation"], 2);
  EXPECT_EQ(s["spec"]["devices"][1]["taints"][0]["value"], "Xid_79");
  EXPECT_FALSE(s["spec"]["devices"][0].contains("taints"));

  // Unchanged GPUs: no new write, no new generation.
  int writes = api_->writes;
  ASSERT_TRUE(driver_->PublishNow().ok());
  EXPECT_EQ(api_->writes, writes);

  // Someone (the kubelet, when it believed the plugin gone) deletes the slice: it comes back.
  {
    std::unique_lock<std::mutex> l(api_->mu);
    api_->slices.clear();
    ASSERT_TRUE(api_->cv.wait_for(l, std::chrono::seconds(10), [&] { return api_->slices.size() == 1; }));
  }
}

TEST_F(DraDriverTest, PrepareWritesTheSliceOfTheConsumedCapacityAndItsCdiSpecOnceAndUnprepareRemovesThem) {
  StartDriver();
  const std::string uid = "0b4c2e7a-1111-2222-3333-444455556666";
  AddClaim("c1", uid, Json::array({Result("gpu", "gpu-aaaa", "4Gi", "30")}),
           Json::array({{{"source", "FromClaim"},
                         {"opaque", {{"driver", "gpu.tessera.io"}, {"parameters", {{"priority", 0}}}}}}}));
  auto resp = Prepare("c1", uid);
  const auto& out = resp.claims().at(uid);
  ASSERT_EQ(out.error(), "");
  ASSERT_EQ(out.devices_size(), 1);
  EXPECT_EQ(out.devices(0).device_name(), "gpu-aaaa");
  EXPECT_EQ(out.devices(0).pool_name(), "node-a");
  EXPECT_EQ(out.devices(0).share_id(), "share-gpu");
  ASSERT_EQ(out.devices(0).cdi_device_ids_size(), 1);
  EXPECT_EQ(out.devices(0).cdi_device_ids(0), "gpu.tessera.io/claim=" + uid);

  const fs::path dir = root_ / "state" / "slices" / ("claim-" + uid);
  slice::SliceConfig cfg;
  char err[256] = {};
  ASSERT_TRUE(slice::LoadSliceConfig((dir / "slice.conf").c_str(), false, &cfg, err, sizeof(err))) << err;
  ASSERT_EQ(cfg.gpu_count, 1);
  EXPECT_STREQ(cfg.gpus[0].uuid, "GPU-aaaa");
  EXPECT_EQ(cfg.gpus[0].memory_bytes, 4ull << 30);
  EXPECT_EQ(cfg.gpus[0].cores, 30);
  EXPECT_EQ(cfg.priority, 0);

  std::ifstream in(root_ / "cdi" / ("gpu.tessera.io-" + uid + ".json"));
  ASSERT_TRUE(in);
  std::stringstream ss;
  ss << in.rdbuf();
  Json cdi = Json::parse(ss.str());
  EXPECT_EQ(cdi["kind"], "gpu.tessera.io/claim");
  EXPECT_EQ(cdi["devices"][0]["name"], uid);
  const Json& edits = cdi["devices"][0]["containerEdits"];
  EXPECT_NE(std::find(edits["env"].begin(), edits["env"].end(), "NVIDIA_VISIBLE_DEVICES=GPU-aaaa"), edits["env"].end());
  bool conf_mounted = false, shim_mounted = false;
  for (const auto& m : edits["mounts"]) {
    conf_mounted |= m["containerPath"] == kCtrSliceConf && m["hostPath"] == (dir / "slice.conf").string();
    shim_mounted |= m["containerPath"] == kCtrShim && m["hostPath"] == (root_ / "libtessera.so").string();
  }
  EXPECT_TRUE(conf_mounted);
  EXPECT_TRUE(shim_mounted);

  // Again: the same answer, and the API server is not asked (the claim could even be gone by now).
  {
    std::lock_guard<std::mutex> l(api_->mu);
    api_->claims.clear();
  }
  auto again = Prepare("c1", uid);
  EXPECT_EQ(again.claims().at(uid).SerializeAsString(), out.SerializeAsString());

  EXPECT_EQ(Unprepare(uid), "");
  EXPECT_FALSE(fs::exists(dir));
  EXPECT_FALSE(fs::exists(root_ / "cdi" / ("gpu.tessera.io-" + uid + ".json")));
  EXPECT_TRUE(driver_->Prepared().empty());
  EXPECT_EQ(Unprepare(uid), "");  // idempotent
}

TEST_F(DraDriverTest, TwoRequestsOnOneGpuAddUpAndAWholeCardRequestGetsAllOfIt) {
  StartDriver();
  const std::string uid = "aaaa0000-0000-0000-0000-000000000001";
  AddClaim("multi", uid,
           Json::array({Result("a", "gpu-aaaa", "1Gi", "10"), Result("b", "gpu-aaaa", "2Gi", "20"),
                        Result("c", "gpu-bbbb", "", "")}));
  auto resp = Prepare("multi", uid);
  const auto& out = resp.claims().at(uid);
  ASSERT_EQ(out.error(), "");
  ASSERT_EQ(out.devices_size(), 3);
  // The slice's CDI device answers for every request, once.
  EXPECT_EQ(out.devices(0).request_names_size(), 3);
  EXPECT_EQ(out.devices(0).cdi_device_ids_size(), 1);
  EXPECT_EQ(out.devices(1).cdi_device_ids_size(), 0);
  slice::SliceConfig cfg;
  char err[256] = {};
  const fs::path conf = root_ / "state" / "slices" / ("claim-" + uid) / "slice.conf";
  ASSERT_TRUE(slice::LoadSliceConfig(conf.c_str(), false, &cfg, err, sizeof(err))) << err;
  ASSERT_EQ(cfg.gpu_count, 2);
  EXPECT_EQ(cfg.gpus[0].memory_bytes, 3ull << 30);
  EXPECT_EQ(cfg.gpus[0].cores, 30);
  EXPECT_EQ(cfg.gpus[1].memory_bytes, 40960ull << 20);
  EXPECT_EQ(cfg.gpus[1].cores, 100);
  EXPECT_EQ(cfg.priority, 1);
}

TEST_F(DraDriverTest, RefusedClaimsLeaveNothingBehindAndSayWhy) {
  StartDriver();
  const std::string uid = "bbbb0000-0000-0000-0000-000000000002";
  AddClaim("c2", uid, Json::array({Result("gpu", "gpu-aaaa", "1Gi", "")}));
  auto resp = Prepare("c2", "cccc0000-0000-0000-0000-000000000003");
  EXPECT_NE(resp.claims().at("cccc0000-0000-0000-0000-000000000003").error().find("deleted and created again"),
            std::string::npos);
  AddClaim("c3", uid, Json::array({Result("gpu", "gpu-zzzz", "1Gi", "")}));
  resp = Prepare("c3", uid);
  EXPECT_NE(resp.claims().at(uid).error().find("device gpu-zzzz is not a GPU of node node-a"), std::string::npos);
  resp = Prepare("missing", uid);
  EXPECT_NE(resp.claims().at(uid).error().find("not found"), std::string::npos);
  resp = Prepare("c3", "../../etc");
  EXPECT_NE(resp.claims().at("../../etc").error().find("uid"), std::string::npos);
  EXPECT_TRUE(fs::is_empty(root_ / "cdi"));
  EXPECT_TRUE(fs::is_empty(root_ / "state" / "slices"));
  EXPECT_TRUE(driver_->Prepared().empty());
}

TEST_F(DraDriverTest, ARestartedDriverKeepsPreparedClaimsAndDropsLeftovers) {
  StartDriver();
  const std::string uid = "dddd0000-0000-0000-0000-000000000004";
  AddClaim("c4", uid, Json::array({Result("gpu", "gpu-bbbb", "8Gi", "50")}));
  auto first = Prepare("c4", uid);
  ASSERT_EQ(first.claims().at(uid).error(), "");
  // A crash between writing a slice and checkpointing it leaves these behind.
  fs::create_directories(root_ / "state" / "slices" / "claim-eeee");
  std::ofstream(root_ / "state" / "slices" / "claim-eeee" / "owner.json") << "{}";
  std::ofstream(root_ / "cdi" / "gpu.tessera.io-eeee.json") << "{}";

  StartDriver();  // a new process on the same directories
  ASSERT_EQ(driver_->Prepared().size(), 1u);
  EXPECT_EQ(driver_->Prepared()[0].name, "c4");
  EXPECT_FALSE(fs::exists(root_ / "state" / "slices" / "claim-eeee"));
  EXPECT_FALSE(fs::exists(root_ / "cdi" / "gpu.tessera.io-eeee.json"));
  EXPECT_TRUE(fs::exists(root_ / "state" / "slices" / ("claim-" + uid) / "slice.conf"));
  auto again = Prepare("c4", uid);
  EXPECT_EQ(again.claims().at(uid).SerializeAsString(), first.claims().at(uid).SerializeAsString());
  EXPECT_EQ(Unprepare(uid), "");
  EXPECT_FALSE(fs::exists(root_ / "state" / "slices" / ("claim-" + uid)));
}

TEST_F(DraDriverTest, AnEndlessCheckpointIsRefusedAtItsSizeLimit) {
  fs::create_directories(root_ / "state" / "dra");
  fs::create_symlink("/dev/zero", root_ / "state" / "dra" / "checkpoint.json");
  expect_start_ok_ = false;
  StartDriver();
  ASSERT_FALSE(start_status_.ok());
  EXPECT_NE(start_status_.message().find("checkpoint.json: larger than 16 MiB, the limit for the DRA checkpoint"),
            std::string::npos)
      << start_status_.message();
}

}  // namespace
}  // namespace tessera::agent
